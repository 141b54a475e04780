"""
``python -m ghhook send``: post a signed delivery, shaped like a forge's, to a hook.

For trying a deployment end to end without the forge: the body and the
headers come from :mod:`ghhook.payloads` (what each forge sends), signed as
that forge signs (``--forge``, GitHub by default), and the answer's status
decides the exit status.

Exit statuses: 0 for a 2xx answer, 1 for any other answer, 2 when the
delivery cannot be built (options, secret, clone), 3 when no answer came
(refused, unresolvable, timed out, connection lost). Every failure is one
line on stderr, never a traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO
from urllib.parse import urlsplit

import attrs
from twisted.internet.task import react
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python import usage
from twisted.web.http_headers import Headers

import ghhook
from ghhook.checkconfig import CheckConfigOptions
from ghhook.checkconfig import check as check_config
from ghhook.checks import child_environment, positive_float, read_secrets
from ghhook.cli import CliError
from ghhook.delivery import SHA_RE, ZERO_SHA
from ghhook.forges import FORGES
from ghhook.forges.gitlab import signing_key
from ghhook.gitrepo import NotAClone, current_branch, forge_repository, git_dir, remote_url
from ghhook.httpclient import NoWholeAnswer, describe_failure, whole_answer
from ghhook.payloads import PING_FORGES, encode, forge_headers, forge_ping, forge_push
from ghhook.runner import ExecutableNotFound, find_executable

EVENTS = ("ping", "push")
DEFAULT_REPOSITORY = "example/app"
DEFAULT_BRANCH = "main"

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_NO_ANSWER = 3


class CannotSend(CliError):
    """The delivery cannot be built or delivered; the message is one line."""


class SendOptions(usage.Options):
    synopsis = "--url URL --event ping|push [options]"
    longdesc = (
        "Post a delivery shaped and signed like the forge's (GitHub by default:"
        " X-Hub-Signature-256 and X-Hub-Signature, a fresh X-GitHub-Delivery; see"
        " --forge) and print the answer. A push"
        " defaults to the HEAD of --repo-dir and its branch, so it asks the hook to"
        " deploy what is checked out there. Exits 0 on a 2xx answer."
    )

    optParameters: list[list[Any]] = [
        ["url", None, None, "The hook's URL, e.g. http://127.0.0.1:8000/github (required)."],
        [
            "secret-file",
            None,
            None,
            "File holding the webhook secret; the first line signs."
            " Default: $GHHOOK_SECRET, else $GITHUB_SECRET.",
        ],
        ["event", None, None, "ping or push (required; a push may deploy)."],
        [
            "ref",
            None,
            None,
            "The pushed ref. Default: refs/heads/<branch checked out in --repo-dir>,"
            " else refs/heads/main.",
        ],
        ["after", None, None, "The pushed sha. Default: HEAD of --repo-dir."],
        [
            "before",
            None,
            None,
            "The sha the ref pointed at before. Default: the parent of --after"
            " when --repo-dir has it, else the zero sha.",
        ],
        ["repo-dir", None, ".", "The clone to read HEAD, branch and remote from."],
        [
            "forge",
            None,
            "github",
            "Shape and sign the delivery as this forge does: github, gitea, forgejo, gogs,"
            " gitlab, bitbucket or bitbucket-server.",
        ],
        [
            "gitlab-auth",
            None,
            "token",
            "With --forge gitlab: token (X-Gitlab-Token) or signing (a signing token,"
            " whsec_..., signs the delivery as GitLab does).",
        ],
        [
            "repository",
            None,
            None,
            "The repository's full name in the payload (OWNER/NAME; GitLab"
            " GROUP/PROJECT; Bitbucket Data Center PROJECT/SLUG). Default: from the"
            " origin remote of --repo-dir when it is on the forge's public host, else"
            " example/app (PROJ/app for bitbucket-server).",
        ],
        ["github-repo", None, None, "The old name of --repository."],
        ["timeout", None, "30", "Seconds to wait for the whole answer (connect, headers, body)."],
    ]

    def postOptions(self) -> None:
        if self["url"] is None:
            raise usage.UsageError("--url is required, e.g. --url http://127.0.0.1:8000/github")
        self["url"] = check_url(self["url"])
        if self["event"] not in EVENTS:
            given = "is required" if self["event"] is None else f"{self['event']}: unknown event"
            raise usage.UsageError(f"--event {given}; give ping or push")
        for name in ("after", "before"):
            if self[name] is not None:
                self[name] = check_sha(f"--{name}", self[name])
        if self["ref"] is not None and not self["ref"].startswith("refs/"):
            raise usage.UsageError(f"--ref {self['ref']}: expected a full ref like refs/heads/main")
        if self["forge"] not in FORGES:
            raise usage.UsageError(f"--forge {self['forge']}: give one of {', '.join(FORGES)}")
        if self["gitlab-auth"] not in ("token", "signing"):
            raise usage.UsageError(f"--gitlab-auth {self['gitlab-auth']}: give token or signing")
        if self["event"] == "ping" and self["forge"] not in PING_FORGES:
            raise usage.UsageError(
                f"--event ping: {self['forge']} sends no ping (its test button sends a push);"
                " send --event push"
            )
        for option in ("repository", "github-repo"):
            value = self[option]
            if value is not None:
                parts = value.split("/")
                nested = self["forge"] == "gitlab"
                if len(parts) < 2 or not all(parts) or (len(parts) > 2 and not nested):
                    shape = "GROUP/PROJECT" if nested else "OWNER/NAME"
                    raise usage.UsageError(f"--{option} {value}: expected {shape}")
        self["repository"] = self["repository"] or self["github-repo"]
        try:
            self["timeout"] = positive_float(self["timeout"])
        except ValueError as e:
            raise usage.UsageError(f"--timeout {self['timeout']}: {e}") from None
        self["secret"] = read_secrets(self["secret-file"], dict(os.environ))[0]
        if self["forge"] == "gitlab" and self["gitlab-auth"] == "signing":
            if signing_key(self["secret"]) is None:
                raise usage.UsageError(
                    "--gitlab-auth signing: the secret is no signing token (whsec_<base64>)"
                )
        self["clone"] = inspect_clone(Path(self["repo-dir"]), self["forge"])

    def getSynopsis(self) -> str:
        return f"Usage: python -m ghhook send {self.synopsis}"

    def opt_version(self) -> NoReturn:
        """Print the version and exit."""
        _print_version()


class Options(usage.Options):
    synopsis = "Usage: python -m ghhook COMMAND [options]"
    longdesc = "Tools around a ghhook daemon (the daemon itself runs as `twistd ghhook`)."
    subCommands = [
        ["send", None, SendOptions, "Post a signed test delivery to a hook."],
        [
            "check-config",
            None,
            CheckConfigOptions,
            "Validate a config file as the daemon would and list its apps (exit 0, or 2).",
        ],
    ]

    def opt_version(self) -> NoReturn:
        """Print the version and exit."""
        _print_version()

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("give a command: send or check-config (see --help)")


def _print_version() -> NoReturn:
    print(f"ghhook {ghhook.__version__}")
    sys.exit(0)


@attrs.frozen
class Clone:
    """What a clone says about the defaults; all None when it is no clone."""

    work_tree: Path
    branch: str | None
    repository: str | None
    is_clone: bool


def inspect_clone(work_tree: Path, forge: str = "github") -> Clone:
    """Read the branch and the forge's repository from a clone's files."""
    try:
        gdir = git_dir(work_tree)
    except NotAClone:
        return Clone(work_tree, None, None, False)
    url = remote_url(gdir, "origin")
    return Clone(
        work_tree,
        current_branch(gdir),
        forge_repository(url, forge) if url else None,
        True,
    )


def check_url(url: str) -> str:
    """An absolute http(s) URL with a host, or a :class:`usage.UsageError`."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError as e:
        raise usage.UsageError(f"--url {url}: not a valid URL ({e})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise usage.UsageError(
            f"--url {url}: expected an http:// or https:// URL with a host,"
            " e.g. http://127.0.0.1:8000/github"
        )
    return url


