"""
The tap's glue in memory: the journal's checkpoint loop on a Clock, the
signal handlers on a fake reactor, start-up refusals of GhhookService, and
the options' start-up checks against real clones.
"""

from __future__ import annotations

import gc
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import attrs
import pytest
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.error import CannotListenError, ReactorNotRunning
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure

from ghhook.checks import run_as
from ghhook.config import DaemonSettings
from ghhook.journal import JournalError
from ghhook.service import (
    CHECKPOINT_INTERVAL,
    Checkpoints,
    GhhookService,
    SignalHandlers,
    _fit,
)
from ghhook.tap import Options, makeService
from tests.gitfixture import GitFixture
from tests.gitfixture import git as run_git

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to act as another user")
FULL = sqlite3.OperationalError("database or disk is full")


def ours(events: Any) -> list[dict[str, Any]]:
    return [e for e in events if e.get("log_namespace") == "ghhook"]


# The checkpoint loop


class Checkpointed:
    """A journal's checkpoint that raises the errors it is given, in turn."""

    def __init__(self, *outcomes: Exception | None) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome
        return "PASSIVE"


def at_once(work: Callable[[], object]) -> Deferred[object]:
    """The thread pool, without threads."""
    return maybeDeferred(work)


def test_a_failing_checkpoint_is_logged_once_and_the_loop_goes_on() -> None:
    clock = Clock()
    checkpoint = Checkpointed(FULL, FULL, FULL, None, None, OSError(5, "Input/output error"))
    loop = Checkpoints(checkpoint, clock, at_once)
    with capturedLogs() as events:
        loop.start(30.0)
        clock.advance(29.0)
        assert checkpoint.calls == 0, "the first checkpoint waits an interval"
        for _ in range(6):
            clock.advance(30.0)
    assert checkpoint.calls == 6 and loop.running
    logged = [(e["log_level"], e.get("error")) for e in ours(events)]
    assert logged == [
        (LogLevel.error, "database or disk is full"),
        (LogLevel.info, None),
        (LogLevel.error, "[Errno 5] Input/output error"),
    ]
    assert ours(events)[0]["interval"] == 30.0
    loop.stop()
    assert not loop.running and clock.getDelayedCalls() == []


@pytest.mark.expect_logged_failure
def test_an_unexpected_checkpoint_error_is_logged_with_its_traceback_once() -> None:
    clock = Clock()
    checkpoint = Checkpointed(TypeError("a bug"), TypeError("a bug"))
    loop = Checkpoints(checkpoint, clock, at_once)
    with capturedLogs() as events:
        loop.start(30.0)
        clock.advance(30.0)
        clock.advance(30.0)
    failures = [e for e in ours(events) if "log_failure" in e]
    assert len(failures) == 1 and failures[0]["log_failure"].check(TypeError)
    assert checkpoint.calls == 2 and loop.running
    loop.stop()


class ThreadlessReactor(Clock):
    """A Clock whose thread pool runs work at once, as deferToThreadPool expects."""

    def __init__(self) -> None:
        super().__init__()
        self.stopped = 0

    def callFromThread(self, f: Callable[..., object], *args: object, **kw: object) -> None:
        f(*args, **kw)

    def getThreadPool(self) -> ThreadlessReactor:
        return self

    def callInThreadWithCallback(
        self, on_result: Callable[[bool, object], None], f: Callable[..., object], *a: object
    ) -> None:
        try:
            result = f(*a)
        except Exception:  # noqa: BLE001 - handed over as deferToThreadPool's pool does
            on_result(False, Failure())
        else:
            on_result(True, result)

    def stop(self) -> None:
        self.stopped += 1
        if self.stopped > 1:
            raise ReactorNotRunning()


class StubJournal:
    def __init__(
        self, open_error: JournalError | None = None, checkpoint: Checkpointed | None = None
    ) -> None:
        self.open_error = open_error
        self.checkpoint = checkpoint or Checkpointed()
        self.opened = self.closed = False

    def open(self, upgrade_app: str = "app") -> StubJournal:
        self.upgrade_app = upgrade_app
        if self.open_error is not None:
            raise self.open_error
        self.opened = True
        return self

    def checkpoint_elsewhere(self) -> None:
        pass

    def close_unfinished(self, finished: float, exclude: Any = ()) -> list[int]:
        return []

    def values(self, key: str) -> dict[str, str]:
        return {}

    def close(self) -> None:
        self.closed = True


