"""
The twistd glue: ``twistd ghhook`` options and the service they build.

Everything that can be known before twistd forks, binds and drops privileges
is checked in :meth:`Options.postOptions`, so a bad setting stops twistd with
one line before anything listens or runs. What can only fail later (a port
taken meanwhile, a journal SQLite cannot open as the ``--uid`` user) stops
the daemon from :class:`GhhookService` with one line too.
"""

from __future__ import annotations

import gc
import os
import pwd
import re
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import attrs
from twisted.application import strports
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.error import CannotListenError, ReactorNotRunning
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from ghhook.admin import Admin
from ghhook.decision import Tracked
from ghhook.deployer import Deployer, Settings
from ghhook.gitrepo import NotAClone, current_branch, git_dir, github_repository, remote_url
from ghhook.health import HealthCheck
from ghhook.journal import KEEP_DEPLOYS, Journal, JournalError, why_unusable
from ghhook.metrics import Metrics
from ghhook.notify import notify
from ghhook.runner import ExecutableNotFound, ProcessRunner, find_executable
from ghhook.signature import load_secrets
from ghhook.web import Hook, make_site

log = Logger(namespace="ghhook")

#: Seconds between two WAL checkpoints of the journal (in a thread).
CHECKPOINT_INTERVAL = 5.0
SECRET_VARIABLES = ("GHHOOK_SECRET", "GITHUB_SECRET")
_GITHUB_NAME = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")


def positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError("not a number of seconds") from None
    if not number > 0:
        raise ValueError("must be a positive number of seconds")
    return number


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError("not a whole number") from None
    if number < 1:
        raise ValueError("must be a positive whole number")
    return number


def command(value: str) -> tuple[str, ...]:
    """Split a command as a shell would split words; it never runs in one."""
    try:
        argv = tuple(shlex.split(value))
    except ValueError as e:
        raise ValueError(f"{value!r} cannot be split into words: {e}") from None
    if not argv:
        raise ValueError("the command is empty")
    return argv


def child_environment(environ: dict[str, str]) -> dict[str, str]:
    """The environment of every step: ours without the secret, git never prompting."""
    env = {k: v for k, v in environ.items() if k not in SECRET_VARIABLES}
    env["GIT_TERMINAL_PROMPT"] = "0"
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    return env


