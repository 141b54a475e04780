"""
The twistd glue: ``twistd ghhook`` options and the service they build.

Everything that can be known before twistd forks, binds and drops privileges
is checked in :meth:`Options.postOptions` (with :mod:`ghhook.checks`), so a
bad setting stops twistd with one line before anything listens or runs. What
can only fail later (a port taken meanwhile, a journal SQLite cannot open as
the ``--uid`` user) stops the daemon from
:class:`~ghhook.service.GhhookService` with one line too.
"""

from __future__ import annotations

import os
import re
import resource
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from twisted.application import strports
from twisted.application.service import IService
from twisted.python import usage
from twisted.web.server import Site

from ghhook.admin import Admin, admin_host
from ghhook.checks import (
    RunAs,
    check_listening,
    checked_out_branch,
    child_environment,
    command,
    git_refusal,
    inaccessible,
    positive_float,
    positive_int,
    read_secrets,
    run_as,
)
from ghhook.decision import Tracked
from ghhook.config import AppSettings
from ghhook.deployer import Deployer
from ghhook.frontdoor import (
    BODY_TIMEOUT,
    HEADER_TIMEOUT,
    MAX_PER_ADDRESS,
    RESERVED_DESCRIPTORS,
    Limits,
    QuietAccept,
    Tally,
    open_file_limit,
    parse_size,
)
from ghhook.gitrepo import NotAClone, git_dir, github_repository, remote_url
from ghhook.health import HealthCheck
from ghhook.journal import KEEP_DEPLOYS, Journal, why_unusable
from ghhook.metrics import Metrics
from ghhook.runner import ExecutableNotFound, ProcessRunner, find_executable
from ghhook.service import GhhookService
from ghhook.site import make_site
from ghhook.web import Hook

_GITHUB_NAME = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")


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
        [
            "max-inflight",
            None,
            "64M",
            "Bytes of request bodies held in memory before their signature is checked,"
            " shared by all clients (K, M, G: powers of 1024); a request that would pass"
            " it is answered 503 with Retry-After.",
        ],
        [
            "header-timeout",
            None,
            str(int(HEADER_TIMEOUT)),
            "Seconds a request's line and headers may take, counted from the connection's"
            " start (or the previous answer), not restarted by each byte.",
        ],
        [
            "body-timeout",
            None,
            str(int(BODY_TIMEOUT)),
            "Seconds the whole request, body included, may take from that same start.",
        ],
        [
            "max-connections",
            None,
            None,
            "Connections the hook holds open at once; more are closed at once. Default:"
            f" the open-file limit (raised to its hard limit at start) minus {RESERVED_DESCRIPTORS}.",
        ],
        [
            "max-per-address",
            None,
            str(MAX_PER_ADDRESS),
            "Connections one client address (an IPv6 /64) may hold open at once. Behind"
            " a reverse proxy all clients share its address: raise it to --max-connections.",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["admin-listen"] = []
        self["admin-host"] = []
        self["build-cmd"] = []

    def opt_admin_host(self, name: str) -> None:
        """A host name or address the admin listener answers besides loopback ones (its Host header is checked against DNS rebinding). Repeatable."""
        try:
            self["admin-host"].append(admin_host(name))
        except ValueError as e:
            raise SystemExit(f"ghhook: --admin-host {name}: {e}") from None

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
        self.check_front_door()
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

    def check_front_door(self) -> None:
        """The deadlines and caps of the listeners, as :class:`Limits`."""
        inflight = _coerce("--max-inflight", parse_size, self["max-inflight"])
        header = _coerce("--header-timeout", positive_float, self["header-timeout"])
        body = _coerce("--body-timeout", positive_float, self["body-timeout"])
        if body < header:
            raise usage.UsageError(
                f"--body-timeout {self['body-timeout']}: must be at least --header-timeout"
                f" ({self['header-timeout']}), since it counts from the same start"
            )
        per_address = _coerce("--max-per-address", positive_int, self["max-per-address"])
        hard = open_file_limit()[1]
        room = hard - RESERVED_DESCRIPTORS if hard != resource.RLIM_INFINITY else None
        connections = self["max-connections"]
        if connections is not None:
            connections = _coerce("--max-connections", positive_int, connections)
            if room is not None and connections > room:
                raise usage.UsageError(
                    f"--max-connections {connections}: the open-file hard limit {hard} leaves"
                    f" room for {max(room, 0)} (raise LimitNOFILE= or ulimit -Hn)"
                )
        elif room is not None and room < 1:
            raise usage.UsageError(
                f"the open-file hard limit {hard} leaves no room for connections;"
                " raise LimitNOFILE= or ulimit -Hn"
            )
        self["limits"] = Limits(
            header_timeout=header,
            body_timeout=body,
            max_connections=connections,
            max_per_address=per_address,
            max_inflight=inflight,
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


def makeService(config: Options, reactor: Any = None) -> IService:
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    settings = AppSettings(
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
    # One summary line of refusals for both listeners, every 10 s at most.
    tally = Tally(reactor)
    limits: Limits = config["limits"]
    site = make_site(hook.resource(), limits=limits, tally=tally, reactor=reactor)
    for endpoint in config["listen"]:
        top.listen("--listen", endpoint, _listener(endpoint, site, tally, reactor))
    # The admin pages take no request bodies worth more than a few bytes.
    admin_site = make_site(
        Admin(deployer, journal, metrics, hosts=config["admin-host"]).resource(),
        max_body=64 * 1024,
        limits=limits.for_admin(),
        tally=tally,
        reactor=reactor,
    )
    for endpoint in config["admin-listen"]:
        top.listen("--admin-listen", endpoint, _listener(endpoint, admin_site, tally, reactor))
    return top


def _listener(description: str, site: Site, tally: Tally, reactor: Any) -> IService:
    """A listening service whose accept() errors are counted, not logged one each."""
    service = strports.service(description, site, reactor=reactor)
    service.endpoint = QuietAccept(service.endpoint, tally)
    return service
