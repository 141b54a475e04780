"""
End to end: the real ``twistd ghhook`` under a flood of slow connections on
loopback, its open-file limit, and its refusal of bad front-door settings.
Bounded: a few hundred sockets, a 2 s header deadline.
"""

from __future__ import annotations

import resource
import selectors
import socket
from pathlib import Path

import pytest

from ghhook.frontdoor import RESERVED_DESCRIPTORS
from ghhook.payloads import delivery_headers, encode, ping_payload
from tests.daemon import SECRET, Daemon, environment, eventually, ghhook, run_twistd
from tests.gitfixture import GitFixture

pytestmark = pytest.mark.e2e


def signed_ping() -> bytes:
    body = encode(ping_payload())
    headers = delivery_headers(body, SECRET, "ping")
    head = [b"POST /github HTTP/1.1", b"Host: ghhook", b"Connection: close"]
    head += [f"{k}: {v}".encode() for k, v in headers.items()]
    head.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def drips(port: int, source: str, count: int) -> list[socket.socket]:
    """Connections from ``source`` that send a request line and stop there."""
    opened = []
    for _ in range(count):
        s = socket.socket()
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        s.sendall(b"POST /github HTTP/1.1\r\nHost: ghhook\r\nX-Drip: ")
        s.setblocking(False)
        opened.append(s)
    return opened


def read_until_closed(sockets: list[socket.socket], within: float) -> dict[socket.socket, bytes]:
    """What each socket received until the daemon closed it (within ``within`` s)."""
    got: dict[socket.socket, bytes] = {s: b"" for s in sockets}
    selector = selectors.DefaultSelector()
    for s in sockets:
        selector.register(s, selectors.EVENT_READ)
    left = set(sockets)

    def step() -> bool:
        for key, _ in selector.select(timeout=0.1):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                data = b""
            got[s] += data
            if not data:
                selector.unregister(s)
                left.discard(s)
        return not left

    try:
        eventually(step, within=within, what=f"{len(left)} connections still open")
    finally:
        selector.close()
        for s in sockets:
            s.close()
    return got


def ask(port: int, request: bytes, source: str = "127.0.0.1") -> bytes:
    """Send ``request`` and read the answer; b"" when the daemon closed at once."""
    with socket.socket() as s:
        s.settimeout(10)
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        answer = b""
        try:
            s.sendall(request)
            while data := s.recv(65536):
                answer += data
        except (ConnectionResetError, BrokenPipeError):
            pass
        return answer


def test_a_flood_of_drips_is_turned_away_and_closed_by_the_header_deadline(
    git: GitFixture, tmp_path: Path
) -> None:
    daemon = Daemon(
        tmp_path,
        git.clone,
        "--max-connections",
        "100",
        "--max-per-address",
        "64",
        "--header-timeout",
        "2",
        listen_options=":backlog=1024",
    ).start()
    try:
        first = drips(daemon.port, "127.0.0.2", 150)  # 64 held, 86 past the per-address cap
        second = drips(daemon.port, "127.0.0.3", 150)  # 36 held, then the total cap
        assert ask(daemon.port, signed_ping(), "127.0.0.4") == b"", "all 100 taken"
        got = read_until_closed(first + second, within=20)
        held = [data for data in got.values() if data]
        assert len(held) == 100
        assert all(data.startswith(b"HTTP/1.1 408 Request Timeout\r\n") for data in held)
        assert b"headers did not arrive within 2 s" in held[0]
        answer = ask(daemon.port, signed_ping(), "127.0.0.4")
        assert answer.startswith(b"HTTP/1.1 200 "), answer
    finally:
        daemon.stop()
    log = daemon.log()
    assert "127.0.0.2" not in log and "127.0.0.3" not in log, "no line per connection"
    (summary,) = [line for line in log.splitlines() if "refused" in line]
    assert "refused 201 connections in the last 10 s: " in summary
    assert "115 too many open" in summary and "86 too many from one address" in summary
    assert "rejected 100 requests in the last 10 s: past the header deadline" in summary


def test_the_soft_open_file_limit_is_raised_to_the_hard_limit(
    git: GitFixture, tmp_path: Path
) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] != hard:
        pytest.skip("this process's own limit is not at its hard limit")
    daemon = Daemon(tmp_path, git.clone, nofile=(256, hard)).start()
    try:
        assert daemon.process is not None
        limits = Path(f"/proc/{daemon.process.pid}/limits").read_text()
        (line,) = [line for line in limits.splitlines() if line.startswith("Max open files")]
        assert line.split()[3:5] == [str(hard), str(hard)]
    finally:
        daemon.stop()
    assert f"raised the open-file limit from 256 to {hard}, its hard limit" in daemon.log()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--max-inflight", "64X"], "--max-inflight 64X: not a number of bytes"),
        (["--max-inflight", "0"], "--max-inflight 0: must be a positive number of bytes"),
        (["--header-timeout", "0"], "--header-timeout 0: must be a positive number"),
        (["--body-timeout", "soon"], "--body-timeout soon: not a number of seconds"),
        (["--header-timeout", "30", "--body-timeout", "20"], "must be at least --header-timeout"),
        (["--max-per-address", "0"], "--max-per-address 0: must be a positive whole number"),
        (["--max-connections", str(1 << 40)], "the open-file hard limit"),
    ],
)
def test_bad_front_door_settings_are_refused_with_one_line(
    git: GitFixture, tmp_path: Path, args: list[str], fragment: str
) -> None:
    done = run_twistd(
        ghhook(git, *args, twistd=("-n", "--pidfile=")),
        tmp_path,
        environment(GHHOOK_SECRET="s"),
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ghhook: "), done.stderr
    assert fragment in lines[0]
    assert "Traceback" not in done.stdout + done.stderr


def test_help_documents_the_front_door(tmp_path: Path) -> None:
    done = run_twistd(["ghhook", "--help"], tmp_path)
    for option in (
        "--max-inflight",
        "--header-timeout",
        "--body-timeout",
        "--max-connections",
        "--max-per-address",
    ):
        assert option in done.stdout
    assert f"minus {RESERVED_DESCRIPTORS}" in done.stdout
