"""
Gitea, Forgejo and Gogs: one family. Each signs the body with HMAC-SHA256
in its own header as a bare hex digest, names the event and the delivery
in its own headers, and sends a GitHub-shaped push (``ref``, ``before``,
``after``, ``repository.full_name``) without GitHub's ``forced``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from ghhook.decision import Ignore, Pong
from ghhook.delivery import FORM_TYPE, ZERO_SHA, BadDelivery, Push, parse_push, str_field
from ghhook.forges.base import Adapter, Headers, Read, commit_message, json_object
from ghhook.signature import Outcome, Verdict, verify_hex


class GiteaFamily(Adapter):
    def __init__(self, name: str, title: str) -> None:
        self.name = name
        self.title = title
        self.event_header = f"X-{title}-Event"
        self.signature_header = f"X-{title}-Signature"
        self.delivery_headers = (f"X-{title}-Delivery",)
        self.events = {b"push": "push", b"ping": "ping"}

    def authenticate(
        self, header: Headers, body: bytes, secrets: Sequence[bytes], now: float
    ) -> Verdict:
        raw = header(self.signature_header)
        # A hook without a secret sends the header empty.
        if raw is None or not raw.strip():
            return Verdict(
                Outcome.MISSING,
                f"the request carries no {self.signature_header} header: set a secret"
                f" in {self.title}'s webhook settings",
            )
        return verify_hex(body, secrets, self.signature_header, raw, "sha256", prefixed=False)

    def payload(self, body: bytes, content_type: str | None) -> dict[str, Any]:
        media_type = (content_type or "").split(";")[0].strip().lower()
        if media_type == FORM_TYPE:
            raise BadDelivery(
                f"{self.title} deliveries must be JSON: choose application/json as the"
                f" POST content type in {self.title}'s webhook settings"
            )
        return super().payload(body, content_type)

    def pong(self, payload: dict[str, Any]) -> Pong:
        return Pong(zen=None, hook_id=None)

    def read(self, header: Headers, body: bytes) -> Read:
        read = super().read(header, body)
        # The forge's "Test Delivery" button sends a push of a fake commit whose
        # before and after are both zero: a check of the URL and the secret,
        # not the deletion it would otherwise read as.
        if read.event == "push" and isinstance(read.what, Ignore) and _is_test(body):
            return Read("ping", read.delivery, Pong(zen=None, hook_id=None))
        return read

    def pushes(self, event: str, payload: dict[str, Any]) -> list[Push]:
        push = parse_push(payload)
        pusher = str_field(payload.get("pusher"), "username", "login", "name")
        # Gogs sends no head_commit: the message is the pushed commit's.
        message = push.message or commit_message(payload.get("commits"), push.after)
        return [attrs.evolve(push, pusher=pusher, forced=None, message=message)]


def _is_test(body: bytes) -> bool:
    """Whether an (already read) push is a test delivery: both shas zero."""
    payload = json_object(body)
    return payload.get("before") == ZERO_SHA and payload.get("after") == ZERO_SHA