def read_secrets(secret_file: str | None, environ: dict[str, str]) -> tuple[bytes, ...]:
    """The secrets to verify with: the file's lines, else an environment variable."""
    if secret_file is not None:
        try:
            text = Path(secret_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            reason = getattr(e, "strerror", None) or str(e)
            raise usage.UsageError(
                f"--secret-file {secret_file}: cannot read it: {reason}"
            ) from None
        secrets = load_secrets(text)
        if not secrets:
            raise usage.UsageError(f"--secret-file {secret_file} holds no secret")
        return secrets
    for name in SECRET_VARIABLES:
        secrets = load_secrets(environ.get(name, ""))
        if secrets:
            return secrets
    raise usage.UsageError(
        "no webhook secret: give --secret-file FILE (one secret per line),"
        " or set GHHOOK_SECRET (or GITHUB_SECRET) in the environment"
    )


def checked_out_branch(gdir: Path) -> str | None:
    """
    The branch the clone is on; while a rebase a crash left holds HEAD
    detached, the branch being rebased (the catch-up aborts that rebase).
    """
    for rebase in ("rebase-merge", "rebase-apply"):
        try:
            name = (gdir / rebase / "head-name").read_text(encoding="utf-8").strip()
        except OSError:
            continue
        if name.startswith("refs/heads/"):
            return name[len("refs/heads/") :]
    return current_branch(gdir)


@attrs.frozen
class RunAs:
    """The user twistd switches to after binding (``--uid``), as root checks it before."""

    uid: int
    gid: int
    name: str
    #: The supplementary groups twistd gives it (initgroups, as switchUID does).
    groups: tuple[int, ...]

    def __str__(self) -> str:
        return f"{self.name} (uid {self.uid})"

    def subprocess_options(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "extra_groups": list(self.groups)}


def run_as(twistd: Mapping[str, Any]) -> RunAs | None:
    """
    Whom twistd will run ghhook as after ``--uid``/``--gid``, when that is
    another user than now and we are root to check as them; else None.
    """
    uid, gid = twistd.get("uid"), twistd.get("gid")
    if uid is None or uid == os.geteuid() or os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        raise usage.UsageError(f"--uid {uid}: no such user") from None
    if gid is None:
        gid = entry.pw_gid
    return RunAs(uid, gid, entry.pw_name, tuple(os.getgrouplist(entry.pw_name, gid)))


def _user_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def git_refusal(git: str, repo: Path, env: Mapping[str, str], user: RunAs | None) -> str | None:
    """
    Why git will not work in ``repo`` for the user that runs the deploys, with
    the environment the deploys get (HOME, so the same safe.directory); None
    when it works. Run once before the reactor starts.
    """
    who = str(user) if user is not None else _user_name(os.geteuid())
    try:
        done = subprocess.run(
            [git, "-C", str(repo), "rev-parse", "--git-dir"],
            cwd="/",
            env=dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            **(user.subprocess_options() if user is not None else {}),
        )
    except (OSError, subprocess.SubprocessError) as e:
        return f"cannot run {git} as {who}: {e}"
    if done.returncode == 0:
        return None
    lines = done.stderr.strip().splitlines() or [f"git exited with {done.returncode}"]
    fatal = next((line for line in lines if line.startswith("fatal:")), lines[0])
    reason = fatal.removeprefix("fatal:").strip()
    if "dubious ownership" not in reason:
        return f"git cannot use the clone as {who}: {reason}"
    try:
        owner = _user_name(repo.stat().st_uid)
    except OSError:
        owner = "another user"
    return (
        f"git refuses to work in it as {who}, since it belongs to {owner} (dubious ownership);"
        f" chown -R it to that user, or add it to that user's safe.directory (git config"
        f" --global --add safe.directory {repo}, with HOME={env.get('HOME', '')})"
    )


#: Prints the first of its arguments the user cannot use: a directory it
#: cannot create files in, or an existing file it cannot read and write.
_ACCESS_CHECK = (
    'for p do if [ -d "$p" ]; then [ -w "$p" ] && [ -x "$p" ] || { echo "$p"; exit 1; };'
    ' elif [ -e "$p" ]; then [ -r "$p" ] && [ -w "$p" ] || { echo "$p"; exit 1; }; fi; done'
)


def inaccessible(user: RunAs, paths: Iterable[Path]) -> Path | None:
    """
    The first of ``paths`` that ``user`` cannot write, asked of the kernel as
    that user (permissions, ACLs, read-only mounts); None when all are fine.
    """
    try:
        done = subprocess.run(
            ["/bin/sh", "-c", _ACCESS_CHECK, "sh", *map(str, paths)],
            cwd="/",
            env={"PATH": os.defpath},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            **user.subprocess_options(),
        )
    except (OSError, subprocess.SubprocessError):
        return None  # cannot ask: twistd's own start-up will tell
    blocked = done.stdout.strip()
    return Path(blocked) if done.returncode == 1 and blocked else None


def check_listening(endpoints: Iterable[tuple[str, str]]) -> None:
    """
    Refuse a TCP (or SSL) endpoint whose address cannot be bound now: in use,
    privileged, not on this host. A trial bind with SO_REUSEADDR, as Twisted
    binds, then closed at once: nothing listens.
    """
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    for option, description in endpoints:
        endpoint = serverFromString(reactor, description)
        # The parsed port and interface; UNIX and systemd endpoints have none.
        port = getattr(endpoint, "_port", None)
        interface = getattr(endpoint, "_interface", None)
        if not isinstance(port, int) or not isinstance(interface, str) or port == 0:
            continue
        family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as trial:
            trial.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                trial.bind((interface, port))
            except OSError as e:
                where = f"{interface}:{port}" if interface else f"port {port}"
                raise usage.UsageError(
                    f"{option} {description}: cannot listen on {where}: {e.strerror or e}"
                ) from None


class Options(usage.Options):
    synopsis = "[options] --repo PATH"
    longdesc = (
        "Receive GitHub push webhooks, verify their HMAC signature, run"
        " `git pull --rebase` in the clone without blocking, and restart the"
        " service that runs from it."
    )

    optParameters: list[list[Any]] = [
        ["repo", None, None, "The git clone to keep deployed (required)."],
        ["path", None, "/github", "URL path of the webhook."],
        [
            "secret-file",
            None,
            None,
            "File holding the webhook secret, one per line (several allow rotation)."
            " Default: $GHHOOK_SECRET, else $GITHUB_SECRET.",
        ],
        [
            "branch",
            None,
            None,
            "Only pushes to this branch deploy. Default: the clone's current branch.",
        ],
        ["remote", None, "origin", "The git remote to pull from."],
        [
            "github-repo",
            None,
            None,
            "OWNER/NAME; pushes from other repositories are ignored."
            " Default: inferred from the remote's URL when it is on GitHub.",
        ],
        [
            "restart-cmd",
            None,
            None,
            "Command run after a pull that moved HEAD; split into words like a shell"
            " would, never run through one.",
        ],
        [
            "restart-signal",
            None,
            None,
            "Restart by sending this signal (e.g. HUP) to the pid in --restart-pidfile.",
        ],
        ["restart-pidfile", None, None, "Pidfile read at restart time for --restart-signal."],
        ["health-url", None, None, "URL polled after a restart until it answers 2xx."],
        ["health-timeout", None, "30", "Seconds the --health-url may take to turn healthy."],
        ["timeout", None, "600", "Seconds each deploy step may run before it is killed."],
        [
            "state",
            None,
            "ghhook.sqlite3",
            "SQLite journal of deliveries and deploys (relative to twistd's --rundir).",
        ],
        [
            "keep-deploys",
            None,
            str(KEEP_DEPLOYS),
            "Deploys the journal keeps, with their steps, for /status and the status page.",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["admin-listen"] = []
        self["build-cmd"] = []

    def opt_admin_listen(self, endpoint: str) -> None:
        """Endpoint for /status, the status page, /metrics and /healthz; "none" disables it. Repeatable. [default: tcp:9000:interface=127.0.0.1]"""
        self["admin-listen"].append(endpoint)

    def opt_build_cmd(self, cmd: str) -> None:
        """Command run in the clone after a pull that moved HEAD, before the restart (e.g. "pip install -r requirements.txt"). Repeatable, run in order."""
        self["build-cmd"].append(cmd)

    def opt_listen(self, endpoint: str) -> None:
        """Endpoint to serve the hook on, e.g. tcp:8000:interface=127.0.0.1, unix:/run/ghhook.sock or systemd:domain=INET:index=0. Repeatable. [default: tcp:8000]"""
        self["listen"].append(endpoint)

    def postOptions(self) -> None:
        # twistd answers a UsageError with its whole usage text; a bad setting
        # deserves one line that says what is wrong.
        try:
            self.check(dict(os.environ))
        except usage.UsageError as e:
            raise SystemExit(f"ghhook: {e}") from None

    def check_restart(self) -> None:
        """A restart is a command, or a signal to a pidfile's pid: not both."""
        sig, pidfile = self["restart-signal"], self["restart-pidfile"]
        if sig is not None:
            name = sig.upper().removeprefix("SIG")
            try:
                self["restart-signal"] = int(getattr(signal.Signals, "SIG" + name))
            except AttributeError:
                raise usage.UsageError(f"--restart-signal {sig}: no such signal") from None
            if pidfile is None:
                raise usage.UsageError("--restart-signal needs --restart-pidfile FILE")
            if self["restart-cmd"] is not None:
                raise usage.UsageError("give --restart-cmd or --restart-signal, not both")
            self["restart-pidfile"] = str(Path(pidfile).absolute())
        elif pidfile is not None:
            raise usage.UsageError("--restart-pidfile goes with --restart-signal SIG")

    def check(self, environ: dict[str, str]) -> None:
        """Validate and complete the settings; raise UsageError with one sentence."""
        if not self["listen"]:
            self["listen"] = ["tcp:8000"]
        if not self["path"].startswith("/"):
            raise usage.UsageError(f"--path {self['path']}: must start with /")
        if self["repo"] is None:
            raise usage.UsageError("--repo is required: the path of the git clone to deploy")
        repo = Path(self["repo"]).absolute()
        try:
            gdir = git_dir(repo)
        except NotAClone as e:
            raise usage.UsageError(f"--repo {self['repo']}: {e}") from None
        self["repo"] = str(repo)
        self["git-dir"] = str(gdir)
        self["secrets"] = read_secrets(self["secret-file"], environ)
        self.check_branch(repo, gdir)
        url = remote_url(gdir, self["remote"])
        if url is None:
            raise usage.UsageError(f"--remote {self['remote']}: no such remote in {repo}")
        if self["github-repo"] is None:
            self["github-repo"] = github_repository(url)
        elif not _GITHUB_NAME.fullmatch(self["github-repo"]):
            raise usage.UsageError(f"--github-repo {self['github-repo']}: expected OWNER/NAME")
        self["timeout"] = _coerce("--timeout", positive_float, self["timeout"])
        self["health-timeout"] = _coerce("--health-timeout", positive_float, self["health-timeout"])
        self["keep-deploys"] = _coerce("--keep-deploys", positive_int, self["keep-deploys"])
        self["env"] = child_environment(environ)
        path = self["env"].get("PATH")
        try:
            self["git"] = find_executable("git", path)
        except ExecutableNotFound as e:
            raise usage.UsageError(str(e)) from None
        twistd = self.twistd()
        self["run-as"] = run_as(twistd)
        refusal = git_refusal(self["git"], repo, self["env"], self["run-as"])
        if refusal is not None:
            raise usage.UsageError(f"--repo {repo}: {refusal}")
        if self["restart-cmd"] is not None:
            self["restart-cmd"] = _program("--restart-cmd", self["restart-cmd"], path)
        self["build-cmd"] = tuple(
            _program("--build-cmd", build, path) for build in self["build-cmd"]
        )
        self.check_restart()
        if self["health-url"] is not None and not re.match(r"https?://[^/\s]+", self["health-url"]):
            raise usage.UsageError(f"--health-url {self['health-url']}: not an http(s) URL")
        if not self["admin-listen"]:
            self["admin-listen"] = ["tcp:9000:interface=127.0.0.1"]
        if "none" in self["admin-listen"]:
            self["admin-listen"] = []
        for endpoint in self["admin-listen"]:
            _check_endpoint("--admin-listen", endpoint)
        self["state"] = str(Path(twistd.get("rundir") or ".", self["state"]).absolute())
        why = why_unusable(self["state"])
        if why is not None:
            raise usage.UsageError(f"--state {self['state']}: {why}")
        for endpoint in self["listen"]:
            _check_endpoint("--listen", endpoint)
        self.check_files(twistd)
        check_listening(
            [("--listen", e) for e in self["listen"]]
            + [("--admin-listen", e) for e in self["admin-listen"]]
        )

    def twistd(self) -> Mapping[str, Any]:
        """twistd's own options (--rundir, --uid, --pidfile...); empty outside twistd."""
        parent = getattr(self, "parent", None)
        return parent if parent is not None else {}

    def check_branch(self, repo: Path, gdir: Path) -> None:
        """
        Deploys pull into the branch the clone is on: a --branch it is not on
        would fail every one of them.
        """
        on = checked_out_branch(gdir)
        branch = self["branch"] or "BRANCH"
        if on is None:
            raise usage.UsageError(
                f"--repo {repo}: HEAD is detached, and deploys pull into a branch;"
                f" check out the branch to deploy (git -C {repo} switch {branch})"
            )
        if self["branch"] is None:
            self["branch"] = on
        elif self["branch"] != on:
            raise usage.UsageError(
                f"--branch {branch}: the clone {repo} is on branch {on}, and deploys pull into"
                f" the branch it is on; check out {branch} there (git -C {repo} switch"
                f" {branch}), or give --branch {on}"
            )

    def check_files(self, twistd: Mapping[str, Any]) -> None:
        """
        twistd writes the pidfile as the user it starts as, then removes it at
        stop as --uid; the journal is created as --uid. Refuse what either
        user could not do, before twistd writes the pidfile.
        """
        if twistd.get("chroot"):
            return  # the paths are then inside the chroot
        pidfile = Path(twistd["pidfile"]).absolute() if twistd.get("pidfile") else None
        if pidfile is not None and not pidfile.exists():
            if not pidfile.parent.is_dir():
                raise usage.UsageError(f"--pidfile {pidfile}: no such directory: {pidfile.parent}")
            if not os.access(pidfile.parent, os.W_OK | os.X_OK):
                raise usage.UsageError(
                    f"--pidfile {pidfile}: twistd cannot create it: no write permission"
                    f" in {pidfile.parent}"
                )
        user: RunAs | None = self["run-as"]
        if user is None:
            return
        state = Path(self["state"])
        wal, shm = Path(f"{state}-wal"), Path(f"{state}-shm")
        paths = [state.parent, state, wal, shm]
        if pidfile is not None:
            paths.append(pidfile.parent)
        blocked = inaccessible(user, paths)
        if blocked is None:
            return
        if pidfile is not None and blocked == pidfile.parent and blocked != state.parent:
            raise usage.UsageError(
                f"--pidfile {pidfile}: the --uid user {user} cannot write in {blocked}, so"
                f" twistd could not remove the pidfile at stop; put it in a directory that"
                f" user can write"
            )
        if blocked == state.parent:
            also = ""
            if pidfile is not None and pidfile.parent == blocked:
                also = " (and twistd's pidfile, removed at stop)"
            raise usage.UsageError(
                f"--state {state}: the --uid user {user} cannot create files in {blocked},"
                f" where the journal goes{also}; make that directory writable by that user,"
                f" or choose another --rundir"
            )
        raise usage.UsageError(
            f"--state {state}: the --uid user {user} cannot write {blocked}; chown it to that user"
        )


def _program(option: str, value: str, path: str | None) -> tuple[str, ...]:
    """Split a command and find its program on PATH, once, at start-up."""
    argv = _coerce(option, command, value)
    try:
        return (find_executable(argv[0], path), *argv[1:])
    except ExecutableNotFound as e:
        raise usage.UsageError(f"{option} {value}: {e}") from None


def _coerce(option: str, coerce: Any, value: Any) -> Any:
    try:
        return coerce(value)
    except ValueError as e:
        raise usage.UsageError(f"{option} {value}: {e}") from None


def _check_endpoint(option: str, description: str) -> None:
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    try:
        serverFromString(reactor, description)
    except Exception as e:  # noqa: BLE001 - parsers raise many kinds
        raise usage.UsageError(f"{option} {description}: not a valid endpoint ({e})") from None


class Checkpoints:
    """
    Checkpoint the journal's WAL every ``interval`` seconds, in a thread. A
    failure (disk full, a lock held elsewhere) is logged once, not at every
    interval, and tried again at the next; that it works again is logged too.
    """

    def __init__(
        self,
        checkpoint: Callable[[], object],
        clock: IReactorTime,
        in_thread: Callable[[Callable[[], object]], Deferred[object]],
    ) -> None:
        """
        :param checkpoint: what runs in the thread: :meth:`Journal.checkpoint`.
        :param in_thread: runs a callable off the reactor thread, and fires
            with its result; tests run it at once.
        """
        self._checkpoint = checkpoint
        self._in_thread = in_thread
        self._interval = 0.0
        #: Whether the last checkpoint failed: only the first failure is logged.
        self.failing = False
        self._loop = LoopingCall(self._once)
        self._loop.clock = clock

    @property
    def running(self) -> bool:
        return self._loop.running

    def start(self, interval: float) -> None:
        self._interval = interval
        # Every failure of a checkpoint is handled in _once; this only logs a
        # bug that would end the loop.
        self._loop.start(interval, now=False).addErrback(
            lambda f: log.failure("the journal's checkpoints stopped", f)
        )

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def _once(self) -> Deferred[None]:
        d = maybeDeferred(self._in_thread, self._checkpoint)
        return d.addCallbacks(self._worked, self._failed)

    def _worked(self, _: object) -> None:
        if self.failing:
            self.failing = False
            log.info("the journal's checkpoint works again")

    def _failed(self, failure: Failure) -> None:
        if self.failing:
            return
        self.failing = True
        if failure.check(sqlite3.Error, OSError, JournalError):
            log.error(
                "the journal's checkpoint failed: {error}; trying again every {interval} s",
                error=str(failure.value),
                interval=self._interval,
            )
        else:
            log.failure(
                "the journal's checkpoint failed; trying again every {interval} s",
                failure,
                interval=self._interval,
            )


class SignalHandlers:
    """
    ghhook's handlers for SIGHUP, SIGQUIT, SIGUSR2 and, unless twistd rotates
    its --logfile on it, SIGUSR1: each would end the process at once,
    leaving a deploy's step running and the deploy recorded as running. A
    handler only hands the signal to the reactor thread with
    ``callFromThread``, as Twisted's own handlers do.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for number in (signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR2):
            self._previous[number] = signal.signal(number, self._received)
        # twistd installs its log rotation on SIGUSR1 when it logs to a file.
        if signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
            self._previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, self._received)

    def uninstall(self) -> None:
        """Give back the handlers found at :meth:`install`."""
        for number, previous in self._previous.items():
            signal.signal(number, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()

    def _received(self, number: int, frame: FrameType | None) -> None:
        self._reactor.callFromThread(self.handle, number)

    def handle(self, number: int) -> None:
        """Act on a signal, in the reactor thread."""
        name = signal.Signals(number).name
        if number == signal.SIGHUP:
            log.info(
                "received SIGHUP: nothing to reload; ghhook reads its settings at start,"
                " so restart it to change them",
                signal=name,
            )
        elif number == signal.SIGUSR1:
            log.info(
                "received SIGUSR1: it reopens twistd's --logfile, and this ghhook logs to"
                " none; nothing done",
                signal=name,
            )
        else:
            log.info("received {signal}, shutting down", signal=name)
            try:
                self._reactor.stop()
            except ReactorNotRunning:
                pass  # already stopping


def _listen_failure(error: Exception) -> str:
    """Why a listener could not start, in a few words."""
    if isinstance(error, CannotListenError):
        reason = error.socketError
        if isinstance(reason, OSError) and reason.strerror:
            return f"cannot listen: {reason.strerror}"
        return f"cannot listen: {reason}"
    if isinstance(error, OSError) and error.strerror:
        # A UNIX endpoint's lock file, say: name the path, not the pid.
        path = error.filename2 if error.filename2 is not None else error.filename
        return f"cannot listen: {error.strerror}" + (f" ({os.fsdecode(path)})" if path else "")
    return str(error) or type(error).__name__


def _fit(line: str, limit: int) -> bytes:
    """``line`` as ASCII, cut at a word to ``limit`` bytes."""
    data = line.encode("ascii", "backslashreplace")
    if len(data) <= limit:
        return data
    cut = data[: limit - 3].rsplit(b" ", 1)[0]
    return cut + b"..."


class GhhookService(MultiService):
    """
    Opens the journal, then listens, then queues the catch-up deploy; stops
    the daemon with one line when it cannot.
    """

    def __init__(
        self,
        journal: Journal,
        deployer: Deployer,
        reactor: Any,
        twistd: MutableMapping[str, Any] | None = None,
    ) -> None:
        """
        :param twistd: twistd's options, for its pidfile and the status pipe a
            daemonizing twistd waits on; empty outside twistd.
        """
        super().__init__()
        self.journal = journal
        self.deployer = deployer
        self._twistd: MutableMapping[str, Any] = twistd if twistd is not None else {}
        self._listeners: dict[IService, str] = {}
        self._opened = False
        self.signals = SignalHandlers(reactor)
        self.checkpoints = Checkpoints(
            journal.checkpoint,
            reactor,
            lambda work: deferToThreadPool(reactor, reactor.getThreadPool(), work),
        )

    def listen(self, option: str, description: str, listener: IService) -> None:
        """Add a listener, named by the option that asked for it."""
        listener.setServiceParent(self)
        self._listeners[listener] = f"{option} {description}"

    def privilegedStartService(self) -> None:
        # MultiService's, with a failure to listen named by its option.
        Service.privilegedStartService(self)
        for child in self:
            try:
                child.privilegedStartService()
            except Exception as e:  # noqa: BLE001 - endpoints raise many kinds
                self.refuse(f"{self._listeners.get(child, child.name)}: {_listen_failure(e)}")

    def startService(self) -> None:
        try:
            self.journal.open()
            self._opened = True
            self.journal.checkpoint_elsewhere()
            deployed = self.journal.get("deployed")
            super().startService()
            log.info(
                "ghhook serving {repo} ({branch}); {what}",
                repo=self.deployer.settings.repo,
                branch=self.deployer.settings.branch,
                sha=deployed,
                what=f"last deployed: {deployed}"
                if deployed
                else "nothing deployed yet: the catch-up takes what the clone holds",
            )
            self.deployer.start()
        except JournalError as e:
            self.refuse(str(e))
        # systemd (Type=notify) learns we are ready once every port listens.
        ports = [getattr(child, "_waitingForPort", None) for child in self]
        gatherResults([p for p in ports if p is not None]).addCallback(
            lambda _: notify(b"READY=1")
        ).addErrback(lambda f: log.failure("a listener failed to start", f))
        self.checkpoints.start(CHECKPOINT_INTERVAL)
        self.signals.install()
        # Everything loaded at start lives as long as the daemon: keep it out
        # of the collector's full passes, which would pause the reactor.
        gc.collect()
        gc.freeze()

    def refuse(self, reason: str) -> NoReturn:
        """
        End a start that cannot go on with one line, on stderr and in the log,
        and a non-zero exit. Any exception but SystemExit makes twistd print
        its traceback, and pass a daemonizing parent its first 100 bytes; so
        this does the rest of what twistd does on a failed start itself: tell
        that parent through twistd's status pipe and remove the pidfile.
        """
        line = f"ghhook: {reason}"
        log.critical("ghhook cannot start: {reason}", reason=reason)
        for child in list(self):
            if getattr(child, "_waitingForPort", None) is not None:
                child.stopService()  # and the process exits: nothing listens
        if self._opened:
            self.journal.close()
        pidfile = self._twistd.get("pidfile")
        if pidfile:
            try:
                os.unlink(pidfile)
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warn("cannot remove the pidfile {pidfile}: {error}", pidfile=pidfile, error=e)
        # A daemonizing twistd's parent exits with what it reads here: last.
        pipe = self._twistd.get("statusPipe")
        if pipe is not None:
            self._twistd["statusPipe"] = None  # told once
            os.write(pipe, b"1 " + _fit(line, 98))
            os.close(pipe)
        # twistd sends sys.stderr to the log; the one line goes to the real one.
        print(line, file=sys.__stderr__, flush=True)
        raise SystemExit(1)

    def stopService(self) -> Deferred[None]:
        notify(b"STOPPING=1")
        # Stop listening first, then let the deploy finish or kill it.
        d = maybeDeferred(super().stopService)
        d.addCallback(lambda _: self.deployer.stop())
        d.addBoth(self._closed)
        return d

    def _closed(self, result: object) -> object:
        try:
            self.checkpoints.stop()
            try:
                self.journal.checkpoint()
            except (sqlite3.Error, OSError, JournalError) as e:
                log.error("the journal's last checkpoint failed: {error}", error=str(e))
            self.journal.close()
        finally:
            # Until the stop is done, a second signal finds the reactor stopping.
            self.signals.uninstall()
        return result


def makeService(config: Options, reactor: Any = None) -> IService:
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    settings = Settings(
        repo=config["repo"],
        git_dir=config["git-dir"],
        remote=config["remote"],
        branch=config["branch"],
        git=config["git"],
        restart=config["restart-cmd"],
        timeout=config["timeout"],
        env=config["env"],
        builds=config["build-cmd"],
        restart_signal=config["restart-signal"],
        restart_pidfile=config["restart-pidfile"],
        health_url=config["health-url"],
        health_timeout=config["health-timeout"],
    )
    journal = Journal(config["state"], keep_deploys=config["keep-deploys"])
    metrics = Metrics()
    deployer = Deployer(
        settings,
        ProcessRunner(reactor),
        journal,
        reactor,
        listeners=[metrics],
        health=HealthCheck(reactor),
    )
    hook = Hook(
        config["secrets"],
        Tracked(branch=config["branch"], repository=config["github-repo"]),
        deployer,
        journal,
        path=config["path"],
        counter=metrics,
    )
    top = GhhookService(journal, deployer, reactor, twistd=getattr(config, "parent", None))
    site = make_site(hook.resource())
    for endpoint in config["listen"]:
        top.listen("--listen", endpoint, strports.service(endpoint, site, reactor=reactor))
    # The admin pages take no request bodies worth more than a few bytes.
    admin_site = make_site(Admin(deployer, journal, metrics).resource(), max_body=64 * 1024)
    for endpoint in config["admin-listen"]:
        top.listen(
            "--admin-listen", endpoint, strports.service(endpoint, admin_site, reactor=reactor)
        )
    return top
