"""
The ``ghhook`` command against a fake admin API: a small Klein app served
over real HTTP, on loopback TCP and on a unix socket, that records each
request, checks the bearer token of POSTs over TCP as the daemon does, and
answers as the admin API's contract says. Most commands run in-process
(:func:`ghhook.cli.run` on the test's reactor); a few run as
``python -m ghhook`` for the exit statuses, the console script and Ctrl-C.
"""

from __future__ import annotations

import configparser
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure

from ghhook import cli
from tests.daemon import environment
from tests.stallserver import GUARD, StallServer, stalled, whole

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "alice-token-0123456789abcdef"
SHA_A = "a" * 40
SHA_B = "b1" * 20
NOT_ENABLED = "this needs Authorization: Bearer <token>, with a token of admin_token_file"


def reactor() -> Any:
    from twisted.internet import reactor as r

    return r


# --- The fake admin API ----------------------------------------------------------------


@attrs.frozen
class Seen:
    method: str
    uri: str
    authorization: str | None
    accept: str | None
    host: str | None
    body: Any
    via_unix: bool


def deploy_row(number: int, **fields: Any) -> dict[str, Any]:
    row = {
        "id": number,
        "trigger": "push",
        "delivery": None,
        "sha": SHA_A,
        "result": "deployed",
        "queued": "2026-05-01T10:00:00Z",
        "started": "2026-05-01T10:00:01Z",
        "finished": "2026-05-01T10:00:13Z",
        "duration": 12.25,
        "failed_step": None,
        "error": None,
        "subject": "Ship it",
        "author": "Alice",
        "steps": [],
    }
    row.update(fields)
    return row


def app_summary(name: str, **fields: Any) -> dict[str, Any]:
    summary = {
        "name": name,
        "repo": f"/srv/{name}",
        "branch": "main",
        "forge": "github",
        "repository": f"acme/{name}",
        "head": SHA_A,
        "deployed": SHA_A,
        "busy": False,
        "running": None,
        "pending": None,
        "last": deploy_row(3),
        "reports": {"waiting": 0, "given_up": 0},
        "paused": None,
    }
    summary.update(fields)
    return summary


STATUS = {
    "version": "9.9",
    "config": "/etc/ghhook/ghhook.toml",
    "config_error": None,
    "journal_error": None,
    "apps": [
        app_summary("blog"),
        app_summary(
            "api",
            deployed=SHA_B,
            busy=True,
            running={"id": 9, "trigger": "push", "target": SHA_A},
            last=deploy_row(8, result="failed", sha=SHA_B, failed_step="restart"),
        ),
        app_summary(
            "shop",
            deployed=None,
            last=None,
            paused={"reason": "db migration", "since": "2026-05-01T09:00:00Z", "by": "alice"},
        ),
        app_summary("docs", pending={"id": 4, "trigger": "manual", "target": SHA_A}),
    ],
}

BLOG = {
    **app_summary("blog"),
    "remote": "git@github.com:acme/blog.git",
    "journal_error": None,
    "deploys": [
        deploy_row(7, result=None, finished=None, duration=None, trigger="manual"),
        deploy_row(6, result="failed", sha=SHA_B, failed_step="build", duration=3.0),
        deploy_row(5),
    ],
}

LOG_BEFORE = ["$ git pull --ff-only", "Updating 1111111..aaaaaaa", "caf\u00e9 \u2713"]
LOG_AFTER = ["$ systemctl restart blog", "\x1b]2;owned\x07deployed aaaaaaa\r"]
#: LOG_AFTER as printed: no escape sequence reaches the terminal.
LOG_AFTER_SHOWN = ["$ systemctl restart blog", "\ufffd]2;owned\ufffddeployed aaaaaaa\ufffd"]


