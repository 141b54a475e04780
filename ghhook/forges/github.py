"""GitHub (and GitHub Enterprise Server): HMAC-SHA256 in X-Hub-Signature-256."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ghhook.decision import Pong
from ghhook.delivery import Push, parse_body, parse_push
from ghhook.forges.base import Adapter, Headers
from ghhook.signature import SHA1_HEADER, SHA256_HEADER, Verdict, verify


class GitHub(Adapter):
    name = "github"
    title = "GitHub"
    event_header = "X-GitHub-Event"
    events = {b"push": "push", b"ping": "ping"}
    delivery_headers = ("X-GitHub-Delivery",)

    def authenticate(
        self, header: Headers, body: bytes, secrets: Sequence[bytes], now: float
    ) -> Verdict:
        return verify(body, secrets, header(SHA256_HEADER), header(SHA1_HEADER))

    def payload(self, body: bytes, content_type: str | None) -> dict[str, Any]:
        # JSON, or a form whose payload field holds it: GitHub offers both.
        return parse_body(body, content_type)

    def pong(self, payload: dict[str, Any]) -> Pong:
        zen = payload.get("zen")
        hook_id = payload.get("hook_id")
        return Pong(
            zen=zen if isinstance(zen, str) else None,
            hook_id=hook_id if isinstance(hook_id, int) else None,
        )

    def pushes(self, event: str, payload: dict[str, Any]) -> list[Push]:
        return [parse_push(payload)]
