-- wrk script for `make bench`: POST one webhook delivery again and again.
--
--   wrk ... -s bench/delivery.lua URL -- BODY_FILE HEADERS_FILE [ID_PREFIX]
--
-- BODY_FILE holds the raw body, HEADERS_FILE one "Name: value" per line.
-- With ID_PREFIX every request carries a fresh X-GitHub-Delivery id
-- (PREFIX-THREAD-N), so that ghhook answers each as new, not as a duplicate;
-- without it the same bytes are sent every time.
-- done() prints one line "WRK {json}" that bench.py reads.

local threads = 0
local counter = 0
local prefix = nil
local static = nil

function setup(thread)
   thread:set("thread_id", threads)
   threads = threads + 1
end

local function slurp(path)
   local f = assert(io.open(path, "rb"))
   local data = f:read("*a")
   f:close()
   return data
end

function init(args)
   wrk.method = "POST"
   wrk.body = slurp(args[1])
   for line in io.lines(args[2]) do
      local name, value = line:match("^([^:]+):%s*(.*)$")
      if name then
         wrk.headers[name] = value
      end
   end
   if args[3] and args[3] ~= "" then
      prefix = args[3] .. "-" .. tostring(thread_id) .. "-"
   else
      static = wrk.format()
   end
end

function request()
   if static then
      return static
   end
   counter = counter + 1
   wrk.headers["X-GitHub-Delivery"] = prefix .. counter
   return wrk.format()
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK {"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d,'
         .. ' "read_errors": %d, "write_errors": %d, "timeouts": %d, "non_2xx_3xx": %d,'
         .. ' "latency_p50_us": %d, "latency_p99_us": %d, "latency_max_us": %d}\n',
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
      e.timeout, e.status, latency:percentile(50), latency:percentile(99), latency.max))
end
