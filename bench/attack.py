"""
The front door under attack, on loopback: the real ``twistd -n ghhook``
started with an open-file limit of soft 1,024 / hard 65,536 (as systemd
leaves a unit without LimitNOFILE= raised), then at once

- 2,000 drip connections, one header byte every 5 s, from 40 loopback
  addresses (50 each, under the per-address cap, so that the deadlines and
  not the cap must close them);
- 200 unsigned chunked uploads of 24 MB from 4 addresses, each kept alive
  after its body by a 1-byte chunk every 20 s;
- signed ping deliveries from 127.0.0.1, 20 a second, until the attack is
  over.

It prints one JSON line per figure with its target, then a summary line.
Everything is bounded: the attack stops after --max-seconds, every socket
is closed, the daemon is stopped (SIGTERM, SIGKILL after 20 s) and the
temporary directory removed (unless --keep).

    .venv/bin/python bench/attack.py                 # the checkout, as shipped
    .venv/bin/python bench/attack.py --root /tmp/wt  # another checkout (before/after)
    .venv/bin/python bench/attack.py --drips 200 --uploads 20   # smaller

It needs to run as root to give the daemon a hard limit above its own (or
a shell whose hard limit is already 65,536).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ghhook.payloads import delivery_headers, encode, ping_payload  # noqa: E402
from tests.gitfixture import GitFixture  # noqa: E402

SECRET = b"attack bench secret"
TWISTD = str(Path(sys.executable).parent / "twistd")
MB = 1024 * 1024


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    """The real daemon, from ``root`` (PYTHONPATH), with a given open-file limit."""

    def __init__(
        self, root: Path, work: Path, repo: Path, nofile: tuple[int, int], extra: list[str]
    ) -> None:
        self.port, self.admin_port = free_port(), free_port()
        self.log_path = work / "twistd.log"
        self.tmpdir = work / "daemon-tmp"
        self.tmpdir.mkdir()
        (work / "secret").write_bytes(SECRET + b"\n")
        self.nofile = nofile
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GHHOOK", "GITHUB"))}
        env.update(PYTHONPATH=str(root), TMPDIR=str(self.tmpdir))
        argv = [TWISTD, "-n", "--pidfile=", "ghhook", "--repo", str(repo)]
        argv += ["--secret-file", str(work / "secret"), "--state", str(work / "j.sqlite3")]
        # backlog=4096: what the shipped ghhook.socket asks of systemd.
        argv += ["--listen", f"tcp:{self.port}:interface=127.0.0.1:backlog=4096"]
        argv += ["--admin-listen", f"tcp:{self.admin_port}:interface=127.0.0.1", *extra]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=work,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=self._limit,
            )
        deadline = time.monotonic() + 30
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the daemon did not start:\n{self.log_path.read_text()}")
            time.sleep(0.05)

    def _limit(self) -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, self.nofile)

    def _answers(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.port}/healthz"
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def rss(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def descriptors(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def limits(self) -> str:
        text = Path(f"/proc/{self.process.pid}/limits").read_text()
        return " ".join(
            next(x for x in text.splitlines() if x.startswith("Max open files")).split()
        )

    def tmp_bytes(self) -> int:
        """Bytes in the daemon's TMPDIR, counting files it unlinked but holds open."""
        seen: dict[tuple[int, int], int] = {}
        for entry in self.tmpdir.rglob("*"):
            try:
                st = entry.stat()
            except OSError:
                continue
            seen[(st.st_dev, st.st_ino)] = st.st_blocks * 512
        fds = Path(f"/proc/{self.process.pid}/fd")
        for fd in fds.iterdir():
            try:
                target = os.readlink(fd)
                if target.startswith(str(self.tmpdir)):
                    st = fd.stat()
                    seen[(st.st_dev, st.st_ino)] = st.st_blocks * 512
            except OSError:
                continue
        return sum(seen.values())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def signed_ping() -> bytes:
    body = encode(ping_payload())
    head = [b"POST /github HTTP/1.1", b"Host: ghhook", b"Connection: close"]
    head += [f"{k}: {v}".encode() for k, v in delivery_headers(body, SECRET, "ping").items()]
    head.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class Attack:
    def __init__(self, daemon: Daemon, args: argparse.Namespace) -> None:
        self.daemon = daemon
        self.args = args
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        self.drip_open: list[float] = []  # seconds each drip stayed open
        self.drip_answers: list[bytes] = []
        self.drips_left = 0
        self.uploads: list[tuple[bytes, int, float]] = []  # status line, bytes sent, seconds
        self.uploads_left = 0
        self.deliveries: list[tuple[int, float]] = []  # status, seconds (-1: no answer)
        self.samples: list[dict[str, int]] = []
        self.log_start = 0
        self.elapsed = 0.0

    async def drip(self, source: str) -> None:
        port = self.daemon.port
        line = b"POST /github HTTP/1.1\r\nHost: ghhook\r\nX-Drip: " + b"a" * 10_000
        writer = None
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(source, 0)
            )
            start = self.loop.time()
            got = b""
            for byte in line:
                writer.write(bytes([byte]))
                try:
                    data = await asyncio.wait_for(reader.read(4096), timeout=5)
                except asyncio.TimeoutError:
                    continue
                got += data
                if not data:
                    break
                while data := await reader.read(4096):
                    got += data
                break
            self.drip_open.append(self.loop.time() - start)
            self.drip_answers.append(got[:12])
        except (ConnectionError, OSError):
            self.drip_answers.append(b"reset")
        finally:
            self.drips_left -= 1
            if writer is not None:
                writer.transport.abort()

    async def upload(self, source: str) -> None:
        port = self.daemon.port
        size = self.args.upload_mb * MB
        piece = b"x" * (64 * 1024)
        chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
        sent = 0
        writer = None
        status = b""
        start = self.loop.time()
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(source, 0)
            )
            writer.write(b"POST /github HTTP/1.1\r\nHost: ghhook\r\nX-GitHub-Event: push\r\n")
            writer.write(b"Transfer-Encoding: chunked\r\n\r\n")
            answer = asyncio.ensure_future(reader.read(4096))
            while sent < size and not answer.done():
                writer.write(chunk)
                await writer.drain()
                sent += len(piece)
            while not answer.done():  # a 1-byte chunk every 20 s, never the last one
                await asyncio.wait([answer], timeout=20)
                if not answer.done():
                    writer.write(b"1\r\nx\r\n")
                    await writer.drain()
            status = answer.result().split(b"\r\n", 1)[0]
        except (ConnectionError, OSError):
            status = status or b"reset"
        except asyncio.CancelledError:
            status = b"still open when the bench stopped"
            raise
        finally:
            self.uploads.append((status, sent, self.loop.time() - start))
            self.uploads_left -= 1
            if writer is not None:
                writer.transport.abort()

    async def deliver(self, request: bytes) -> None:
        start = self.loop.time()
        writer = None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.daemon.port, local_addr=("127.0.0.1", 0)),
                timeout=10,
            )
            writer.write(request)
            answer = await asyncio.wait_for(reader.read(), timeout=10)
            code = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else -1
            self.deliveries.append((code, self.loop.time() - start))
        except (ConnectionError, OSError, asyncio.TimeoutError, ValueError):
            self.deliveries.append((-1, self.loop.time() - start))
        finally:
            if writer is not None:
                writer.transport.abort()

    async def deliveries_meanwhile(self) -> None:
        tasks = []
        interval = 1 / self.args.deliveries_per_s
        while not self.stop.is_set():
            tasks.append(asyncio.ensure_future(self.deliver(signed_ping())))
            try:
                await asyncio.wait_for(self.stop.wait(), timeout=interval)
            except asyncio.TimeoutError:
                pass
        await asyncio.gather(*tasks)

    async def monitor(self) -> None:
        log_start = self.log_start = self.daemon.log_path.stat().st_size
        while not self.stop.is_set():
            self.samples.append(
                {
                    "rss": self.daemon.rss(),
                    "tmp": self.daemon.tmp_bytes(),
                    "fds": self.daemon.descriptors(),
                    "log": self.daemon.log_path.stat().st_size - log_start,
                }
            )
            try:
                await asyncio.wait_for(self.stop.wait(), timeout=0.5)
            except asyncio.TimeoutError:
                pass

    async def run(self) -> float:
        args = self.args
        sources = [f"127.0.1.{n + 1}" for n in range(args.drip_addresses)]
        self.drips_left, self.uploads_left = args.drips, args.uploads
        monitor = asyncio.ensure_future(self.monitor())
        meanwhile = asyncio.ensure_future(self.deliveries_meanwhile())
        started = self.loop.time()
        tasks = []
        for n in range(args.uploads):
            tasks.append(asyncio.ensure_future(self.upload(f"127.0.2.{n % 4 + 1}")))
        for n in range(args.drips):
            tasks.append(asyncio.ensure_future(self.drip(sources[n % len(sources)])))
            if n % 100 == 99:
                await asyncio.sleep(0.05)  # opening pace: ~2,000 a second
        progress(f"{args.drips} drips and {args.uploads} uploads started")
        _, pending = await asyncio.wait(tasks, timeout=args.max_seconds)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        elapsed = self.elapsed = self.loop.time() - started
        self.stop.set()
        await asyncio.gather(monitor, meanwhile)
        return elapsed


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def figure(name: str, value: Any, target: str, met: Callable[[Any], bool] | None) -> dict[str, Any]:
    line = {"figure": name, "value": value, "target": target}
    if met is not None:
        line["met"] = bool(met(value))
    print(json.dumps(line), flush=True)
    return line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to run")
    parser.add_argument("--drips", type=int, default=2000)
    parser.add_argument("--drip-addresses", type=int, default=40)
    parser.add_argument("--uploads", type=int, default=200)
    parser.add_argument("--upload-mb", type=int, default=24)
    parser.add_argument("--deliveries-per-s", type=float, default=20)
    parser.add_argument("--max-seconds", type=float, default=100, help="the attack's bound")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--daemon-args", default="", help='more ghhook options, e.g. "--body-timeout 20"'
    )
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.drips + args.uploads + 1000
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, hard), max(want, hard)))
        except (OSError, ValueError):
            raise SystemExit(f"need {want} descriptors for the clients (ulimit -n)") from None
    work = Path(tempfile.mkdtemp(prefix="ghhook-attack-"))
    daemon = None
    try:
        git = GitFixture.create(work)
        extra = args.daemon_args.split()
        # Raising a hard limit needs CAP_SYS_RESOURCE: without it, the highest
        # hard limit the daemon can get is this process's own.
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nofile = (1024, 65536 if _can_raise_hard(65536) else min(65536, hard))
        daemon = Daemon(args.root.resolve(), work, git.clone, nofile, extra)
        progress(f"daemon pid {daemon.process.pid}: {daemon.limits()}")
        rss_before = daemon.rss()
        attack = asyncio.run(run_attack(daemon, args))
        log_text = daemon.log_path.read_text(errors="replace")
        daemon.stop()
        report(args, attack, rss_before, log_text)
    finally:
        if daemon is not None:
            daemon.stop()
        if args.keep:
            progress(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def _can_raise_hard(limit: int) -> bool:
    """Whether a child could be given a hard open-file limit of ``limit``."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import resource as r; r.setrlimit(r.RLIMIT_NOFILE, (1024, {limit}))",
        ],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


async def run_attack(daemon: Daemon, args: argparse.Namespace) -> Attack:
    attack = Attack(daemon, args)
    elapsed = await attack.run()
    progress(f"attack over after {elapsed:.1f} s")
    return attack


def report(args: argparse.Namespace, attack: Attack, rss_before: int, log_text: str) -> None:
    answered = [s for code, s in attack.deliveries if 200 <= code < 300]
    sent = len(attack.deliveries)
    lines = []
    lines.append(
        figure(
            "signed_deliveries_answered_share",
            round(len(answered) / sent, 4) if sent else None,
            f">= 0.99 of {sent} sent during the attack",
            lambda v: v is not None and v >= 0.99,
        )
    )
    lines.append(
        figure(
            "signed_delivery_p99_ms",
            round(percentile(answered, 0.99) * 1000, 1),
            "< 50",
            lambda v: v < 50,
        )
    )
    figure("signed_delivery_p50_ms", round(percentile(answered, 0.5) * 1000, 1), "-", None)
    still_open = args.drips - len(attack.drip_open)
    lines.append(
        figure(
            "drip_closed_within_s_max",
            round(max(attack.drip_open), 2) if attack.drip_open else None,
            f"<= 15 for all {args.drips} drips ({still_open} not closed)",
            lambda v: v is not None and v <= 15 and still_open == 0,
        )
    )
    held = sum(1 for a in attack.drip_answers if a.startswith(b"HTTP/1.1 408"))
    figure("drips_held_until_the_deadline", held, "-", None)
    statuses: dict[str, int] = {}
    for status, _, _ in attack.uploads:
        key = status.decode(errors="replace") or "closed without an answer"
        statuses[key] = statuses.get(key, 0) + 1
    figure("unsigned_upload_outcomes", statuses, "-", None)
    lines.append(
        figure(
            "unsigned_upload_longest_s",
            round(max((s for _, _, s in attack.uploads), default=0), 1),
            "<= 60 (the body deadline) + a little, every one closed by the daemon",
            lambda v: v <= 65 and "still open when the bench stopped" not in statuses,
        )
    )
    peak_rss = max(s["rss"] for s in attack.samples)
    lines.append(
        figure(
            "daemon_rss_growth_mb",
            round((peak_rss - rss_before) / MB, 1),
            "bodies held within the 64 MB budget (plus per-connection state)",
            None,
        )
    )
    figure("daemon_rss_peak_mb", round(peak_rss / MB, 1), "-", None)
    lines.append(
        figure(
            "daemon_tmpdir_peak_bytes",
            max(s["tmp"] for s in attack.samples),
            "0: bodies are never spooled to disk",
            lambda v: v == 0,
        )
    )
    figure("daemon_descriptors_peak", max(s["fds"] for s in attack.samples), "-", None)
    during = log_text.encode()[attack.log_start :].decode(errors="replace").splitlines()
    # Each signed delivery logs that it was answered: legitimate traffic's lines.
    attack_lines = [line for line in during if not re.search(r"\] ping \S+ answered$", line)]
    attack_bytes = sum(len(line) + 1 for line in attack_lines)
    figure("log_bytes_total_during_attack", sum(len(x) + 1 for x in during), "-", None)
    allowed = 400 * (attack.elapsed / 10 + 2)
    lines.append(
        figure(
            "log_bytes_caused_by_the_attack",
            attack_bytes,
            f"<= {allowed:.0f}: a summary line per 10 s (not counting the deliveries' own lines)",
            lambda v: v <= allowed,
        )
    )
    summaries = [
        line for line in log_text.splitlines() if "refused " in line or "rejected " in line
    ]
    figure("summary_lines", summaries[-3:], "-", None)
    missed = [line["figure"] for line in lines if line.get("met") is False]
    print(
        json.dumps({"summary": "targets met" if not missed else "targets missed", "missed": missed})
    )


if __name__ == "__main__":
    raise SystemExit(main())