def check_sha(option: str, value: str) -> str:
    if not SHA_RE.fullmatch(value):
        raise usage.UsageError(f"{option} {value}: not a full 40-hex-digit commit sha")
    return value.lower()


async def rev_parse(reactor: Any, git: str, work_tree: Path, revision: str) -> str | None:
    """The commit sha ``revision`` names in ``work_tree``, or None."""
    out, _err, code = await getProcessOutputAndValue(
        git,
        ("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"),
        env=child_environment(dict(os.environ)),
        path=str(work_tree),
        reactor=reactor,
    )
    sha = out.decode("ascii", "replace").strip()
    if code != 0 or not SHA_RE.fullmatch(sha):
        return None
    return sha.lower()


async def build_payload(reactor: Any, config: Mapping[str, Any]) -> dict[str, Any]:
    """The event's payload, its defaults filled in from the clone."""
    clone: Clone = config["clone"]
    forge = config["forge"]
    default = "PROJ/app" if forge == "bitbucket-server" else DEFAULT_REPOSITORY
    repository = config["repository"] or clone.repository or default
    if config["event"] == "ping":
        return forge_ping(forge, repository)
    after, before = config["after"], config["before"]
    if after is None or before is None:
        git = _git() if clone.is_clone else None
        if after is None:
            if git is None:
                reason = "git is not on PATH" if clone.is_clone else "not a git work tree (no .git)"
                raise CannotSend(
                    f"--repo-dir {clone.work_tree}: {reason}; give --after SHA", EXIT_USAGE
                )
            after = await rev_parse(reactor, git, clone.work_tree, "HEAD")
            if after is None:
                raise CannotSend(
                    f"--repo-dir {clone.work_tree}: HEAD names no commit; give --after SHA",
                    EXIT_USAGE,
                )
        if before is None:
            parent = None
            if git is not None:
                parent = await rev_parse(reactor, git, clone.work_tree, f"{after}~1")
            before = parent or ZERO_SHA
    ref = config["ref"] or f"refs/heads/{clone.branch or DEFAULT_BRANCH}"
    return forge_push(forge, after=after, before=before, ref=ref, repository=repository)


