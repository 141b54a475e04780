"""
``ghhook COMMAND``: the operator's command, talking to a running daemon's
admin listener (and, for ``send`` and ``check-config``, to a hook or a
config file).

::

    ghhook status [APP]               the apps, or one app's recent deploys
    ghhook deploy APP [--force]       deploy the branch's head now
    ghhook rollback APP [--to SHA]    deploy an earlier commit (the app is then paused)
    ghhook pause APP [--reason TEXT]  hold pushes until resume
    ghhook resume APP                 release them
    ghhook logs APP [DEPLOY] [-f]     a deploy's output (default: the newest), -f live
    ghhook send ...                   post a signed test delivery to a hook
    ghhook check-config FILE          validate a config file

The admin listener is ``--admin URL``; else the one of ``--config FILE``
(its first ``admin_listen``); else ``$GHHOOK_ADMIN``; else the one of
/etc/ghhook/ghhook.toml when that file exists; else http://127.0.0.1:9000.
A URL is ``http(s)://HOST:PORT`` or ``unix:/path/to.sock``. POSTs carry
``Authorization: Bearer <token>`` when a token is given (``--token-file``,
``$GHHOOK_ADMIN_TOKEN_FILE`` or ``$GHHOOK_ADMIN_TOKEN``); over a unix socket
the daemon needs none. GETs never carry it.

Exit statuses: 0 the daemon did it (a 2xx answer); 1 the daemon refused (a
4xx or 5xx answer, its sentence on stderr as ``ghhook: <sentence>``); 2 a
usage error; 3 no answer (refused, unresolvable, timed out, not the admin
API); 130 interrupted (Ctrl-C). Every failure is one line on stderr, never a
traceback.
"""

from __future__ import annotations

import codecs
import getopt
import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO
from urllib.parse import quote, urlsplit

import attrs
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import react
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IResponse
from zope.interface import implementer

import ghhook
from ghhook.checkconfig import CheckConfigOptions
from ghhook.checks import positive_float
from ghhook.httpclient import BodyReader, NoWholeAnswer, describe_failure

if TYPE_CHECKING:
    from ghhook.send import SendOptions

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_NO_ANSWER = 3
EXIT_INTERRUPTED = 130

DEFAULT_CONFIG = "/etc/ghhook/ghhook.toml"
DEFAULT_ADMIN = "http://127.0.0.1:9000"
#: The daemon's own default for ``admin_listen``.
DAEMON_ADMIN_LISTEN = "tcp:9000:interface=127.0.0.1"
#: The most of a JSON answer read: /status of many apps, 50 deploys of one.
MAX_JSON = 16 * 1024 * 1024
SHORT_SHA = 7

EXIT_HELP = (
    "Exit statuses: 0 done (a 2xx answer); 1 the daemon refused (4xx/5xx; its"
    " sentence on stderr); 2 usage error; 3 no answer (refused, timed out, not"
    " the admin API); 130 interrupted."
)
ADMIN_HELP = (
    "The admin listener: --admin; else --config's first admin_listen; else"
    " $GHHOOK_ADMIN; else the admin_listen of " + DEFAULT_CONFIG + " when it exists;"
    " else " + DEFAULT_ADMIN + "."
)


