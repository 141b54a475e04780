"""
A fake forge API and a notification receiver, over real loopback HTTP.

:class:`FakeForge` serves the commit-status (and GitHub Deployments) APIs
of every forge ghhook reports to, each under its own prefix, so a forge's
``api_url`` is ``f"{fake.url}/{prefix}"``:

============================  =====================  ================================
prefix                        forge                  auth header
============================  =====================  ================================
``github`` (and ``github/``   GitHub (Enterprise     ``Authorization: Bearer <token>``
``api/v3``)                   Server)
``gitea``                     Gitea, Forgejo, Gogs   ``Authorization: token <token>``
``gitlab``                    GitLab                 ``PRIVATE-TOKEN: <token>``
``bitbucket``                 Bitbucket Cloud        ``Authorization: Bearer <token>``
``bitbucket-server``          Bitbucket Data Center  ``Authorization: Bearer <token>``
============================  =====================  ================================

Every request is recorded in :attr:`FakeForge.calls` as a :class:`Call`, in
arrival order, refused ones too. A test scripts trouble with
:meth:`~_Recorder.fail_next`, :meth:`~_Recorder.down` (503 for all) or
:meth:`~_Recorder.stop_listening` (connections refused; the same port comes
back with :meth:`~_Recorder.start_listening`), and waits with
:meth:`~_Recorder.wait_for`, which is bounded on the reactor.

:class:`NotifyReceiver` takes ``POST /hook`` and checks
``X-Ghhook-Signature-256`` over the raw body.

Like :mod:`tests.stallserver`, these run in the test's real reactor; the
fixtures :func:`fake_forge` and :func:`notify_receiver` start and stop them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import AsyncIterator, Callable, Mapping
from itertools import count
from typing import Any, Generic, TypeVar
from urllib.parse import unquote

import attrs
import pytest_twisted
from klein import Klein
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.server import Site
from werkzeug.exceptions import HTTPException

from tests.stallserver import GUARD

#: The token :class:`FakeForge` accepts unless a test sets another.
TOKEN = "forge-token"

#: What GitHub answers (with 403 and a ``Retry-After``) past a secondary rate limit.
SECONDARY_RATE_LIMIT = {
    "message": "You have exceeded a secondary rate limit. Please wait a few minutes"
    " before you try again. If you reach out to GitHub Support for help, please"
    " include the request ID.",
    "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
}

_Record = TypeVar("_Record")


@attrs.frozen
class Call:
    """One request to :class:`FakeForge`, as it arrived and as it was answered."""

    forge: str  #: the prefix it came under ("" for none of them)
    method: str
    path: str  #: below the prefix, percent-decoded: ``/repos/me/app/statuses/<sha>``
    raw_path: str  #: below the prefix, as sent: GitLab's ``/projects/g%2Fapp/...``
    headers: dict[str, str]  #: lower-cased name: first value
    body: Any  #: the parsed JSON, or None (no body, or not JSON)
    status: int  #: what the fake answered
    at: float  #: the reactor's time when it arrived


@attrs.frozen
class Notification:
    """One request to :class:`NotifyReceiver`."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes  #: the raw body, as signed
    json: Any  #: the parsed JSON, or None
    verified: bool  #: whether the signature was there and right
    status: int
    at: float


@attrs.frozen
class _Failure:
    status: int
    headers: Mapping[str, str]
    body: Any


@attrs.frozen
class _Forge:
    """How one forge authenticates and says no."""

    header: str  #: lower-cased
    scheme: str  #: what precedes the token in the header, "" for none
    unauthorized: Any
    not_found: Any
    invalid_status: int
    invalid: Any
    states: frozenset[str]  #: a status's accepted ``state`` values
    required: tuple[str, ...] = ("state",)

    def accepts(self, headers: Mapping[str, str], token: str) -> bool:
        expected = f"{self.scheme} {token}" if self.scheme else token
        given = headers.get(self.header, "")
        return hmac.compare_digest(given.encode(), expected.encode())


def _bitbucket_error(message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"message": message}}


def _bitbucket_server_error(message: str) -> dict[str, Any]:
    return {"errors": [{"context": None, "message": message, "exceptionName": None}]}


_BITBUCKET_STATES = frozenset({"INPROGRESS", "SUCCESSFUL", "FAILED", "STOPPED"})

