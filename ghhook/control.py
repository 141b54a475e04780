"""
The admin listener's writes: deploy now, roll back, pause, resume.

Thin: each route checks who asks (:func:`who_asks`: a token of
``admin_token_file`` over TCP, the peer's uid over a ``unix:`` admin
endpoint, whose permissions are the authorization), reads a small JSON
body, and hands the request to the app's engine, which runs it like any
deploy: one at a time, recorded in the journal with who asked.
"""

from __future__ import annotations

import json
import re
import socket
import struct
from collections.abc import Sequence
from typing import Any

from klein import Klein
from twisted.internet.address import UNIXAddress
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from ghhook.config import AdminToken
from ghhook.deployer import Deployer
from ghhook.engines import Engines
from ghhook.forges.base import same_token
from ghhook.isotime import iso_time
from ghhook.journal import Journal, JournalError
from ghhook.web import json_body

log = Logger(namespace="ghhook.control")

_SHA = re.compile(r"[0-9a-fA-F]{40}")
#: A pause's reason is shown on pages and in /status: one short line.
REASON_MOST = 200

NOT_ENABLED = (
    "the admin listener takes these POSTs over a unix: admin endpoint (its file"
    " permissions decide who may), or over TCP with Authorization: Bearer <token>"
    " for a token of admin_token_file (--admin-token-file); neither is set up"
)


class Refused(Exception):
    """An answer other than success: its code and one sentence."""

    def __init__(self, code: int, sentence: str) -> None:
        super().__init__(sentence)
        self.code = code


def who_asks(request: IRequest, tokens: Sequence[AdminToken]) -> str:
    """
    Who is asking: ``uid N`` over a unix socket, a token's label over TCP;
    raises :class:`Refused` (403) otherwise. Tokens are compared in
    constant time, and no token is ever logged or answered.
    """
    if isinstance(request.getHost(), UNIXAddress):
        uid = _peer_uid(request)
        return f"uid {uid}" if uid is not None else "the unix socket"
    if not tokens:
        raise Refused(403, NOT_ENABLED)
    header = request.requestHeaders.getRawHeaders(b"authorization") or []
    scheme, _, given = (header[0] if header else b"").partition(b" ")
    if scheme.lower() != b"bearer" or not given.strip():
        raise Refused(
            403, "this needs Authorization: Bearer <token>, with a token of admin_token_file"
        )
    found = same_token(given.strip(), [token.token for token in tokens])
    if found is None:
        raise Refused(403, "the bearer token is none of admin_token_file's")
    return next(token.label for token in tokens if token.token == found)


def _peer_uid(request: IRequest) -> int | None:
    """The uid of the process at the other end of a unix socket (SO_PEERCRED)."""
    transport: Any = getattr(request, "channel", None)
    transport = getattr(transport, "transport", None)
    while transport is not None and not hasattr(transport, "getHandle"):
        transport = getattr(transport, "transport", None)
    try:
        handle = transport.getHandle()
        creds = handle.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (AttributeError, OSError):
        return None
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def _body(request: IRequest) -> dict[str, Any]:
    """The request's JSON object; an empty body is an empty object."""
    raw = request.content.read() if request.content is not None else b""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise Refused(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise Refused(400, "the body is not a JSON object")
    return body


class Control:
    """The POST routes of the admin listener, added to its Klein app."""

    def __init__(self, engines: Engines, journal: Journal) -> None:
        self.engines = engines
        self.journal = journal

    def route(self, app: Klein) -> None:
        for action, handler in (
            ("deploy", self.deploy),
            ("rollback", self.rollback),
            ("pause", self.pause),
            ("resume", self.resume),
        ):
            app.route(f"/apps/<name>/{action}", methods=["POST"])(self._guarded(action, handler))

    def _guarded(self, action: str, handler: Any) -> Any:
        async def answer(request: IRequest, name: str) -> bytes:
            request.setHeader(b"Cache-Control", b"no-store")
            try:
                who = who_asks(request, self.engines.settings.admin_tokens)
                engine = self.engines.get(name)
                if engine is None or engine.retired:
                    raise Refused(404, "no app of this name is configured")
                code, document = await handler(engine, _body(request), who)
            except Refused as e:
                return json_body(request, e.code, {"error": str(e)})
            except JournalError as e:
                return json_body(request, 503, {"error": f"the journal cannot record it now: {e}"})
            return json_body(request, code, document)

        # Klein names a route's endpoint after its function: one name each.
        answer.__name__ = answer.__qualname__ = f"control_{action}"
        return answer

    async def deploy(
        self, engine: Deployer, body: dict[str, Any], who: str
    ) -> tuple[int, dict[str, Any]]:
        force = body.get("force", False)
        if not isinstance(force, bool):
            raise Refused(400, "force is true or false")
        with self.journal.transaction():
            submission = engine.deploy_now(force, who)
        self._said(engine, "deploy", who, deploy=submission.deploy, force=force)
        return 202, {
            "app": engine.name,
            "deploy": submission.deploy,
            "coalesced": submission.coalesced,
        }

    async def rollback(
        self, engine: Deployer, body: dict[str, Any], who: str
    ) -> tuple[int, dict[str, Any]]:
        to = body.get("to")
        if to is None:
            to = engine.previous_release()
            if to is None:
                raise Refused(
                    400,
                    f"the journal holds no earlier release of {engine.name} to roll back to;"
                    " give the commit (to)",
                )
        if not isinstance(to, str) or not _SHA.fullmatch(to):
            raise Refused(400, "to is a full 40-hex-digit commit sha")
        to = to.lower()
        refusal = await engine.rollback_refusal(to)
        if refusal is not None:
            raise Refused(400, refusal)
        with self.journal.transaction():
            submission = engine.rollback(to, who)
        self._said(engine, "rollback", who, deploy=submission.deploy, to=to)
        return 202, {"app": engine.name, "deploy": submission.deploy, "to": to}

    async def pause(
        self, engine: Deployer, body: dict[str, Any], who: str
    ) -> tuple[int, dict[str, Any]]:
        reason = body.get("reason")
        if reason is not None and (not isinstance(reason, str) or len(reason) > REASON_MOST):
            raise Refused(400, f"reason is a string of at most {REASON_MOST} characters")
        with self.journal.transaction():
            pause = engine.pause(reason or None, who)
        self._said(engine, "pause", who)
        return 200, {
            "app": engine.name,
            "paused": True,
            "reason": pause.reason,
            "since": iso_time(pause.since),
            "by": pause.by,
        }

    async def resume(
        self, engine: Deployer, body: dict[str, Any], who: str
    ) -> tuple[int, dict[str, Any]]:
        with self.journal.transaction():
            released = engine.resume(who)
        self._said(engine, "resume", who, deploy=released)
        return 200, {"app": engine.name, "paused": False, "deploy": released}

    @staticmethod
    def _said(engine: Deployer, action: str, who: str, **fields: Any) -> None:
        engine.log.info("{action} asked by {who}", action=action, who=who, **fields)


__all__ = ["Control", "Refused", "who_asks"]