@attrs.frozen
class StubApp:
    name: str = "app"


@attrs.frozen
class StubSettings:
    apps: tuple[StubApp, ...] = (StubApp(),)


class StubEngines:
    """What the top service asks of the engines: start them, stop them."""

    settings = StubSettings()

    def __init__(self, start_error: JournalError | None = None) -> None:
        self.start_error = start_error
        self.started = self.stopped = False

    def start(self) -> None:
        if self.start_error is not None:
            raise self.start_error
        self.started = True

    def stop(self) -> Deferred[None]:
        self.stopped = True
        return succeed(None)


def service(
    journal: StubJournal,
    engines: StubEngines | None = None,
    reactor: Any = None,
    twistd: dict[str, Any] | None = None,
) -> GhhookService:
    return GhhookService(
        cast(Any, journal), cast(Any, engines or StubEngines()), reactor or Clock(), twistd
    )


@pytest.fixture
def unfreeze() -> Iterator[None]:
    """startService freezes the collector's view of the heap; give it back."""
    yield
    gc.unfreeze()


def test_the_services_checkpoints_survive_a_failing_checkpoint(unfreeze: None) -> None:
    reactor = ThreadlessReactor()
    journal = StubJournal(checkpoint=Checkpointed(FULL, FULL))
    top = service(journal, reactor=reactor)
    with capturedLogs() as events:
        top.startService()
        try:
            for _ in range(4):
                reactor.advance(CHECKPOINT_INTERVAL)
            assert journal.checkpoint.calls == 4, "the loop outlived two failures"
        finally:
            top.stopService()
    assert journal.checkpoint.calls == 5, "and one more at stop"
    assert journal.closed and reactor.getDelayedCalls() == []
    errors = [e for e in ours(events) if e["log_level"] == LogLevel.error]
    assert len(errors) == 1 and errors[0]["error"] == "database or disk is full"


def test_a_failing_last_checkpoint_still_closes_the_journal(unfreeze: None) -> None:
    journal = StubJournal(checkpoint=Checkpointed(FULL))
    top = service(journal, reactor=ThreadlessReactor())
    top.startService()
    with capturedLogs() as events:
        top.stopService()
    assert journal.closed
    assert [e["error"] for e in ours(events) if e["log_level"] == LogLevel.error] == [str(FULL)]


# Signals


@pytest.fixture
def handlers() -> Iterator[tuple[SignalHandlers, ThreadlessReactor]]:
    reactor = ThreadlessReactor()
    signals = SignalHandlers(reactor)
    before = {n: signal.getsignal(n) for n in (signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1)}
    signals.install()
    try:
        yield signals, reactor
    finally:
        signals.uninstall()
        assert {n: signal.getsignal(n) for n in before} == before, "the handlers are given back"


def deliver(number: int) -> None:
    """Run the handler installed for ``number`` as the interpreter would."""
    handler = signal.getsignal(number)
    assert callable(handler)
    handler(number, None)


def test_sighup_logs_that_there_is_nothing_to_reload(
    handlers: tuple[SignalHandlers, ThreadlessReactor],
) -> None:
    _, reactor = handlers
    with capturedLogs() as events:
        deliver(signal.SIGHUP)
    assert [e["signal"] for e in ours(events)] == ["SIGHUP"]
    assert "nothing to reload" in ours(events)[0]["log_format"]
    assert reactor.stopped == 0


@pytest.mark.parametrize("number", [signal.SIGQUIT, signal.SIGUSR2])
def test_sigquit_and_sigusr2_stop_the_reactor_once(
    handlers: tuple[SignalHandlers, ThreadlessReactor], number: int
) -> None:
    _, reactor = handlers
    with capturedLogs() as events:
        deliver(number)
        deliver(number)  # while stopping: the reactor says it is not running
    assert reactor.stopped == 2
    assert [e["signal"] for e in ours(events)] == [signal.Signals(number).name] * 2


def test_sigusr1_is_harmless_when_twistd_rotates_no_logfile(
    handlers: tuple[SignalHandlers, ThreadlessReactor],
) -> None:
    _, reactor = handlers
    with capturedLogs() as events:
        deliver(signal.SIGUSR1)
    assert [e["signal"] for e in ours(events)] == ["SIGUSR1"] and reactor.stopped == 0