FORGES: dict[str, _Forge] = {
    "github": _Forge(
        header="authorization",
        scheme="Bearer",
        unauthorized={
            "message": "Bad credentials",
            "documentation_url": "https://docs.github.com/rest",
        },
        not_found={"message": "Not Found", "documentation_url": "https://docs.github.com/rest"},
        invalid_status=422,
        invalid={"message": "Validation Failed"},
        states=frozenset({"error", "failure", "pending", "success"}),
    ),
    "gitea": _Forge(
        header="authorization",
        scheme="token",
        unauthorized={"message": "user does not exist", "url": "https://gitea.example/api/swagger"},
        not_found={"message": "The target couldn't be found.", "errors": []},
        invalid_status=422,
        invalid={"message": "Validation failed"},
        states=frozenset({"pending", "success", "error", "failure", "warning"}),
    ),
    "gitlab": _Forge(
        header="private-token",
        scheme="",
        unauthorized={"message": "401 Unauthorized"},
        not_found={"message": "404 Project Not Found"},
        invalid_status=400,
        invalid={"error": "state does not have a valid value"},
        states=frozenset({"pending", "running", "success", "failed", "canceled", "skipped"}),
    ),
    "bitbucket": _Forge(
        header="authorization",
        scheme="Bearer",
        unauthorized=_bitbucket_error("Access token expired or invalid."),
        not_found=_bitbucket_error("Resource not found"),
        invalid_status=400,
        invalid=_bitbucket_error("Bad request"),
        states=_BITBUCKET_STATES,
        required=("state", "key", "url"),
    ),
    "bitbucket-server": _Forge(
        header="authorization",
        scheme="Bearer",
        unauthorized=_bitbucket_server_error("Authentication failed. Please check your token."),
        not_found=_bitbucket_server_error("Repository does not exist."),
        invalid_status=400,
        invalid=_bitbucket_server_error("The build status is invalid."),
        states=_BITBUCKET_STATES - {"STOPPED"} | {"CANCELLED", "UNKNOWN"},
        required=("state", "key", "url"),
    ),
}

_GITHUB_DEPLOYMENT_STATES = frozenset(
    {"error", "failure", "inactive", "in_progress", "queued", "pending", "success"}
)

#: GitLab's project id is one segment: ``group%2Fsub%2Fapp`` or a number.
_GITLAB_STATUS = re.compile(r"/projects/([^/]+)/statuses/([^/]+)")


def _headers(request: IRequest) -> dict[str, str]:
    return {
        name.decode("latin-1").lower(): values[0].decode("latin-1")
        for name, values in request.requestHeaders.getAllRawHeaders()
    }


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _answer(request: IRequest, status: int, headers: Mapping[str, str], body: Any) -> bytes:
    request.setResponseCode(status)
    for name, value in headers.items():
        request.setHeader(name, value)
    if body is None or status == 204:
        return b""
    if isinstance(body, bytes):
        return body
    request.setHeader("Content-Type", "application/json; charset=utf-8")
    return json.dumps(body).encode()


class _Tracked(ProtocolWrapper):
    """A connection whose end :meth:`_Recorder.stop_listening` can wait for."""

    def __init__(self, factory: Any, wrappedProtocol: Any) -> None:
        super().__init__(factory, wrappedProtocol)
        self.closed: Deferred[None] = Deferred()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        super().connectionLost(reason)
        self.closed.callback(None)


class _QuietSite(Site):
    noisy = False
    displayTracebacks = False

    def log(self, request: Any) -> None:
        """No access log: the test reads the recorded calls."""


