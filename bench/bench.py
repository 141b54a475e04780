#!/usr/bin/env python3
"""
``make bench``: measure the real ghhook daemon on loopback against real git.

It starts ``twistd -n ghhook`` exactly as a user would, on a clone whose
remote answers fetches only after ``--pull-delay`` seconds (its upload-pack is
a script that sleeps, then execs ``git upload-pack``), and measures:

* start-up: from spawning twistd until ``GET /healthz`` answers 200;
* resident memory (VmRSS) when idle, after the burst and after the load;
* ack latency of signed pushes sent 10 in flight while a pull runs;
* a burst of 100 real pushes, one delivery each, delivered 10 at a time:
  pulls, restarts, failed deploys, seconds from the last ack until the
  clone's HEAD is the last sha;
* requests per second with ``wrk`` (50 keep-alive connections, 7 KB body)
  for bad signatures and for valid pushes to an untracked branch;
* the cost of one journal write (``add_delivery`` + ``queue_deploy``);
* the memory floor of the stack itself: VmRSS of a fresh interpreter that
  imports only the reactor, twistd, twisted.web and Klein (no ghhook), as
  installed and with pyOpenSSL and cryptography kept out;
* the journal's size after 50,000 deliveries and 1,000 deploys, written
  in-process through ``Journal`` as the daemon writes them (journalsize.py);
* a soak: a fresh daemon fed 20 signed deliveries a second for 10 minutes,
  10 % of them pushes of new commits, with its RSS and journal size every
  minute, and whether both levelled off.

It prints one JSON line per figure on stdout, then one ``summary`` line that
compares each figure with its target; progress goes to stderr. It exits 0
when it ran (a missed target is reported, not an error) and 1 when it could
not run. Everything it starts is stopped and its temporary directory removed
(``--keep`` keeps the directory, with the daemon's log, for a look).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import operator
import os
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import journalsize  # noqa: E402  (bench/ is sys.path[0])
import pyspy  # noqa: E402

from ghhook.journal import Journal  # noqa: E402
from ghhook.payloads import delivery_headers, encode, ping_payload, push_payload  # noqa: E402
from tests.gitfixture import GitFixture, git  # noqa: E402

SECRET = b"ghhook-bench-secret"
WRONG_SECRET = b"not-the-secret"
HOOK_PATH = "/github"
IN_FLIGHT = 10
BURST = 100
BATCH = 10
WRK_CONNECTIONS = 50
BODY_BYTES = 7 * 1024
JOURNAL_WRITES = 5000
POLL = 0.02
_MARK = "DELIVERY-ID-GOES-HERE"

#: The soak: deliveries per second, and what each 10 of them are, in order.
SOAK_RATE = 20.0
SOAK_MIX = (
    "new_commit",
    "untracked_branch",
    "repeat_push",
    "untracked_branch",
    "ping",
    "untracked_branch",
    "redelivery",
    "untracked_branch",
    "untracked_branch",
    "untracked_branch",
)
#: Seconds between two soak lines, and between two looks at the journal's size.
SOAK_LINE_EVERY = 60.0
SOAK_POLL = 5.0
#: Deliveries the soak lets wait for an answer before it skips a slot.
SOAK_BACKLOG = 200
#: Minutes at the end of the soak over which RSS must not grow.
SOAK_WINDOW_MIN = 3

TARGETS = {
    "ack_p99_ms": 10.0,
    "journal_mb": 20.0,
    "soak_rss_growth_mb": 2.0,
    "burst_pulls": 3,
    "burst_restarts": 2,
    "converge_slack_s": 0.5,
    "rps": 3000,
    "rss_idle_mb": 40.0,
    "startup_s": 1.0,
}


#: What any twistd daemon with a Klein resource imports, ghhook or not.
_STACK = ("twisted.internet.reactor", "twisted.scripts.twistd", "twisted.web.server", "klein")

# Imports _STACK and prints its VmRSS parts as JSON; with "block-tls", Twisted
# finds no pyOpenSSL (as on an install without twisted[tls]).
_FLOOR_SCRIPT = """
import importlib, json, sys
class KeepOut:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("OpenSSL", "cryptography", "service_identity"):
            raise ImportError(name)
if sys.argv[1] == "block-tls":
    sys.meta_path.insert(0, KeepOut())
for name in sys.argv[2:]:
    importlib.import_module(name)
wanted = {"VmRSS:": "value", "RssAnon:": "anon_mb", "RssFile:": "file_mb"}
found = {"modules": len(sys.modules)}
for line in open("/proc/self/status"):
    name, *rest = line.split()
    if name in wanted:
        found[wanted[name]] = round(int(rest[0]) / 1024, 1)
print(json.dumps(found))
"""


def _stack_rss(block_tls: bool) -> dict[str, Any]:
    mode = "block-tls" if block_tls else "as-installed"
    out = subprocess.run(
        [sys.executable, "-c", _FLOOR_SCRIPT, mode, *_STACK],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise CannotRun(f"measuring the stack's memory failed: {out.stderr.strip()[-300:]}")
    return json.loads(out.stdout)


#: How a figure is held against its target in the summary.
_COMPARE: dict[str, Callable[[Any, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    ">=": operator.ge,
}


class CannotRun(Exception):
    """The benchmark cannot go on; the message says why."""


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def emit(figure: str, **fields: Any) -> dict[str, Any]:
    line = {"figure": figure, **fields}
    print(json.dumps(line), flush=True)
    return line


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile: a value that was measured, never interpolated."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def spread(values: list[float], scale: float, digits: int) -> dict[str, Any]:
    if not values:
        return {"p50": None, "p99": None, "max": None, "n": 0}
    return {
        "p50": round(percentile(values, 50) * scale, digits),
        "p99": round(percentile(values, 99) * scale, digits),
        "max": round(max(values) * scale, digits),
        "n": len(values),
    }


def wait_for(check: Callable[[], Any], bound: float, interval: float = POLL) -> Any:
    """Poll ``check`` until it returns something true, at most ``bound`` seconds."""
    deadline = time.monotonic() + bound
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def cpu_busy(cpu: int) -> float:
    """Seconds CPU ``cpu`` has spent not idle, from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            ticks = [int(x) for x in line.split()[1:9]]
            return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    raise CannotRun(f"no cpu{cpu} in /proc/stat")


