"""SIGHUP: the top service reads the config file again, or changes nothing."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import attrs
import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs

from ghhook.config import AppSettings, ConfigError, DaemonSettings
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

    def stop(self) -> Deferred[None]:
        return succeed(None)


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

    def close(self) -> None:
        pass


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


def app(name: str, repo: str) -> AppSettings:
    return AppSettings(
        repo=repo, git_dir=f"{repo}/.git", remote="origin", branch="main", git="git", name=name
    )


def test_git_is_asked_about_new_clones_only_and_its_refusal_changes_nothing(
    systemd: socket.socket,
) -> None:
    old = attrs.evolve(OLD, apps=(app("blog", "/srv/blog"),))
    new = attrs.evolve(old, apps=(app("blog", "/srv/blog"), app("api", "/srv/api")))
    asked: list[list[str]] = []
    answer: Deferred[list[str]] = Deferred()

    def check(apps: list[AppSettings]) -> Deferred[list[str]]:
        asked.append([each.name for each in apps])
        return answer

    engines = StubEngines(old)
    service = GhhookService(
        cast(Any, StubJournal()), cast(Any, engines), Clock(), load=lambda: new, check_clones=check
    )
    done: list[None] = []
    service.reload().addCallback(done.append)
    assert asked == [["api"]], "blog's clone was checked at start"
    assert done == []
    reloading = told(systemd)
    assert len(reloading) == 1 and reloading[0].startswith(b"RELOADING=1")
    service.reload()  # a second SIGHUP while git is asked
    assert asked == [["api"]]
    answer.callback(["ghhook.toml: apps.api.repo: git refuses to work in it (dubious ownership)"])
    assert done == [None]
    assert engines.applied == [] and engines.settings is old
    assert service.config_error == (
        "ghhook.toml: apps.api.repo: git refuses to work in it (dubious ownership)"
    )


def test_a_stop_while_git_is_asked_applies_nothing() -> None:
    answer: Deferred[list[str]] = Deferred()
    engines = StubEngines(OLD)
    service = GhhookService(
        cast(Any, StubJournal()),
        cast(Any, engines),
        Clock(),
        load=lambda: NEW,
        check_clones=lambda apps: answer,
    )
    service.reload()
    service.stopService()  # SIGTERM while git is asked
    answer.callback([])
    assert engines.applied == []
