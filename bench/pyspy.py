"""
Sample the daemon with py-spy during a load phase and say where its time goes.

py-spy runs ``--nonblocking`` (the daemon is never paused) and writes
collapsed stacks; :func:`summarize` puts each sample in the bucket of the
innermost frame that names one (so a log call made by the journal counts as
logging, a journal write made by the hook counts as journal), and lists the
functions most often on top of the stack.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

#: (bucket, substrings of "function (file" that put a frame in it), innermost wins.
BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    ("logging: twisted.logger events and the access log", ("Logger.emit", "HTTPFactory.log")),
    ("journal: sqlite writes and reads", ("Journal.",)),
    ("content-type parsing by twisted.web (email package)", ("_parseContentType",)),
    ("signature: hmac", ("verify (ghhook/signature",)),
    ("body: json parsing and push fields", ("parse_body", "parse_push", "decide (ghhook")),
    ("routing: werkzeug map bind and match", ("Map.bind", "MapAdapter.match")),
    ("deploy engine: submit and coalesce", ("Deployer.submit",)),
    ("hook: the rest of Hook.hook", ("Hook.hook",)),
    ("klein: render, deferreds, error handling", ("KleinResource.render",)),
    ("twisted.web: request line and headers", ("HTTPChannel.lineReceived",)),
    ("twisted.web: response headers, body, finish", ("Request.write", "Request.finish")),
    ("twisted.web: the rest of a request", ("Request.", "HTTPChannel.", "LineReceiver.")),
    ("socket reads and writes", ("Connection.doRead", "doWrite", "writeSomeData")),
    ("reactor loop", ("EPollReactor.doPoll", "mainLoop")),
]

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*):(?P<line>\d+)\)$")


def find() -> str | None:
    """py-spy from the virtualenv that runs the benchmark, else from PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def start(
    pyspy: str, pid: int, seconds: float, output: Path, prefix: list[str]
) -> subprocess.Popen[bytes]:
    argv = [
        *prefix,
        pyspy,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        "250",
        "--format",
        "raw",
        "--output",
        str(output),
    ]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker != "site-packages/":
                path = path.split("/", 1)[-1]
            break
    return f"{match['function']} ({path})"


def summarize(raw: Path, top: int = 12) -> dict[str, Any]:
    buckets: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_short(f) for f in stack.split(";") if _FRAME.match(f)]
        if frames:
            leaves[frames[-1]] += n
        for frame in reversed(frames):
            bucket = next((b for b, keys in BUCKETS if any(k in frame for k in keys)), None)
            if bucket is not None:
                buckets[bucket] += n
                break
        else:
            buckets["other"] += n
    if not total:
        return {"samples": 0}

    def share(n: int) -> float:
        return round(100 * n / total, 1)

    return {
        "samples": total,
        "percent_by_bucket": {b: share(n) for b, n in buckets.most_common()},
        "percent_on_top_of_stack": [[f, share(n)] for f, n in leaves.most_common(top)],
    }
