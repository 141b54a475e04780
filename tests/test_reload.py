"""SIGHUP: the top service reads the config file again, or changes nothing."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import attrs
import pytest
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs

from ghhook.config import ConfigError, DaemonSettings
from ghhook.service import SHOWN_PROBLEMS, GhhookService, SignalHandlers


@attrs.define
class StubEngines:
    settings: Any
    applied: list[Any] = attrs.field(factory=list)
    changes: list[str] = attrs.field(factory=lambda: ["app api added"])

    def apply(self, new: Any) -> list[str]:
        self.applied.append(new)
        self.settings = new
        return self.changes


OLD = DaemonSettings(apps=(), source="/etc/ghhook/ghhook.toml")
NEW = attrs.evolve(OLD, parallel=5)


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """The socket systemd reads notifications on."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        yield sock


def told(sock: socket.socket) -> list[bytes]:
    found = []
    while True:
        try:
            found.append(sock.recv(4096))
        except BlockingIOError:
            return found


class StubJournal:
    def checkpoint(self) -> str:
        return "PASSIVE"


def top(load: Any, reloaded: list[Any]) -> tuple[GhhookService, StubEngines]:
    engines = StubEngines(OLD)
    service = GhhookService(
        cast(Any, StubJournal()),
        cast(Any, engines),
        Clock(),
        load=load,
        on_reload=lambda old, new: reloaded.append((old, new)),
    )
    return service, engines


def test_a_good_file_is_applied_between_reloading_and_ready(systemd: socket.socket) -> None:
    reloaded: list[Any] = []
    service, engines = top(lambda: NEW, reloaded)
    service.config_error = "left from a failed reload"
    with capturedLogs() as events:
        service.reload()
    assert engines.applied == [NEW] and reloaded == [(OLD, NEW)]
    assert service.config_error is None
    assert [e["change"] for e in events if "change" in e] == ["app api added"]
    reloading, ready = told(systemd)
    assert reloading.startswith(b"RELOADING=1\nMONOTONIC_USEC=")
    assert int(reloading.split(b"=")[-1]) > 0
    assert ready == b"READY=1"


def test_a_file_with_problems_changes_nothing(systemd: socket.socket) -> None:
    problems = [f"ghhook.toml: apps.a{n}.restrat: unknown key 'restrat'" for n in range(7)]

    def load() -> DaemonSettings:
        raise ConfigError(problems)

    reloaded: list[Any] = []
    service, engines = top(load, reloaded)
    with capturedLogs() as events:
        service.reload()
    assert engines.applied == [] and engines.settings is OLD
    assert reloaded == [(OLD, None)]
    errors = [e for e in events if e["log_level"] == LogLevel.error]
    assert [e["problem"] for e in errors if "problem" in e] == problems, "one line each"
    assert service.config_error is not None
    lines = service.config_error.splitlines()
    assert lines[:SHOWN_PROBLEMS] == problems[:SHOWN_PROBLEMS]
    assert lines[SHOWN_PROBLEMS:] == ["and 2 more (see the log)"]
    assert told(systemd)[-1] == b"READY=1", "systemd is told the reload ended, failed or not"


@pytest.mark.expect_logged_failure
def test_a_bug_in_a_reload_leaves_the_daemon_serving(systemd: socket.socket) -> None:
    def load() -> DaemonSettings:
        raise RuntimeError("a bug")

    reloaded: list[Any] = []
    service, engines = top(load, reloaded)
    service.reload()
    assert engines.settings is OLD and service.config_error is not None
    assert told(systemd)[-1] == b"READY=1"


class Reactor:
    """Runs what a signal handler hands over at once."""

    def callFromThread(self, f: Any, *args: Any) -> None:
        f(*args)

    def stop(self) -> None:
        raise AssertionError("SIGHUP must not stop ghhook")


def test_sighup_reloads_when_there_is_a_config_file() -> None:
    reloads: list[None] = []
    handlers = SignalHandlers(Reactor(), reload=lambda: reloads.append(None))
    handlers.install()
    try:
        handler = signal.getsignal(signal.SIGHUP)
        assert callable(handler)
        handler(signal.SIGHUP, None)
    finally:
        handlers.uninstall()
    assert reloads == [None]