class _Recorder(Generic[_Record]):
    """
    A Klein app on a loopback port that records what comes in; the trouble
    a test can script and the waits are the same for every subclass.
    """

    app: Klein

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.calls: list[_Record] = []
        self._failures: list[_Failure] = []
        self._down = False
        self._waiters: list[tuple[int, Deferred[list[_Record]]]] = []
        self._factory = WrappingFactory(_QuietSite(self.app.resource()))
        self._factory.protocol = _Tracked
        self._factory.noisy = False
        self._port: IListeningPort | None = None
        self.port_number = 0

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, valid across stop and start of listening."""
        return f"http://127.0.0.1:{self.port_number}"

    async def start_listening(self) -> None:
        """Listen on loopback: on a fresh port first, on the same one after a stop."""
        assert self._port is None, "already listening"
        endpoint = serverFromString(self.reactor, f"tcp:{self.port_number}:interface=127.0.0.1")
        self._port = await endpoint.listen(self._factory)
        address: Any = self._port.getHost()
        self.port_number = address.port

    async def stop_listening(self) -> None:
        """Refuse new connections and drop the open ones (keep-alive too)."""
        if self._port is not None:
            port, self._port = self._port, None
            await maybeDeferred(port.stopListening).addTimeout(GUARD, self.reactor)
        tracked: list[_Tracked] = list(self._factory.protocols)
        for connection in tracked:
            transport: Any = connection.transport
            transport.abortConnection()
        done: Deferred[Any] = DeferredList([c.closed for c in tracked])
        await done.addTimeout(GUARD, self.reactor)

    async def stop(self) -> None:
        """Stop listening and give up every wait still pending."""
        await self.stop_listening()
        for _n, waiter in list(self._waiters):
            waiter.cancel()

    def down(self) -> None:
        """Answer every request 503 (still recorded) until :meth:`up`."""
        self._down = True

    def up(self) -> None:
        self._down = False

    def fail_next(
        self,
        status: int,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        count: int = 1,
    ) -> None:
        """
        Answer the next ``count`` requests with ``status``, whatever they are.

        :param headers: e.g. ``{"Retry-After": "2"}``.
        :param body: JSON-able (sent as JSON), bytes (sent as is) or None (empty).
        """
        self._failures.extend([_Failure(status, dict(headers or {}), body)] * count)

    def wait_for(self, n: int, timeout: float = GUARD) -> Deferred[list[_Record]]:
        """
        Fire with a copy of :attr:`calls` once it holds at least ``n``;
        fail with ``TimeoutError`` after ``timeout`` seconds.
        """
        if len(self.calls) >= n:
            return succeed(list(self.calls))

        def forget(d: Deferred[list[_Record]]) -> None:
            self._waiters.remove((n, d))

        waiter: Deferred[list[_Record]] = Deferred(forget)
        self._waiters.append((n, waiter))
        return waiter.addTimeout(timeout, self.reactor)

    def _trouble(self) -> _Failure | None:
        """The scripted answer this request gets instead of its own, if any."""
        if self._down:
            return _Failure(503, {}, {"message": "Service Unavailable"})
        if self._failures:
            return self._failures.pop(0)
        return None

    def _record(self, record: _Record) -> None:
        self.calls.append(record)
        ready = [w for w in self._waiters if len(self.calls) >= w[0]]
        for waiter in ready:
            self._waiters.remove(waiter)
            waiter[1].callback(list(self.calls))


class FakeForge(_Recorder[Call]):
    """
    The status APIs of GitHub, Gitea, GitLab, Bitbucket Cloud and Bitbucket
    Data Center, one token for all of them (:attr:`token`).
    """

    app = Klein()

    def __init__(self, reactor: Any, token: str = TOKEN) -> None:
        super().__init__(reactor)
        self.token = token
        self._ids = count(1)  # statuses and deployment statuses
        self._deployment_ids = count(1)
        #: GitHub deployments made: id -> (owner/repo, the answer's JSON)
        self.deployments: dict[int, tuple[str, dict[str, Any]]] = {}

    @classmethod
    async def start(cls, reactor: Any, token: str = TOKEN) -> FakeForge:
        fake = cls(reactor, token)
        await fake.start_listening()
        return fake

    def api_url(self, forge: str) -> str:
        """The base URL a reporter for ``forge`` (a prefix of :data:`FORGES`) is given."""
        assert forge in FORGES, forge
        return f"{self.url}/{forge}"

    def calls_to(self, forge: str) -> list[Call]:
        return [c for c in self.calls if c.forge == forge]

    # The routes: each says how a valid request is answered; _serve does the rest.

    @app.route("/github/repos/<owner>/<repo>/statuses/<sha>", methods=["POST"])
    @app.route(
        "/github/api/v3/repos/<owner>/<repo>/statuses/<sha>",
        methods=["POST"],
        endpoint="ghes_status",
    )
    def github_status(self, request: IRequest, owner: str, repo: str, sha: str) -> bytes:
        return self._serve(request, lambda body: (201, self._status(body, sha)))

    @app.route("/github/repos/<owner>/<repo>/deployments", methods=["POST"])
    @app.route(
        "/github/api/v3/repos/<owner>/<repo>/deployments",
        methods=["POST"],
        endpoint="ghes_deployment",
    )
    def github_deployment(self, request: IRequest, owner: str, repo: str) -> bytes:
        def create(body: dict[str, Any]) -> tuple[int, Any]:
            deployment = {
                "environment": "production",
                **body,
                "id": next(self._deployment_ids),
                "sha": body["ref"],
            }
            self.deployments[deployment["id"]] = (f"{owner}/{repo}", deployment)
            return 201, deployment

        return self._serve(request, create, required=("ref",))

    @app.route("/github/repos/<owner>/<repo>/deployments/<deployment>/statuses", methods=["POST"])
    @app.route(
        "/github/api/v3/repos/<owner>/<repo>/deployments/<deployment>/statuses",
        methods=["POST"],
        endpoint="ghes_deployment_status",
    )
    def github_deployment_status(
        self, request: IRequest, owner: str, repo: str, deployment: str
    ) -> bytes:
        def create(body: dict[str, Any]) -> tuple[int, Any]:
            made = self.deployments.get(int(deployment)) if deployment.isdigit() else None
            if made is None or made[0] != f"{owner}/{repo}":
                return 404, FORGES["github"].not_found
            return 201, self._status(body, None)

        return self._serve(request, create, states=_GITHUB_DEPLOYMENT_STATES)

    @app.route("/gitea/repos/<owner>/<repo>/statuses/<sha>", methods=["POST"])
    def gitea_status(self, request: IRequest, owner: str, repo: str, sha: str) -> bytes:
        return self._serve(request, lambda body: (201, self._status(body, sha)))

    @app.route("/gitlab/projects/<path:project>/statuses/<sha>", methods=["POST"])
    def gitlab_status(self, request: IRequest, project: str, sha: str) -> bytes:
        # Twisted decodes %2F before Klein routes, so the path converter
        # matches "group/sub/app" however it was sent; GitLab takes only
        # the encoded form, so check the raw path here.
        def create(body: dict[str, Any]) -> tuple[int, Any]:
            if not _GITLAB_STATUS.fullmatch(self._raw_below_prefix(request)[1]):
                return 404, {"error": "404 Not Found"}
            return 201, {**self._status(body, sha), "status": body["state"]}

        return self._serve(request, create)

    @app.route(
        "/bitbucket/repositories/<workspace>/<slug>/commit/<sha>/statuses/build",
        methods=["POST"],
    )
    def bitbucket_status(self, request: IRequest, workspace: str, slug: str, sha: str) -> bytes:
        return self._serve(request, lambda body: (201, {**body, "type": "commitstatus"}))

    @app.route(
        "/bitbucket-server/rest/api/latest/projects/<key>/repos/<slug>/commits/<sha>/builds",
        methods=["POST"],
    )
    def bitbucket_server_status(self, request: IRequest, key: str, slug: str, sha: str) -> bytes:
        return self._serve(request, lambda body: (204, None))

    @app.handle_errors(HTTPException)
    def no_route(self, request: IRequest, failure: Failure) -> bytes:
        """No such endpoint (404) or method (405): recorded and answered like the forge."""
        error: Any = failure.value
        status = error.code or 500

        def refuse(_body: Any) -> tuple[int, Any]:
            return status, {"message": error.name}

        return self._serve(request, refuse, routed=False)

    # The machinery

    def _status(self, body: dict[str, Any], sha: str | None) -> dict[str, Any]:
        return {**body, "id": next(self._ids), **({"sha": sha} if sha else {})}

    def _raw_below_prefix(self, request: IRequest) -> tuple[str, str]:
        """The forge prefix the request came under ("" for none) and the raw path below it."""
        raw = request.path.decode("ascii", "replace")
        first, _, rest = raw.lstrip("/").partition("/")
        if first in FORGES:
            return first, "/" + rest
        return "", raw

    def _serve(
        self,
        request: IRequest,
        act: Callable[[Any], tuple[int, Any]],
        required: tuple[str, ...] | None = None,
        states: frozenset[str] | None = None,
        routed: bool = True,
    ) -> bytes:
        """
        Record the request and answer it: scripted trouble first, then the
        auth check, then the body check, then ``act(body)``.

        :param required: the string fields the JSON body must have (by
            default the forge's); ``state`` among them must be one of the
            forge's states, or of ``states``.
        :param routed: False for a request no route took: it gets ``act``'s
            answer with no checks.
        """
        forge_name, raw_path = self._raw_below_prefix(request)
        headers = _headers(request)
        body = _json(request.content.read() if request.content is not None else b"")
        forge = FORGES.get(forge_name, FORGES["github"])
        answer: tuple[int, Mapping[str, str], Any]
        if trouble := self._trouble():
            answer = (trouble.status, trouble.headers, trouble.body)
        elif not routed:
            status, reply = act(body)
            answer = (status, {}, forge.not_found if status == 404 else reply)
        elif not forge.accepts(headers, self.token):
            answer = (401, {}, forge.unauthorized)
        elif not self._valid(forge, body, forge.required if required is None else required, states):
            answer = (forge.invalid_status, {}, forge.invalid)
        else:
            status, reply = act(body)
            answer = (status, {}, reply)
        self._record(
            Call(
                forge=forge_name,
                method=request.method.decode("ascii"),
                path=unquote(raw_path),
                raw_path=raw_path,
                headers=headers,
                body=body,
                status=answer[0],
                at=self.reactor.seconds(),
            )
        )
        return _answer(request, *answer)

    @staticmethod
    def _valid(
        forge: _Forge, body: Any, required: tuple[str, ...], states: frozenset[str] | None
    ) -> bool:
        if not isinstance(body, dict):
            return False
        if any(not isinstance(body.get(field), str) for field in required):
            return False
        return "state" not in required or body["state"] in (states or forge.states)


def signature_header(secret: bytes, body: bytes) -> str:
    """The ``X-Ghhook-Signature-256`` value for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class NotifyReceiver(_Recorder[Notification]):
    """
    Takes signed JSON notifications on ``POST /hook``: 401 without
    ``X-Ghhook-Signature-256``, 403 with a wrong one, 200 with the right one.
    """

    app = Klein()
    HEADER = "x-ghhook-signature-256"

    def __init__(self, reactor: Any, secret: bytes) -> None:
        super().__init__(reactor)
        self.secret = secret

    @classmethod
    async def start(cls, reactor: Any, secret: bytes = b"notify-secret") -> NotifyReceiver:
        receiver = cls(reactor, secret)
        await receiver.start_listening()
        return receiver

    @property
    def hook_url(self) -> str:
        return f"{self.url}/hook"

    @app.route("/hook", methods=["POST"])
    def hook(self, request: IRequest) -> bytes:
        return self._serve(request, routed=True)

    @app.handle_errors(HTTPException)
    def no_route(self, request: IRequest, failure: Failure) -> bytes:
        error: Any = failure.value
        return self._serve(request, routed=False, status=error.code or 500)

    def _serve(self, request: IRequest, routed: bool, status: int = 404) -> bytes:
        headers = _headers(request)
        raw = request.content.read() if request.content is not None else b""
        given = headers.get(self.HEADER)
        verified = given is not None and hmac.compare_digest(
            given.encode(), signature_header(self.secret, raw).encode()
        )
        answer: tuple[int, Mapping[str, str], Any]
        if trouble := self._trouble():
            answer = (trouble.status, trouble.headers, trouble.body)
        elif not routed:
            answer = (status, {}, {"message": "no such endpoint"})
        elif given is None:
            answer = (401, {}, {"message": "X-Ghhook-Signature-256 is missing"})
        elif not verified:
            answer = (403, {}, {"message": "the signature does not match"})
        else:
            answer = (200, {}, {"ok": True})
        self._record(
            Notification(
                method=request.method.decode("ascii"),
                path=request.path.decode("ascii", "replace"),
                headers=headers,
                body=raw,
                json=_json(raw),
                verified=verified,
                status=answer[0],
                at=self.reactor.seconds(),
            )
        )
        return _answer(request, *answer)


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest_twisted.async_yield_fixture
async def fake_forge() -> AsyncIterator[FakeForge]:
    """A :class:`FakeForge` listening for the test (import it into the test module)."""
    fake = await FakeForge.start(_reactor())
    try:
        yield fake
    finally:
        await fake.stop()


@pytest_twisted.async_yield_fixture
async def notify_receiver() -> AsyncIterator[NotifyReceiver]:
    """A :class:`NotifyReceiver` with the secret ``b"notify-secret"``."""
    receiver = await NotifyReceiver.start(_reactor())
    try:
        yield receiver
    finally:
        await receiver.stop()


__all__ = [
    "FORGES",
    "SECONDARY_RATE_LIMIT",
    "TOKEN",
    "Call",
    "FakeForge",
    "Notification",
    "NotifyReceiver",
    "fake_forge",
    "notify_receiver",
    "signature_header",
]
