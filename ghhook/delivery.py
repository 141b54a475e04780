"""
Parse a GitHub delivery's body into plain values.

GitHub sends either ``application/json`` or a form with the JSON in a
``payload`` field; both become a dict here, and a push becomes a frozen
:class:`Push` whose fields have been checked before anything uses them.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs

import attrs

SHA_RE = re.compile(r"[0-9a-fA-F]{40}")
ZERO_SHA = "0" * 40
BRANCH_PREFIX = "refs/heads/"
TAG_PREFIX = "refs/tags/"


class BadDelivery(ValueError):
    """The body cannot be understood; the message is one sentence for the sender."""


@attrs.frozen
class Push:
    """The fields of a push event that ghhook acts on."""

    ref: str
    before: str
    after: str
    repository: str | None
    deleted: bool
    pusher: str | None = None
    message: str | None = None
    #: The push moved the branch to a commit that is not a descendant of
    #: ``before`` (a rewind, or a rewritten history).
    forced: bool = False

    @property
    def branch(self) -> str | None:
        """The branch name, or None when the ref is not a branch."""
        if self.ref.startswith(BRANCH_PREFIX):
            return self.ref[len(BRANCH_PREFIX) :]
        return None


def parse_body(body: bytes, content_type: str | None) -> dict[str, Any]:
    """Decode a JSON or form-encoded delivery into its payload object."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type == "application/x-www-form-urlencoded":
        try:
            fields = parse_qs(
                body.decode("utf-8"), strict_parsing=True, keep_blank_values=True, errors="strict"
            )
        except (UnicodeDecodeError, ValueError):
            raise BadDelivery("the form body cannot be decoded") from None
        values = fields.get("payload")
        if not values:
            raise BadDelivery("the form body has no payload field")
        text = values[0]
    elif media_type in ("application/json", ""):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadDelivery("the body is not UTF-8") from None
    else:
        raise BadDelivery(
            f"content type {media_type!r} is not supported; use application/json"
            " or application/x-www-form-urlencoded"
        )
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):
        raise BadDelivery("the payload is not valid JSON") from None
    if not isinstance(payload, dict):
        raise BadDelivery("the payload is not a JSON object")
    return payload


def parse_push(payload: dict[str, Any]) -> Push:
    """Validate the push fields ghhook uses; reject anything out of shape."""
    ref = payload.get("ref")
    if not isinstance(ref, str) or not ref.startswith("refs/"):
        raise BadDelivery("the push payload has no valid ref")
    before = _sha(payload, "before")
    after = _sha(payload, "after")
    repository = payload.get("repository")
    full_name = None
    if isinstance(repository, dict) and isinstance(repository.get("full_name"), str):
        full_name = repository["full_name"]
    deleted = payload.get("deleted") is True or after == ZERO_SHA
    pusher = payload.get("pusher")
    head_commit = payload.get("head_commit")
    return Push(
        ref=ref,
        before=before,
        after=after,
        repository=full_name,
        deleted=deleted,
        pusher=_str_field(pusher, "name"),
        message=_str_field(head_commit, "message"),
        forced=payload.get("forced") is True,
    )


def _sha(payload: dict[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not SHA_RE.fullmatch(value):
        raise BadDelivery(f"the push payload's {name!r} is not a 40-hex-digit sha")
    return value.lower()


def _str_field(obj: object, name: str) -> str | None:
    if isinstance(obj, dict) and isinstance(obj.get(name), str):
        value: str = obj[name]
        return value
    return None