class CliError(Exception):
    """The command cannot go on; the message is one line, ``code`` the exit status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# --- Options ---------------------------------------------------------------------------


class AdminOptions(usage.Options):
    """The options every command of the admin API takes."""

    command = ""
    synopsis = ""

    optParameters: list[list[Any]] = [
        [
            "admin",
            None,
            None,
            "The admin listener: http(s)://HOST:PORT or unix:/path/to.sock. Default:"
            " --config's admin_listen, else $GHHOOK_ADMIN, else " + DEFAULT_CONFIG + "'s,"
            " else " + DEFAULT_ADMIN + ".",
        ],
        [
            "config",
            None,
            None,
            "A config file to take the admin listener from (its first admin_listen)."
            " Default: " + DEFAULT_CONFIG + " when it exists.",
        ],
        [
            "token-file",
            None,
            None,
            "File holding the admin token (its first line), sent on POSTs as"
            " Authorization: Bearer. Default: $GHHOOK_ADMIN_TOKEN_FILE, else the token in"
            " $GHHOOK_ADMIN_TOKEN. A unix: listener needs none.",
        ],
        [
            "timeout",
            None,
            "30",
            "Seconds each exchange may take (logs -f: until the headers).",
        ],
    ]

    def getSynopsis(self) -> str:
        return f"Usage: ghhook {self.command} {self.synopsis} [options]"

    def getUsage(self, width: int | None = None) -> str:
        return super().getUsage(width) + "\n" + ADMIN_HELP + "\n" + EXIT_HELP + "\n"

    def opt_version(self) -> NoReturn:
        """Print the version and exit."""
        _print_version()

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse ``options``, which may follow the arguments as well as precede
        them (``deploy APP --force``): Twisted's parser stops at the first
        argument, so the options found anywhere are put first.
        """
        given = list(sys.argv[1:] if options is None else options)
        try:
            found, args = getopt.gnu_getopt(given, self.shortOpt, self.longOpt)
        except getopt.GetoptError as e:
            raise usage.UsageError(str(e)) from None
        ordered = []
        for option, value in found:
            takes_value = option.startswith("--") and f"{option[2:]}=" in self.longOpt
            ordered.append(f"{option}={value}" if takes_value else option + value)
        super().parseOptions([*ordered, "--", *args])

    def postOptions(self) -> None:
        self.setdefault("json", False)
        if self["admin"] is not None:
            check_admin_url(self["admin"], "--admin")
        try:
            self["timeout"] = positive_float(self["timeout"])
        except ValueError as e:
            raise usage.UsageError(f"--timeout {self['timeout']}: {e}") from None


class _JsonOptions(AdminOptions):
    """A command whose answer is one JSON document."""

    optFlags = [["json", None, "Print the daemon's JSON document as it is, not a table."]]


class _AppOptions(_JsonOptions):
    synopsis = "APP"

    def parseArgs(self, *args: str) -> None:
        if len(args) != 1:
            raise usage.UsageError(f"give one app: {self.command} APP")
        self["app"] = args[0]


class StatusOptions(_JsonOptions):
    command = "status"
    synopsis = "[APP]"
    longdesc = (
        "Without APP: every app (state, deployed commit, last result). With APP:"
        " its recent deploys, newest first."
    )

    def parseArgs(self, *args: str) -> None:
        if len(args) > 1:
            raise usage.UsageError("give at most one app: status [APP]")
        self["app"] = args[0] if args else None


class DeployOptions(_AppOptions):
    command = "deploy"
    longdesc = (
        "Deploy the app's branch head now, as a push would. --force deploys it even"
        " when it is the deployed commit."
    )
    optFlags = [["force", None, "Deploy even an unchanged head."]]


class RollbackOptions(_AppOptions):
    command = "rollback"
    longdesc = (
        "Deploy an earlier commit: --to SHA (a full sha), else the one deployed before"
        " the current. The daemon pauses the app after it, so pushes wait for resume."
    )
    optParameters = [["to", None, None, "The commit to go back to (40 hex digits)."]]


class PauseOptions(_AppOptions):
    command = "pause"
    longdesc = "Hold the app's pushes (they join one held deploy) until resume."
    optParameters = [["reason", None, None, "Why, shown in status (one short line)."]]


class ResumeOptions(_AppOptions):
    command = "resume"
    longdesc = "Release a paused app: a held deploy starts."


class LogsOptions(AdminOptions):
    command = "logs"
    synopsis = "APP [DEPLOY]"
    longdesc = (
        "Print a deploy's output (default: the app's newest deploy). With -f, print it"
        " as it comes until the deploy ends; Ctrl-C stops."
    )
    optFlags = [["follow", "f", "Follow the output live until the deploy ends."]]

    def parseArgs(self, *args: str) -> None:
        if not 1 <= len(args) <= 2:
            raise usage.UsageError("give an app and maybe a deploy id: logs APP [DEPLOY]")
        self["app"] = args[0]
        self["deploy"] = None
        if len(args) == 2:
            if not re.fullmatch(r"[1-9][0-9]{0,17}", args[1]):
                raise usage.UsageError(f"{args[1]}: a deploy id is a positive integer")
            self["deploy"] = int(args[1])


