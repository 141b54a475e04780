"""
The twistd glue: ``twistd ghhook`` options and the service they build.

Everything is checked in :meth:`Options.postOptions`, so a bad setting stops
twistd with one line before anything listens or runs.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any

from twisted.application import strports
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python import usage

from ghhook.decision import Tracked
from ghhook.deployer import Deployer, Settings
from ghhook.gitrepo import NotAClone, current_branch, git_dir, github_repository, remote_url
from ghhook.journal import Journal
from ghhook.runner import ExecutableNotFound, ProcessRunner, find_executable
from ghhook.signature import load_secrets
from ghhook.web import Hook, make_site

log = Logger(namespace="ghhook")

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

    def opt_listen(self, endpoint: str) -> None:
        """Endpoint to serve the hook on, e.g. tcp:8000:interface=127.0.0.1,
        unix:/run/ghhook.sock or systemd:domain=INET:index=0. Repeatable.
        [default: tcp:8000]"""
        self["listen"].append(endpoint)

    def postOptions(self) -> None:
        # twistd answers a UsageError with its whole usage text; a bad setting
        # deserves one line that says what is wrong.
        try:
            self.check(dict(os.environ))
        except usage.UsageError as e:
            raise SystemExit(f"ghhook: {e}") from None

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
        if self["restart-cmd"] is not None:
            self["restart-cmd"] = _coerce("--restart-cmd", command, self["restart-cmd"])
        self["env"] = child_environment(environ)
        try:
            self["git"] = find_executable("git", self["env"].get("PATH"))
            if self["restart-cmd"] is not None:
                program = find_executable(self["restart-cmd"][0], self["env"].get("PATH"))
                self["restart-cmd"] = (program, *self["restart-cmd"][1:])
        except ExecutableNotFound as e:
            raise usage.UsageError(str(e)) from None
        rundir = getattr(self, "parent", None) and self.parent.get("rundir")
        self["state"] = str(Path(rundir or ".", self["state"]).absolute())
        for endpoint in self["listen"]:
            _check_endpoint("--listen", endpoint)


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

    def __init__(self, journal: Journal, deployer: Deployer) -> None:
        super().__init__()
        self.journal = journal
        self.deployer = deployer

    def startService(self) -> None:
        self.journal.open()
        super().startService()
        log.info(
            "ghhook serving {repo} ({branch}), head deployed: {sha}",
            repo=self.deployer.settings.repo,
            branch=self.deployer.settings.branch,
            sha=self.journal.get("deployed"),
        )
        self.deployer.start()

    def stopService(self) -> Deferred[None]:
        # Stop listening first, then let the deploy finish or kill it.
        d = maybeDeferred(super().stopService)
        d.addCallback(lambda _: self.deployer.stop())
        d.addBoth(self._closed)
        return d

    def _closed(self, result: object) -> object:
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
    )
    journal = Journal(config["state"])
    deployer = Deployer(settings, ProcessRunner(reactor), journal, reactor)
    hook = Hook(
        config["secrets"],
        Tracked(branch=config["branch"], repository=config["github-repo"]),
        deployer,
        journal,
        path=config["path"],
    )
    top = GhhookService(journal, deployer)
    site = make_site(hook.resource())
    for endpoint in config["listen"]:
        strports.service(endpoint, site, reactor=reactor).setServiceParent(top)
    return top