def _git() -> str | None:
    try:
        return find_executable("git", os.environ.get("PATH"))
    except ExecutableNotFound:
        return None


@attrs.frozen
class Answer:
    code: int
    phrase: str
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300


async def post(
    reactor: Any, url: str, body: bytes, headers: dict[str, str], timeout: float
) -> Answer:
    """
    POST ``body`` and read the whole answer within ``timeout`` seconds
    (connect, headers and body), or raise :class:`CannotSend`.
    """
    import treq

    request = treq.post(
        url,
        data=body,
        headers=Headers({name: [value] for name, value in headers.items()}),
        persistent=False,
        reactor=reactor,
    )
    try:
        response, content = await whole_answer(request, timeout, reactor)
    except NoWholeAnswer as e:
        raise CannotSend(f"cannot deliver to {url}: {e}", EXIT_NO_ANSWER) from None
    except Exception as e:  # noqa: BLE001 - every way of not answering is one line
        raise CannotSend(
            f"cannot deliver to {url}: {describe_failure(e)}", EXIT_NO_ANSWER
        ) from None
    phrase = response.phrase.decode("latin-1", "replace") if response.phrase else ""
    return Answer(response.code, phrase, content)


def print_answer(answer: Answer, out: TextIO) -> None:
    print(f"{answer.code} {answer.phrase}".rstrip(), file=out)
    text = answer.body.decode("utf-8", "replace").strip()
    if text:
        print(text, file=out)


async def send(reactor: Any, config: Mapping[str, Any], out: TextIO = sys.stdout) -> int:
    """Build, sign and post the delivery; print the answer; return the exit status."""
    payload = await build_payload(reactor, config)
    body = encode(payload)
    headers = forge_headers(
        config["forge"],
        body,
        config["secret"],
        config["event"],
        ref=config["ref"] or str(payload.get("ref") or ""),
        gitlab_auth=config["gitlab-auth"],
    )
    answer = await post(reactor, config["url"], body, headers, config["timeout"])
    print_answer(answer, out)
    return EXIT_OK if answer.ok else EXIT_REFUSED


async def _react_main(reactor: Any, config: Mapping[str, Any]) -> None:
    try:
        code = await send(reactor, config)
    except CannotSend as e:
        print(f"ghhook send: {e}", file=sys.stderr)
        code = e.code
    sys.stdout.flush()
    if code:
        raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Parse ``argv`` (default: the command line) and run the command."""
    config = Options()
    try:
        config.parseOptions(list(sys.argv[1:] if argv is None else argv))
    except usage.UsageError as e:
        prefix = f"ghhook {config.subCommand}" if config.subCommand else "ghhook"
        print(f"{prefix}: {e}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    if config.subCommand == "check-config":
        sys.exit(check_config(config.subOptions["path"], os.environ, sys.stdout, sys.stderr))
    react(_react_main, (config.subOptions,))


__all__ = [
    "Answer",
    "CannotSend",
    "Options",
    "SendOptions",
    "build_payload",
    "describe_failure",
    "main",
    "post",
    "send",
]