def _send_options() -> SendOptions:
    # Imported when asked for: the admin commands need none of send's modules.
    from ghhook.send import SendOptions

    return SendOptions()


class Options(usage.Options):
    synopsis = "Usage: ghhook COMMAND [options]   (also: python -m ghhook COMMAND)"
    longdesc = (
        "Talk to a running ghhook daemon through its admin listener, post a test"
        " delivery, or check a config file. `ghhook COMMAND --help` tells more. " + EXIT_HELP
    )
    subCommands: list[list[Any]] = [
        ["status", None, StatusOptions, "The apps, or one app's recent deploys."],
        ["deploy", None, DeployOptions, "Deploy an app's branch head now."],
        ["rollback", None, RollbackOptions, "Deploy an earlier commit, then pause."],
        ["pause", None, PauseOptions, "Hold an app's pushes until resume."],
        ["resume", None, ResumeOptions, "Release a paused app."],
        ["logs", None, LogsOptions, "A deploy's output; -f follows it live."],
        ["send", None, _send_options, "Post a signed test delivery to a hook."],
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
            names = ", ".join(command[0] for command in self.subCommands)
            raise usage.UsageError(f"give a command: {names} (see --help)")


def _print_version() -> NoReturn:
    print(f"ghhook {ghhook.__version__}")
    sys.exit(0)


def parse(argv: Sequence[str]) -> Options:
    """The command line's options; raises :class:`usage.UsageError`."""
    options = Options()
    options.parseOptions(list(argv))
    return options


# --- Where the admin listener is -------------------------------------------------------


@attrs.frozen
class Admin:
    """
    An admin listener: ``url`` as the user knows it; requests go to ``base``
    (over ``socket``, a unix socket's path, when there is one).
    """

    url: str
    base: str
    socket: str | None = None


def check_admin_url(url: str, given_as: str) -> Admin:
    """An http(s) URL with a host, or ``unix:PATH``; else :class:`usage.UsageError`."""
    if url.startswith("unix:"):
        path = url[len("unix:") :]
        if not path:
            raise usage.UsageError(f"{given_as} {url}: give the socket's path, unix:/path/to.sock")
        return Admin(url, "http://localhost", path)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError as e:
        raise usage.UsageError(f"{given_as} {url}: not a valid URL ({e})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise usage.UsageError(
            f"{given_as} {url}: expected http(s)://HOST:PORT or unix:/path/to.sock"
        )
    return Admin(url, url.rstrip("/"))


def split_endpoint(description: str) -> tuple[list[str], dict[str, str]]:
    """
    A Twisted endpoint string's positional and keyword parts, ``\\`` escaping
    the next character (``tcp6:9000:interface=\\:\\:1``).
    """
    args: list[str] = []
    kwargs: dict[str, str] = {}
    key: str | None = None
    text = ""
    escaped = False
    for char in description + ":":
        if escaped:
            text += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            if key is None:
                args.append(text)
            else:
                kwargs[key] = text
            key, text = None, ""
        elif char == "=" and key is None:
            key, text = text, ""
        else:
            text += char
    return args, kwargs


def admin_from_listen(description: str, source: str) -> Admin:
    """
    The URL of an ``admin_listen`` endpoint: ``tcp:PORT[:interface=ADDR]``
    (a wildcard address is reached at loopback), ``ssl:`` likewise over
    https, ``unix:PATH``; else :class:`CliError` (a usage error).
    """
    args, kwargs = split_endpoint(description)
    kind = args[0].lower() if args else ""
    rest = args[1:]
    if kind in ("tcp", "tcp6", "ssl"):
        port = kwargs.get("port") or (rest[0] if rest else "")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise CliError(f"{source}: {description}: no port to reach; give --admin", EXIT_USAGE)
        host = kwargs.get("interface", "")
        if host in ("", "0.0.0.0"):
            host = "::1" if kind == "tcp6" else "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if kind == "ssl" else "http"
        url = f"{scheme}://{host}:{int(port)}"
        return Admin(url, url)
    if kind == "unix":
        path = kwargs.get("address") or (rest[0] if rest else "")
        if path:
            return Admin(f"unix:{path}", "http://localhost", path)
    raise CliError(
        f"{source}: cannot tell the admin URL from {description!r}; give --admin", EXIT_USAGE
    )


def admin_from_config(path: str) -> Admin:
    """
    The admin listener of the config file ``path``: its first ``admin_listen``
    endpoint, or the daemon's default. Only that key is read: no validation.
    """
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except OSError as e:
        raise CliError(f"--config {path}: cannot read it: {e.strerror or e}", EXIT_USAGE) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise CliError(f"--config {path}: not valid TOML ({e})", EXIT_USAGE) from None
    listen = document.get("admin_listen", [DAEMON_ADMIN_LISTEN])
    if isinstance(listen, str):
        listen = [listen]
    if not isinstance(listen, list) or not all(isinstance(item, str) for item in listen):
        raise CliError(f"{path}: admin_listen is not a list of endpoints", EXIT_USAGE)
    if not listen or "none" in listen:
        raise CliError(f"{path}: admin_listen is off, so there is no admin API", EXIT_USAGE)
    return admin_from_listen(listen[0], f"{path}: admin_listen")


def resolve_admin(
    options: Mapping[str, Any], environ: Mapping[str, str], default_config: str = DEFAULT_CONFIG
) -> Admin:
    """
    Where the admin listener is: ``--admin``; else an explicit ``--config``'s;
    else ``$GHHOOK_ADMIN``; else ``default_config``'s when it exists; else
    :data:`DEFAULT_ADMIN`. An explicit ``--config`` beats the environment:
    a variable set in a profile must not send a command to another daemon
    than the one the user named.
    """
    try:
        if options.get("admin"):
            return check_admin_url(options["admin"], "--admin")
        if options.get("config"):
            return admin_from_config(options["config"])
        if environ.get("GHHOOK_ADMIN"):
            return check_admin_url(environ["GHHOOK_ADMIN"], "$GHHOOK_ADMIN")
        if os.path.exists(default_config):
            return admin_from_config(default_config)
        return check_admin_url(DEFAULT_ADMIN, "the default")
    except usage.UsageError as e:
        raise CliError(str(e), EXIT_USAGE) from None


def read_token(options: Mapping[str, Any], environ: Mapping[str, str]) -> str | None:
    """
    The admin token: the first line of ``--token-file`` or
    ``$GHHOOK_ADMIN_TOKEN_FILE`` (blank lines and ``#`` comments skipped:
    the token alone, not the daemon's ``LABEL:TOKEN``), else
    ``$GHHOOK_ADMIN_TOKEN``; None when none is given. Never printed.
    """
    path = options.get("token-file") or environ.get("GHHOOK_ADMIN_TOKEN_FILE")
    if path:
        given_as = "--token-file" if options.get("token-file") else "$GHHOOK_ADMIN_TOKEN_FILE"
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            reason = getattr(e, "strerror", None) or str(e)
            raise CliError(f"{given_as} {path}: cannot read it: {reason}", EXIT_USAGE) from None
        lines = [line.strip() for line in text.splitlines()]
        lines = [line for line in lines if line and not line.startswith("#")]
        if not lines:
            raise CliError(f"{given_as} {path}: the file holds no token", EXIT_USAGE)
        return lines[0]
    token = environ.get("GHHOOK_ADMIN_TOKEN", "").strip()
    return token or None


# --- Talking to it ---------------------------------------------------------------------


@implementer(IAgentEndpointFactory)
@attrs.frozen
class UnixSocket:
    """Every request's connection goes to one unix socket."""

    reactor: Any
    path: str

    def endpointForURI(self, uri: Any) -> Any:
        from twisted.internet.endpoints import UNIXClientEndpoint

        return UNIXClientEndpoint(self.reactor, self.path)


@attrs.frozen
class Answer:
    code: int
    phrase: str
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300


def _cancelled(e: BaseException) -> bool:
    """Whether ``e`` is (or wraps) a cancellation: an interrupt, not a failure."""
    if isinstance(e, (CancelledError, ConnectingCancelledError)):
        return True
    reasons: Sequence[Failure] = getattr(e, "reasons", None) or ()
    return any(reason.check(CancelledError) is not None for reason in reasons)


#: What a terminal would obey in a deploy's output (whoever pushes writes commit
#: subjects into git's): control characters other than tab and newline.
_CONTROLS = {
    code: "\ufffd" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if code not in (9, 10)
}


class LineWriter(Protocol):
    """Write a body's text to ``out`` as it comes; :attr:`done` fires at its end."""

    def __init__(self, response: IResponse, out: TextIO) -> None:
        self._out = out
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.done: Deferred[None] = Deferred(self._hang_up)
        response.deliverBody(self)

    def dataReceived(self, data: bytes) -> None:
        self._write(self._decoder.decode(data))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:  # cancelled: the hang-up's own loss is expected
            return
        self._write(self._decoder.decode(b"", final=True))
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(None)
        else:
            self.done.errback(reason)

    def _write(self, text: str) -> None:
        if text:
            self._out.write(text.translate(_CONTROLS))
            self._out.flush()

    def _hang_up(self, done: Deferred[None]) -> None:
        if self.transport is not None:
            self.transport.loseConnection()


class AdminClient:
    """HTTP exchanges with one admin listener, each within ``timeout`` seconds."""

    def __init__(self, reactor: Any, admin: Admin, timeout: float, token: str | None) -> None:
        import treq.client
        from twisted.web.client import Agent

        from ghhook.httpclient import QuietPool

        self.reactor = reactor
        self.admin = admin
        self.timeout = timeout
        self.token = token
        pool = QuietPool(reactor, persistent=False)
        if admin.socket is not None:
            agent = Agent.usingEndpointFactory(reactor, UnixSocket(reactor, admin.socket), pool)
        else:
            agent = Agent(reactor, pool=pool)
        self.http = treq.client.HTTPClient(agent)

    def _request(
        self, method: str, path: str, accept: str, body: dict[str, Any] | None = None
    ) -> Deferred[Any]:
        headers = Headers({"Accept": [accept]})
        if method == "POST" and self.token is not None:
            headers.addRawHeader("Authorization", f"Bearer {self.token}")
        kwargs: dict[str, Any] = {} if body is None else {"json": body}
        return self.http.request(method, self.admin.base + path, headers=headers, **kwargs)

    def _no_answer(self, e: BaseException) -> CliError:
        detail = str(e) if isinstance(e, NoWholeAnswer) else describe_failure(e)
        return CliError(f"no answer from {self.admin.url}: {detail}", EXIT_NO_ANSWER)

    async def exchange(self, method: str, path: str, body: dict[str, Any] | None = None) -> Answer:
        """One request and its whole answer, or :class:`CliError` (3)."""
        reader: BodyReader | None = None

        async def whole() -> Answer:
            nonlocal reader
            response = await self._request(method, path, "application/json", body)
            reader = BodyReader(response, MAX_JSON)
            content = await reader.done
            if reader.received > MAX_JSON:
                raise NoWholeAnswer(f"the answer is larger than {MAX_JSON} bytes")
            phrase = (response.phrase or b"").decode("latin-1", "replace")
            return Answer(response.code, phrase, content)

        def expired(result: object, after: float) -> NoReturn:
            if reader is None:
                raise NoWholeAnswer(f"no answer within {after:g} s")
            raise NoWholeAnswer(f"no whole answer within {after:g} s: {reader.stalled()}")

        answer = Deferred.fromCoroutine(whole())
        answer.addTimeout(self.timeout, self.reactor, onTimeoutCancel=expired)
        try:
            return await answer
        except Exception as e:
            if _cancelled(e):
                raise
            raise self._no_answer(e) from None

    async def json(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[bytes, dict[str, Any]]:
        """A 2xx answer's JSON object (and its bytes), or :class:`CliError`."""
        answer = await self.exchange(method, path, body)
        document = _json_object(answer.body)
        if not answer.ok:
            raise CliError(self.refusal(answer.code, answer.phrase, document), EXIT_REFUSED)
        if document is None:
            raise CliError(
                f"{self.admin.url} answered HTTP {answer.code} without a JSON object"
                " (is it ghhook's admin listener?)",
                EXIT_NO_ANSWER,
            )
        return answer.body, document

    def refusal(self, code: int, phrase: str, document: dict[str, Any] | None) -> str:
        """The daemon's sentence for a refusal, or what the status line says."""
        sentence = (document or {}).get("error")
        if isinstance(sentence, str) and sentence.strip():
            return one_line(sentence)
        return one_line(f"{self.admin.url} answered HTTP {code} {phrase}")

    async def stream(self, path: str, out: TextIO, follow: bool) -> None:
        """
        GET ``path`` and write its text to ``out`` as it comes. The headers
        come within the timeout; the body too unless ``follow``.
        """

        def no_headers(result: object, after: float) -> NoReturn:
            raise NoWholeAnswer(f"no answer within {after:g} s")

        request = self._request("GET", path, "text/plain")
        request.addTimeout(self.timeout, self.reactor, onTimeoutCancel=no_headers)
        try:
            response = await request
        except Exception as e:
            if _cancelled(e):
                raise
            raise self._no_answer(e) from None
        if not 200 <= response.code < 300:
            reader = BodyReader(response, MAX_JSON)
            reader.done.addTimeout(self.timeout, self.reactor)
            try:
                content = await reader.done
            except Exception as e:
                if _cancelled(e):  # a timeout fails it with TimeoutError instead
                    raise
                content = b""
            phrase = (response.phrase or b"").decode("latin-1", "replace")
            raise CliError(self.refusal(response.code, phrase, _json_object(content)), EXIT_REFUSED)
        writer = LineWriter(response, out)
        if not follow:
            writer.done.addTimeout(
                self.timeout,
                self.reactor,
                onTimeoutCancel=lambda result, after: _raise(
                    NoWholeAnswer(f"the output did not end within {after:g} s")
                ),
            )
        try:
            await writer.done
        except Exception as e:
            if _cancelled(e):
                raise
            detail = str(e) if isinstance(e, NoWholeAnswer) else describe_failure(e)
            raise CliError(
                f"the output from {self.admin.url} broke off: {detail}", EXIT_NO_ANSWER
            ) from None


def _raise(e: Exception) -> NoReturn:
    raise e


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return document if isinstance(document, dict) else None


# --- What is printed -------------------------------------------------------------------


def one_line(text: str) -> str:
    """``text`` on one line, without control characters."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def cell(value: object) -> str:
    """A table's cell: "-" for nothing."""
    if value is None or value == "":
        return "-"
    return one_line(str(value))


def short(sha: object) -> str:
    return sha[:SHORT_SHA] if isinstance(sha, str) and sha else "-"


def format_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Rows under their column names, padded to line up."""
    every = [tuple(columns), *(tuple(row) for row in rows)]
    widths = [max(len(row[column]) for row in every) for column in range(len(columns))]
    return "\n".join(
        "  ".join(c.ljust(width) for c, width in zip(row, widths, strict=True)).rstrip()
        for row in every
    )


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def app_state(app: Mapping[str, Any]) -> str:
    """deploying, paused, pending or idle: what an operator asks first."""
    if app.get("running"):
        return "deploying"
    if app.get("paused"):
        return "paused"
    if app.get("pending"):
        return "pending"
    return "idle"


def pause_line(name: str, paused: object) -> str | None:
    if not paused:
        return None
    pause = _dict(paused)
    reason = f": {pause['reason']}" if pause.get("reason") else ""
    return one_line(
        f"{name} is paused since {cell(pause.get('since'))} by {cell(pause.get('by'))}{reason}"
    )


def status_text(document: Mapping[str, Any]) -> str:
    """``/status`` as a table of the apps, and what is wrong with the daemon."""
    apps = [_dict(app) for app in document.get("apps") or ()]
    rows = []
    for app in apps:
        last = _dict(app.get("last"))
        rows.append(
            (
                cell(app.get("name")),
                app_state(app),
                short(app.get("deployed")),
                cell(last.get("result")),
                cell(last.get("finished")),
            )
        )
    lines = [format_table(("app", "state", "deployed", "last", "when"), rows)]
    for app in apps:
        line = pause_line(cell(app.get("name")), app.get("paused"))
        if line:
            lines.append(line)
    if document.get("config_error"):
        lines.append(one_line(f"the config's last reload failed: {document['config_error']}"))
    if document.get("journal_error"):
        lines.append(one_line(f"the journal fails: {document['journal_error']}"))
    return "\n".join(lines)


def deploy_result(deploy: Mapping[str, Any]) -> str:
    if deploy.get("result"):
        return cell(deploy["result"])
    return "running" if deploy.get("started") else "queued"


def duration(seconds: object) -> str:
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
        return f"{seconds:.1f}s"
    return "-"


def app_text(document: Mapping[str, Any]) -> str:
    """``/apps/APP`` as a line about the app, then its recent deploys."""
    name = cell(document.get("name"))
    where = f"{cell(document.get('branch'))} of {cell(document.get('repo'))}"
    lines = [f"{name}: {app_state(document)}, deployed {short(document.get('deployed'))} ({where})"]
    line = pause_line(name, document.get("paused"))
    if line:
        lines.append(line)
    if document.get("journal_error"):
        lines.append(one_line(f"the journal fails: {document['journal_error']}"))
    deploys = [_dict(deploy) for deploy in document.get("deploys") or ()]
    if not deploys:
        lines.append("no deploys yet")
        return "\n".join(lines)
    rows = [
        (
            cell(deploy.get("id")),
            cell(deploy.get("trigger")),
            deploy_result(deploy),
            short(deploy.get("sha")),
            cell(deploy.get("finished")),
            duration(deploy.get("duration")),
            cell(deploy.get("failed_step")),
        )
        for deploy in deploys
    ]
    columns = ("deploy", "trigger", "result", "sha", "finished", "duration", "failed step")
    lines.append(format_table(columns, rows))
    return "\n".join(lines)


def deploy_said(document: Mapping[str, Any]) -> str:
    app, deploy = cell(document.get("app")), cell(document.get("deploy"))
    if document.get("coalesced"):
        return f"{app}: joined deploy {deploy}, already waiting"
    held = ", held until resume" if document.get("held") else ""
    return f"{app}: deploy {deploy} queued{held}"


def rollback_said(document: Mapping[str, Any]) -> str:
    return (
        f"{cell(document.get('app'))}: rollback to {short(document.get('to'))}"
        f" queued as deploy {cell(document.get('deploy'))}; the app stays paused until resume"
    )


def pause_said(document: Mapping[str, Any]) -> str:
    app = cell(document.get("app"))
    return pause_line(app, document) or f"{app}: paused"


def resume_said(document: Mapping[str, Any]) -> str:
    app = cell(document.get("app"))
    if document.get("deploy") is not None:
        return f"{app}: resumed; deploy {cell(document['deploy'])} released"
    return f"{app}: resumed"


_ACTIONS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "deploy": deploy_said,
    "rollback": rollback_said,
    "pause": pause_said,
    "resume": resume_said,
}


# --- Running a command -----------------------------------------------------------------


def app_path(app: str) -> str:
    return "/apps/" + quote(app, safe="")


def action_body(command: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body of an action's POST."""
    if command == "deploy":
        return {"force": bool(options["force"])}
    if command == "rollback":
        return {"to": options["to"]}
    if command == "pause":
        return {"reason": options["reason"]}
    return {}


async def admin_command(
    reactor: Any,
    command: str,
    options: Mapping[str, Any],
    environ: Mapping[str, str],
    out: TextIO,
    default_config: str = DEFAULT_CONFIG,
) -> int:
    """Run one admin command; raises :class:`CliError` for every failure."""
    admin = resolve_admin(options, environ, default_config)
    token = read_token(options, environ) if command in _ACTIONS else None
    client = AdminClient(reactor, admin, options["timeout"], token)
    if command == "status":
        path = "/status" if options["app"] is None else app_path(options["app"])
        raw, document = await client.json("GET", path)
        show: Callable[[Mapping[str, Any]], str] = (
            status_text if options["app"] is None else app_text
        )
    elif command == "logs":
        deploy = options["deploy"]
        if deploy is None:
            _, document = await client.json("GET", app_path(options["app"]))
            deploys = document.get("deploys") or []
            newest = _dict(deploys[0]).get("id") if deploys else None
            if newest is None:
                raise CliError(f"{options['app']} has no deploys yet", EXIT_REFUSED)
            deploy = newest
        path = f"{app_path(options['app'])}/deploys/{quote(str(deploy), safe='')}/log"
        follow = bool(options["follow"])
        await client.stream(path if follow else path + "?follow=0", out, follow)
        return EXIT_OK
    else:
        path = f"{app_path(options['app'])}/{command}"
        raw, document = await client.json("POST", path, action_body(command, options))
        show = _ACTIONS[command]
    if options["json"]:
        out.write(raw.decode("utf-8", "replace").strip() + "\n")
    else:
        out.write(show(document) + "\n")
    return EXIT_OK


async def execute(
    reactor: Any,
    options: Options,
    environ: Mapping[str, str],
    out: TextIO,
    err: TextIO,
    default_config: str = DEFAULT_CONFIG,
) -> int:
    """Run the parsed command; print its failure as one line; return the exit status."""
    command = options.subCommand
    assert command is not None
    sub = options.subOptions
    if command == "check-config":
        from ghhook.checkconfig import check

        return check(sub["path"], environ, out, err)
    if command == "send":
        from ghhook.send import CannotSend, send

        try:
            return await send(reactor, sub, out)
        except CannotSend as e:
            print(f"ghhook send: {e}", file=err)
            return e.code
    try:
        return await admin_command(reactor, command, sub, environ, out, default_config)
    except CliError as e:
        prefix = "ghhook" if e.code != EXIT_USAGE else f"ghhook {command}"
        print(f"{prefix}: {e}", file=err)
        return e.code


async def run(
    reactor: Any,
    argv: Sequence[str],
    environ: Mapping[str, str],
    out: TextIO,
    err: TextIO,
    default_config: str = DEFAULT_CONFIG,
) -> int:
    """Parse ``argv`` and run it: the whole command, for a test or :func:`main`."""
    try:
        options = parse(argv)
    except usage.UsageError as e:
        print(usage_line(e, argv), file=err)
        return EXIT_USAGE
    return await execute(reactor, options, environ, out, err, default_config)


def usage_line(e: usage.UsageError, argv: Sequence[str]) -> str:
    known = [command[0] for command in Options.subCommands]
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    prefix = f"ghhook {command}" if command in known else "ghhook"
    return f"{prefix}: {one_line(str(e))}"


async def _react_main(reactor: Any, options: Options) -> None:
    """
    Run the command under :func:`react`; Ctrl-C (the reactor's shutdown
    while the command runs) cancels it and exits 130, without a traceback.
    """
    interrupted = False
    task = Deferred.fromCoroutine(execute(reactor, options, os.environ, sys.stdout, sys.stderr))

    def on_shutdown() -> None:
        nonlocal interrupted
        if not task.called:
            interrupted = True
            task.cancel()

    reactor.addSystemEventTrigger("before", "shutdown", on_shutdown)
    try:
        code = await task
    except Exception as e:  # noqa: BLE001 - a bug still ends in one line
        code = EXIT_REFUSED
        if not interrupted:
            print(f"ghhook: unexpected error: {describe_failure(e)}", file=sys.stderr)
    if interrupted:
        code = EXIT_INTERRUPTED
    sys.stdout.flush()
    if code:
        raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The console script: parse ``argv`` (default: the command line) and run it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        try:
            options = parse(argv)
        except usage.UsageError as e:
            print(usage_line(e, argv), file=sys.stderr)
            sys.exit(EXIT_USAGE)
        if options.subCommand == "check-config":
            from ghhook.checkconfig import check

            sys.exit(check(options.subOptions["path"], os.environ, sys.stdout, sys.stderr))
        react(_react_main, (options,))
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