class FakeAdmin:
    """The admin API's contract, in memory; :attr:`gate` holds a followed log."""

    from klein import Klein

    app = Klein()
    del Klein

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.apps = {"blog": BLOG, "empty": {**app_summary("empty"), "deploys": []}}
        #: (method, path) -> (code, JSON document or raw bytes), before the contract.
        self.answers: dict[tuple[str, str], tuple[int, Any]] = {}
        self.gate: Deferred[None] = Deferred()

    def _record(self, request: Any) -> None:
        from twisted.internet.address import UNIXAddress

        raw = request.content.read() if request.content is not None else b""

        def header(name: bytes) -> str | None:
            values = request.requestHeaders.getRawHeaders(name)
            return values[0].decode() if values else None

        self.seen.append(
            Seen(
                request.method.decode(),
                request.uri.decode(),
                header(b"authorization"),
                header(b"accept"),
                header(b"host"),
                json.loads(raw) if raw else None,
                isinstance(request.getHost(), UNIXAddress),
            )
        )

    def _answer(self, request: Any, code: int, document: Any) -> bytes:
        request.setResponseCode(code)
        if isinstance(document, bytes):
            return document
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(document, indent=1).encode() + b"\n"

    def _scripted(self, request: Any) -> tuple[int, Any] | None:
        return self.answers.get((request.method.decode(), request.path.decode()))

    @app.route("/status", methods=["GET"])
    def status(self, request: Any) -> bytes:
        self._record(request)
        return self._answer(request, *(self._scripted(request) or (200, STATUS)))

    @app.route("/apps/<name>", methods=["GET"])
    def app_document(self, request: Any, name: str) -> bytes:
        self._record(request)
        scripted = self._scripted(request)
        if scripted is not None:
            return self._answer(request, *scripted)
        if name not in self.apps:
            return self._answer(request, 404, {"error": "no app of this name is configured"})
        return self._answer(request, 200, self.apps[name])

    @app.route("/apps/<name>/<action>", methods=["POST"])
    def action(self, request: Any, name: str, action: str) -> bytes:
        self._record(request)
        seen = self.seen[-1]
        if not seen.via_unix and seen.authorization != f"Bearer {TOKEN}":
            return self._answer(request, 403, {"error": NOT_ENABLED})
        scripted = self._scripted(request)
        if scripted is not None:
            return self._answer(request, *scripted)
        if name not in self.apps:
            return self._answer(request, 404, {"error": "no app of this name is configured"})
        body = seen.body or {}
        documents = {
            "deploy": (202, {"app": name, "deploy": 8, "coalesced": body.get("force") is True}),
            "rollback": (202, {"app": name, "deploy": 9, "to": body.get("to") or SHA_B}),
            "pause": (
                200,
                {
                    "app": name,
                    "paused": True,
                    "reason": body.get("reason"),
                    "since": "2026-05-01T11:00:00Z",
                    "by": "uid 1000" if seen.via_unix else "alice",
                },
            ),
            "resume": (200, {"app": name, "paused": False, "deploy": 10}),
        }
        return self._answer(request, *documents[action])

    @app.route("/apps/<name>/deploys/<deploy>/log", methods=["GET"])
    async def log(self, request: Any, name: str, deploy: str) -> bytes:
        self._record(request)
        if name not in self.apps or deploy not in ("5", "6", "7"):
            return self._answer(request, 404, {"error": "no deploy of this app has this id"})
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)
        for line in LOG_BEFORE:
            request.write(line.encode() + b"\n")
        if request.args.get(b"follow") != [b"0"]:
            await self.gate
        if gone:
            return b""
        return b"".join(line.encode() + b"\n" for line in LOG_AFTER)


@attrs.define
class Served:
    admin: FakeAdmin
    url: str
    socket: str


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    from twisted.web.server import Site

    admin = FakeAdmin()
    site = Site(admin.app.resource())
    site.noisy = False
    tcp = reactor().listenTCP(0, site, interface="127.0.0.1")
    path = str(tmp_path / "admin.sock")
    unix = reactor().listenUNIX(path, site)
    yield Served(admin, f"http://127.0.0.1:{tcp.getHost().port}", path)
    if not admin.gate.called:
        admin.gate.callback(None)
    tcp.stopListening()
    unix.stopListening()


class Watched(io.StringIO):
    """Output a test can wait on: :meth:`until` fires once ``text`` was written."""

    def __init__(self) -> None:
        super().__init__()
        self._waiting: list[tuple[str, Deferred[None]]] = []

    def write(self, text: str) -> int:
        written = super().write(text)
        for wanted, waiter in list(self._waiting):
            if wanted in self.getvalue():
                self._waiting.remove((wanted, waiter))
                waiter.callback(None)
        return written

    def until(self, text: str) -> Deferred[None]:
        waiter: Deferred[None] = Deferred()
        if text in self.getvalue():
            waiter.callback(None)
        else:
            self._waiting.append((text, waiter))
        return waiter.addTimeout(GUARD, reactor())


