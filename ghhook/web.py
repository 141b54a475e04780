"""
The public HTTP face: the hook resource and ``/healthz`` (served by the
site of :mod:`ghhook.site`).

Routes stay thin: read the body, verify, parse, classify and route (all
pure, see :mod:`ghhook.signature`, :mod:`ghhook.delivery`,
:mod:`ghhook.decision`, :mod:`ghhook.routing`), hand a push to the engine
(:class:`~ghhook.deployer.Deployer`) of each app that takes it, answer in
JSON.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from werkzeug.exceptions import HTTPException

from ghhook.decision import Ignore, Pong
from ghhook.delivery import BadDelivery, Push
from ghhook.forges import Adapter, BadHeader, Headers, adapter, recognise
from ghhook.journal import Journal, JournalError
from ghhook.routing import Routed, RouteTable
from ghhook.signature import Outcome

if TYPE_CHECKING:  # the engines are only called here, never built
    from ghhook.config import AppSettings, DaemonSettings
    from ghhook.engines import Engines

log = Logger(namespace="ghhook.web")

#: Seconds between two warnings about bad signatures from one peer.
REJECT_LOG_INTERVAL = 10.0


class DeliveryCounter(Protocol):
    """Counts deliveries by event and outcome (the metrics implement it)."""

    def delivery(self, event: str, outcome: str) -> None: ...


def json_body(request: IRequest, code: int, body: dict[str, Any]) -> bytes:
    """Set ``code`` and the JSON content type; return the encoded ``body``."""
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(body).encode("utf-8") + b"\n"


def json_errors(app: Klein, allow: Sequence[str] = ("POST",)) -> None:
    """
    Answer routing errors (404, 405) and crashes (500) in JSON; a 405 names
    ``allow``, the methods every route of ``app`` takes.
    """

    def http_error(request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, HTTPException)
        code = error.code or 500
        if code == 405:
            # The route's own methods (a POST-only one among GET pages), else ``allow``.
            valid = {m for m in getattr(error, "valid_methods", None) or () if m != "OPTIONS"}
            methods = [m for m in allow if m in valid] + sorted(valid - set(allow))
            methods = methods or list(allow)
            request.setHeader(b"Allow", ", ".join(methods).encode("ascii"))
            method = request.method.decode("ascii", "replace")
            sentence = f"method {method} is not allowed here; use {methods[0]}"
        elif code == 404:
            sentence = "nothing is served at this path"
        else:
            sentence = error.description or error.name
        return json_body(request, code, {"error": sentence})

    def crash(request: IRequest, failure: Failure) -> bytes:
        log.failure("unexpected error answering {uri}", failure, uri=request.uri)
        return json_body(request, 500, {"error": "internal error; see ghhook's log"})

    app.handle_errors(HTTPException)(http_error)
    app.handle_errors(Exception)(crash)


class Hook:
    """
    The webhook endpoints: one instance per daemon, dependencies as fields.

    ``POST <shared path>`` serves every app, verified with every app's
    secrets; ``POST /hooks/<name>`` serves one app, verified with its own
    secrets only. The apps are read from ``engines.settings`` at each
    request, so a reload's apps apply at once; the shared path is routed
    here, once, as only a restart changes it.
    """

    def __init__(
        self,
        engines: Engines,
        journal: Journal,
        counter: DeliveryCounter | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.engines = engines
        self.journal = journal
        self._counter = counter
        self._wall_clock = wall_clock
        self._rejected: dict[str, tuple[float, int]] = {}
        self._routes: tuple[DaemonSettings, dict[str, RouteTable]] | None = None
        self.app = Klein()
        path = engines.settings.path
        self.app.route(path, methods=["POST"], strict_slashes=False)(self.shared)
        # Every method: a name no app has is a 404 whatever the method.
        self.app.route("/hooks/<name>", strict_slashes=False)(self.own)
        self.app.route("/healthz", methods=["GET"])(self.healthz)
        json_errors(self.app)

    def resource(self) -> IResource:
        return RefuseUndecodableUrls(self.app.resource())

    def _warn_rejected(self, peer: str, reason: str, app: str | None) -> None:
        """Log a bad signature, at most once per peer every REJECT_LOG_INTERVAL s."""
        now = self._wall_clock()
        last, suppressed = self._rejected.get(peer, (0.0, 0))
        if now - last < REJECT_LOG_INTERVAL:
            self._rejected[peer] = (last, suppressed + 1)
            return
        if len(self._rejected) > 10_000:
            self._rejected.clear()
        self._rejected[peer] = (now, 0)
        log.warn(
            "rejected a delivery from {peer}: {reason}{more}",
            peer=peer,
            reason=reason,
            suppressed=suppressed,
            more=f" ({suppressed} more since the last warning)" if suppressed else "",
            **_about(app),
        )

    def healthz(self, request: IRequest) -> bytes:
        return healthz(request, self.journal)

    def _table(self, forge: str) -> RouteTable:
        """The apps of ``forge`` indexed for routing, built again after a reload."""
        settings = self.engines.settings
        if self._routes is None or self._routes[0] is not settings:
            by_forge: dict[str, list[AppSettings]] = {}
            for app in settings.apps:
                by_forge.setdefault(app.forge, []).append(app)
            self._routes = (settings, {name: RouteTable(apps) for name, apps in by_forge.items()})
        return self._routes[1].get(forge) or RouteTable(())

    def shared(self, request: IRequest) -> bytes:
        """
        The shared path: the forge is recognised from the headers, and every
        app of that forge is a candidate (GitHub's when no forge's headers are there).
        """
        header = _headers(request)
        forge = recognise(header) or adapter("github")
        routes = self._table(forge.name)
        if not routes.apps:
            reason = (
                f"this is a {forge.title} delivery, and no app here takes {forge.title}"
                f" deliveries (an app's forge setting names its forge)"
            )
            return self._answer(
                request, forge.label(header), "bad_signature", 403, {"error": reason}
            )
        return self._receive(request, header, forge, routes, None)

    def own(self, request: IRequest, name: str) -> bytes:
        """An app's own URL; an app not (or no longer) configured is a 404."""
        app = self.engines.settings.app(name)
        if app is None or self.engines.get(name) is None:
            return json_body(request, 404, {"error": "nothing is served at this path"})
        if request.method != b"POST":
            request.setHeader(b"Allow", b"POST")
            method = request.method.decode("ascii", "replace")
            return json_body(
                request, 405, {"error": f"method {method} is not allowed here; use POST"}
            )
        header = _headers(request)
        forge = adapter(app.forge)
        spoke = recognise(header)
        if spoke is not None and spoke is not forge:
            label = spoke.label(header)
            sentence = f"this is a {spoke.title} delivery; app {name} expects {app.forge}"
            return self._answer(request, label, "wrong_forge", 400, {"error": sentence})
        return self._receive(request, header, forge, RouteTable((app,)), name)

    def _answer(
        self,
        request: IRequest,
        event: str,
        outcome: str,
        code: int,
        body: dict[str, Any],
    ) -> bytes:
        if self._counter is not None:
            self._counter.delivery(event, outcome)
        return json_body(request, code, body)

    def _receive(
        self,
        request: IRequest,
        header: Headers,
        forge: Adapter,
        routes: RouteTable,
        own: str | None,
    ) -> bytes:
        """
        Verify, parse and route a delivery from ``forge`` for the apps of
        ``routes``; ``own`` names the app whose URL it came to (None on the
        shared path).
        """
        body = request.content.read()
        # Headers stay bytes until they are used, so that no value an unsigned
        # client sends can raise before the signature has been checked.
        label = forge.label(header)
        verdict = forge.authenticate(header, body, routes.secrets, self._wall_clock())
        if not verdict.valid or verdict.secret is None:
            # The sentence names the forge whose credential it looked for.
            reason = verdict.reason
            if forge.title not in reason:
                reason = f"{reason} ({forge.title} delivery)"
            if verdict.outcome is Outcome.MISSING:
                return self._answer(request, label, "unsigned", 401, {"error": reason})
            self._warn_rejected(_peer(request), reason, own)
            return self._answer(request, label, "bad_signature", 403, {"error": reason})
        try:
            read = forge.read(header, body)
        except BadHeader as e:
            return self._answer(request, label, "malformed", 400, {"error": str(e)})
        except BadDelivery as e:
            log.warn(
                "rejected delivery {delivery} ({forge}): {reason}",
                delivery=_quiet(forge, header),
                forge=forge.name,
                reason=str(e),
                **_about(own),
            )
            return self._answer(request, label, "malformed", 400, {"error": str(e)})
        delivery, event = read.delivery, read.event
        decision: Pong | Ignore | list[tuple[Push, Routed]]
        if isinstance(read.what, tuple):
            decision = []
            reasons: list[str] = []
            for push in read.what:
                routed = routes.route(push, verdict.secret)
                if routed.apps:
                    decision.append((push, routed))
                else:
                    reasons.append(str(routed.reason))
                if routed.hint is not None:
                    # Rate-limited per peer: any holder of a secret can cause it.
                    self._warn_rejected(_peer(request), routed.hint, own)
            if not decision:
                decision = Ignore("; ".join(dict.fromkeys(reasons)))
        else:
            decision = read.what

        try:
            with self.journal.transaction():
                if isinstance(decision, list):
                    outcome, code, answer = self._deliver(delivery, event, decision)
                else:
                    outcome, code, answer = self._settle(delivery, event, decision, own)
        except JournalError:
            # Nothing was queued: the forge shows a failed delivery, to redeliver
            # once /healthz is ok again. The journal logged why, once.
            outcome, code = "unrecorded", 503
            answer = {
                "error": "ghhook cannot record deliveries now (its journal fails; see"
                " /healthz); nothing was queued: redeliver later"
            }
        return self._answer(request, label, outcome, code, answer)

    def _settle(
        self, delivery: str | None, event: str, decision: Pong | Ignore, own: str | None
    ) -> tuple[str, int, dict[str, Any]]:
        """Record a delivery no engine sees: a ping, or one that no app takes."""
        outcome = "pong" if isinstance(decision, Pong) else "ignored"
        seq = self.journal.add_delivery(delivery, event, outcome, self._wall_clock(), None)
        say = self.journal.on_commit
        if seq is None:
            say(lambda: _duplicate(delivery, own))
            return "duplicate", 200, {"duplicate": delivery}
        if isinstance(decision, Pong):
            say(
                lambda: log.info(
                    "ping {delivery} answered",
                    delivery=delivery,
                    hook=decision.hook_id,
                    **_about(own),
                )
            )
            return "pong", 200, {"pong": True, "zen": decision.zen, "hook_id": decision.hook_id}
        # Any sender that knows a secret can cause this line with each request.
        say(
            lambda: log.debug(
                "delivery {delivery} ({event}) ignored: {reason}",
                delivery=delivery,
                event=event,
                reason=decision.reason,
                **_about(own),
            )
        )
        return "ignored", 200, {"ignored": decision.reason}

    def _deliver(
        self, delivery: str | None, event: str, routed: Sequence[tuple[Push, Routed]]
    ) -> tuple[str, int, dict[str, Any]]:
        """
        Record a push (one per ref it moved that some app deploys) and hand
        it to each app that takes it, in one transaction; the engines take
        it, and the log tells of it, only once it commits.
        """
        apps = list(dict.fromkeys(name for _, route in routed for name in route.apps))
        first = routed[0][0]
        seq = self.journal.add_delivery(
            delivery, event, "accepted", self._wall_clock(), first.after, apps=apps
        )
        say = self.journal.on_commit
        if seq is None:
            say(lambda: _duplicate(delivery, _one(apps), apps=apps))
            return "duplicate", 200, {"duplicate": delivery}
        deploys: list[dict[str, Any]] = []
        declined: dict[str, str] = {}
        after: str | None = None
        taken: set[str] = set()
        for push, route in routed:
            for name in route.apps:
                if name in taken:
                    continue
                taken.add(name)
                engine = self.engines.get(name)
                assert engine is not None, f"app {name} is configured but has no engine"
                submission = engine.submit(push.after, delivery, forced=push.may_rewind)
                if isinstance(submission, Ignore):
                    declined[name] = submission.reason
                    say(_declined(delivery, push, name, submission.reason))
                    continue
                deploy = {
                    "app": name,
                    "deploy": submission.deploy,
                    "coalesced": submission.coalesced,
                }
                if submission.held:
                    deploy["held"] = True
                if len(routed) > 1:
                    deploy["after"] = push.after
                deploys.append(deploy)
                after = after or push.after
                say(_accepted(delivery, push, name, submission.deploy))
        if not deploys:
            self.journal.settle_delivery(seq, "ignored", apps=[])
            if len(declined) == 1:
                (reason,) = declined.values()
            else:
                reason = "; ".join(f"{name}: {why}" for name, why in declined.items())
            return "ignored", 200, {"ignored": reason}
        self.journal.settle_delivery(
            seq, "accepted", deploys[0]["deploy"], apps=[d["app"] for d in deploys]
        )
        answer: dict[str, Any] = {"after": after, "delivery": delivery, "deploys": deploys}
        if all(deploy.get("held") for deploy in deploys):
            # Every app it reached is paused: it deploys at their resume.
            answer["held"] = True
        if declined:
            answer["ignored"] = declined
        return "accepted", 202, answer


