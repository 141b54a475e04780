"""
What ghhook serves, as frozen values: the daemon's settings and one
:class:`AppSettings` per app.

Both ways in end here: the config file (``--config``, TOML, read by
:func:`load_file`) and the single-repo options (``--repo`` and friends, one
app, read by :func:`from_options`). Both go through the same checks, one
place for each rule, so an app from the file and an app from the options
are held to the same standard. Validation collects every problem, each one
line naming where it is (``ghhook.toml: apps.api.restart_pidfile: ...`` or
``--restart-pidfile FILE: ...``), and raises them together as one
:class:`ConfigError`.

Some checks run git or bind a port for a moment (:mod:`ghhook.checks`);
a reload, which runs under the reactor, skips them.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
import re
import resource
import shlex
import signal
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs

from ghhook.checks import (
    NO_SECRET,
    RunAs,
    bind_refusal,
    checked_out_branch,
    child_environment,
    command,
    endpoint_problem,
    file_refusal,
    git_refusal,
    positive_float,
    positive_int,
    run_as,
    secrets_in_environment,
    secrets_in_file,
)
from ghhook.forges import DEFAULT_FORGE, FORGES
from ghhook.forges.gitlab import signing_key
from ghhook.frontdoor import (
    BODY_TIMEOUT,
    HEADER_TIMEOUT,
    MAX_INFLIGHT,
    MAX_PER_ADDRESS,
    RESERVED_DESCRIPTORS,
    Limits,
    open_file_limit,
    parse_size,
)
from ghhook.gitrepo import NotAClone, forge_repository, git_dir, remote_url
from ghhook.journal import KEEP_DEPLOYS, why_unusable
from ghhook.reports import (
    DEFAULT_API_URLS,
    NOTIFY_DEFAULT,
    NOTIFY_RESULTS,
    REPEAT_AFTER,
    NotifySettings,
    ReportSettings,
)
from ghhook.runner import ExecutableNotFound, find_executable
from ghhook.signature import load_secrets
from ghhook.watch import compile_glob

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

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
    #: Which forge sends its deliveries (a name of :data:`ghhook.forges.FORGES`).
    forge: str = DEFAULT_FORGE
    secrets: tuple[bytes, ...] = attrs.field(default=(), repr=False)
    restart: tuple[str, ...] | None = None
    timeout: float = 600.0
    env: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    builds: tuple[tuple[str, ...], ...] = ()
    restart_signal: int | None = None
    restart_pidfile: str | None = None
    health_url: str | None = None
    health_timeout: float = 30.0
    #: How a push becomes the clone's HEAD: rebase, ff-only or reset.
    strategy: str = "rebase"
    #: Globs of the paths whose change releases; empty: every change does.
    watch: tuple[str, ...] = ()
    #: The SSH key (and known hosts) git uses for this app's remote.
    ssh_key: str | None = None
    known_hosts: str | None = None
    #: Update the submodules after every change of HEAD.
    submodules: bool = False
    #: A head commit saying [skip deploy] or [deploy skip] deploys nothing.
    skip_ci: bool = False
    #: How the app reports deploys to its forge; None: it does not.
    report: ReportSettings | None = None
    #: The notifications that may tell of the app's deploys.
    notify: tuple[NotifySettings, ...] = ()

    @property
    def git_env(self) -> Mapping[str, str]:
        """The environment of the app's git steps: its SSH key, when it has one."""
        if self.ssh_key is None:
            return self.env
        command = ["ssh", "-i", self.ssh_key, "-o", "IdentitiesOnly=yes"]
        if self.known_hosts is not None:
            command += [
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                f"UserKnownHostsFile={self.known_hosts}",
            ]
        return {**self.env, "GIT_SSH_COMMAND": shlex.join(command)}

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
class AdminToken:
    """One line of ``admin_token_file``: who (the label) and the token, out of ``repr``."""

    label: str
    token: bytes = attrs.field(repr=False)


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
    #: Every ``[[notify]]`` of the file; each app holds those it is told by.
    notify: tuple[NotifySettings, ...] = ()
    #: Who may POST to the admin listener over TCP (``admin_token_file``).
    admin_tokens: tuple[AdminToken, ...] = attrs.field(default=(), repr=False)

    def app(self, name: str) -> AppSettings | None:
        for app in self.apps:
            if app.name == name:
                return app
        return None

    #: Settings a reload cannot change in a running daemon.
    def needs_restart(self, other: DaemonSettings) -> list[str]:
        """
        The file's keys that differ in ``other`` but apply only at the next
        start: the listeners, the journal, the shared path, the front door.
        """
        changed = [
            key
            for key, attribute in _RESTART_ONLY.items()
            if getattr(self, attribute) != getattr(other, attribute)
        ]
        changed += [
            key for key in _LIMIT_KEYS if getattr(self.limits, key) != getattr(other.limits, key)
        ]
        return changed

    def keeping_restart_only(self, running: DaemonSettings) -> DaemonSettings:
        """
        These settings as a reload applies them: what only a restart
        changes stays as ``running`` has it, so a later reload still says so.
        """
        kept = {attribute: getattr(running, attribute) for attribute in _RESTART_ONLY.values()}
        return attrs.evolve(self, limits=running.limits, **kept)


#: Daemon keys a reload does not apply, and the attribute each one sets.
_RESTART_ONLY = {
    "listen": "listen",
    "admin_listen": "admin_listen",
    "admin_host": "admin_hosts",
    "state": "state",
    "path": "path",
}
#: The front door's keys, attributes of :class:`~ghhook.frontdoor.Limits`.
_LIMIT_KEYS = (
    "max_inflight",
    "header_timeout",
    "body_timeout",
    "max_connections",
    "max_per_address",
)


# --- What may be given, and where ---------------------------------------------