@attrs.frozen
class Ran:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


@pytest.fixture
def no_config(tmp_path: Path) -> str:
    """A default config path that does not exist."""
    return str(tmp_path / "absent" / "ghhook.toml")


async def ghhook(
    *argv: str,
    environ: dict[str, str] | None = None,
    default_config: str | None = None,
    out: io.StringIO | None = None,
) -> Ran:
    """Run the command in-process on the test's reactor, bounded by GUARD."""
    out = io.StringIO() if out is None else out
    err = io.StringIO()
    config = default_config or "/nonexistent/ghhook-test/ghhook.toml"
    done = Deferred.fromCoroutine(cli.run(reactor(), argv, environ or {}, out, err, config))
    code = await done.addTimeout(GUARD, reactor())
    return Ran(code, out.getvalue(), err.getvalue())


def one_error(ran: Ran, code: int, line: str) -> None:
    assert (ran.code, ran.out, ran.err) == (code, "", line + "\n"), ran


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(f"{TOKEN}\n")
    return path


# --- Reading: status -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_status_lists_the_apps_as_a_table(served: Served) -> None:
    ran = await ghhook("status", "--admin", served.url, environ={"GHHOOK_ADMIN_TOKEN": TOKEN})
    assert (ran.code, ran.err) == (0, "")
    assert ran.lines == [
        "app   state      deployed  last      when",
        "blog  idle       aaaaaaa   deployed  2026-05-01T10:00:13Z",
        "api   deploying  b1b1b1b   failed    2026-05-01T10:00:13Z",
        "shop  paused     -         -         -",
        "docs  pending    aaaaaaa   deployed  2026-05-01T10:00:13Z",
        "shop is paused since 2026-05-01T09:00:00Z by alice: db migration",
    ]
    [seen] = served.admin.seen
    assert (seen.method, seen.uri, seen.body) == ("GET", "/status", None)
    assert seen.accept == "application/json"
    assert seen.authorization is None  # a GET never carries the token


@pytest_twisted.ensureDeferred
async def test_status_says_what_is_wrong_with_the_daemon(served: Served) -> None:
    served.admin.answers["GET", "/status"] = (
        200,
        {**STATUS, "apps": [], "config_error": "line 3: x", "journal_error": "disk full"},
    )
    ran = await ghhook("status", "--admin", served.url)
    assert ran.lines == [
        "app  state  deployed  last  when",
        "the config's last reload failed: line 3: x",
        "the journal fails: disk full",
    ]


@pytest_twisted.ensureDeferred
async def test_status_json_prints_the_daemons_document_as_it_is(served: Served) -> None:
    ran = await ghhook("status", "--json", "--admin", served.url)
    assert ran.code == 0
    assert ran.out == json.dumps(STATUS, indent=1) + "\n"


@pytest_twisted.ensureDeferred
async def test_status_of_an_app_lists_its_recent_deploys(served: Served) -> None:
    ran = await ghhook("status", "blog", "--admin", served.url)
    assert (ran.code, ran.err) == (0, "")
    assert ran.lines == [
        "blog: idle, deployed aaaaaaa (main of /srv/blog)",
        "deploy  trigger  result    sha      finished              duration  failed step",
        "7       manual   running   aaaaaaa  -                     -         -",
        "6       push     failed    b1b1b1b  2026-05-01T10:00:13Z  3.0s      build",
        "5       push     deployed  aaaaaaa  2026-05-01T10:00:13Z  12.2s     -",
    ]
    assert [(s.method, s.uri) for s in served.admin.seen] == [("GET", "/apps/blog")]
    ran = await ghhook("status", "blog", "--json", "--admin", served.url)
    assert json.loads(ran.out) == BLOG


@pytest_twisted.ensureDeferred
async def test_status_of_an_unknown_app_is_refused(served: Served) -> None:
    ran = await ghhook("status", "nope", "--admin", served.url)
    one_error(ran, 1, "ghhook: no app of this name is configured")


# --- Writing: deploy, rollback, pause, resume ------------------------------------------