def test_twistds_log_rotation_on_sigusr1_is_kept() -> None:
    rotated: list[int] = []

    def rotate(number: int, frame: object) -> None:
        rotated.append(number)

    previous = signal.signal(signal.SIGUSR1, rotate)
    signals = SignalHandlers(ThreadlessReactor())
    try:
        signals.install()
        deliver(signal.SIGUSR1)
        assert rotated == [signal.SIGUSR1]
        signals.uninstall()
        assert signal.getsignal(signal.SIGUSR1) is rotate
    finally:
        signals.uninstall()
        signal.signal(signal.SIGUSR1, previous)


def test_the_service_installs_the_handlers_and_gives_them_back(unfreeze: None) -> None:
    before = signal.getsignal(signal.SIGQUIT)
    top = service(StubJournal(), reactor=ThreadlessReactor())
    top.startService()
    try:
        assert signal.getsignal(signal.SIGQUIT) != before
    finally:
        top.stopService()
    assert signal.getsignal(signal.SIGQUIT) == before


# Start-up refusals


class Endpoint:
    """A server endpoint that listens, or fails as twistd's bind would."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.listening = False

    def listen(self, factory: object) -> Deferred[Endpoint]:
        if self.error is not None:
            return fail(self.error)
        self.listening = True
        return succeed(self)

    def stopListening(self) -> None:
        self.listening = False


def listener(endpoint: Endpoint) -> StreamServerEndpointService:
    listening = StreamServerEndpointService(endpoint, Factory())
    listening._raiseSynchronously = True  # as strports.service does
    return listening


class Twistd:
    """twistd's options as a daemonizing twistd leaves them: a pidfile, a status pipe."""

    def __init__(self, tmp_path: Path) -> None:
        self.pidfile = tmp_path / "twistd.pid"
        self.pidfile.write_text(str(os.getpid()))
        self.parent_end, child_end = os.pipe()
        self.options: dict[str, Any] = {"pidfile": str(self.pidfile), "statusPipe": child_end}

    def told(self) -> bytes:
        """What the waiting parent reads, once the child closed its end."""
        assert self.options["statusPipe"] is None, "the pipe was written and closed"
        return os.read(self.parent_end, 200)

    def close(self) -> None:
        os.close(self.parent_end)
        if self.options["statusPipe"] is not None:
            os.close(self.options["statusPipe"])


@pytest.fixture
def twistd(tmp_path: Path) -> Iterator[Twistd]:
    fake = Twistd(tmp_path)
    try:
        yield fake
    finally:
        fake.close()


def refusal(
    start: Callable[[], None], twistd: Twistd, capfd: pytest.CaptureFixture[str]
) -> tuple[str, list[dict[str, Any]]]:
    """The line on stderr and the critical events of a start that ends the daemon."""
    with capturedLogs() as events, pytest.raises(SystemExit) as exit:
        start()
    assert exit.value.code == 1
    assert not twistd.pidfile.exists(), "the pidfile is removed"
    line = the_line(capfd)
    assert twistd.told() == b"1 " + line.encode()
    return line, [e for e in ours(events) if e["log_level"] == LogLevel.critical]