#: An app's keys, in [defaults] (all but repo) and in each [apps.NAME] table.
APP_KEYS = (
    "repo",
    "branch",
    "remote",
    "forge",
    "repository",
    "github_repo",
    "secret_file",
    "secret_env",
    "secret_credential",
    "build",
    "restart",
    "restart_signal",
    "restart_pidfile",
    "health_url",
    "health_timeout",
    "timeout",
    "strategy",
    "watch",
    "ssh_key",
    "known_hosts",
    "submodules",
    "skip_ci",
    "report",
)
#: The keys of an app's ``[apps.NAME.report]`` (and ``[defaults.report]``).
REPORT_KEYS = (
    "token_file",
    "token_env",
    "token_credential",
    "api_url",
    "statuses",
    "deployments",
    "environment",
    "environment_url",
    "public_url",
)
TOKEN_KEYS = ("token_file", "token_env", "token_credential")
#: The keys of each ``[[notify]]`` table.
NOTIFY_KEYS = (
    "url",
    "apprise_url",
    "secret_file",
    "secret_env",
    "secret_credential",
    "on",
    "apps",
    "repeat_after",
)
#: The daemon's keys, at the top of the file.
DAEMON_KEYS = (
    "listen",
    "admin_listen",
    "admin_host",
    "state",
    "path",
    "parallel",
    "keep_deploys",
    "admin_token_file",
    "max_inflight",
    "header_timeout",
    "body_timeout",
    "max_connections",
    "max_per_address",
    "notify",
)
#: The single-repo option for each key (``--name`` names the one app).
OPTIONS = {
    "repo": "repo",
    "branch": "branch",
    "remote": "remote",
    "forge": "forge",
    "repository": "repository",
    "github_repo": "github-repo",
    "secret_file": "secret-file",
    "build": "build-cmd",
    "restart": "restart-cmd",
    "restart_signal": "restart-signal",
    "restart_pidfile": "restart-pidfile",
    "health_url": "health-url",
    "health_timeout": "health-timeout",
    "timeout": "timeout",
    "strategy": "strategy",
    "watch": "watch",
    "ssh_key": "ssh-key",
    "known_hosts": "known-hosts",
    "submodules": "submodules",
    "skip_ci": "skip-ci",
    "listen": "listen",
    "admin_listen": "admin-listen",
    "admin_host": "admin-host",
    "state": "state",
    "path": "path",
    "keep_deploys": "keep-deploys",
    "admin_token_file": "admin-token-file",
    "max_inflight": "max-inflight",
    "header_timeout": "header-timeout",
    "body_timeout": "body-timeout",
    "max_connections": "max-connections",
    "max_per_address": "max-per-address",
}
#: The file's key for each single-repo option.
KEY_OF_OPTION = {option: key for key, option in OPTIONS.items()}

SECRET_KEYS = ("secret_file", "secret_env", "secret_credential")
TOKEN_REFUSED = (
    "tokens never go in the config file (it is often world-readable and kept in git);"
    " use token_file, token_env or token_credential"
)
SECRET_REFUSED = (
    "secrets never go in the config file (it is often world-readable and kept in git);"
    " use secret_file, secret_env or secret_credential"
)
#: Keys that replace each other: when an app gives one alternative of a
#: group, [defaults]' other alternatives of that group are not inherited.
_ALTERNATIVES = (
    (("secret_file",), ("secret_env",), ("secret_credential",)),
    (("restart",), ("restart_signal", "restart_pidfile")),
    (("repository",), ("github_repo",)),
    (("token_file",), ("token_env",), ("token_credential",)),
)
#: A repository's full name on each forge, and how a sentence describes it.
_SEGMENT = r"[A-Za-z0-9_.-]+"
_OWNER_NAME = (re.compile(rf"{_SEGMENT}/{_SEGMENT}"), "OWNER/NAME")
_REPOSITORY_NAMES = {
    **{forge: _OWNER_NAME for forge in FORGES},
    "gitlab": (
        re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})+"),
        "GROUP/PROJECT or GROUP/SUBGROUP/PROJECT",
    ),
    "bitbucket": (re.compile(rf"{_SEGMENT}/{_SEGMENT}"), "WORKSPACE/REPOSITORY"),
    "bitbucket-server": (
        re.compile(rf"~?{_SEGMENT}/{_SEGMENT}"),
        "PROJECT/REPOSITORY (the project's key, the repository's slug)",
    ),
}
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HTTP_URL = re.compile(r"https?://[^/\s]+")
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_ADMIN_LISTEN = "tcp:9000:interface=127.0.0.1"
_NAME_RULE = "lower-case letters, digits, - and _, starting with a letter or digit"


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_strings(value: object) -> bool:
    return isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(item, str) for item in value)
    )


def _is_commands(value: object) -> bool:
    return isinstance(value, str) or (
        isinstance(value, list) and all(_is_strings(item) for item in value)
    )


def _is_size(value: object) -> bool:
    return _is_whole(value) or isinstance(value, str)


def _is_bool(value: object) -> bool:
    return isinstance(value, bool)


def _is_table(value: object) -> bool:
    return isinstance(value, dict)


def _is_tables(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)


#: The TOML type each key takes: what a problem calls it, and the test.
_TYPES: dict[str, tuple[str, Callable[[object], bool]]] = {
    **{key: ("a string", _is_str) for key in APP_KEYS + DAEMON_KEYS},
    "build": (
        "a string, or a list of strings (commands) and lists of strings (argvs)",
        _is_commands,
    ),
    "restart": ("a string, or a list of strings (the argv)", _is_strings),
    "health_timeout": ("a number of seconds", _is_number),
    "timeout": ("a number of seconds", _is_number),
    "listen": ("a string or a list of strings", _is_strings),
    "admin_listen": ("a string or a list of strings", _is_strings),
    "admin_host": ("a string or a list of strings", _is_strings),
    "parallel": ("a whole number", _is_whole),
    "keep_deploys": ("a whole number", _is_whole),
    "max_inflight": ('a whole number of bytes, or a string like "64M"', _is_size),
    "header_timeout": ("a number of seconds", _is_number),
    "body_timeout": ("a number of seconds", _is_number),
    "max_connections": ("a whole number", _is_whole),
    "max_per_address": ("a whole number", _is_whole),
    "report": ("a table ([apps.NAME.report])", _is_table),
    "notify": ("an array of tables ([[notify]])", _is_tables),
    **{key: ("a string", _is_str) for key in REPORT_KEYS + NOTIFY_KEYS},
    "statuses": ("true or false", _is_bool),
    "watch": ("a string or a list of strings (globs)", _is_strings),
    "submodules": ("true or false", _is_bool),
    "skip_ci": ("true or false", _is_bool),
    "deployments": ("true or false", _is_bool),
    "on": ("a list of results", _is_strings),
    "apps": ("a list of app names", _is_strings),
    "repeat_after": ("a number of seconds", _is_number),
}


