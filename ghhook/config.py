"""
What ghhook serves, as frozen values: the daemon's settings and one
:class:`AppSettings` per app.

Both ways in end here: the config file (``--config``, TOML) and the
single-repo options (``--repo`` and friends, one app). Validation collects
every problem, each one line naming where it is (``ghhook.toml:
apps.api.restart_pidfile: ...`` or ``--restart-pidfile FILE: ...``), and
raises them together as one :class:`ConfigError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import attrs

from ghhook.frontdoor import Limits

#: What an app may be called: it becomes a URL path segment and a label.
APP_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
#: Where the shared hook is served unless ``path`` says otherwise.
SHARED_PATH = "/github"
#: Deploys of different apps that may run at once unless ``parallel`` says otherwise.
PARALLEL = 2


class ConfigError(Exception):
    """
    The settings cannot be used; :attr:`problems` holds one line for each
    problem found, all of them, in the order of the file.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


@attrs.frozen
class AppSettings:
    """
    One app: a clone, the branch it deploys, who may push to it, and how a
    release is built, restarted and checked. Secrets and the environment
    are left out of ``repr`` (and so out of every log line).
    """

    repo: str
    git_dir: str
    remote: str
    branch: str
    git: str
    name: str = "app"
    #: The forge's full name of the repository (``owner/name``); pushes from
    #: others are ignored. None: any repository.
    repository: str | None = None
    secrets: tuple[bytes, ...] = attrs.field(default=(), repr=False)
    restart: tuple[str, ...] | None = None
    timeout: float = 600.0
    env: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    builds: tuple[tuple[str, ...], ...] = ()
    restart_signal: int | None = None
    restart_pidfile: str | None = None
    health_url: str | None = None
    health_timeout: float = 30.0

    @property
    def hook_path(self) -> str:
        """The app's own URL, verified with its secrets only."""
        return f"/hooks/{self.name}"

    def commands(self) -> list[tuple[str, ...]]:
        """The argvs a release runs, in order (for ``check-config``'s table)."""
        found = list(self.builds)
        if self.restart is not None:
            found.append(self.restart)
        return found


@attrs.frozen
class DaemonSettings:
    """Everything one ghhook daemon serves, as read at start or at a reload."""

    apps: tuple[AppSettings, ...]
    listen: tuple[str, ...] = ("tcp:8000",)
    admin_listen: tuple[str, ...] = ("tcp:9000:interface=127.0.0.1",)
    admin_hosts: tuple[str, ...] = ()
    state: str = "ghhook.sqlite3"
    #: The shared hook path: every app, verified with every app's secrets.
    path: str = SHARED_PATH
    parallel: int = PARALLEL
    keep_deploys: int = 1000
    limits: Limits = attrs.field(factory=Limits)
    #: The config file these came from; None for the single-repo options.
    source: str | None = None

    def app(self, name: str) -> AppSettings | None:
        for app in self.apps:
            if app.name == name:
                return app
        return None

    #: Settings a reload cannot change in a running daemon.
    RESTART_ONLY = ("listen", "admin_listen", "state")

    def needs_restart(self, other: DaemonSettings) -> list[str]:
        """The keys that differ in ``other`` but apply only at the next start."""
        return [key for key in self.RESTART_ONLY if getattr(self, key) != getattr(other, key)]
