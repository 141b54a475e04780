"""
GitLab: a secret token sent as it is (``X-Gitlab-Token``), or a signing
token (Standard Webhooks: ``webhook-id``, ``webhook-timestamp`` and
``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">``,
keyed with the ``whsec_<base64>`` token's bytes).

A signing token is told from a secret token by its ``whsec_`` prefix, so
one secret file (or one line of it) holds either.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

from ghhook.delivery import BadDelivery, Push, sha_field, str_field
from ghhook.forges.base import Adapter, Headers, commit_message, same_token
from ghhook.signature import Outcome, Verdict

TOKEN_HEADER = "X-Gitlab-Token"
SIGNATURE_HEADER = "webhook-signature"
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNING_PREFIX = b"whsec_"
#: How far a signed delivery's timestamp may be from ghhook's clock, in
#: seconds, before it is refused as a replay (the Standard Webhooks tolerance).
TOLERANCE = 300.0


def signing_key(secret: bytes) -> bytes | None:
    """The HMAC key of a ``whsec_<base64>`` signing token; None for a secret token."""
    if not secret.startswith(SIGNING_PREFIX):
        return None
    try:
        return base64.b64decode(secret[len(SIGNING_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        return None


def sign(webhook_id: str, timestamp: int, body: bytes, secret: bytes) -> str:
    """The ``webhook-signature`` value GitLab sends for ``body`` with signing token ``secret``."""
    key = signing_key(secret)
    if key is None:
        raise ValueError("a GitLab signing token looks like whsec_<base64>")
    signed = f"{webhook_id}.{timestamp}.".encode("ascii") + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


class GitLab(Adapter):
    name = "gitlab"
    title = "GitLab"
    event_header = "X-Gitlab-Event"
    events = {b"Push Hook": "push", b"Tag Push Hook": "push"}
    #: Idempotency-Key stays the same across GitLab's retries of one delivery.
    delivery_headers = ("Idempotency-Key", "X-Gitlab-Webhook-UUID", "X-Gitlab-Event-UUID")

    def authenticate(
        self, header: Headers, body: bytes, secrets: Sequence[bytes], now: float
    ) -> Verdict:
        signature = header(SIGNATURE_HEADER)
        token = header(TOKEN_HEADER)
        # A hook with both tokens sends both headers: the signature decides
        # when some app holds a signing token, else the secret token does.
        if signature is not None and any(signing_key(secret) for secret in secrets):
            signed = _signed(header, signature, body, secrets, now)
            if signed.valid or token is None:
                return signed
            # On the shared path another app may hold the signing token: this
            # delivery's secret token still proves it for the apps holding that.
            found = same_token(token, [s for s in secrets if signing_key(s) is None])
            return Verdict(Outcome.VALID, "GitLab token verified", found) if found else signed
        if token is None and signature is not None:
            return Verdict(
                Outcome.MISMATCH,
                "the delivery is signed, but no app here holds a GitLab signing token"
                " (whsec_...): put it in the app's secret file",
            )
        if token is None:
            return Verdict(
                Outcome.MISSING,
                f"the request carries no {TOKEN_HEADER} header and no {SIGNATURE_HEADER}:"
                " set a secret token or a signing token in GitLab's webhook settings",
            )
        # A signing token only signs: sent as a token it is refused.
        found = same_token(token, [secret for secret in secrets if signing_key(secret) is None])
        if found is None:
            return Verdict(
                Outcome.MISMATCH, f"the {TOKEN_HEADER} header matches no GitLab secret token"
            )
        return Verdict(Outcome.VALID, "GitLab token verified", found)

    def pushes(self, event: str, payload: dict[str, Any]) -> list[Push]:
        ref = payload.get("ref")
        if not isinstance(ref, str) or not ref.startswith("refs/"):
            raise BadDelivery("the push payload has no valid ref")
        after = sha_field(payload.get("after"), "after")
        project = payload.get("project")
        repository = str_field(project, "path_with_namespace")
        message = commit_message(payload.get("commits"), after)
        return [
            Push(
                ref=ref,
                before=sha_field(payload.get("before"), "before"),
                after=after,
                repository=repository,
                deleted=after == "0" * 40,
                pusher=str_field(payload, "user_username", "user_name"),
                message=message,
                forced=None,
            )
        ]


def _signed(
    header: Headers, signature: bytes, body: bytes, secrets: Sequence[bytes], now: float
) -> Verdict:
    """Check a Standard Webhooks signature against every signing token of ``secrets``."""
    webhook_id, timestamp = header(ID_HEADER), header(TIMESTAMP_HEADER)
    if webhook_id is None or timestamp is None:
        return Verdict(
            Outcome.MALFORMED,
            f"a signed GitLab delivery carries {ID_HEADER} and {TIMESTAMP_HEADER} headers",
        )
    if not timestamp.isdigit() or len(timestamp) > 12:
        return Verdict(Outcome.MALFORMED, f"the {TIMESTAMP_HEADER} header is not a Unix time")
    if abs(now - int(timestamp)) > TOLERANCE:
        return Verdict(
            Outcome.MISMATCH,
            f"the {TIMESTAMP_HEADER} is more than {int(TOLERANCE // 60)} minutes from"
            " ghhook's clock (a replay, or a clock that is off)",
        )
    given: list[bytes] = []
    for part in signature.split():
        version, sep, value = part.partition(b",")
        if sep and version == b"v1":
            try:
                given.append(base64.b64decode(value, validate=True))
            except (binascii.Error, ValueError):
                pass
    if not given:
        return Verdict(
            Outcome.MALFORMED, f"the {SIGNATURE_HEADER} header holds no v1,<base64> signature"
        )
    signed = webhook_id + b"." + timestamp + b"." + body
    found: bytes | None = None
    for secret in secrets:
        key = signing_key(secret)
        if key is None:
            continue
        expected = hmac.new(key, signed, hashlib.sha256).digest()
        # Every signature against every key, without stopping at a match.
        for digest in given:
            if hmac.compare_digest(expected, digest) and found is None:
                found = secret
    if found is None:
        return Verdict(
            Outcome.MISMATCH,
            f"the {SIGNATURE_HEADER} does not match the body for any signing token",
        )
    return Verdict(Outcome.VALID, "GitLab signature verified", found)