def _about(app: str | None) -> dict[str, str]:
    """The ``app`` field of a log event about one app; none for the shared path."""
    return {} if app is None else {"app": app}


def _one(apps: Sequence[str]) -> str | None:
    """The app a delivery is about, when it is about one."""
    return apps[0] if len(apps) == 1 else None


def _duplicate(delivery: str | None, own: str | None, apps: Sequence[str] = ()) -> None:
    log.info(
        "delivery {delivery} seen before; ignored",
        delivery=delivery,
        apps=list(apps),
        **_about(own),
    )


def _declined(delivery: str | None, push: Push, app: str, reason: str) -> Callable[[], None]:
    """The log line, once committed, for an app whose engine did not take a push."""
    return lambda: log.debug(
        "delivery {delivery} not taken by {app}: {reason}",
        delivery=delivery,
        app=app,
        reason=reason,
        sha=push.after,
    )


def _accepted(delivery: str | None, push: Push, app: str, deploy: int) -> Callable[[], None]:
    """The log line, once committed, for an app whose engine took a push."""
    return lambda: log.info(
        "push {delivery} of {sha} to {branch} accepted by {app} as deploy {deploy}{forced}",
        delivery=delivery,
        sha=push.after,
        branch=push.branch,
        app=app,
        deploy=deploy,
        pusher=push.pusher,
        forced=" (forced)" if push.forced else "",
        repository=push.repository,
    )


