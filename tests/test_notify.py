"""sd_notify against real AF_UNIX datagram sockets, path and abstract."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.logger import LogLevel, capturedLogs

from ghhook.notify import notify, notify_address


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound in tmp_path, and the NOTIFY_SOCKET naming it."""
    path = tmp_path / "notify"
    if len(str(path)) >= 100:  # sun_path holds 108 bytes
        pytest.skip(f"{path} is too long for a Unix socket address")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(10)
        yield sock, str(path)


@pytest.fixture
def abstract_receiver() -> Iterator[tuple[socket.socket, str]]:
    name = f"ghhook-test-{uuid.uuid4()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(10)
        yield sock, "@" + name


def test_ready_reaches_a_socket_in_the_file_system(receiver: tuple[socket.socket, str]) -> None:
    sock, name = receiver
    assert notify(b"READY=1", {"NOTIFY_SOCKET": name}) is True
    assert sock.recv(4096) == b"READY=1"


def test_ready_reaches_an_abstract_socket(abstract_receiver: tuple[socket.socket, str]) -> None:
    sock, name = abstract_receiver
    assert notify(b"READY=1\nSTATUS=serving", {"NOTIFY_SOCKET": name}) is True
    assert sock.recv(4096) == b"READY=1\nSTATUS=serving"


def test_the_process_environment_is_the_default(
    receiver: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, name = receiver
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    assert notify(b"STOPPING=1") is True
    assert sock.recv(4096) == b"STOPPING=1"


@pytest.mark.parametrize("environ", [{}, {"NOTIFY_SOCKET": ""}])
def test_outside_systemd_nothing_is_sent(environ: dict[str, str]) -> None:
    with capturedLogs() as events:
        assert notify(b"READY=1", environ) is False
    assert events == []


@pytest.mark.parametrize("name", ["vsock:2:1234", "relative/path", "@"])
def test_an_unsupported_address_is_reported_not_raised(name: str) -> None:
    with capturedLogs() as events:
        assert notify(b"READY=1", {"NOTIFY_SOCKET": name}) is False
    assert [e["log_level"] for e in events] == [LogLevel.warn]
    assert events[0]["socket"] == name


def test_a_missing_socket_is_reported_not_raised(tmp_path: Path) -> None:
    missing = str(tmp_path / "gone")
    with capturedLogs() as events:
        assert notify(b"READY=1", {"NOTIFY_SOCKET": missing}) is False
    assert [e["log_level"] for e in events] == [LogLevel.warn]
    assert events[0]["socket"] == missing
    assert events[0]["error"]


def test_a_full_socket_does_not_block(receiver: tuple[socket.socket, str]) -> None:
    # Nobody reads: the receiver's queue fills (net.unix.max_dgram_qlen,
    # 10 by default) and a blocking send would hang here forever.
    sock, name = receiver
    sent = 0
    with capturedLogs() as events:
        while notify(b"WATCHDOG=1", {"NOTIFY_SOCKET": name}):
            sent += 1
            assert sent < 100_000, "the queue never filled"
    assert sent > 0
    assert [e["log_level"] for e in events] == [LogLevel.warn]
    assert sock.recv(4096) == b"WATCHDOG=1"


def test_addresses() -> None:
    assert notify_address({"NOTIFY_SOCKET": "/run/systemd/notify"}) == b"/run/systemd/notify"
    assert notify_address({"NOTIFY_SOCKET": "@name"}) == b"\0name"
    assert notify_address({"NOTIFY_SOCKET": "relative"}) is None
    assert notify_address({}) is None
