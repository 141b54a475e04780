"""
Bitbucket Cloud and Bitbucket Data Center (Server): both sign the body with
HMAC-SHA256 as ``X-Hub-Signature: sha256=<hex>`` (the header GitHub uses
for SHA-1) and name the event in ``X-Event-Key``; both push many refs in
one delivery, each of which becomes a :class:`~ghhook.delivery.Push`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ghhook.decision import Pong
from ghhook.delivery import (
    BRANCH_PREFIX,
    TAG_PREFIX,
    ZERO_SHA,
    BadDelivery,
    Push,
    sha_field,
    str_field,
)
from ghhook.forges.base import Adapter, Headers, Read
from ghhook.signature import Outcome, Verdict, verify_hex

SIGNATURE_HEADER = "X-Hub-Signature"
#: At most this many refs of one delivery are read; Bitbucket sends a few.
MAX_CHANGES = 100


class _Bitbucket(Adapter):
    event_header = "X-Event-Key"

    def authenticate(
        self, header: Headers, body: bytes, secrets: Sequence[bytes], now: float
    ) -> Verdict:
        raw = header(SIGNATURE_HEADER)
        if raw is None:
            return Verdict(
                Outcome.MISSING,
                f"the request carries no {SIGNATURE_HEADER} header: set a secret in"
                f" {self.title}'s webhook settings",
            )
        return verify_hex(body, secrets, SIGNATURE_HEADER, raw, "sha256")

    def pong(self, payload: dict[str, Any]) -> Pong:
        return Pong(zen=None, hook_id=None)


def _changes(payload: object, name: str) -> list[Any]:
    changes = payload.get(name) if isinstance(payload, dict) else None
    if not isinstance(changes, list):
        raise BadDelivery(f"the push payload has no {name} list")
    if len(changes) > MAX_CHANGES:
        raise BadDelivery(f"the push payload changes more than {MAX_CHANGES} refs")
    return changes


class BitbucketCloud(_Bitbucket):
    name = "bitbucket"
    title = "Bitbucket Cloud"
    events = {b"repo:push": "push"}
    delivery_headers = ("X-Request-UUID",)

    def recognises(self, header: Headers) -> bool:
        return header(self.event_header) is not None and (
            header("X-Request-UUID") is not None or header("X-Hook-UUID") is not None
        )

    def pushes(self, event: str, payload: dict[str, Any]) -> list[Push]:
        repository = str_field(payload.get("repository"), "full_name")
        pusher = str_field(payload.get("actor"), "nickname", "display_name")
        pushes = []
        for change in _changes(payload.get("push"), "changes"):
            if not isinstance(change, dict):
                raise BadDelivery("a change of the push payload is not an object")
            new, old = change.get("new"), change.get("old")
            ref = new if isinstance(new, dict) else old
            name = str_field(ref, "name")
            kind = str_field(ref, "type")
            if name is None or kind is None:
                raise BadDelivery("a change of the push payload names no ref")
            prefix = TAG_PREFIX if kind in ("tag", "annotated_tag") else BRANCH_PREFIX
            before = _hash(old, "old") if isinstance(old, dict) else ZERO_SHA
            if isinstance(new, dict) and change.get("closed") is not True:
                deleted, after = False, _hash(new, "new")
            else:
                deleted, after = True, ZERO_SHA
            target = new.get("target") if isinstance(new, dict) else None
            pushes.append(
                Push(
                    ref=prefix + name,
                    before=before,
                    after=after,
                    repository=repository,
                    deleted=deleted,
                    pusher=pusher,
                    message=str_field(target, "message"),
                    forced=change.get("forced") is True,
                )
            )
        return pushes


def _hash(ref: dict[str, Any], name: str) -> str:
    target = ref.get("target")
    return sha_field(
        target.get("hash") if isinstance(target, dict) else None, f"{name}.target.hash"
    )


class BitbucketServer(_Bitbucket):
    name = "bitbucket-server"
    title = "Bitbucket Data Center"
    events = {b"repo:refs_changed": "push", b"diagnostics:ping": "ping"}
    delivery_headers = ("X-Request-Id",)

    def read(self, header: Headers, body: bytes) -> Read:
        # "Test connection": its body is not documented, so it is not read.
        if header(self.event_header) == b"diagnostics:ping":
            return Read("ping", self.delivery_id(header), Pong(zen=None, hook_id=None))
        return super().read(header, body)

    def recognises(self, header: Headers) -> bool:
        # Bitbucket Cloud's deliveries carry X-Request-UUID and X-Hook-UUID instead.
        return (
            header(self.event_header) is not None
            and header("X-Request-UUID") is None
            and header("X-Hook-UUID") is None
        )

    def pushes(self, event: str, payload: dict[str, Any]) -> list[Push]:
        repo = payload.get("repository")
        project = str_field(repo.get("project") if isinstance(repo, dict) else None, "key")
        slug = str_field(repo, "slug")
        repository = f"{project}/{slug}" if project and slug else None
        pusher = str_field(payload.get("actor"), "name", "displayName")
        pushes = []
        for change in _changes(payload, "changes"):
            if not isinstance(change, dict):
                raise BadDelivery("a change of the push payload is not an object")
            ref = change.get("refId")
            if not isinstance(ref, str) or not ref.startswith("refs/"):
                raise BadDelivery("a change of the push payload has no valid refId")
            kind = change.get("type")
            after = sha_field(change.get("toHash"), "toHash")
            pushes.append(
                Push(
                    ref=ref,
                    before=sha_field(change.get("fromHash"), "fromHash"),
                    after=after,
                    repository=repository,
                    deleted=kind == "DELETE" or after == ZERO_SHA,
                    pusher=pusher,
                    message=None,
                    forced=None,
                )
            )
        return pushes