def healthz(request: IRequest, journal: Journal) -> bytes:
    """200 while the journal can be read and written, else 503 with the reason."""
    request.setHeader(b"Cache-Control", b"no-store")
    problem = journal.health()
    if problem is not None:
        return json_body(request, 503, {"ok": False, "error": problem})
    return json_body(request, 200, {"ok": True})


def _headers(request: IRequest) -> Headers:
    """
    A request's headers as the adapters read them: the first value of a
    name, as the bytes sent. Asked by a str name, Twisted decodes every
    value as UTF-8 and raises on one that is not.
    """
    raw = request.requestHeaders

    def header(name: str) -> bytes | None:
        values = raw.getRawHeaders(name.encode("ascii"))
        return values[0] if values else None

    return header


def _quiet(forge: Adapter, header: Headers) -> str | None:
    """The delivery id for a log line, or None when it is not a valid one."""
    try:
        return forge.delivery_id(header)
    except BadHeader:
        return None


class RefuseUndecodableUrls(Resource):
    """
    Answer a Host header that is not UTF-8 with 400, and such a path with
    404, before Klein sees them: Klein logs a traceback for each, and anyone
    can send them. Everything else goes to the wrapped (Klein) resource.
    """

    isLeaf = True

    def __init__(self, inner: IResource) -> None:
        super().__init__()
        self._inner = inner

    def render(self, request: IRequest) -> bytes | int:
        try:
            request.getRequestHostname().decode("utf-8")
        except UnicodeDecodeError:
            return json_body(request, 400, {"error": "the Host header is not UTF-8"})
        try:
            b"/".join(request.prepath + request.postpath).decode("utf-8")
        except UnicodeDecodeError:
            return json_body(request, 404, {"error": "nothing is served at this path"})
        result: bytes | int = self._inner.render(request)
        return result


def _peer(request: IRequest) -> str:
    peer = request.getClientAddress()
    return str(getattr(peer, "host", peer))
