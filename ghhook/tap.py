"""
The twistd glue: ``twistd ghhook`` options and the service they build.

Everything is checked in :meth:`Options.postOptions`, so a bad setting stops
twistd with one line before anything listens or runs.
"""

from __future__ import annotations

import gc
import os
import re
import shlex
import signal
from pathlib import Path
from typing import Any

from twisted.application import strports
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python import usage

from ghhook.admin import Admin
from ghhook.decision import Tracked
from ghhook.deployer import Deployer, Settings
from ghhook.gitrepo import NotAClone, current_branch, git_dir, github_repository, remote_url
from ghhook.health import HealthCheck
from ghhook.journal import Journal, why_unusable
from ghhook.metrics import Metrics
from ghhook.notify import notify
from ghhook.runner import ExecutableNotFound, ProcessRunner, find_executable
from ghhook.signature import load_secrets
from ghhook.web import Hook, make_site

log = Logger(namespace="ghhook")

#: Seconds between two WAL checkpoints of the journal (in a thread).
CHECKPOINT_INTERVAL = 30.0
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
        if self["branch"] is None:
            self["branch"] = current_branch(gdir)
            if self["branch"] is None:
                raise usage.UsageError(f"--repo {repo}: HEAD is detached; give --branch NAME")
        url = remote_url(gdir, self["remote"])
        if url is None:
            raise usage.UsageError(f"--remote {self['remote']}: no such remote in {repo}")
        if self["github-repo"] is None:
            self["github-repo"] = github_repository(url)
        elif not _GITHUB_NAME.fullmatch(self["github-repo"]):
            raise usage.UsageError(f"--github-repo {self['github-repo']}: expected OWNER/NAME")
        self["timeout"] = _coerce("--timeout", positive_float, self["timeout"])
        self["health-timeout"] = _coerce("--health-timeout", positive_float, self["health-timeout"])
        self["env"] = child_environment(environ)
        path = self["env"].get("PATH")
        try:
            self["git"] = find_executable("git", path)
        except ExecutableNotFound as e:
            raise usage.UsageError(str(e)) from None
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
        parent = getattr(self, "parent", None)
        rundir = parent.get("rundir") if parent is not None else None
        self["state"] = str(Path(rundir or ".", self["state"]).absolute())
        why = why_unusable(self["state"])
        if why is not None:
            raise usage.UsageError(f"--state {self['state']}: {why}")
        for endpoint in self["listen"]:
            _check_endpoint("--listen", endpoint)


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


class GhhookService(MultiService):
    """Opens the journal, then listens, then queues the catch-up deploy."""

    def __init__(self, journal: Journal, deployer: Deployer, reactor: Any) -> None:
        super().__init__()
        self.journal = journal
        self.deployer = deployer
        self._checkpoints = LoopingCall(
            lambda: deferToThreadPool(reactor, reactor.getThreadPool(), journal.checkpoint)
        )
        self._checkpoints.clock = reactor

    def startService(self) -> None:
        self.journal.open()
        self.journal.checkpoint_elsewhere()
        self._checkpoints.start(CHECKPOINT_INTERVAL, now=False)
        super().startService()
        # systemd (Type=notify) learns we are ready once every port listens.
        ports = [getattr(child, "_waitingForPort", None) for child in self]
        gatherResults([p for p in ports if p is not None]).addCallback(
            lambda _: notify(b"READY=1")
        ).addErrback(lambda f: log.failure("a listener failed to start", f))
        log.info(
            "ghhook serving {repo} ({branch}), head deployed: {sha}",
            repo=self.deployer.settings.repo,
            branch=self.deployer.settings.branch,
            sha=self.journal.get("deployed"),
        )
        self.deployer.start()
        # Everything loaded at start lives as long as the daemon: keep it out
        # of the collector's full passes, which would pause the reactor.
        gc.collect()
        gc.freeze()

    def stopService(self) -> Deferred[None]:
        notify(b"STOPPING=1")
        # Stop listening first, then let the deploy finish or kill it.
        d = maybeDeferred(super().stopService)
        d.addCallback(lambda _: self.deployer.stop())
        d.addBoth(self._closed)
        return d

    def _closed(self, result: object) -> object:
        if self._checkpoints.running:
            self._checkpoints.stop()
        self.journal.checkpoint()
        self.journal.close()
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
    journal = Journal(config["state"])
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
    top = GhhookService(journal, deployer, reactor)
    site = make_site(hook.resource())
    for endpoint in config["listen"]:
        strports.service(endpoint, site, reactor=reactor).setServiceParent(top)
    # The admin pages take no request bodies worth more than a few bytes.
    admin_site = make_site(Admin(deployer, journal, metrics).resource(), max_body=64 * 1024)
    for endpoint in config["admin-listen"]:
        strports.service(endpoint, admin_site, reactor=reactor).setServiceParent(top)
    return top
