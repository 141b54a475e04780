"""
The twistd glue: ``twistd ghhook`` options and the service they build.

Everything that can be known before twistd forks, binds and drops privileges
is checked in :meth:`Options.postOptions` (by :mod:`ghhook.config`, for a
config file or for the single-repo options alike), so bad settings stop
twistd with one line per problem before anything listens or runs. What can
only fail later (a port taken meanwhile, a journal SQLite cannot open as the
``--uid`` user) stops the daemon from :class:`~ghhook.service.GhhookService`
with one line too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from ghhook.config import (
    DAEMON_KEYS,
    KEY_OF_OPTION,
    SHARED_PATH,
    ConfigError,
    DaemonSettings,
    from_options,
    load_file,
)
from ghhook.daemon import build_service
from ghhook.frontdoor import (
    BODY_TIMEOUT,
    HEADER_TIMEOUT,
    MAX_PER_ADDRESS,
    RESERVED_DESCRIPTORS,
)
from ghhook.journal import KEEP_DEPLOYS


class Options(usage.Options):
    synopsis = "[options] (--config FILE | --repo PATH [options])"
    longdesc = (
        "Receive push webhooks (GitHub, Gitea, Forgejo, Gogs, GitLab, Bitbucket),"
        " verify their signature, run"
        " `git pull --rebase` in the clone without blocking, and restart the"
        " service that runs from it. Serve every app of a config file (--config),"
        " or the one clone the other options describe (--repo)."
    )

    # Defaults are None so that "given" can be told from "left alone" (with
    # --config every setting is in the file); ghhook.config applies them.
    optParameters: list[list[Any]] = [
        [
            "config",
            None,
            None,
            "TOML file of the apps to deploy and the daemon's settings; every other"
            " option is then a key in it. Re-read on SIGHUP.",
        ],
        ["repo", None, None, "The git clone to keep deployed (required without --config)."],
        [
            "name",
            None,
            None,
            "The app's name (its URL is /hooks/NAME). Default: the clone's directory name.",
        ],
        ["path", None, None, f"URL path of the webhook. [default: {SHARED_PATH}]"],
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
        ["remote", None, None, "The git remote to pull from. [default: origin]"],
        [
            "forge",
            None,
            None,
            "Who sends the webhooks: github, gitea, forgejo, gogs, gitlab, bitbucket"
            " (Cloud) or bitbucket-server (Data Center). [default: github]",
        ],
        [
            "repository",
            None,
            None,
            "The forge's full name of the repository (OWNER/NAME; GitLab"
            " GROUP/SUBGROUP/PROJECT; Bitbucket Data Center PROJECT/SLUG); pushes from"
            " other repositories are ignored. Default: inferred from the remote's URL"
            " when it is on the forge's public host.",
        ],
        ["github-repo", None, None, "The old name of --repository."],
        [
            "strategy",
            None,
            None,
            "How a push becomes the clone's HEAD: rebase (git pull --rebase), ff-only"
            " (git pull --ff-only: a force-push fails the deploy) or reset (git fetch, then"
            " git reset --hard: the remote is the truth; local commits are discarded and"
            " kept under refs/ghhook/discarded/). [default: rebase]",
        ],
        ["ssh-key", None, None, "The SSH key git uses for the remote (mode 600)."],
        [
            "known-hosts",
            None,
            None,
            "The known_hosts file --ssh-key's host is checked against (strictly).",
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
        [
            "health-timeout",
            None,
            None,
            "Seconds the --health-url may take to turn healthy. [default: 30]",
        ],
        [
            "timeout",
            None,
            None,
            "Seconds each deploy step may run before it is killed. [default: 600]",
        ],
        [
            "state",
            None,
            None,
            "SQLite journal of deliveries and deploys (relative to twistd's --rundir)."
            " [default: ghhook.sqlite3]",
        ],
        [
            "admin-token-file",
            None,
            None,
            "File of LABEL:TOKEN lines: a request with Authorization: Bearer TOKEN may"
            " POST to the admin listener (deploy, rollback, pause, resume) as LABEL."
            " Over a unix: admin endpoint the socket's permissions decide instead.",
        ],
        [
            "keep-deploys",
            None,
            None,
            "Deploys the journal keeps, with their steps, for /status and the status page."
            f" [default: {KEEP_DEPLOYS}]",
        ],
        [
            "max-inflight",
            None,
            None,
            "Bytes of request bodies held in memory before their signature is checked,"
            " shared by all clients (K, M, G: powers of 1024); a request that would pass"
            " it is answered 503 with Retry-After. [default: 64M]",
        ],
        [
            "header-timeout",
            None,
            None,
            "Seconds a request's line and headers may take, counted from the connection's"
            " start (or the previous answer), not restarted by each byte."
            f" [default: {int(HEADER_TIMEOUT)}]",
        ],
        [
            "body-timeout",
            None,
            None,
            "Seconds the whole request, body included, may take from that same start."
            f" [default: {int(BODY_TIMEOUT)}]",
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
            None,
            "Connections one client address (an IPv6 /64) may hold open at once. Behind"
            " a reverse proxy all clients share its address: raise it to --max-connections."
            f" [default: {MAX_PER_ADDRESS}]",
        ],
    ]

    optFlags: list[list[Any]] = [
        ["submodules", None, "Update the clone's submodules after every change of HEAD."],
        [
            "skip-ci",
            None,
            "A push whose head commit says [skip deploy] or [deploy skip] deploys nothing.",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["admin-listen"] = []
        self["admin-host"] = []
        self["build-cmd"] = []
        self["watch"] = []

    def opt_watch(self, pattern: str) -> None:
        """A glob of the paths (gitignore-style, e.g. services/api/**) whose change releases; a pull that changes none of them is recorded skipped. Repeatable."""
        self["watch"].append(pattern)

    def opt_admin_host(self, name: str) -> None:
        """A host name or address the admin listener answers besides loopback ones (its Host header is checked against DNS rebinding). Repeatable."""
        self["admin-host"].append(name)

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
        # deserves one line that says what is wrong (one line per problem).
        try:
            settings = self.settings(os.environ)
        except ConfigError as e:
            raise SystemExit("\n".join(f"ghhook: {line}" for line in e.problems)) from None
        self["settings"] = settings

    def settings(self, environ: Mapping[str, str]) -> DaemonSettings:
        """
        Read the settings: the config file's, or the single-repo options'.

        :raises ConfigError: with every problem found, one line each.
        """
        if self["config"] is None:
            return from_options(self, environ, self.twistd())
        if self["repo"] is not None:
            raise ConfigError(["give --config FILE or --repo PATH, not both"])
        given = [option for option in self.ghhook_options() if self[option] not in (None, [], 0)]
        if given:
            raise ConfigError([_belongs_in_the_file(option) for option in given])
        return load_file(self["config"], environ, self.twistd())

    def ghhook_options(self) -> list[str]:
        """The long names of the options that describe the daemon and its apps."""
        return [*KEY_OF_OPTION, "name"]

    def twistd(self) -> Mapping[str, Any]:
        """twistd's own options (--rundir, --uid, --pidfile...); empty outside twistd."""
        parent = getattr(self, "parent", None)
        return parent if parent is not None else {}


def _belongs_in_the_file(option: str) -> str:
    """The line refusing ``--option`` next to --config: say where it goes instead."""
    if option == "name":
        return "--name: with --config each app is named by its table in the file, [apps.NAME]"
    key = KEY_OF_OPTION[option]
    where = "at the top of the file" if key in DAEMON_KEYS else "in [defaults] or an app's table"
    return (
        f"--{option}: with --config every setting is in the file; put it there as {key} ({where})"
    )


def makeService(config: Options, reactor: Any = None) -> IService:
    """The daemon, from the settings :meth:`Options.postOptions` checked."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    settings: DaemonSettings = config["settings"]
    twistd = getattr(config, "parent", None)
    load = None
    if settings.source is not None:
        source = settings.source

        def load() -> DaemonSettings:
            return load_file(source, os.environ, config.twistd(), reloading=True)

    return build_service(settings, reactor, twistd=twistd, load=load)