def the_line(capfd: pytest.CaptureFixture[str]) -> str:
    """
    The line written to stderr. Before twistd begins logging, as in this test
    process, Twisted also prints critical events there: those are left out.
    """
    stderr = capfd.readouterr().err.splitlines()
    lines = [line for line in stderr if not line.startswith("ghhook cannot start: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_a_journal_error_at_start_ends_the_daemon_with_one_line(
    twistd: Twistd, capfd: pytest.CaptureFixture[str]
) -> None:
    reason = "cannot open the journal /var/lib/ghhook/ghhook.sqlite3: database is locked"
    before = signal.getsignal(signal.SIGQUIT)
    journal = StubJournal(open_error=JournalError(reason))
    engines = StubEngines()
    top = service(journal, engines, twistd=twistd.options)
    bound = Endpoint()
    top.listen("--listen", "tcp:8000", listener(bound))
    top.privilegedStartService()  # twistd binds before it drops privileges
    assert bound.listening
    line, critical = refusal(top.startService, twistd, capfd)
    assert line == f"ghhook: {reason}"
    assert [e["reason"] for e in critical] == [reason]
    assert not bound.listening, "nothing is left listening"
    assert not engines.started and not journal.closed
    assert signal.getsignal(signal.SIGQUIT) == before, "no handler installed"


def test_a_journal_error_from_the_engines_start_closes_what_was_opened(
    twistd: Twistd, capfd: pytest.CaptureFixture[str]
) -> None:
    journal = StubJournal()
    engines = StubEngines(JournalError("the journal /j failed: disk I/O error"))
    top = service(journal, engines, twistd=twistd.options)
    bound = Endpoint()
    top.listen("--admin-listen", "tcp:9000", listener(bound))
    top.privilegedStartService()
    line, _ = refusal(top.startService, twistd, capfd)
    assert line == "ghhook: the journal /j failed: disk I/O error"
    assert journal.closed and not bound.listening


def test_a_port_that_fails_to_bind_is_named_by_its_option(
    twistd: Twistd, capfd: pytest.CaptureFixture[str]
) -> None:
    first = Endpoint()
    taken = Endpoint(CannotListenError("127.0.0.1", 8000, OSError(98, "Address already in use")))
    top = service(StubJournal(), twistd=twistd.options)
    top.listen("--listen", "tcp:8000:interface=127.0.0.1", listener(first))
    top.listen("--admin-listen", "tcp:8000:interface=127.0.0.1", listener(taken))
    line, critical = refusal(top.privilegedStartService, twistd, capfd)
    assert line == (
        "ghhook: --admin-listen tcp:8000:interface=127.0.0.1: cannot listen: Address already in use"
    )
    assert len(critical) == 1
    assert not first.listening


def test_outside_twistd_a_refusal_only_exits(capfd: pytest.CaptureFixture[str]) -> None:
    top = service(StubJournal(open_error=JournalError("cannot open the journal /j: nope")))
    with pytest.raises(SystemExit):
        top.startService()
    assert the_line(capfd) == "ghhook: cannot open the journal /j: nope"


def test_a_long_line_for_the_status_pipe_is_cut_at_a_word() -> None:
    line = "ghhook: cannot open the journal " + "/very/long/path " * 10
    cut = _fit(line, 98)
    assert len(cut) <= 98 and cut.endswith(b"...")
    assert line.encode().startswith(cut[:-3]) and cut[:-3].endswith(b"/path")
    assert _fit("ghhook: short", 98) == b"ghhook: short"


# The options' start-up checks


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GHHOOK_SECRET", "s")


def parse(git: GitFixture, *args: str, parent: dict[str, Any] | None = None) -> Options:
    options = Options()
    if parent is not None:
        options.parent = parent  # twistd's own options, as twistd links them
    options.parseOptions(["--repo", str(git.clone), "--listen", "tcp:0", *args])
    return options


def refused(git: GitFixture, *args: str, parent: dict[str, Any] | None = None) -> str:
    with pytest.raises(SystemExit) as exit:
        parse(git, "--admin-listen", "none", *args, parent=parent)
    message = str(exit.value.code)
    assert message.startswith("ghhook: ") and "\n" not in message
    return message


@pytest.mark.usefixtures("secret")
def test_keep_deploys_reaches_the_journal(git: GitFixture, tmp_path: Path) -> None:
    options = parse(git, "--admin-listen", "none", "--state", str(tmp_path / "j.sqlite3"))
    assert options["settings"].keep_deploys == 1000
    options = parse(
        git, "--admin-listen", "none", "--state", str(tmp_path / "j.sqlite3"), "--keep-deploys", "7"
    )
    top = makeService(options, reactor=Clock())
    assert cast(GhhookService, top).journal.keep_deploys == 7


@pytest.mark.usefixtures("secret")
@pytest.mark.parametrize("value", ["0", "-1", "ten", "1.5", ""])
def test_keep_deploys_must_be_a_positive_whole_number(git: GitFixture, value: str) -> None:
    assert refused(git, "--keep-deploys", value).startswith(f"ghhook: --keep-deploys {value}:")


@pytest.mark.usefixtures("secret")
def test_a_branch_the_clone_is_not_on_is_refused(git: GitFixture) -> None:
    message = refused(git, "--branch", "prod")
    assert "is on branch main" in message and f"git -C {git.clone} switch prod" in message
    assert parse(git, "--admin-listen", "none", "--branch", "main")["branch"] == "main"


@pytest.mark.usefixtures("secret")
def test_a_detached_head_is_refused(git: GitFixture) -> None:
    run_git(git.clone, "checkout", "--quiet", "--detach")
    assert "HEAD is detached" in refused(git)
    assert "HEAD is detached" in refused(git, "--branch", "main")


@pytest.mark.usefixtures("secret")
def test_a_rebase_left_by_a_crash_counts_as_its_branch(git: GitFixture) -> None:
    """HEAD is detached during a rebase; the catch-up deploy aborts it."""
    run_git(git.clone, "checkout", "--quiet", "--detach")
    rebase = git.clone / ".git" / "rebase-merge"
    rebase.mkdir()
    (rebase / "head-name").write_text("refs/heads/main\n")
    assert parse(git, "--admin-listen", "none")["settings"].apps[0].branch == "main"
    assert "is on branch main" in refused(git, "--branch", "prod")


@pytest.mark.usefixtures("secret")
@pytest.mark.parametrize("option", ["--listen", "--admin-listen"])
def test_a_port_in_use_is_refused_by_its_option(git: GitFixture, option: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        endpoint = f"tcp:{busy.getsockname()[1]}:interface=127.0.0.1"
        with pytest.raises(SystemExit) as exit:
            parse(
                git, *(["--admin-listen", "none"] if option == "--listen" else []), option, endpoint
            )
    assert str(exit.value.code) == (
        f"ghhook: {option} {endpoint}: cannot listen on"
        f" 127.0.0.1:{endpoint.split(':')[1]}: Address already in use"
    )


@pytest.mark.usefixtures("secret")
def test_a_free_port_is_left_free(git: GitFixture) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    parse(git, "--admin-listen", f"tcp:{port}:interface=127.0.0.1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # the trial bind was closed


@pytest.mark.usefixtures("secret")
def test_a_pidfile_twistd_cannot_create_is_refused(git: GitFixture, tmp_path: Path) -> None:
    message = refused(git, parent={"pidfile": str(tmp_path / "no" / "twistd.pid")})
    assert (
        message == f"ghhook: --pidfile {tmp_path}/no/twistd.pid: no such directory: {tmp_path}/no"
    )


@as_root
@pytest.mark.usefixtures("secret")
def test_dubious_ownership_is_refused(git: GitFixture) -> None:
    for path in (git.clone, *git.clone.rglob("*")):
        os.lchown(path, NOBODY, NOBODY)
    message = refused(git)
    assert f"--repo {git.clone}: git refuses to work in it as root (uid 0)" in message
    assert "belongs to nobody (uid 65534) (dubious ownership)" in message
    assert f"safe.directory {git.clone}, with HOME={os.environ.get('HOME', '')}" in message


@pytest.fixture
def public() -> Iterator[GitFixture]:
    """A git fixture every user may read (pytest's tmp_path is root's alone)."""
    root = Path(tempfile.mkdtemp(prefix="ghhook-public-"))
    root.chmod(0o755)
    try:
        git = GitFixture.create(root)
        subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
        yield git
    finally:
        shutil.rmtree(root)


def as_nobody(run: Path, **more: Any) -> dict[str, Any]:
    return {"uid": NOBODY, "gid": None, "rundir": str(run), "pidfile": "", **more}


@as_root
@pytest.mark.usefixtures("secret")
def test_git_is_asked_as_the_uid_user(public: GitFixture) -> None:
    run = public.root / "run"
    run.mkdir()
    run.chmod(0o777)
    message = refused(public, parent=as_nobody(run))
    assert "as nobody (uid 65534), since it belongs to root (uid 0)" in message
    for path in (public.clone, *public.clone.rglob("*")):
        os.lchown(path, NOBODY, NOBODY)
    options = parse(public, "--admin-listen", "none", parent=as_nobody(run))
    user = run_as(options.twistd())
    assert user is not None and user.uid == NOBODY and user.gid == NOBODY


@as_root
@pytest.mark.usefixtures("secret")
def test_files_the_uid_user_cannot_write_are_refused(public: GitFixture) -> None:
    for path in (public.clone, *public.clone.rglob("*")):
        os.lchown(path, NOBODY, NOBODY)
    run = public.root / "run"
    run.mkdir(mode=0o755)
    message = refused(public, parent=as_nobody(run, pidfile=str(run / "twistd.pid")))
    assert message == (
        f"ghhook: --state {run}/ghhook.sqlite3: the --uid user nobody (uid 65534) cannot create"
        f" files in {run}, where the journal goes (and twistd's pidfile, removed at stop);"
        " make that directory writable by that user, or choose another --rundir"
    )
    shutil.chown(run, NOBODY)
    (run / "ghhook.sqlite3").write_bytes(b"")  # left by a run as root
    assert "cannot write" in refused(public, parent=as_nobody(run))
    (run / "ghhook.sqlite3").unlink()
    pids = public.root / "pids"
    pids.mkdir(mode=0o755)
    message = refused(public, parent=as_nobody(run, pidfile=str(pids / "twistd.pid")))
    assert message.startswith(f"ghhook: --pidfile {pids}/twistd.pid: the --uid user nobody")
    assert "could not remove the pidfile at stop" in message
    shutil.chown(pids, NOBODY)
    parse(public, "--admin-listen", "none", parent=as_nobody(run, pidfile=str(pids / "t.pid")))


# --config: the apps of a file instead of the single-repo options


def config_file(tmp_path: Path, git: GitFixture, text: str = "") -> Path:
    (tmp_path / "secret").write_text("s\n")
    file = tmp_path / "ghhook.toml"
    file.write_text(
        'listen = "tcp:0"\nadmin_listen = []\n'
        f'state = "{tmp_path / "j.sqlite3"}"\n'
        f'[defaults]\nsecret_file = "secret"\n[apps.site]\nrepo = "{git.clone}"\n{text}'
    )
    return file


def exit_lines(*args: str) -> list[str]:
    with pytest.raises(SystemExit) as exit:
        Options().parseOptions(list(args))
    lines = str(exit.value.code).splitlines()
    assert all(line.startswith("ghhook: ") for line in lines), lines
    return [line.removeprefix("ghhook: ") for line in lines]


def test_config_gives_the_files_settings(git: GitFixture, tmp_path: Path) -> None:
    options = Options()
    options.parseOptions(["--config", str(config_file(tmp_path, git))])
    settings = options["settings"]
    assert isinstance(settings, DaemonSettings)
    assert [app.name for app in settings.apps] == ["site"]
    assert settings.source == str(tmp_path / "ghhook.toml")
    assert settings.state == str(tmp_path / "j.sqlite3")


def test_config_and_repo_exclude_each_other(git: GitFixture, tmp_path: Path) -> None:
    file = config_file(tmp_path, git)
    assert exit_lines("--config", str(file), "--repo", str(git.clone), "--branch", "main") == [
        "give --config FILE or --repo PATH, not both"
    ]


def test_with_config_other_options_are_refused_naming_their_key(
    git: GitFixture, tmp_path: Path
) -> None:
    file = config_file(tmp_path, git)
    args = ["--config", str(file), "--branch", "main", "--listen", "tcp:0", "--name", "x"]
    assert exit_lines(*args) == [
        "--branch: with --config every setting is in the file; put it there as branch"
        " (in [defaults] or an app's table)",
        "--listen: with --config every setting is in the file; put it there as listen"
        " (at the top of the file)",
        "--name: with --config each app is named by its table in the file, [apps.NAME]",
    ]


def test_every_problem_of_the_file_is_a_line_of_its_own(git: GitFixture, tmp_path: Path) -> None:
    file = config_file(tmp_path, git, 'restrat = "x"\ntimeout = -1\n')
    assert exit_lines("--config", str(file)) == [
        f"{file}: apps.site.restrat: unknown key 'restrat'; did you mean 'restart'?",
        f"{file}: apps.site.timeout: must be a positive number of seconds",
    ]


@pytest.mark.usefixtures("secret")
def test_the_option_app_is_named_by_name_or_its_clone(git: GitFixture) -> None:
    assert parse(git, "--admin-listen", "none")["settings"].apps[0].name == "clone"
    options = parse(git, "--admin-listen", "none", "--name", "site")
    assert options["settings"].apps[0].name == "site"
    assert options["settings"].apps[0].hook_path == "/hooks/site"