@pytest.mark.parametrize(
    ("argv", "path", "body", "said"),
    [
        (["deploy", "blog"], "/apps/blog/deploy", {"force": False}, "blog: deploy 8 queued"),
        (
            ["deploy", "blog", "--force"],
            "/apps/blog/deploy",
            {"force": True},
            "blog: joined deploy 8, already waiting",
        ),
        (
            ["rollback", "blog"],
            "/apps/blog/rollback",
            {"to": None},
            "blog: rollback to b1b1b1b queued as deploy 9; the app stays paused until resume",
        ),
        (
            ["rollback", "--to", SHA_A, "blog"],
            "/apps/blog/rollback",
            {"to": SHA_A},
            "blog: rollback to aaaaaaa queued as deploy 9; the app stays paused until resume",
        ),
        (
            ["pause", "blog", "--reason", "db migration"],
            "/apps/blog/pause",
            {"reason": "db migration"},
            "blog is paused since 2026-05-01T11:00:00Z by alice: db migration",
        ),
        (
            ["pause", "blog"],
            "/apps/blog/pause",
            {"reason": None},
            "blog is paused since 2026-05-01T11:00:00Z by alice",
        ),
        (["resume", "blog"], "/apps/blog/resume", {}, "blog: resumed; deploy 10 released"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_each_action_posts_its_body_with_the_token(
    served: Served, token_file: Path, argv: list[str], path: str, body: Any, said: str
) -> None:
    ran = await ghhook(*argv, "--admin", served.url, "--token-file", str(token_file))
    assert (ran.code, ran.err, ran.lines) == (0, "", [said])
    [seen] = served.admin.seen
    assert (seen.method, seen.uri, seen.body) == ("POST", path, body)
    assert seen.authorization == f"Bearer {TOKEN}"
    assert TOKEN not in ran.out


@pytest_twisted.ensureDeferred
async def test_an_action_with_json_prints_the_answer_as_it_is(
    served: Served, token_file: Path
) -> None:
    ran = await ghhook(
        "deploy", "blog", "--json", "--admin", served.url, "--token-file", str(token_file)
    )
    assert ran.code == 0
    document = {"app": "blog", "deploy": 8, "coalesced": False}
    assert ran.out == json.dumps(document, indent=1) + "\n"


@pytest.mark.parametrize("source", ["GHHOOK_ADMIN_TOKEN_FILE", "GHHOOK_ADMIN_TOKEN"])
@pytest_twisted.ensureDeferred
async def test_the_token_comes_from_the_environment(
    served: Served, token_file: Path, source: str
) -> None:
    value = str(token_file) if source.endswith("_FILE") else TOKEN
    ran = await ghhook("resume", "blog", "--admin", served.url, environ={source: value})
    assert ran.code == 0, ran
    assert served.admin.seen[-1].authorization == f"Bearer {TOKEN}"


def test_a_token_file_holds_the_token_after_comments(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(f"# alice's admin token\n\n  {TOKEN}  \nignored\n")
    assert cli.read_token({"token-file": str(path)}, {"GHHOOK_ADMIN_TOKEN": "x"}) == TOKEN
    path.write_text("# nothing yet\n")
    with pytest.raises(cli.CliError, match="holds no token") as raised:
        cli.read_token({"token-file": str(path)}, {})
    assert raised.value.code == cli.EXIT_USAGE
    assert cli.read_token({}, {}) is None


@pytest_twisted.ensureDeferred
async def test_without_a_token_the_daemons_sentence_says_how_to_enable(served: Served) -> None:
    ran = await ghhook("deploy", "blog", "--admin", served.url)
    one_error(ran, 1, f"ghhook: {NOT_ENABLED}")
    assert served.admin.seen[-1].authorization is None


@pytest_twisted.ensureDeferred
async def test_a_wrong_token_is_refused_and_not_printed(served: Served, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-token-0000\n")
    ran = await ghhook("deploy", "blog", "--admin", served.url, "--token-file", str(wrong))
    one_error(ran, 1, f"ghhook: {NOT_ENABLED}")
    assert "not-the-token" not in ran.err


@pytest.mark.parametrize(
    ("argv", "code", "answer", "line"),
    [
        (
            ["rollback", "blog", "--to", SHA_B],
            400,
            {"error": "b1b1b1b is not reachable from main"},
            "ghhook: b1b1b1b is not reachable from main",
        ),
        (["pause", "nope"], 404, None, "ghhook: no app of this name is configured"),
        (
            ["resume", "blog"],
            409,
            {"error": "blog is\nnot paused"},  # the sentence is printed on one line
            "ghhook: blog is not paused",
        ),
        (
            ["deploy", "blog"],
            503,
            b"<html>Service Unavailable</html>",  # not the API's JSON: the status line
            "ghhook: {url} answered HTTP 503 Service Unavailable",
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_refusal_exits_1_with_the_daemons_sentence(
    served: Served, token_file: Path, argv: list[str], code: int, answer: Any, line: str
) -> None:
    if answer is not None:
        served.admin.answers["POST", f"/apps/blog/{argv[0]}"] = (code, answer)
    ran = await ghhook(*argv, "--admin", served.url, "--token-file", str(token_file))
    one_error(ran, 1, line.format(url=served.url))


# --- Over a unix socket ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_over_a_unix_socket_with_host_localhost(served: Served) -> None:
    admin = f"unix:{served.socket}"
    ran = await ghhook("pause", "blog", "--reason", "by hand", "--admin", admin)
    assert (ran.code, ran.err) == (0, "")
    assert ran.lines == ["blog is paused since 2026-05-01T11:00:00Z by uid 1000: by hand"]
    ran = await ghhook("status", "--admin", admin)
    assert ran.code == 0
    assert ran.lines[1].startswith("blog  idle")
    assert [(s.method, s.uri, s.via_unix, s.host) for s in served.admin.seen] == [
        ("POST", "/apps/blog/pause", True, "localhost"),
        ("GET", "/status", True, "localhost"),
    ]
    assert served.admin.seen[0].authorization is None  # none was given: none is needed


# --- Where the admin listener is -------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "url", "socket"),
    [
        ("tcp:9000", "http://127.0.0.1:9000", None),
        ("tcp:9100:interface=127.0.0.1", "http://127.0.0.1:9100", None),
        ("tcp:port=9101:interface=0.0.0.0", "http://127.0.0.1:9101", None),
        ("tcp:9102:interface=10.1.2.3:backlog=5", "http://10.1.2.3:9102", None),
        ("tcp6:9103:interface=\\:\\:1", "http://[::1]:9103", None),
        ("tcp6:9104:interface=\\:\\:", "http://[::1]:9104", None),
        ("ssl:9443:privateKey=k.pem", "https://127.0.0.1:9443", None),
        ("unix:/run/ghhook/admin.sock", "unix:/run/ghhook/admin.sock", "/run/ghhook/admin.sock"),
        ("unix:/run/g.sock:mode=660:lockfile=1", "unix:/run/g.sock", "/run/g.sock"),
        ("unix:address=/run/h.sock", "unix:/run/h.sock", "/run/h.sock"),
    ],
)
def test_an_admin_listen_endpoint_gives_the_url(endpoint: str, url: str, socket: str) -> None:
    admin = cli.admin_from_listen(endpoint, "ghhook.toml: admin_listen")
    assert (admin.url, admin.socket) == (url, socket)


@pytest.mark.parametrize(
    "endpoint", ["systemd:domain=INET:index=0", "tcp:interface=127.0.0.1", "unix:", "fd:3"]
)
def test_an_endpoint_without_an_address_to_reach_is_a_usage_error(endpoint: str) -> None:
    with pytest.raises(cli.CliError) as raised:
        cli.admin_from_listen(endpoint, "ghhook.toml: admin_listen")
    assert raised.value.code == cli.EXIT_USAGE
    assert "give --admin" in str(raised.value)


def write_config(path: Path, admin_listen: Any) -> str:
    lines = ['listen = ["tcp:8000"]']
    if admin_listen is not None:
        lines.append(f"admin_listen = {json.dumps(admin_listen)}")
    # Keys the daemon would refuse are not read: no validation here.
    lines += ["nonsense = 1", "[apps.blog]", 'repo = "/nowhere"']
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_the_admin_url_resolution_order(tmp_path: Path) -> None:
    unix_config = write_config(tmp_path / "unix.toml", ["unix:/run/a.sock", "tcp:9001"])
    tcp_config = write_config(tmp_path / "tcp.toml", "tcp:9002:interface=127.0.0.2")
    bare_config = write_config(tmp_path / "bare.toml", None)
    absent = str(tmp_path / "absent.toml")
    env = {"GHHOOK_ADMIN": "http://127.0.0.9:9009"}

    def url(options: dict[str, Any], environ: dict[str, str], default: str = absent) -> str:
        return cli.resolve_admin(options, environ, default).url

    assert url({"admin": "unix:/x.sock", "config": tcp_config}, env) == "unix:/x.sock"
    # An explicit --config beats the environment; the default config does not.
    assert url({"config": tcp_config}, env) == "http://127.0.0.2:9002"
    assert url({}, env, default=tcp_config) == "http://127.0.0.9:9009"
    assert url({}, {}, default=unix_config) == "unix:/run/a.sock"
    assert url({"config": bare_config}, {}) == "http://127.0.0.1:9000"  # the daemon's default
    assert url({}, {}) == "http://127.0.0.1:9000"


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ("none.toml", "admin_listen is off"),
        ("broken.toml", "not valid TOML"),
        ("missing.toml", "cannot read it"),
        ("systemd.toml", "give --admin"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_config_without_an_admin_url_is_a_usage_error(
    tmp_path: Path, config: str, fragment: str
) -> None:
    write_config(tmp_path / "none.toml", [])
    write_config(tmp_path / "systemd.toml", ["systemd:domain=INET:index=1"])
    (tmp_path / "broken.toml").write_text("admin_listen = [\n")
    ran = await ghhook("status", "--config", str(tmp_path / config))
    assert (ran.code, ran.out) == (2, ""), ran
    [line] = ran.err.splitlines()
    assert line.startswith(f"ghhook status: --config {tmp_path / config}") or line.startswith(
        f"ghhook status: {tmp_path / config}"
    )
    assert fragment in line


@pytest_twisted.ensureDeferred
async def test_the_admin_url_from_each_source_is_used(served: Served, tmp_path: Path) -> None:
    port = served.url.rsplit(":", 1)[1]
    tcp = write_config(tmp_path / "tcp.toml", [f"tcp:{port}:interface=127.0.0.1"])
    unix = write_config(tmp_path / "unix.toml", [f"unix:{served.socket}:mode=600"])
    assert (await ghhook("status", environ={"GHHOOK_ADMIN": served.url})).code == 0
    assert (await ghhook("status", "--config", tcp)).code == 0
    assert (await ghhook("status", default_config=unix)).code == 0
    assert [s.via_unix for s in served.admin.seen] == [False, False, True]


# --- logs ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_logs_prints_the_newest_deploys_output_so_far(served: Served) -> None:
    ran = await ghhook("logs", "blog", "--admin", served.url)
    assert (ran.code, ran.err) == (0, "")
    assert ran.lines == LOG_BEFORE + LOG_AFTER_SHOWN
    assert [(s.method, s.uri) for s in served.admin.seen] == [
        ("GET", "/apps/blog"),
        ("GET", "/apps/blog/deploys/7/log?follow=0"),
    ]
    assert served.admin.seen[1].accept == "text/plain"


@pytest_twisted.ensureDeferred
async def test_logs_of_a_given_deploy(served: Served) -> None:
    ran = await ghhook("logs", "blog", "6", "--admin", served.url)
    assert ran.code == 0
    assert [s.uri for s in served.admin.seen] == ["/apps/blog/deploys/6/log?follow=0"]


@pytest_twisted.ensureDeferred
async def test_logs_follow_prints_lines_as_they_come(served: Served) -> None:
    out = Watched()
    done = Deferred.fromCoroutine(
        cli.run(
            reactor(),
            ["logs", "blog", "-f", "--admin", served.url, "--timeout", "5"],
            {},
            out,
            io.StringIO(),
            "/nonexistent/ghhook.toml",
        )
    )
    await out.until(LOG_BEFORE[-1] + "\n")
    assert not done.called
    assert out.getvalue().splitlines() == LOG_BEFORE
    assert served.admin.seen[-1].uri == "/apps/blog/deploys/7/log"
    served.admin.gate.callback(None)
    assert await done.addTimeout(GUARD, reactor()) == 0
    assert out.getvalue().splitlines() == LOG_BEFORE + LOG_AFTER_SHOWN


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["logs", "blog", "9"], "ghhook: no deploy of this app has this id"),
        (["logs", "nope", "5", "-f"], "ghhook: no deploy of this app has this id"),
        (["logs", "nope"], "ghhook: no app of this name is configured"),
        (["logs", "empty"], "ghhook: empty has no deploys yet"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_logs_of_nothing_exits_1(served: Served, argv: list[str], line: str) -> None:
    one_error(await ghhook(*argv, "--admin", served.url), 1, line)


# --- No answer, usage errors -----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_refused_connection_exits_3_naming_the_url() -> None:
    from twisted.internet.protocol import Factory

    port = reactor().listenTCP(0, Factory(), interface="127.0.0.1")
    url = f"http://127.0.0.1:{port.getHost().port}"
    await port.stopListening()
    for argv in (["status"], ["deploy", "blog"], ["logs", "blog", "1", "-f"]):
        ran = await ghhook(*argv, "--admin", url)
        one_error(
            ran, 3, f"ghhook: no answer from {url}: connection refused (is ghhook listening there?)"
        )


@pytest_twisted.ensureDeferred
async def test_a_missing_unix_socket_exits_3(tmp_path: Path) -> None:
    ran = await ghhook("status", "--admin", f"unix:{tmp_path}/none.sock")
    assert (ran.code, ran.out) == (3, "")
    assert ran.err.startswith(f"ghhook: no answer from unix:{tmp_path}/none.sock: ")
    assert len(ran.err.splitlines()) == 1


@pytest_twisted.ensureDeferred
async def test_a_stalled_or_foreign_answer_exits_3() -> None:
    server = StallServer(reactor(), stalled(200, b'{"ap', 100), whole(200, b"hello"))
    url = f"http://127.0.0.1:{server.port.getHost().port}"
    try:
        ran = await ghhook("status", "--admin", url, "--timeout", "0.2")
        one_error(
            ran,
            3,
            f"ghhook: no answer from {url}: no whole answer within 0.2 s: the headers came"
            " (HTTP 200) but the body stalled after 4 of 100 bytes",
        )
        ran = await ghhook("status", "--admin", url)
        one_error(
            ran,
            3,
            f"ghhook: {url} answered HTTP 200 without a JSON object"
            " (is it ghhook's admin listener?)",
        )
    finally:
        await server.stop()


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        ([], "ghhook: give a command: status, deploy, rollback, pause, resume, logs, send,"
         " check-config (see --help)"),
        (["stats"], "ghhook: Unknown command: stats"),
        (["deploy"], "ghhook deploy: give one app: deploy APP"),
        (["deploy", "a", "b"], "ghhook deploy: give one app: deploy APP"),
        (["status", "a", "b"], "ghhook status: give at most one app: status [APP]"),
        (["logs", "blog", "x"], "ghhook logs: x: a deploy id is a positive integer"),
        (["logs", "blog", "--json"], "ghhook logs: option --json not recognized"),
        (["rollback", "blog", "--to"], "ghhook rollback: option --to requires argument"),
        (["deploy", "blog", "--timeout", "0"],
         "ghhook deploy: --timeout 0: must be a positive number of seconds"),
        (["status", "--admin", "ftp://x"],
         "ghhook status: --admin ftp://x: expected http(s)://HOST:PORT or unix:/path/to.sock"),
        (["status", "--admin", "unix:"],
         "ghhook status: --admin unix:: give the socket's path, unix:/path/to.sock"),
        (["check-config"], "ghhook check-config: give one config file: check-config FILE"),
    ],
)  # fmt: skip
@pytest_twisted.ensureDeferred
async def test_usage_errors_exit_2_with_one_line(argv: list[str], line: str) -> None:
    one_error(await ghhook(*argv), 2, line)


@pytest_twisted.ensureDeferred
async def test_bad_admin_settings_from_the_environment_are_usage_errors(tmp_path: Path) -> None:
    ran = await ghhook("status", environ={"GHHOOK_ADMIN": "localhost:9000"})
    one_error(
        ran,
        2,
        "ghhook status: $GHHOOK_ADMIN localhost:9000:"
        " expected http(s)://HOST:PORT or unix:/path/to.sock",
    )
    missing = tmp_path / "missing"
    ran = await ghhook(
        "deploy", "blog", "--admin", "http://127.0.0.1:1",
        environ={"GHHOOK_ADMIN_TOKEN_FILE": str(missing)},
    )  # fmt: skip
    one_error(
        ran,
        2,
        f"ghhook deploy: $GHHOOK_ADMIN_TOKEN_FILE {missing}: cannot read it:"
        " No such file or directory",
    )


# --- As a process ----------------------------------------------------------------------


async def process(*argv: str, module: bool = True) -> tuple[int, str, str]:
    """``python -m ghhook ARGV`` (or the console script's function), without blocking."""
    env = {k: v for k, v in environment().items() if not k.startswith("GHHOOK_ADMIN")}
    if module:
        args = ["-m", "ghhook", *argv]
    else:
        entry = console_script()
        module_name, _, function = entry.partition(":")
        code = f"import sys; from {module_name} import {function} as m; sys.argv[0] = 'ghhook'; m()"
        args = ["-c", code, *argv]
    done = getProcessOutputAndValue(sys.executable, args, env=env, path=str(ROOT))
    out, err, code = await done.addTimeout(60, reactor())
    return code, out.decode(), err.decode()


def console_script() -> str:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    scripts = parser["options.entry_points"]["console_scripts"]
    entries = dict(
        (name.strip(), target.strip())
        for name, _, target in (line.partition("=") for line in scripts.splitlines() if line)
    )
    return entries["ghhook"]


@pytest_twisted.ensureDeferred
async def test_exit_statuses_as_a_process(served: Served, token_file: Path) -> None:
    code, out, err = await process("status", "--admin", served.url)
    assert (code, err) == (0, "")
    assert out.splitlines()[0].split() == ["app", "state", "deployed", "last", "when"]
    code, out, err = await process("deploy", "blog", "--admin", served.url)
    assert (code, out, err) == (1, "", f"ghhook: {NOT_ENABLED}\n")
    code, out, err = await process("deploy", "--admin", served.url)
    assert (code, out, err) == (2, "", "ghhook deploy: give one app: deploy APP\n")
    url = served.url.rsplit(":", 1)[0] + ":1"
    code, out, err = await process("status", "--admin", url)
    assert (code, out) == (3, "")
    assert err == f"ghhook: no answer from {url}: connection refused (is ghhook listening there?)\n"


@pytest_twisted.ensureDeferred
async def test_the_console_script_runs_the_same_commands(served: Served, token_file: Path) -> None:
    assert console_script() == "ghhook.cli:main"
    code, out, err = await process(
        "resume", "blog", "--admin", served.url, "--token-file", str(token_file), module=False
    )
    assert (code, out, err) == (0, "blog: resumed; deploy 10 released\n", "")
    code, out, err = await process("--help", module=False)
    out = " ".join(out.split())
    assert code == 0
    assert "130 interrupted" in out and "logs" in out and "check-config" in out
    code, out, _ = await process("deploy", "--help")
    out = " ".join(out.split())
    assert code == 0 and "3 no answer" in out and "--token-file" in out


class _Watching(ProcessProtocol):
    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.seen: Deferred[None] = Deferred()
        self.ended: Deferred[int | None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data
        if LOG_BEFORE[-1].encode() in self.out and not self.seen.called:
            self.seen.callback(None)

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(getattr(reason.value, "exitCode", None))


@pytest_twisted.ensureDeferred
async def test_ctrl_c_ends_logs_follow_with_130_and_no_traceback(served: Served) -> None:
    env = {k: v for k, v in environment().items() if not k.startswith("GHHOOK_ADMIN")}
    env["PYTHONUNBUFFERED"] = "1"
    watching = _Watching()
    argv = [sys.executable, "-m", "ghhook", "logs", "blog", "7", "-f", "--admin", served.url]
    transport = reactor().spawnProcess(watching, sys.executable, argv, env=env, path=str(ROOT))
    try:
        await watching.seen.addTimeout(60, reactor())
        transport.signalProcess("INT")
        code = await watching.ended.addTimeout(GUARD, reactor())
    finally:
        if not watching.ended.called:
            transport.signalProcess("KILL")
    assert code == 130, watching.err
    assert watching.err == b""
    assert watching.out.decode().splitlines() == LOG_BEFORE


def test_main_exits_130_on_keyboard_interrupt(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "react", interrupted)
    with pytest.raises(SystemExit) as raised:
        cli.main(["status", "--admin", "http://127.0.0.1:1"])
    assert raised.value.code == 130