def filesystem(path: Path) -> str | None:
    """The type of the file system ``path`` is on, from /proc/mounts."""
    best, kind = "", None
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mount, fstype, *_ = line.split()
        inside = str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > len(best):
            best, kind = mount, fstype
    return kind


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def healthz_ok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def raw_post(port: int, body: bytes, headers: dict[str, str], path: str = HOOK_PATH) -> bytes:
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def padded_push(ref: str, size: int) -> bytes:
    """A push payload of ``size`` bytes (the commit message is the padding)."""
    sha = uuid.uuid4().hex + "0" * 8
    bare = len(encode(push_payload(sha, ref=ref, message="")))
    # The message appears twice: in commits[0] and in head_commit.
    message = "x" * max(0, (size - bare) // 2)
    return encode(push_payload(sha, ref=ref, message=message))


class Connection:
    """One keep-alive HTTP/1.1 connection; enough of a client to time answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def exchange(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = {}
        for line in lines:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip().lower()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            chunks = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                chunks.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            body = b"".join(chunks)
        else:
            raise CannotRun(f"an answer without a length: {head!r}")
        return status, body

    def close(self) -> None:
        self.writer.close()


def cpu_probe(daemon: Daemon, pins: tuple[int, int] | None) -> Callable[[], dict[str, Any]]:
    """
    Start measuring CPU; the returned function tells, for the time since,
    how busy ``daemon`` was (1.0 is one core) and how much of its pinned CPU
    other processes took (load from elsewhere on this machine).
    """
    started, cpu = time.monotonic(), daemon.cpu_seconds()
    core = cpu_busy(pins[0]) if pins else None

    def done() -> dict[str, Any]:
        wall = time.monotonic() - started
        used = daemon.cpu_seconds() - cpu
        others = None
        if pins and core is not None:
            others = max(0.0, (cpu_busy(pins[0]) - core - used) / wall)
        return {
            "daemon_cpu_busy": round(used / wall, 2),
            "others_on_daemon_cpu": None if others is None else round(others, 2),
            "daemon_cpu_s": used,
        }

    return done


class Daemon:
    """The twistd process: spawned, watched through /proc, stopped."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def memory(self) -> dict[str, float]:
        """VmRSS, and its private (RssAnon) and file-backed (RssFile) parts, in MB."""
        wanted = {"VmRSS:": "value", "RssAnon:": "anon_mb", "RssFile:": "file_mb"}
        found = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, *rest = line.split()
            if name in wanted:
                found[wanted[name]] = round(int(rest[0]) / 1024, 1)
        if "value" not in found:
            raise CannotRun("no VmRSS in /proc/PID/status")
        return found

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        # utime and stime are fields 14 and 15 of stat(5); fields[0] is field 3.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, bound: float = 20.0) -> dict[str, Any]:
        """SIGTERM, wait at most ``bound`` seconds, then SIGKILL the group."""
        if self.proc is None:
            return {"stopped": False}
        if self.proc.poll() is not None:
            return {"exit_code": self.proc.returncode, "seconds": 0.0, "killed": False}
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        killed = False
        try:
            self.proc.wait(bound)
        except subprocess.TimeoutExpired:
            killed = True
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        return {
            "exit_code": self.proc.returncode,
            "seconds": round(time.monotonic() - started, 3),
            "killed": killed,
        }


class Bench:
    def __init__(
        self,
        tmp: Path,
        seconds: int,
        pull_delay: float,
        soak_minutes: float = 10.0,
        soak_rate: float = SOAK_RATE,
        soak_pull_delay: float = 0.5,
    ) -> None:
        self.tmp = tmp
        self.seconds = seconds
        self.pull_delay = pull_delay
        self.soak_minutes = soak_minutes
        self.soak_rate = soak_rate
        self.soak_pull_delay = soak_pull_delay
        self.soaking: Soak | None = None
        self.figures: dict[str, dict[str, Any]] = {}
        self.daemon: Daemon | None = None
        self.db: sqlite3.Connection | None = None
        self.pins = self._pins()
        self.pyspy: str | None = None
        self._templates: dict[tuple[str, str | None], list[bytes]] = {}
        self.wrk_missing = ""

    # Set-up

    def _pins(self) -> tuple[int, int] | None:
        """(daemon CPU, load CPU) when taskset can keep them apart."""
        cpus = sorted(os.sched_getaffinity(0))
        if shutil.which("taskset") is None or len(cpus) < 2:
            return None
        return cpus[0], cpus[1]

    def pinned(self, which: int) -> list[str]:
        return [] if self.pins is None else ["taskset", "-c", str(self.pins[which])]

    def prepare(self) -> None:
        say(f"setting up git in {self.tmp}")
        (self.tmp / "git").mkdir()
        self.fixture = GitFixture.create(self.tmp / "git")
        self.marks = self.tmp / "upload-pack.marks"
        self.marks.touch()
        self.slow = self.tmp / "slow-upload-pack"
        self.set_pull_delay(self.pull_delay)
        git(self.fixture.clone, "config", "remote.origin.uploadpack", str(self.slow))
        self.restarts = self.tmp / "restarts.txt"
        self.restarts.touch()
        restart = self.tmp / "restart"
        restart.write_text('#!/bin/sh\necho "restarted at $(date +%s.%N)" >> "$1"\n')
        restart.chmod(0o755)
        self.restart = restart
        self.state = self.tmp / "j.sqlite3"
        self.port = free_port()
        twistd = Path(sys.executable).parent / "twistd"
        if not twistd.exists():
            raise CannotRun(f"{twistd} is missing; run `make install` first")
        self.twistd = twistd
        argv = self.daemon_argv(self.port, self.state)
        env = {**os.environ, "GHHOOK_SECRET": SECRET.decode(), "GIT_CONFIG_NOSYSTEM": "1"}
        self.env = env
        self.daemon = Daemon(argv, env, self.tmp, self.tmp / "twistd.log")
        if self.pins is not None:
            os.sched_setaffinity(0, {self.pins[1]})
        emit(
            "setup",
            pinning=(
                f"daemon on CPU {self.pins[0]}, bench client and wrk on CPU {self.pins[1]}"
                if self.pins
                else "none (taskset missing or a single CPU): client and daemon share cores"
            ),
            cpus=os.cpu_count(),
            pull_delay_s=self.pull_delay,
            python=sys.version.split()[0],
            command=" ".join(shlex.quote(a) for a in argv),
            daemon_code=self.daemon_code(),
        )

    def daemon_code(self) -> dict[str, Any]:
        """
        Which ghhook twistd imports, and the modules where it differs from the
        checkout (``make bench`` reinstalls first; a direct run may not).
        """
        found = subprocess.run(
            [sys.executable, "-c", "import ghhook; print(ghhook.__file__)"],
            cwd=self.tmp,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if found.returncode != 0:
            return {"error": found.stderr.strip()[-300:]}
        installed = Path(found.stdout.strip()).parent
        differ = sorted(
            source.name
            for source in (ROOT / "ghhook").glob("*.py")
            if not (installed / source.name).exists()
            or (installed / source.name).read_bytes() != source.read_bytes()
        )
        if differ:
            say(f"twistd runs {installed}, which differs from the checkout in {differ}")
        return {"path": str(installed), "differs_from_checkout": differ}

    def set_pull_delay(self, seconds: float) -> None:
        """(Re)write the remote's slow upload-pack; replaced whole, never edited in place."""
        script = self.slow.with_suffix(".new")
        script.write_text(
            "#!/bin/sh\n"
            "# Stands for a slow network: answer a fetch only after a delay.\n"
            f"echo start >> {shlex.quote(str(self.marks))}\n"
            f"sleep {seconds}\n"
            'exec git upload-pack "$@"\n'
        )
        script.chmod(0o755)
        os.replace(script, self.slow)

    def daemon_argv(self, port: int, state: Path) -> list[str]:
        return [
            *self.pinned(0),
            str(self.twistd),
            "-n",
            "--pidfile=",
            "ghhook",
            "--repo",
            str(self.fixture.clone),
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--restart-cmd",
            f"{shlex.quote(str(self.restart))} {shlex.quote(str(self.restarts))}",
            "--state",
            str(state),
        ]

    # Helpers on the running daemon

    def cpu_probe(self) -> Callable[[], dict[str, Any]]:
        """CPU of the running daemon from now on (:func:`cpu_probe`)."""
        return cpu_probe(self.require_alive(), self.pins)

    def profile(self, phase: str, seconds: float) -> Callable[[], None]:
        """With --profile, sample the daemon for ``seconds``; the result is a figure."""
        if self.pyspy is None:
            return lambda: None
        daemon = self.require_alive()
        raw = self.tmp / f"profile-{phase}.txt"
        proc = pyspy.start(self.pyspy, daemon.pid, seconds, raw, self.pinned(1))

        def done() -> None:
            try:
                _, err = proc.communicate(timeout=seconds + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            if not raw.exists():
                emit(f"profile_{phase}", error=err.decode(errors="replace").strip()[-500:])
                return
            emit(f"profile_{phase}", **pyspy.summarize(raw))

        return done

    def require_alive(self) -> Daemon:
        assert self.daemon is not None
        if not self.daemon.alive():
            raise CannotRun(
                f"the daemon exited with code {self.daemon.proc and self.daemon.proc.returncode};"
                f" its log ends:\n{self.daemon.log_tail()}"
            )
        return self.daemon

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.db is None:
            self.db = sqlite3.connect(self.state, timeout=5, isolation_level=None)
        return self.db.execute(sql, args).fetchall()

    def busy(self) -> bool:
        rows = self.query("SELECT count(*) FROM deploys WHERE result IN ('queued', 'running')")
        return bool(rows[0][0])

    def wait_idle(self, bound: float) -> None:
        if not wait_for(lambda: self.require_alive() and not self.busy(), bound):
            raise CannotRun(f"the deployer was still busy after {bound} s")

    def marks_count(self) -> int:
        return len(self.marks.read_text().splitlines())

    def restarts_count(self) -> int:
        return len(self.restarts.read_text().splitlines())

    def clone_head(self) -> str:
        """The clone's HEAD read from its files (a ref file or packed-refs)."""
        gdir = self.fixture.clone / ".git"
        head = (gdir / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[len("ref: ") :]
        try:
            return (gdir / ref).read_text().strip()
        except FileNotFoundError:
            return self.fixture.head()

    def push_request(self, sha: str, before: str | None = None) -> bytes:
        """A signed push of ``sha`` with a fresh delivery id; signed once per sha."""
        key = (sha, before)
        parts = self._templates.get(key)
        if parts is None:
            body = encode(push_payload(sha, **({"before": before} if before else {})))
            headers = delivery_headers(body, SECRET, "push", delivery=_MARK)
            parts = self._templates[key] = raw_post(self.port, body, headers).split(_MARK.encode())
        return parts[0] + uuid.uuid4().hex.encode() + parts[1]

    # Phases

    def startup(self) -> None:
        daemon = self.daemon
        assert daemon is not None
        say("starting twistd")
        started = time.perf_counter()
        daemon.start()

        def healthy() -> bool:
            self.require_alive()
            return healthz_ok(self.port)

        if not wait_for(healthy, 20.0, interval=0.005):
            raise CannotRun(f"/healthz did not answer 200 within 20 s:\n{daemon.log_tail()}")
        seconds = time.perf_counter() - started
        self.figures["startup"] = emit(
            "startup_s", value=round(seconds, 3), target=f"< {TARGETS['startup_s']} s"
        )
        # The catch-up deploy pulls once at start; idle means after it.
        self.wait_idle(self.pull_delay + 30)
        self.figures["rss_idle"] = emit(
            "rss_idle_mb",
            **daemon.memory(),
            when="after start-up and its catch-up deploy",
            target=f"< {TARGETS['rss_idle_mb']} MB",
        )

    async def ack_latency(self) -> None:
        say(f"ack latency: {IN_FLIGHT} in flight while a {self.pull_delay} s pull runs")
        sha = self.fixture.commit_and_push("ack latency\n")
        marks = self.marks_count()
        conns = [await Connection.open(self.port) for _ in range(IN_FLIGHT)]
        try:
            status, body = await asyncio.wait_for(conns[0].exchange(self.push_request(sha)), 10)
            if status != 202:
                raise CannotRun(f"the first push was answered {status}: {body!r}")
            deploy = json.loads(body)["deploys"][0]["deploy"]
            # The slow upload-pack marks its start: the pull is now waiting on it.
            if not wait_for(lambda: self.marks_count() > marks, 10, interval=0.002):
                raise CannotRun("the pull did not start within 10 s")
            window_end = time.monotonic() + self.pull_delay - 0.3
            latencies: list[float] = []
            statuses: collections.Counter[int] = collections.Counter()

            async def worker(conn: Connection) -> None:
                while time.monotonic() < window_end:
                    raw = self.push_request(sha)
                    t0 = time.perf_counter()
                    status, _ = await conn.exchange(raw)
                    latencies.append(time.perf_counter() - t0)
                    statuses[status] += 1

            window_start = time.time()
            cpu = self.cpu_probe()
            profiled = self.profile("ack_latency", window_end - time.monotonic())
            await asyncio.wait_for(
                asyncio.gather(*(worker(c) for c in conns)), self.pull_delay + 10
            )
            window_stop = time.time()
            load = cpu()
        finally:
            for conn in conns:
                conn.close()
        self.wait_idle(self.pull_delay + 30)
        rows = self.query(
            "SELECT started, duration FROM steps WHERE deploy = ? AND name = 'pull'", (deploy,)
        )
        covered = bool(rows) and rows[0][0] <= window_start and sum(rows[0]) >= window_stop
        self.figures["ack"] = emit(
            "ack_latency_during_deploy_ms",
            **spread(latencies, 1000, 2),
            in_flight=IN_FLIGHT,
            how="closed loop: 10 keep-alive connections, each sends its next push as soon"
            " as the last is answered, so latency is about 10 x the daemon's time per push",
            statuses={str(k): v for k, v in sorted(statuses.items())},
            window_s=round(window_stop - window_start, 3),
            pull_s=round(rows[0][1], 3) if rows else None,
            all_sent_during_the_pull=covered,
            daemon_cpu_busy=load["daemon_cpu_busy"],
            others_on_daemon_cpu=load["others_on_daemon_cpu"],
            profiled=self.pyspy is not None,
            target=f"p99 < {TARGETS['ack_p99_ms']} ms",
        )
        profiled()

    async def burst(self) -> None:
        daemon = self.require_alive()
        say(f"burst: making {BURST} commits")
        before = self.fixture.head(self.fixture.work)
        shas = [
            self.fixture.commit("app.txt", f"burst {i}\n", f"burst commit {i}")
            for i in range(BURST)
        ]
        base_deploy = self.query("SELECT coalesce(max(id), 0) FROM deploys")[0][0]
        restarts = self.restarts_count()
        say(f"burst: {BURST} pushes, each delivered once, {BATCH} at a time")
        conns = [await Connection.open(self.port) for _ in range(BATCH)]
        acks: collections.Counter[str] = collections.Counter()
        mismatched = 0
        started = time.monotonic()
        try:
            for first in range(0, BURST, BATCH):
                batch = shas[first : first + BATCH]
                for sha in batch:
                    git(self.fixture.work, "push", "--quiet", "origin", f"{sha}:refs/heads/main")
                raws = []
                for i, sha in enumerate(batch, start=first):
                    raws.append(self.push_request(sha, shas[i - 1] if i else before))
                answers = await asyncio.wait_for(
                    asyncio.gather(*(c.exchange(r) for c, r in zip(conns, raws, strict=True))),
                    30,
                )
                for (status, body), sha in zip(answers, batch, strict=True):
                    answer = json.loads(body)
                    deploys = answer.get("deploys") or [{}]
                    kind = "coalesced" if deploys[0].get("coalesced") else "queued"
                    acks[f"{status} {kind}" if status == 202 else str(status)] += 1
                    mismatched += status == 202 and answer.get("after") != sha
            last_ack = time.monotonic()
        finally:
            for conn in conns:
                conn.close()
        bound = 30.0
        converged = wait_for(lambda: self.clone_head() == shas[-1], bound)
        converge_s = time.monotonic() - last_ack if converged else None
        self.wait_idle(bound)
        pulls = self.query(
            "SELECT count(*) FROM steps WHERE name = 'pull' AND deploy > ?", (base_deploy,)
        )[0][0]
        results = dict(
            self.query(
                "SELECT result, count(*) FROM deploys WHERE id > ? GROUP BY result",
                (base_deploy,),
            )
        )
        failed = sum(n for r, n in results.items() if r not in ("deployed", "unchanged"))
        self.figures["burst"] = emit(
            "burst_100_pushes",
            pulls=pulls,
            restarts=self.restarts_count() - restarts,
            failed_deploys=failed,
            deploys=results,
            converge_s="never" if converge_s is None else round(converge_s, 3),
            converged=bool(converged),
            converge_bound_s=bound,
            acks=dict(acks),
            acks_with_wrong_after=mismatched,
            seconds_first_push_to_last_ack=round(last_ack - started, 3),
            target=(
                f"pulls <= {TARGETS['burst_pulls']}, restarts <= {TARGETS['burst_restarts']},"
                f" no failed deploy, converge <= {self.pull_delay + TARGETS['converge_slack_s']} s"
            ),
        )
        self.figures["rss_burst"] = emit(
            "rss_after_burst_mb", **daemon.memory(), when="after the burst, deployer idle"
        )

    def find_wrk(self) -> str | None:
        wrk = shutil.which("wrk")
        if wrk is not None:
            return wrk
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            say("wrk is missing and this is not root with apt-get: rps not measured")
            self.wrk_missing = "wrk is not installed, and only root with apt-get can install it"
            return None
        say("installing wrk with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        quiet = {"env": env, "capture_output": True, "check": False}
        if subprocess.run(["apt-get", "install", "-y", "wrk"], **quiet).returncode != 0:
            subprocess.run(["apt-get", "update"], **quiet)
            subprocess.run(["apt-get", "install", "-y", "wrk"], **quiet)
        found = shutil.which("wrk")
        if found is None:
            self.wrk_missing = "`apt-get install -y wrk` failed"
        return found

    def wrk(self, figure: str, wrk: str | None, ref: str, secret: bytes, fresh: bool) -> None:
        self.require_alive()
        key = f"rps_{figure}"
        if wrk is None:
            self.figures[key] = emit(
                key, rps=None, skipped=self.wrk_missing, target=f">= {TARGETS['rps']:.0f}/s"
            )
            return
        say(f"wrk: {figure}, {WRK_CONNECTIONS} connections for {self.seconds} s")
        body = padded_push(ref, BODY_BYTES)
        headers = delivery_headers(body, secret, "push")
        body_file, headers_file = self.tmp / f"{figure}.body", self.tmp / f"{figure}.headers"
        body_file.write_bytes(body)
        headers_file.write_text("".join(f"{k}: {v}\n" for k, v in headers.items()))
        prefix = f"bench{uuid.uuid4().hex[:8]}" if fresh else ""
        argv = [
            *self.pinned(1),
            wrk,
            "-t1",
            f"-c{WRK_CONNECTIONS}",
            f"-d{math.ceil(self.seconds)}s",
            "--timeout",
            "5s",
            "-s",
            str(Path(__file__).with_name("delivery.lua")),
            f"http://127.0.0.1:{self.port}{HOOK_PATH}",
            "--",
            str(body_file),
            str(headers_file),
            prefix,
        ]
        cpu = self.cpu_probe()
        profiled = self.profile(figure, self.seconds)
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=self.seconds + 60, check=False
        )
        load = cpu()
        line = next((x for x in done.stdout.splitlines() if x.startswith("WRK ")), None)
        if done.returncode != 0 or line is None:
            raise CannotRun(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
        result = json.loads(line[4:])
        seconds = result["duration_us"] / 1e6
        extra: dict[str, Any] = {}
        if fresh:
            rows = self.query(
                "SELECT count(*) FROM deliveries WHERE delivery LIKE ? AND outcome = 'ignored'",
                (prefix + "-%",),
            )[0][0]
            extra = {
                "fresh_delivery_ids": True,
                "journal_rows": rows,
                "answered_as_duplicates": max(0, result["requests"] - rows),
                "note": "each request has its own X-GitHub-Delivery id (made in Lua), so each"
                " is journaled as a new delivery, not answered as a duplicate",
            }
        else:
            extra = {"answers_not_2xx": result["non_2xx_3xx"], "expected": "all 403"}
        self.figures[key] = emit(
            key,
            rps=round(result["requests"] / seconds),
            requests=result["requests"],
            seconds=round(seconds, 2),
            connections=WRK_CONNECTIONS,
            keep_alive=True,
            body_bytes=len(body),
            latency_ms={
                "p50": result["latency_p50_us"] / 1000,
                "p99": result["latency_p99_us"] / 1000,
                "max": result["latency_max_us"] / 1000,
            },
            errors={
                k: result[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
            },
            daemon_cpu_busy=load["daemon_cpu_busy"],
            others_on_daemon_cpu=load["others_on_daemon_cpu"],
            requests_per_daemon_cpu_second=round(result["requests"] / load["daemon_cpu_s"]),
            pinned=self.pins is not None,
            profiled=self.pyspy is not None,
            **extra,
            target=f">= {TARGETS['rps']:.0f}/s",
        )
        profiled()

    def journal_cost(self) -> None:
        say(f"journal: {JOURNAL_WRITES} add_delivery + queue_deploy in-process")
        journal = Journal(self.tmp / "micro.sqlite3").open()
        journal.checkpoint_elsewhere()  # as the daemon runs it: checkpoints in a thread
        sha = "a" * 40
        costs = []
        try:
            for _ in range(JOURNAL_WRITES):
                delivery, now = str(uuid.uuid4()), time.time()
                t0 = time.perf_counter()
                with journal.transaction():  # as the hook writes a delivery
                    journal.add_delivery(delivery, "push", "accepted", now, sha)
                    journal.queue_deploy("push", delivery, sha, now, app="bench")
                costs.append(time.perf_counter() - t0)
        finally:
            journal.close()
        fs = filesystem(self.tmp)
        slow = [c for c in costs if c > 0.001]
        self.figures["journal"] = emit(
            "journal_write_us",
            **spread(costs, 1e6, 1),
            over_1ms=len(slow),
            ms_in_those=round(sum(slow) * 1000, 1),
            what="Journal.add_delivery + queue_deploy, WAL, synchronous=NORMAL",
            filesystem=fs,
        )

    def journal_size(self) -> None:
        say(
            f"journal size: {journalsize.DELIVERIES} deliveries and {journalsize.DEPLOYS}"
            " deploys written in-process through Journal, as the daemon writes them"
        )
        result = journalsize.measure(self.tmp / "size.sqlite3", say)
        self.figures["journal_size"] = emit(
            "journal_size_mb",
            **result,
            how="in-process, not the daemon: ghhook.journal.Journal(keep_deploys=1000) driven"
            " with the calls the hook and the engine make, checkpointed in a thread every 100"
            " deliveries (the daemon's 5 s at 20/s)",
            target=f"< {TARGETS['journal_mb']} MB",
        )

    def soak(self) -> None:
        if self.soak_minutes <= 0:
            return
        soak = Soak(self, self.soak_minutes, self.soak_rate, self.soak_pull_delay)
        self.soaking = soak
        try:
            self.figures["soak"] = soak.run()
        finally:
            soak.close()

    def stack_floor(self) -> None:
        say("memory floor: the reactor, twistd, twisted.web and Klein alone")
        as_installed = _stack_rss(block_tls=False)
        without_tls = _stack_rss(block_tls=True)
        self.figures["rss_floor"] = emit(
            "rss_stack_floor_mb",
            **as_installed,
            without_tls=without_tls,
            imports=list(_STACK),
            what="a fresh interpreter importing only what a twistd daemon with Klein needs",
        )

    def finish(self) -> None:
        daemon = self.require_alive()
        self.figures["rss_end"] = emit(
            "rss_after_load_mb", **daemon.memory(), when="after the wrk runs"
        )
        if self.db is not None:
            self.db.close()
            self.db = None
        stop = daemon.stop()
        text = daemon.log_path.read_text(errors="replace")
        emit(
            "daemon",
            stop_on_sigterm=stop,
            log_lines=text.count("\n"),
            log_critical=text.count("#critical]"),
            log_errors=text.count("#error]"),
        )

    def summary(self) -> None:
        f = self.figures
        burst = f.get("burst", {})
        converge_bound = self.pull_delay + TARGETS["converge_slack_s"]

        def check(name: str, value: Any, op: str, bound: float) -> dict[str, Any]:
            ok = None if value is None else value != "never" and _COMPARE[op](value, bound)
            return {"name": name, "value": value, "target": f"{op} {bound}", "ok": ok}

        rss_idle, startup, soak = f.get("rss_idle", {}), f.get("startup", {}), f.get("soak", {})
        targets = [
            check("ack_p99_ms", f.get("ack", {}).get("p99"), "<", TARGETS["ack_p99_ms"]),
            check("burst_pulls", burst.get("pulls"), "<=", TARGETS["burst_pulls"]),
            check("burst_restarts", burst.get("restarts"), "<=", TARGETS["burst_restarts"]),
            check("burst_failed_deploys", burst.get("failed_deploys"), "==", 0),
            check("burst_converge_s", burst.get("converge_s"), "<=", converge_bound),
            *(
                check(key, f.get(key, {}).get("rps"), ">=", TARGETS["rps"])
                for key in ("rps_bad_signature", "rps_untracked_branch")
            ),
            check("rss_idle_mb", rss_idle.get("value"), "<", TARGETS["rss_idle_mb"]),
            check("startup_s", startup.get("value"), "<", TARGETS["startup_s"]),
            check(
                "journal_size_mb",
                f.get("journal_size", {}).get("value"),
                "<",
                TARGETS["journal_mb"],
            ),
            check(
                "soak_rss_growth_mb",
                soak.get("rss_growth_mb"),
                "<",
                TARGETS["soak_rss_growth_mb"],
            ),
            check("soak_journal_max_mb", soak.get("journal_max_mb"), "<", TARGETS["journal_mb"]),
        ]
        # Other processes on the daemon's CPU make its figures worse than it is.
        disturbed = {
            name: figure["others_on_daemon_cpu"]
            for name, figure in f.items()
            if (figure.get("others_on_daemon_cpu") or 0) > 0.1
        }
        emit(
            "summary",
            met=sum(t["ok"] is True for t in targets),
            missed=[t["name"] for t in targets if t["ok"] is False],
            not_measured=[t["name"] for t in targets if t["ok"] is None],
            disturbed_by_other_load=disturbed or None,
            rss_stack_floor_mb=f.get("rss_floor", {}).get("value"),
            profiled=self.pyspy is not None,
            targets=targets,
        )

    def run(self, only: list[str] | None = None) -> None:
        if only:
            # One or two figures alone; the summary lists the rest as not measured.
            if "journal-size" in only:
                self.journal_size()
            if "soak" in only:
                self.prepare()
                self.soak()
            self.summary()
            return
        self.prepare()
        self.startup()
        asyncio.run(self.ack_latency())
        asyncio.run(self.burst())
        wrk = self.find_wrk()
        self.wrk("bad_signature", wrk, "refs/heads/main", WRONG_SECRET, fresh=False)
        self.wrk("untracked_branch", wrk, "refs/heads/other", SECRET, fresh=True)
        self.finish()
        self.journal_cost()
        self.journal_size()
        self.stack_floor()
        self.soak()
        self.summary()

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
        if self.daemon is not None and self.daemon.alive():
            self.daemon.stop()
        if self.soaking is not None:
            self.soaking.close()


class Soak:
    """
    A fresh daemon fed ``rate`` signed deliveries a second for ``minutes``,
    on a monotonic schedule (delivery i is due at start + i / rate, so a late
    one does not push the others back), each on a new connection as GitHub
    sends them. Every minute it prints the daemon's RSS, the journal's size,
    deliveries sent and answered, and deploys done.
    """

    def __init__(self, bench: Bench, minutes: float, rate: float, pull_delay: float) -> None:
        self.bench = bench
        self.minutes = minutes
        self.rate = rate
        self.pull_delay = pull_delay
        self.seconds = minutes * 60
        self.state = bench.tmp / "soak.sqlite3"
        self.port = free_port()
        self.daemon = Daemon(
            bench.daemon_argv(self.port, self.state),
            bench.env,
            bench.tmp,
            bench.tmp / "soak-twistd.log",
        )
        self.db: sqlite3.Connection | None = None
        self.sent = self.answered = self.not_sent = self.commits = 0
        self.kinds: collections.Counter[str] = collections.Counter()
        self.statuses: collections.Counter[int] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.latencies: list[float] = []
        self.minute_latencies: list[float] = []
        self.late = 0.0
        self.samples: list[dict[str, Any]] = []
        self.journal_max = self.wal_max = 0
        self.head = ""
        self.last_untracked: bytes | None = None
        self.git_error: str | None = None
        self.base_deploy = 0
        self.base_restarts = 0
        self._templates: dict[str, list[bytes]] = {}

    # The daemon and its journal

    def alive(self) -> Daemon:
        if not self.daemon.alive():
            raise CannotRun(
                f"the soak's daemon exited with code {self.daemon.proc and self.daemon.proc.returncode};"
                f" its log ends:\n{self.daemon.log_tail()}"
            )
        return self.daemon

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.db is None:
            self.db = sqlite3.connect(self.state, timeout=5, isolation_level=None)
        return self.db.execute(sql, args).fetchall()

    def deploys_done(self) -> int:
        """Finished deploys since the soak began; ids count them even once pruned."""
        final = ",".join(
            f"'{r}'"
            for r in ("deployed", "unchanged", "failed", "timeout", "rolled_back", "interrupted")
        )
        row = self.query(f"SELECT max(id) FROM deploys WHERE result IN ({final})")[0][0]
        return max(0, (row or 0) - self.base_deploy)

    def busy(self) -> bool:
        rows = self.query("SELECT count(*) FROM deploys WHERE result IN ('queued', 'running')")
        return bool(rows[0][0])

    def start(self) -> None:
        say(
            f"soak: a fresh daemon, {self.rate:g} deliveries/s for {self.minutes:g} min,"
            f" pulls wait {self.pull_delay:g} s"
        )
        self.bench.set_pull_delay(self.pull_delay)
        self.daemon.start()
        if not wait_for(lambda: self.alive() and healthz_ok(self.port), 20.0, interval=0.01):
            raise CannotRun(
                f"the soak's /healthz did not answer 200 within 20 s:\n{self.daemon.log_tail()}"
            )
        if not wait_for(lambda: self.alive() and not self.busy(), 60.0):
            raise CannotRun("the soak's catch-up deploy did not end within 60 s")
        self.base_deploy = self.query("SELECT coalesce(max(id), 0) FROM deploys")[0][0]
        self.base_restarts = self.bench.restarts_count()
        self.head = self.bench.fixture.head(self.bench.fixture.work)

    # Deliveries

    def fresh(self, key: str, body: bytes, event: str) -> bytes:
        """The signed request for ``body`` with a new delivery id (signed once per key)."""
        parts = self._templates.get(key)
        if parts is None:
            headers = delivery_headers(body, SECRET, event, delivery=_MARK)
            parts = raw_post(self.port, body, headers).split(_MARK.encode())
            if key:
                self._templates[key] = parts
        return parts[0] + uuid.uuid4().hex.encode() + parts[1]

    def commit_and_push(self) -> str:
        fixture = self.bench.fixture
        sha = fixture.commit("app.txt", f"soak {self.commits}\n", f"soak commit {self.commits}")
        git(fixture.work, "push", "--quiet", "origin", f"{sha}:refs/heads/main")
        self.commits += 1
        return sha

    async def request(self, kind: str) -> bytes:
        if kind == "new_commit":
            async with self.git_lock:
                before = self.head
                sha = await asyncio.to_thread(self.commit_and_push)
                self.head = sha
            return self.fresh("", encode(push_payload(sha, before=before)), "push")
        if kind == "repeat_push":  # the branch's head again, with a new id
            return self.fresh("", encode(push_payload(self.head)), "push")
        if kind == "ping":
            return self.fresh("ping", encode(ping_payload()), "ping")
        if kind == "redelivery" and self.last_untracked is not None:
            return self.last_untracked  # the same id: answered as a duplicate
        raw = self.fresh(
            "untracked", encode(push_payload("b" * 40, ref="refs/heads/other")), "push"
        )
        self.last_untracked = raw
        return raw

    async def deliver(self, kind: str) -> None:
        try:
            raw = await self.request(kind)
        except RuntimeError as e:  # git failed to commit or push
            self.errors["git"] += 1
            self.git_error = self.git_error or str(e)
            return
        self.sent += 1
        self.kinds[kind] += 1
        t0 = time.perf_counter()
        try:
            conn = await asyncio.wait_for(Connection.open(self.port), 10)
            try:
                status, _ = await asyncio.wait_for(conn.exchange(raw), 30)
            finally:
                conn.close()
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, CannotRun) as e:
            self.errors[type(e).__name__] += 1
            return
        seconds = time.perf_counter() - t0
        self.answered += 1
        self.statuses[status] += 1
        self.latencies.append(seconds)
        self.minute_latencies.append(seconds)

    # Samples

    def sizes(self) -> dict[str, int]:
        sizes = journalsize.file_sizes(self.state)
        self.journal_max = max(self.journal_max, sizes["db"] + sizes["wal"])
        self.wal_max = max(self.wal_max, sizes["wal"])
        return sizes

    def sample(self, elapsed: float) -> None:
        memory = self.alive().memory()
        sizes = self.sizes()
        rows = {
            table: self.query(f"SELECT count(*) FROM {table}")[0][0]
            for table in ("deliveries", "deploys", "steps")
        }
        mb = 1024 * 1024
        line = emit(
            "soak_minute",
            minute=round(elapsed / 60, 2),
            rss_mb=memory["value"],
            anon_mb=memory.get("anon_mb"),
            db_mb=round(sizes["db"] / mb, 2),
            wal_mb=round(sizes["wal"] / mb, 2),
            journal_mb=round((sizes["db"] + sizes["wal"]) / mb, 2),
            sent=self.sent,
            answered=self.answered,
            failed=sum(self.errors.values()),
            deploys_done=self.deploys_done(),
            restarts=self.bench.restarts_count() - self.base_restarts,
            rows=rows,
            ack_ms=spread(self.minute_latencies, 1000, 1),
        )
        self.minute_latencies = []
        self.samples.append(line)
        say(
            f"soak {line['minute']:g} min: RSS {line['rss_mb']} MB, db {line['db_mb']} MB,"
            f" WAL {line['wal_mb']} MB, sent {self.sent}, answered {self.answered},"
            f" deploys {line['deploys_done']}"
        )

    async def watch(self, t0: float) -> None:
        """A size look every SOAK_POLL s, a line every SOAK_LINE_EVERY s and at the end."""
        loop = asyncio.get_running_loop()
        ticks = sorted(
            {*(k * SOAK_POLL for k in range(int(self.seconds // SOAK_POLL) + 1)), self.seconds}
        )
        for tick in ticks:
            await asyncio.sleep(max(0.0, t0 + tick - loop.time()))
            if tick % SOAK_LINE_EVERY == 0 or tick == self.seconds:
                self.sample(tick)
            else:
                self.sizes()

    async def drive(self) -> None:
        loop = asyncio.get_running_loop()
        self.git_lock = asyncio.Lock()
        total = round(self.seconds * self.rate)
        t0 = loop.time()
        watcher = asyncio.create_task(self.watch(t0))
        pending: set[asyncio.Task[None]] = set()
        try:
            for i in range(total):
                wait = t0 + i / self.rate - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                else:
                    self.late = max(self.late, -wait)
                if watcher.done():
                    watcher.result()  # the daemon died: CannotRun
                if len(pending) >= SOAK_BACKLOG:
                    self.not_sent += 1
                    continue
                task = asyncio.create_task(self.deliver(SOAK_MIX[i % len(SOAK_MIX)]))
                pending.add(task)
                task.add_done_callback(pending.discard)
            await asyncio.wait_for(watcher, self.seconds + 60)
            if pending:
                await asyncio.wait(pending, timeout=45)
        finally:
            for task in (*pending, watcher):
                task.cancel()
            await asyncio.gather(*pending, watcher, return_exceptions=True)

    # The verdict

    def run(self) -> dict[str, Any]:
        self.start()
        asyncio.run(self.drive())
        idle = wait_for(lambda: self.alive() and not self.busy(), 60.0)
        after = {"rss_mb": self.alive().memory()["value"], "deploys_idle": bool(idle)}
        sizes = self.sizes()
        results = dict(
            self.query(
                "SELECT result, count(*) FROM deploys WHERE id > ? GROUP BY result",
                (self.base_deploy,),
            )
        )
        done = self.deploys_done()
        if self.db is not None:
            self.db.close()
            self.db = None
        stop = self.daemon.stop()
        log = self.daemon.log_path.read_text(errors="replace")
        mb = 1024 * 1024
        last = self.samples[-1]
        window = min(SOAK_WINDOW_MIN, max(1, int(self.minutes // 2)))
        since = next(s for s in self.samples if s["minute"] >= last["minute"] - window - 1e-9)
        rss_growth = round(last["rss_mb"] - since["rss_mb"], 1)
        journal_max = round(self.journal_max / mb, 2)
        levelled = (
            rss_growth < TARGETS["soak_rss_growth_mb"] and journal_max < TARGETS["journal_mb"]
        )
        return emit(
            "soak",
            minutes=self.minutes,
            rate_per_s=self.rate,
            pull_delay_s=self.pull_delay,
            mix="of every 10: 1 push of a new commit (committed and pushed to the remote first),"
            " 1 push of the branch's head again with a new id, 1 redelivery of the last"
            " untracked push (same id), 1 ping, 6 pushes to an untracked branch",
            sent=self.sent,
            answered=self.answered,
            statuses={str(k): v for k, v in sorted(self.statuses.items())},
            errors=dict(self.errors),
            git_error=self.git_error,
            not_sent_backlog=self.not_sent,
            schedule_max_late_s=round(self.late, 3),
            kinds=dict(self.kinds),
            commits_pushed=self.commits,
            deploys_done=done,
            deploy_results_kept=results,
            failed_deploys=sum(n for r, n in results.items() if r not in ("deployed", "unchanged")),
            restarts=self.bench.restarts_count() - self.base_restarts,
            ack_ms=spread(self.latencies, 1000, 1),
            rss_mb=[s["rss_mb"] for s in self.samples],
            journal_mb=[s["journal_mb"] for s in self.samples],
            wal_mb=[s["wal_mb"] for s in self.samples],
            window_min=window,
            rss_growth_mb=rss_growth,
            journal_growth_mb=round(last["journal_mb"] - since["journal_mb"], 2),
            wal_growth_mb=round(last["wal_mb"] - since["wal_mb"], 2),
            journal_max_mb=journal_max,
            wal_max_mb=round(self.wal_max / mb, 2),
            after_drain={**after, "journal_mb": round((sizes["db"] + sizes["wal"]) / mb, 2)},
            levelled_off=levelled,
            verdict=(
                f"RSS grew {rss_growth} MB over the last {window} min (bound"
                f" {TARGETS['soak_rss_growth_mb']} MB); database + WAL peaked at {journal_max} MB"
                f" (bound {TARGETS['journal_mb']} MB)"
                + (
                    ""
                    if self.minutes >= 2 * SOAK_WINDOW_MIN
                    else "; a soak this short includes the warm-up in its window"
                )
            ),
            daemon={
                "stop_on_sigterm": stop,
                "log_critical": log.count("#critical]"),
                "log_errors": log.count("#error]"),
            },
            target=f"RSS growth over the last {window} min < {TARGETS['soak_rss_growth_mb']} MB,"
            f" database + WAL < {TARGETS['journal_mb']} MB throughout",
        )

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
        if self.daemon.alive():
            self.daemon.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument(
        "--pull-delay", type=float, default=2.0, help="seconds the remote waits before a fetch"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the daemon with py-spy during each load phase and print where time goes",
    )
    parser.add_argument(
        "--soak-minutes",
        type=float,
        default=10.0,
        help="length of the soak (a fresh daemon at --soak-rate deliveries/s); 0 skips it",
    )
    parser.add_argument(
        "--soak-rate", type=float, default=SOAK_RATE, help="deliveries per second in the soak"
    )
    parser.add_argument(
        "--soak-pull-delay",
        type=float,
        default=0.5,
        help="seconds the remote waits before a fetch during the soak",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=("journal-size", "soak"),
        help="run only this figure (repeatable); the other phases are skipped",
    )
    args = parser.parse_args(argv)
    if args.soak_minutes < 0 or args.soak_rate <= 0 or args.soak_pull_delay < 0:
        parser.error("--soak-minutes and --soak-pull-delay must be >= 0, --soak-rate > 0")
    tmp = Path(tempfile.mkdtemp(prefix="ghhook-bench-"))
    bench = Bench(
        tmp, args.seconds, args.pull_delay, args.soak_minutes, args.soak_rate, args.soak_pull_delay
    )
    try:
        if args.profile:
            bench.pyspy = pyspy.find()
            if bench.pyspy is None:
                raise CannotRun("--profile needs py-spy: .venv/bin/pip install py-spy")
        bench.run(args.only)
    except CannotRun as e:
        say(f"could not run: {e}")
        return 1
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, sqlite3.Error) as e:
        tail = bench.daemon.log_tail() if bench.daemon else ""
        say(f"could not run: {e!r}\ndaemon log ends:\n{tail}")
        return 1
    finally:
        bench.close()
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