def _toml_type(value: object) -> str:
    """What TOML calls the type of ``value``, for a problem line."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date or time"


# --- Problems and where they are ------------------------------------------------


class _Problems:
    """Problem lines, each once, sorted by where they are in the file at the end."""

    def __init__(self) -> None:
        self._found: dict[str, tuple[int, ...]] = {}

    def add(self, line: str, order: tuple[int, ...] = ()) -> None:
        self._found.setdefault(line, order)

    def __bool__(self) -> bool:
        return bool(self._found)

    def lines(self) -> list[str]:
        return [line for line, _ in sorted(self._found.items(), key=lambda found: found[1])]


class _Broken:
    """A value whose TOML type was wrong: already reported, checked no further."""

    def __repr__(self) -> str:
        return "<broken>"


_BROKEN: Any = _Broken()


@attrs.frozen
class _Given:
    """A setting as given: its value, the table it came from, its place in the file."""

    value: Any
    #: ``apps.api.``, ``defaults.`` or ``""`` (the daemon's keys); unused for options.
    table: str = ""
    order: tuple[int, ...] = ()


@attrs.define
class _Place:
    """
    The settings of one app (or the daemon's) as given, and how a problem
    with one of them is named: by its option on the command line
    (``--branch prod: ...``), by file and key in the config file
    (``ghhook.toml: apps.api.branch: ...``).
    """

    given: Mapping[str, _Given]
    problems: _Problems
    #: The config file as the user named it; None for the command line.
    file: str | None
    #: The app's table (``apps.api.``) or ``""`` for the daemon's keys.
    table: str = ""
    order: tuple[int, ...] = ()
    #: Relative paths in the file start here; the options' in the working directory.
    base: Path = attrs.field(factory=Path)

    @property
    def cli(self) -> bool:
        return self.file is None

    def value(self, key: str, default: Any = None) -> Any:
        given = self.given.get(key)
        return default if given is None else given.value

    def broken(self, key: str) -> bool:
        given = self.given.get(key)
        return given is not None and given.value is _BROKEN

    def path(self, value: str) -> Path:
        """A path as given, made absolute and normal (links are left as the user wrote them)."""
        return Path(os.path.normpath(self.base.absolute() / value))

    def name(self, key: str) -> str:
        """How a sentence names a setting: ``--restart-pidfile`` or ``restart_pidfile``."""
        return f"--{OPTIONS[key]}" if self.cli else key

    def setting(self, key: str, value: str) -> str:
        """How the user gives ``value``: ``give --branch main`` or ``set branch = "main"``."""
        if self.cli:
            return f"give --{OPTIONS[key]} {value}"
        return f"set {key} = {json.dumps(value)}"

    def say(
        self,
        key: str,
        message: str,
        *,
        shown: Any = None,
        index: int | None = None,
        cli: str | None = None,
    ) -> None:
        """
        Add a problem with ``key``.

        :param shown: the value an option's line shows, when not the one given.
        :param index: the item of a list in the file the problem is with.
        :param cli: the whole line for the command line, when it is no
            ``--option VALUE: message``.
        """
        given = self.given.get(key)
        order = given.order if given is not None else self.order
        if self.file is None:
            if cli is None:
                value = shown if shown is not None else self.value(key)
                option = f"--{OPTIONS[key]}"
                cli = (
                    f"{option} {value}: {message}" if value is not None else f"{option}: {message}"
                )
            self.problems.add(cli, order)
            return
        table = given.table if given is not None else self.table
        item = f"[{index}]" if index is not None else ""
        self.problems.add(f"{self.file}: {table}{key}{item}: {message}", order)

    def say_whole(self, message: str, *, cli: str | None = None) -> None:
        """Add a problem with the app (or the daemon) as a whole, not one key."""
        if self.file is None:
            self.problems.add(cli if cli is not None else message, self.order)
        elif self.table:
            self.problems.add(f"{self.file}: {self.table.rstrip('.')}: {message}", self.order)
        else:
            self.problems.add(f"{self.file}: {message}", self.order)


T = TypeVar("T")


def _convert(place: _Place, key: str, convert: Callable[[Any], T], default: Any) -> T | None:
    """``convert`` the value of ``key`` (or ``default``); a ValueError is a problem."""
    if place.broken(key):
        return None
    value = place.value(key, default)
    try:
        return convert(value)
    except ValueError as e:
        place.say(key, str(e), shown=value)
        return None


def _size(value: object) -> int:
    return parse_size(str(value))


def _items(place: _Place, key: str, default: Sequence[str] = ()) -> list[tuple[int | None, Any]]:
    """The items of a list setting, each with its index in the file's list (None: no list)."""
    value = place.value(key)
    if value is None or value is _BROKEN:
        return [(None, item) for item in default] if value is None else []
    if isinstance(value, str):
        return [(None, value)]
    listed = place.file is not None
    return [(index if listed else None, item) for index, item in enumerate(value)]


# --- One app ---------------------------------------------------------------------------


@attrs.define
class _Host:
    """What the checks of every app share."""

    environ: Mapping[str, str]
    #: The environment of every step.
    env: Mapping[str, str]
    #: git, found on the steps' PATH; None when it is not there.
    git: str | None
    #: Who runs the deploys after twistd's --uid; None for ourselves.
    user: RunAs | None
    reloading: bool
    #: Secret files read so far, by absolute path: their secrets or why not.
    secret_files: dict[Path, tuple[bytes, ...] | str] = attrs.field(factory=dict)
    #: The clones taken so far: resolved work trees and git dirs -> the app's name.
    clones: dict[Path, str] = attrs.field(factory=dict)


def _app(name: str, place: _Place, host: _Host) -> AppSettings | None:
    """
    Check one app's settings, as given in the file (after [defaults]) or as
    options; add a problem for each thing wrong and return the app's
    settings, or None when something is missing.
    """
    repo, gdir = _clone(name, place, host)
    secrets = _secrets(place, host)
    forge = _forge(place)
    if forge == "gitlab" and secrets is not None:
        _signing_tokens(place, secrets)
    branch = repository = remote = None
    if repo is not None and gdir is not None:
        branch = _branch(place, repo, gdir)
        remote, repository = _repository(place, repo, gdir, forge)
    else:
        repository = _repository_name(place, forge)
    timeout = _convert(place, "timeout", positive_float, "600")
    health_timeout = _convert(place, "health_timeout", positive_float, "30")
    path = host.env.get("PATH")
    builds = _builds(place, path)
    restart = _restart_command(place, path)
    restart_signal, restart_pidfile = _restart_signal(place)
    health_url = _health_url(place)
    report = _report(place, host, forge, repository) if "report" in place.given else None
    strategy = _choice(place, "strategy", STRATEGIES)
    watch = _watch(place)
    ssh_key, known_hosts = _ssh(place)
    if repo is not None and gdir is not None and host.git is not None and not host.reloading:
        refusal = git_refusal(host.git, repo, host.env, host.user)
        if refusal is not None:
            place.say("repo", refusal, shown=repo)
    if (
        repo is None
        or gdir is None
        or branch is None
        or remote is None
        or host.git is None
        or secrets is None
        or timeout is None
        or health_timeout is None
        or builds is None
        or forge is None
    ):
        return None
    return AppSettings(
        repo=str(repo),
        git_dir=str(gdir),
        remote=remote,
        branch=branch,
        git=host.git,
        name=name,
        repository=repository,
        forge=forge,
        secrets=secrets,
        restart=restart,
        timeout=timeout,
        env=host.env,
        builds=builds,
        restart_signal=restart_signal,
        restart_pidfile=restart_pidfile,
        health_url=health_url,
        health_timeout=health_timeout,
        report=report,
        strategy=strategy or "rebase",
        watch=watch,
        ssh_key=ssh_key,
        known_hosts=known_hosts,
        submodules=place.value("submodules", False) is True,
        skip_ci=place.value("skip_ci", False) is True,
    )


#: How a push becomes the clone's HEAD.
STRATEGIES = ("rebase", "ff-only", "reset")
#: The keys that are flags of the single-repo options.
_FLAGS = ("submodules", "skip_ci")


def _choice(place: _Place, key: str, choices: Sequence[str]) -> str | None:
    value = place.value(key)
    if value is None or value is _BROKEN:
        return None
    if value not in choices:
        place.say(key, f"choose {', '.join(choices)}")
        return None
    return str(value)


def _watch(place: _Place) -> tuple[str, ...]:
    """The watched globs, each one checked."""
    found = []
    for index, pattern in _items(place, "watch"):
        try:
            compile_glob(pattern)
        except (ValueError, re.error) as e:
            place.say("watch", f"{pattern!r} is no glob: {e}", index=index)
            continue
        found.append(pattern)
    return tuple(found)


def _ssh(place: _Place) -> tuple[str | None, str | None]:
    """The SSH key git uses (readable by ghhook's user only) and its known hosts."""
    key, hosts = place.value("ssh_key"), place.value("known_hosts")
    key_path = hosts_path = None
    if isinstance(key, str):
        key_path = place.path(key)
        try:
            mode = key_path.stat().st_mode
        except OSError as e:
            place.say("ssh_key", f"{key_path}: {e.strerror}")
            key_path = None
        else:
            if mode & 0o077:
                place.say(
                    "ssh_key",
                    f"{key_path} is readable by others than its owner; ssh refuses such a key"
                    f" (chmod 600 {key_path})",
                )
                key_path = None
    if isinstance(hosts, str):
        hosts_path = place.path(hosts)
        if not hosts_path.is_file():
            place.say("known_hosts", f"{hosts_path} is not a file (ssh-keyscan HOST > FILE)")
            hosts_path = None
        elif key is None:
            place.say("known_hosts", "goes with ssh_key, the key git uses")
    return (str(key_path) if key_path else None, str(hosts_path) if hosts_path else None)


def _report(
    app: _Place, host: _Host, forge: str | None, repository: str | None
) -> ReportSettings | None:
    """``[apps.NAME.report]``: the token, the forge's API, what to report."""
    given = app.value("report")
    if not isinstance(given, dict):
        return None
    place = _Place(given, app.problems, app.file, f"{app.table}report.", app.order, app.base)
    tokens = _secrets(place, host, TOKEN_KEYS, "API token")
    token = tokens[0].decode("utf-8", "replace") if tokens else None
    if forge is None:
        return None
    api_url = place.value("api_url", DEFAULT_API_URLS.get(forge))
    if api_url is None:
        place.say_whole(
            f"{forge} has no public API to default to: set api_url (e.g."
            ' api_url = "https://git.example.com/api/v1" for Gogs,'
            ' "https://bitbucket.example.com" for Bitbucket Data Center)'
        )
    urls = {key: _url(place, key) for key in ("api_url", "environment_url", "public_url")}
    statuses = place.value("statuses", True)
    deployments = place.value("deployments", False)
    if deployments is True and forge != "github":
        place.say("deployments", f"deployments are GitHub's; this app's forge is {forge}")
    if (
        statuses is True
        and forge in ("bitbucket", "bitbucket-server")
        and urls["public_url"] is None
        and urls["environment_url"] is None
        and not place.broken("public_url")
    ):
        place.say_whole(
            "Bitbucket wants a link with every build status: set public_url (where"
            " ghhook's admin pages are reachable) or environment_url"
        )
    if repository is None and not app.broken("repository") and not app.broken("github_repo"):
        app.say(
            "report",
            "reporting needs the app's repository on its forge: set repository",
        )
        return None
    if (
        token is None
        or api_url is None
        or (place.problems and any(place.broken(key) for key in REPORT_KEYS))
    ):
        return None
    if any(urls[key] is None and key in given for key in urls):
        return None
    environment = place.value("environment")
    return ReportSettings(
        token=token,
        api_url=str(urls["api_url"] or api_url),
        statuses=bool(statuses),
        deployments=bool(deployments),
        environment=str(environment) if isinstance(environment, str) else None,
        environment_url=urls["environment_url"],
        public_url=urls["public_url"],
    )


def _url(place: _Place, key: str) -> str | None:
    """An http(s) URL setting, or None (not given, or a problem said)."""
    url = place.value(key)
    if url is None or url is _BROKEN:
        return None
    if not _HTTP_URL.match(url):
        place.say(key, "not an http(s) URL")
        return None
    return str(url).rstrip("/")


def _notifications(
    raw: object,
    path: str,
    order: tuple[int, ...],
    problems: _Problems,
    host: _Host,
    base: Path,
    apps: Sequence[str],
) -> tuple[NotifySettings, ...]:
    """Every ``[[notify]]`` table, checked; the ones with a problem are left out."""
    if not isinstance(raw, list):
        return ()
    found = []
    for index, table in enumerate(raw):
        name = f"notify[{index}]"
        given = _table(table, NOTIFY_KEYS, path, f"{name}.", (*order, index), problems)
        place = _Place(given, problems, path, f"{name}.", (*order, index), base)
        url, apprise_url = _url(place, "url"), place.value("apprise_url")
        if apprise_url is _BROKEN:
            apprise_url = None
        if (place.value("url") is None) == (apprise_url is None):
            place.say_whole("give url (a JSON POST) or apprise_url (Apprise), one of them")
        secret = None
        if any(key in given for key in SECRET_KEYS):
            if apprise_url is not None:
                place.say_whole("an apprise_url is not signed: its secret_* key is for url")
            secrets = _secrets(place, host, SECRET_KEYS, "notification secret")
            secret = secrets[0] if secrets else None
        if apprise_url is not None and importlib.util.find_spec("apprise") is None:
            place.say(
                "apprise_url",
                "needs Apprise, which is not installed: pip install 'ghhook[notify]'",
            )
        on = [item for _, item in _items(place, "on", list(NOTIFY_DEFAULT))]
        for index_on, result in _items(place, "on"):
            if result not in NOTIFY_RESULTS:
                place.say(
                    "on",
                    f"{result!r} is no result to notify; choose from {', '.join(NOTIFY_RESULTS)}",
                    index=index_on,
                )
        for_apps = None
        if place.value("apps") is not None and not place.broken("apps"):
            for_apps = tuple(item for _, item in _items(place, "apps"))
            for index_app, item in _items(place, "apps"):
                if item not in apps:
                    place.say("apps", f"no app is called {item!r}", index=index_app)
        repeat_after = _convert(place, "repeat_after", positive_float, str(REPEAT_AFTER))
        found.append(
            NotifySettings(
                name=name,
                url=url,
                secret=secret,
                apprise_url=apprise_url if isinstance(apprise_url, str) else None,
                on=tuple(on),
                apps=for_apps,
                repeat_after=repeat_after or REPEAT_AFTER,
            )
        )
    return tuple(found)


def _clone(name: str, place: _Place, host: _Host) -> tuple[Path | None, Path | None]:
    """The app's work tree and git directory, when the repo is a clone no other app has."""
    if place.broken("repo"):
        return None, None
    value = place.value("repo")
    if value is None:
        place.say(
            "repo",
            "missing: every app needs the path of its git clone",
            cli="--repo is required: the path of the git clone to deploy",
        )
        return None, None
    repo = place.path(value)
    try:
        gdir = git_dir(repo)
    except NotAClone as e:
        place.say("repo", str(e))
        return None, None
    # One work tree or one git directory: either way, two engines on one clone.
    others = {host.clones.setdefault(path, name) for path in (repo.resolve(), gdir.resolve())}
    others.discard(name)
    for other in sorted(others):
        place.say(
            "repo",
            f"{repo} is the clone of apps.{other} too; two apps cannot deploy one clone"
            " (give each its own clone)",
        )
    return repo, gdir


def _branch(place: _Place, repo: Path, gdir: Path) -> str | None:
    """
    Deploys pull into the branch the clone is on: a branch it is not on
    would fail every one of them.
    """
    if place.broken("branch"):
        return None
    given: str | None = place.value("branch")
    if given is not None and not given.strip():
        place.say("branch", "is empty; name the branch to deploy, or leave it out for the clone's")
        return None
    on = checked_out_branch(gdir)
    if on is None:
        place.say(
            "repo",
            "HEAD is detached, and deploys pull into a branch; check out the branch to deploy"
            f" (git -C {repo} switch {given or 'BRANCH'})",
            shown=repo,
        )
        return None
    if given is not None and given != on:
        place.say(
            "branch",
            f"the clone {repo} is on branch {on}, and deploys pull into the branch it is on;"
            f" check out {given} there (git -C {repo} switch {given}), or"
            f" {place.setting('branch', on)}",
        )
        return None
    return on


def _forge(place: _Place) -> str | None:
    """The forge that sends the app's deliveries."""
    if place.broken("forge"):
        return None
    forge: str = place.value("forge", DEFAULT_FORGE)
    if forge not in FORGES:
        close = difflib.get_close_matches(forge.lower(), FORGES, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        place.say("forge", f"unknown forge; {hint}ghhook knows {', '.join(FORGES)}")
        return None
    return forge


def _signing_tokens(place: _Place, secrets: Sequence[bytes]) -> None:
    """A GitLab secret line that starts ``whsec_`` must be a whole signing token."""
    if all(signing_key(secret) is not None for secret in secrets if secret.startswith(b"whsec_")):
        return
    message = (
        "a line starting with whsec_ is a GitLab signing token, and this one is not"
        " whsec_<base64>; copy the whole token GitLab shows"
    )
    given = [key for key in SECRET_KEYS if key in place.given]
    if given:
        place.say(given[0], message)
    else:
        place.say_whole("", cli=f"the webhook secret: {message}")


def _repository(
    place: _Place, repo: Path, gdir: Path, forge: str | None
) -> tuple[str | None, str | None]:
    """The remote to pull from, and the forge repository pushes must come from."""
    repository = _repository_name(place, forge)
    if place.broken("remote"):
        return None, repository
    remote: str = place.value("remote", "origin")
    url = remote_url(gdir, remote)
    if url is None:
        place.say(
            "remote",
            f"no such remote {remote!r} in {repo}",
            shown=remote,
            cli=f"--remote {remote}: no such remote in {repo}",
        )
        return None, repository
    if place.value("repository") is None and place.value("github_repo") is None:
        repository = forge_repository(url, forge or DEFAULT_FORGE)
    return remote, repository


def _repository_name(place: _Place, forge: str | None) -> str | None:
    """The repository as given (``repository``, or its old name ``github_repo``), checked."""
    given = [key for key in ("repository", "github_repo") if key in place.given]
    if len(given) > 1 and place.given["repository"].table == place.given["github_repo"].table:
        place.say("github_repo", "is the old name of repository; give only repository")
        return None
    key = given[0] if given else "repository"
    value = place.value(key)
    if value is None or value is _BROKEN:
        return None
    pattern, shape = _REPOSITORY_NAMES.get(forge or DEFAULT_FORGE, _OWNER_NAME)
    if not pattern.fullmatch(value):
        place.say(key, f"expected {shape}")
        return None
    return str(value)


def _order(place: _Place) -> Callable[[str], tuple[int, ...]]:
    """Sorts keys as the file has them."""
    return lambda key: place.given[key].order


def _secrets(
    place: _Place,
    host: _Host,
    keys: tuple[str, str, str] = SECRET_KEYS,
    what: str = "webhook secret",
) -> tuple[bytes, ...] | None:
    """
    The lines of a secret from exactly one source: ``keys`` are its file,
    its environment variable and its systemd credential (the webhook's
    ``secret_*``, a report's ``token_*``, a notification's ``secret_*``).
    """
    file_key, env_key, credential_key = keys
    given = sorted((key for key in keys if key in place.given), key=_order(place))
    if any(place.broken(key) for key in given):
        return None
    if len(given) > 1:
        place.say(
            given[1],
            f"give only one of {file_key}, {env_key} and {credential_key}; {given[0]} is given too",
        )
        return None
    if not given:
        if place.cli:
            secrets = secrets_in_environment(host.environ)
            if not secrets:
                place.say_whole("", cli=NO_SECRET)
                return None
            return secrets
        place.say_whole(
            f"no {what}: set {file_key}, {env_key} or {credential_key}"
            + (", in [defaults] or in the app's table" if keys == SECRET_KEYS else "")
        )
        return None
    (key,) = given
    value: str = place.value(key)
    if key == env_key:
        if not _VARIABLE.fullmatch(value):
            place.say(key, f"{value!r} is not an environment variable's name")
            return None
        text = host.environ.get(value)
        if text is None:
            place.say(key, f"${value} is not set in ghhook's environment")
            return None
        secrets = load_secrets(text)
        if not secrets:
            place.say(key, f"${value} holds no {what}")
        return secrets or None
    if key == credential_key:
        if not value or "/" in value or value in (".", ".."):
            place.say(key, f"{value!r} is not a credential's name (as in LoadCredential=NAME:...)")
            return None
        directory = host.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            place.say(
                key,
                "$CREDENTIALS_DIRECTORY is not set: systemd sets it for a unit with"
                f" LoadCredential=; outside systemd use {file_key} or {env_key}",
            )
            return None
        file = Path(directory) / value
    else:
        file = place.path(value)
    found = host.secret_files.get(file)
    if found is None:
        try:
            found = secrets_in_file(file) or "holds no secret"
        except ValueError as e:
            found = str(e)
        host.secret_files[file] = found
    if isinstance(found, tuple):
        return found
    if place.cli:
        cli = f"--secret-file {value} {found}" if found == "holds no secret" else None
        place.say(key, found, cli=cli)
    else:
        sep = " " if found == "holds no secret" else ": "
        place.say(key, f"{file}{sep}{found}")
    return None


def _program(
    place: _Place, key: str, item: str | list[str], index: int | None, path: str | None
) -> tuple[str, ...] | None:
    """Split a command (or take an argv) and find its program on PATH, once, at start-up."""
    try:
        argv = command(item) if isinstance(item, str) else tuple(item)
        if not argv:
            raise ValueError("the command is empty")
        return (find_executable(argv[0], path), *argv[1:])
    except (ValueError, ExecutableNotFound) as e:
        place.say(key, str(e), shown=item, index=index)
        return None


def _builds(place: _Place, path: str | None) -> tuple[tuple[str, ...], ...] | None:
    builds = [_program(place, "build", item, index, path) for index, item in _items(place, "build")]
    found = tuple(argv for argv in builds if argv is not None)
    return found if len(found) == len(builds) and not place.broken("build") else None


def _restart_command(place: _Place, path: str | None) -> tuple[str, ...] | None:
    value = place.value("restart")
    if value is None or value is _BROKEN:
        return None
    return _program(place, "restart", value, None, path)


def _restart_signal(place: _Place) -> tuple[int | None, str | None]:
    """A restart is a command, or a signal to a pidfile's pid: not both."""
    sig, pidfile = place.value("restart_signal"), place.value("restart_pidfile")
    if sig is _BROKEN or pidfile is _BROKEN:
        return None, None
    if sig is None:
        if pidfile is not None:
            place.say(
                "restart_pidfile",
                "goes with restart_signal, the signal to send to the pid it holds",
                cli="--restart-pidfile goes with --restart-signal SIG",
            )
        return None, None
    number = None
    try:
        number = int(getattr(signal.Signals, "SIG" + sig.upper().removeprefix("SIG")))
    except AttributeError:
        place.say("restart_signal", "no such signal")
    if pidfile is None:
        place.say(
            "restart_signal",
            "needs restart_pidfile, the file holding the pid to signal",
            cli="--restart-signal needs --restart-pidfile FILE",
        )
    if place.value("restart") is not None:
        place.say(
            "restart_signal",
            "give restart or restart_signal, not both",
            cli="give --restart-cmd or --restart-signal, not both",
        )
    return number, str(place.path(pidfile)) if pidfile is not None else None


def _health_url(place: _Place) -> str | None:
    url = place.value("health_url")
    if url is None or url is _BROKEN:
        return None
    if not _HTTP_URL.match(url):
        place.say("health_url", "not an http(s) URL")
        return None
    return str(url)


# --- The daemon ------------------------------------------------------------------------


def _daemon(
    place: _Place,
    host: _Host,
    twistd: Mapping[str, Any],
    apps: Sequence[AppSettings | None],
    *,
    check_ports: bool,
    source: str | None,
) -> DaemonSettings | None:
    """Check the daemon's settings; return them with ``apps``, or None after problems."""
    listen = _endpoints(place, "listen", ["tcp:8000"])
    admin_listen = _endpoints(place, "admin_listen", [_ADMIN_LISTEN])
    admin_hosts = _admin_hosts(place)
    path = _shared_path(place)
    parallel = _convert(place, "parallel", positive_int, str(PARALLEL))
    keep_deploys = _convert(place, "keep_deploys", positive_int, str(KEEP_DEPLOYS))
    admin_tokens = _admin_tokens(place)
    limits = _limits(place)
    state = _state(place, twistd)
    if not host.reloading and state is not None:
        pidfile = twistd.get("pidfile")
        if not twistd.get("chroot"):  # the paths are then inside the chroot
            _files(place, Path(pidfile).absolute() if pidfile else None, state, host.user)
    if check_ports and not host.reloading:
        for key, endpoints in (("listen", listen), ("admin_listen", admin_listen)):
            for index, endpoint in endpoints:
                refusal = bind_refusal(endpoint)
                if refusal is not None:
                    place.say(key, refusal, shown=endpoint, index=index)
    if place.problems or any(app is None for app in apps):
        return None
    assert parallel is not None and keep_deploys is not None and limits is not None
    assert path is not None and state is not None
    return DaemonSettings(
        apps=tuple(app for app in apps if app is not None),
        listen=tuple(endpoint for _, endpoint in listen),
        admin_listen=tuple(endpoint for _, endpoint in admin_listen),
        admin_hosts=tuple(admin_hosts),
        state=str(state),
        path=path,
        parallel=parallel,
        keep_deploys=keep_deploys,
        limits=limits,
        source=source,
        admin_tokens=admin_tokens,
    )


def _admin_tokens(place: _Place) -> tuple[AdminToken, ...]:
    """``admin_token_file``: one ``label:token`` per line, for the admin's POSTs."""
    value = place.value("admin_token_file")
    if value is None or value is _BROKEN:
        return ()
    file = place.path(value)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        place.say("admin_token_file", f"{file}: cannot read it: {reason}")
        return ()
    tokens: list[AdminToken] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        label, sep, token = line.strip().partition(":")
        if not sep or not label.strip() or len(token.strip()) < 16:
            place.say(
                "admin_token_file",
                f"{file} line {number}: expected LABEL:TOKEN with a token of at least"
                " 16 characters (e.g. alice:$(openssl rand -hex 32))",
            )
            continue
        if any(known.label == label.strip() for known in tokens):
            place.say("admin_token_file", f"{file} line {number}: the label {label!r} is taken")
            continue
        tokens.append(AdminToken(label.strip(), token.strip().encode("utf-8")))
    if not tokens and not place.problems:
        place.say("admin_token_file", f"{file} holds no LABEL:TOKEN line")
    return tuple(tokens)


def _endpoints(place: _Place, key: str, default: list[str]) -> list[tuple[int | None, str]]:
    """
    A listener's valid endpoints, each with its index in the file. The
    admin listener may have none (``[]`` or ``"none"``); the hook needs one.
    """
    items = _items(place, key, default)
    if key == "admin_listen" and any(item == "none" for _, item in items):
        return []
    if not items and not place.broken(key) and key == "listen":
        place.say(key, "give at least one endpoint: the hook listens there")
    valid = []
    for index, endpoint in items:
        problem = endpoint_problem(endpoint)
        if problem is not None:
            place.say(key, problem, shown=endpoint, index=index)
        else:
            valid.append((index, endpoint))
    return valid


def _admin_hosts(place: _Place) -> list[str]:
    items = _items(place, "admin_host")
    if not items:
        return []
    # Imported only when needed: the admin pages pull in Klein.
    from ghhook.admin import admin_host

    hosts = []
    for index, name in items:
        try:
            hosts.append(admin_host(name))
        except ValueError as e:
            place.say("admin_host", str(e), shown=name, index=index)
    return hosts


def _shared_path(place: _Place) -> str | None:
    if place.broken("path"):
        return None
    path: str = place.value("path", SHARED_PATH)
    if not path.startswith("/"):
        place.say("path", "must start with /", shown=path)
        return None
    if path == "/hooks" or path.startswith("/hooks/"):
        place.say("path", "/hooks/ holds each app's own URL (/hooks/NAME); choose another path")
        return None
    return path


def _limits(place: _Place) -> Limits | None:
    """The deadlines and caps of the listeners."""
    inflight = _convert(place, "max_inflight", _size, "64M" if place.cli else MAX_INFLIGHT)
    header = _convert(place, "header_timeout", positive_float, str(int(HEADER_TIMEOUT)))
    body = _convert(place, "body_timeout", positive_float, str(int(BODY_TIMEOUT)))
    if header is not None and body is not None and body < header:
        shown = place.value("header_timeout", str(int(HEADER_TIMEOUT)))
        place.say(
            "body_timeout",
            f"must be at least {place.name('header_timeout')} ({shown}), since it counts"
            " from the same start",
        )
    per_address = _convert(place, "max_per_address", positive_int, str(MAX_PER_ADDRESS))
    hard = open_file_limit()[1]
    room = hard - RESERVED_DESCRIPTORS if hard != resource.RLIM_INFINITY else None
    connections = None
    if place.value("max_connections") is not None:
        connections = _convert(place, "max_connections", positive_int, None)
        if connections is not None and room is not None and connections > room:
            place.say(
                "max_connections",
                f"the open-file hard limit {hard} leaves room for {max(room, 0)}"
                " (raise LimitNOFILE= or ulimit -Hn)",
                shown=connections,
            )
            connections = None
    elif room is not None and room < 1:
        place.say_whole(
            f"the open-file hard limit {hard} leaves no room for connections;"
            " raise LimitNOFILE= or ulimit -Hn"
        )
    if None in (inflight, header, body, per_address) or (body or 0) < (header or 0):
        return None
    assert inflight is not None and header is not None and body is not None
    assert per_address is not None
    return Limits(
        header_timeout=header,
        body_timeout=body,
        max_connections=connections,
        max_per_address=per_address,
        max_inflight=inflight,
    )


def _state(place: _Place, twistd: Mapping[str, Any]) -> Path | None:
    """
    The journal's file, absolute: relative to the config file's directory
    when the file gives it, else to twistd's --rundir.
    """
    if place.broken("state"):
        return None
    value = place.value("state")
    if value is None or place.cli:
        base = Path(twistd.get("rundir") or ".")
        state = Path(os.path.normpath(base.absolute() / (value or "ghhook.sqlite3")))
    else:
        state = place.path(value)
    why = why_unusable(str(state))
    if why is not None:
        place.say("state", why if place.cli else f"{state}: {why}", shown=state)
        return None
    return state


def _files(place: _Place, pidfile: Path | None, state: Path, user: RunAs | None) -> None:
    """Refuse what twistd's user or the --uid user could not do with the pidfile or journal."""
    given_in_file = not place.cli and place.value("state") is not None
    elsewhere = "give state another directory" if given_in_file else "choose another --rundir"
    refusal = file_refusal(pidfile, state, user, elsewhere)
    if refusal is None:
        return
    which, why = refusal
    if which == "pidfile":
        place.problems.add(f"--pidfile {pidfile}: {why}", ())
    else:
        place.say("state", why if place.cli else f"{state}: {why}", shown=state)


def _host(
    environ: Mapping[str, str],
    twistd: Mapping[str, Any],
    problems: _Problems,
    reloading: bool,
    hidden: Iterable[str] = (),
) -> _Host:
    """
    What every app shares: the steps' environment (without any secret
    variable), git on its PATH, and the user the deploys run as.

    :param hidden: more variables the steps must not see (secret_env's).
    """
    env = child_environment(environ)
    for name in hidden:
        env.pop(name, None)
    git = None
    try:
        git = find_executable("git", env.get("PATH"))
    except ExecutableNotFound as e:
        problems.add(str(e))
    user = None
    if not reloading:
        try:
            user = run_as(twistd)
        except ValueError as e:
            problems.add(str(e))
    return _Host(environ, env, git, user, reloading)


# --- The ways in ---------------------------------------------------------------------


def app_name(repo: str) -> str:
    """
    The name of the one app of the single-repo options: its clone's
    directory, lower-cased, other characters than ``[a-z0-9_-]`` as ``-``.
    """
    name = re.sub(r"[^a-z0-9_-]", "-", Path(os.path.abspath(repo)).name.lower())
    return name.lstrip("-_") or "app"


def from_options(
    options: Mapping[str, Any], environ: Mapping[str, str], twistd: Mapping[str, Any]
) -> DaemonSettings:
    """
    The settings of the single-repo options (``--repo`` and friends): one
    app, named ``--name`` or after its clone's directory.

    :param options: the options by their long names (``repo``,
        ``secret-file``, ``build-cmd``...), as strings (lists for the
        repeatable ones); None or empty for those not given.
    :param environ: ghhook's environment (the secret variables, PATH).
    :param twistd: twistd's own options (``rundir``, ``uid``, ``pidfile``...).
    :raises ConfigError: with every problem, in today's option texts.
    """
    given = {
        key: _Given(bool(options[option]) if key in _FLAGS else options[option])
        for option, key in KEY_OF_OPTION.items()
        # A flag left alone is 0: given, it is 1.
        if options.get(option) not in (None, [], (), 0, False)
    }
    problems = _Problems()
    place = _Place(given, problems, None)
    host = _host(environ, twistd, problems, reloading=False)
    name = options.get("name")
    if name is not None and not APP_NAME.fullmatch(name):
        problems.add(f"--name {name}: not a valid app name ({_NAME_RULE})")
    if name is None:
        name = app_name(given["repo"].value) if "repo" in given else "app"
    app = _app(name, place, host)
    settings = _daemon(place, host, twistd, [app], check_ports=True, source=None)
    if problems or settings is None:
        raise ConfigError(problems.lines() or ["the settings are not usable"])
    return settings


def load_file(
    path: str,
    environ: Mapping[str, str],
    twistd: Mapping[str, Any],
    *,
    reloading: bool = False,
    check_ports: bool = True,
) -> DaemonSettings:
    """
    The settings of a config file: the daemon's keys at the top,
    ``[defaults]`` every app inherits, and one ``[apps.NAME]`` table per app.

    :param path: the file, as the user named it (problem lines start with it).
    :param environ: ghhook's environment (secret_env's variables,
        ``$CREDENTIALS_DIRECTORY``, PATH).
    :param twistd: twistd's own options (``rundir``, ``uid``, ``pidfile``...).
    :param reloading: a reload under the reactor: skip what runs a
        subprocess or binds a port (git's refusal, the --uid user's access,
        the trial bind).
    :param check_ports: whether to try binding the listeners' ports (no for
        ``check-config``, which runs while the daemon holds them).
    :raises ConfigError: with every problem, in the order of the file.
    """
    document = _read(path)
    problems = _Problems()
    top = _table(document, (*DAEMON_KEYS, "defaults", "apps"), path, "", (), problems)
    defaults_raw = document.get("defaults", {})
    defaults: dict[str, _Given] = {}
    if isinstance(defaults_raw, dict):
        at_defaults: tuple[int, ...] = ()
        if "defaults" in document:
            at_defaults = (list(document).index("defaults"),)
        defaults = _table(defaults_raw, APP_KEYS, path, "defaults.", at_defaults, problems)
    apps_raw = document.get("apps")
    tables: list[tuple[str, dict[str, _Given], tuple[int, ...]]] = []
    if isinstance(apps_raw, dict):
        at = list(document).index("apps")
        for index, (name, table) in enumerate(apps_raw.items()):
            order = (at, index)
            if not APP_NAME.fullmatch(name):
                problems.add(f"{path}: apps.{name}: not a valid app name ({_NAME_RULE})", order)
            if not isinstance(table, dict):
                problems.add(
                    f"{path}: apps.{name}: expected a table ([apps.{name}] and its keys),"
                    f" not {_toml_type(table)}",
                    order,
                )
                continue
            given = _table(table, APP_KEYS, path, f"apps.{name}.", order, problems)
            tables.append((name, _inherit(defaults, given), order))
    if not apps_raw:
        problems.add(
            f"{path}: no apps: add an [apps.NAME] table for each, with its repo = PATH",
            (len(document),),
        )
    # The variables of secrets and tokens: no step may see them.
    hidden = [
        str(given["secret_env"].value)
        for given in [defaults, *(table for _, table, _ in tables)]
        if "secret_env" in given and isinstance(given["secret_env"].value, str)
    ]
    for given in [defaults, *(table for _, table, _ in tables)]:
        report = given.get("report")
        if report is not None and isinstance(report.value, dict) and "token_env" in report.value:
            if isinstance(report.value["token_env"].value, str):
                hidden.append(report.value["token_env"].value)
    raw_notify = document.get("notify")
    if isinstance(raw_notify, list):
        hidden += [
            item["secret_env"]
            for item in raw_notify
            if isinstance(item, dict) and isinstance(item.get("secret_env"), str)
        ]
    host = _host(environ, twistd, problems, reloading, hidden)
    base = Path(path).absolute().parent
    apps = [
        _app(name, _Place(given, problems, path, f"apps.{name}.", order, base), host)
        for name, given, order in tables
    ]
    place = _Place(top, problems, path, "", (), base)
    notify: tuple[NotifySettings, ...] = ()
    if "notify" in top and not place.broken("notify"):
        names = [name for name, _, _ in tables]
        notify = _notifications(
            document["notify"], path, top["notify"].order, problems, host, base, names
        )
    settings = _daemon(
        place, host, twistd, apps, check_ports=check_ports, source=str(Path(path).absolute())
    )
    if problems or settings is None:
        raise ConfigError(problems.lines() or [f"{path}: the settings are not usable"])
    return attrs.evolve(
        settings,
        notify=notify,
        apps=tuple(
            attrs.evolve(
                app, notify=tuple(n for n in notify if n.apps is None or app.name in n.apps)
            )
            for app in settings.apps
        ),
    )


def _read(path: str) -> dict[str, Any]:
    """The file's TOML document, or a ConfigError of one line naming file, line and column."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError([f"{path}: cannot read it: {e.strerror or e}"]) from None
    except UnicodeDecodeError as e:
        raise ConfigError([f"{path}: not UTF-8 text ({e.reason} at byte {e.start})"]) from None
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        at = _TOML_POSITION.search(message)
        if at is not None:
            message = message[: at.start()]
            where = f"line {at.group(1)}, column {at.group(2)}"
        else:
            where = message.rpartition("(")[2].rstrip(")") or "somewhere"
            message = message.rpartition(" (")[0] or message
        raise ConfigError([f"{path}: {where}: not valid TOML: {message}"]) from None


def _table(
    raw: Mapping[str, Any],
    allowed: Sequence[str],
    path: str,
    table: str,
    order: tuple[int, ...],
    problems: _Problems,
) -> dict[str, _Given]:
    """
    The keys of one table that are known and of the right TOML type; a
    problem for each other one. A key of the right name but the wrong type
    is kept as broken, so that nothing else is said about it.
    """
    given: dict[str, _Given] = {}
    for index, (key, value) in enumerate(raw.items()):
        at = (*order, index)
        where = f"{path}: {table}{key}"
        if key == "secret":
            problems.add(f"{where}: {SECRET_REFUSED}", at)
        elif key == "token":
            problems.add(f"{where}: {TOKEN_REFUSED}", at)
        elif key in ("defaults", "apps") and key in allowed and not table:
            if not isinstance(value, dict):
                problems.add(f"{where}: expected a table ([{key}...]), not {_toml_type(value)}", at)
        elif table == "defaults." and key == "repo":
            problems.add(
                f"{where}: each app has a clone of its own: set repo in its [apps.NAME] table",
                at,
            )
        elif key not in allowed:
            problems.add(f"{where}: {_unknown(key, allowed, table)}", at)
        else:
            expected, test = _TYPES[key]
            if test(value) and key == "report":
                # Its keys are checked here, and named apps.NAME.report.KEY.
                keys = _table(value, REPORT_KEYS, path, f"{table}report.", at, problems)
                given[key] = _Given(keys, table, at)
            elif test(value):
                given[key] = _Given(value, table, at)
            else:
                problems.add(f"{where}: expected {expected}, not {_toml_type(value)}", at)
                given[key] = _Given(_BROKEN, table, at)
    return given


def _unknown(key: str, allowed: Sequence[str], table: str) -> str:
    if not table and key in APP_KEYS:
        return f"{key} is an app's key: put it in [defaults] (every app) or in an [apps.NAME] table"
    if table and key in DAEMON_KEYS:
        return f"{key} is the daemon's key: put it at the top of the file, before any [table]"
    close = difflib.get_close_matches(key, allowed, n=1)
    if close:
        return f"unknown key {key!r}; did you mean {close[0]!r}?"
    return f"unknown key {key!r}"


def _inherit(defaults: Mapping[str, _Given], own: Mapping[str, _Given]) -> dict[str, _Given]:
    """
    An app's settings: [defaults], then its own keys over them. An app that
    gives one alternative of a group (one secret source; a restart command
    or a restart signal) inherits none of the group's others.
    """
    inherited = dict(defaults)
    for group in _ALTERNATIVES:
        chosen = [keys for keys in group if any(key in own for key in keys)]
        for keys in group:
            if chosen and keys not in chosen:
                for key in keys:
                    inherited.pop(key, None)
    report = None
    if "report" in defaults and "report" in own:
        # The report table is inherited key by key, as the app's own keys are.
        mine = own["report"].value
        if isinstance(mine, dict) and isinstance(defaults["report"].value, dict):
            merged = _inherit(defaults["report"].value, mine)
            report = attrs.evolve(own["report"], value=merged)
    inherited.update(own)
    if report is not None:
        inherited["report"] = report
    return inherited
