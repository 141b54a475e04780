"""
Parse a GitHub delivery's body into plain values.

GitHub sends either ``application/json`` or a form with the JSON in a
``payload`` field; both become a dict here, and a push becomes a frozen
:class:`Push` whose fields have been checked before anything uses them.
"""

from __future__ import annotations

import binascii
import json
import re
from typing import Any

import attrs

SHA_RE = re.compile(r"[0-9a-fA-F]{40}")
ZERO_SHA = "0" * 40
BRANCH_PREFIX = "refs/heads/"
TAG_PREFIX = "refs/tags/"

FORM_TYPE = "application/x-www-form-urlencoded"
#: Every byte but the four that give a form its shape; deleting them leaves
#: the shape alone, e.g. ``a=1&payload=%7B%7D`` becomes ``=&=%%``.
_NOT_FORM_SYNTAX = bytes(b for b in range(256) if b not in b"&=%+")
#: A ``%`` that does not start a two-hex-digit escape.
_STRAY_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")


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
    #: ``before`` (a rewind, or a rewritten history); None when the forge
    #: does not say (Gitea, GitLab, Bitbucket Data Center), so it may have.
    forced: bool | None = False

    @property
    def may_rewind(self) -> bool:
        """Whether the push may have rewound the branch: the engine then always pulls."""
        return self.forced is not False

    @property
    def branch(self) -> str | None:
        """The branch name, or None when the ref is not a branch."""
        if self.ref.startswith(BRANCH_PREFIX):
            return self.ref[len(BRANCH_PREFIX) :]
        return None


def parse_body(body: bytes, content_type: str | None) -> dict[str, Any]:
    """Decode a JSON or form-encoded delivery into its payload object."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type == FORM_TYPE:
        text = _form_payload(body)
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


def _form_payload(body: bytes) -> str:
    """
    The text of a form body's ``payload`` field.

    Only whole-buffer byte operations that run in C (``translate``, ``find``,
    ``replace``, ``a2b_qp``), so the time is linear in bytes however many
    fields there are, and no list of fields is built: a 25 MB body of
    8 million empty fields once held the reactor for 6 s in ``parse_qs``.

    As strict as GitHub's own encoding, and unambiguous, since another
    parser must not read a different payload from the same signed bytes:
    every field is ``name=value``; names are compared as sent (a name with
    ``%`` or ``+`` is refused, so no decoded name can be ``payload``); a
    second ``payload`` field is refused, not resolved (parsers disagree on
    which one wins); a ``%`` must start a two-hex-digit escape; the body and
    the decoded payload must be UTF-8.
    """
    if not body:
        raise BadDelivery("the form body has no payload field")
    # In the shape, each field starts with "=" exactly when it has a value and
    # a name free of "%" and "+"; an empty field or a trailing "&" fails too.
    shape = body.translate(None, _NOT_FORM_SYNTAX)
    if not shape.startswith(b"=") or shape.count(b"&") != shape.count(b"&="):
        raise BadDelivery("the form body cannot be decoded")
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadDelivery("the form body cannot be decoded") from None
    if body.startswith(b"payload="):
        start = len(b"payload=")
    else:
        at = body.find(b"&payload=")
        if at < 0:
            raise BadDelivery("the form body has no payload field")
        start = at + len(b"&payload=")
    end = body.find(b"&", start)
    if end < 0:
        end = len(body)
    elif body.find(b"&payload=", end) >= 0:
        raise BadDelivery("the form body has more than one payload field")
    value = body[start:end]
    if _STRAY_PERCENT.search(value):
        raise BadDelivery("the form body cannot be decoded")
    # Percent-decoding in C: with every "=" escaped as "=3D" and every "%"
    # known to start a valid escape, "%XX" -> "=XX" is quoted-printable, and
    # a2b_qp gives exactly what urllib's unquote_to_bytes would (tested).
    raw = binascii.a2b_qp(value.replace(b"=", b"=3D").replace(b"%", b"=").replace(b"+", b" "))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadDelivery("the form body cannot be decoded") from None


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
        pusher=str_field(pusher, "name"),
        message=str_field(head_commit, "message"),
        forced=payload.get("forced") is True,
    )


def _sha(payload: dict[str, Any], name: str) -> str:
    return sha_field(payload.get(name), name)


def sha_field(value: object, name: str) -> str:
    """``value`` as a lower-case 40-hex-digit sha; ``name`` names it in the sentence."""
    if not isinstance(value, str) or not SHA_RE.fullmatch(value):
        raise BadDelivery(f"the push payload's {name!r} is not a 40-hex-digit sha")
    return value.lower()


def str_field(obj: object, *names: str) -> str | None:
    """The first of ``names`` that ``obj`` (a dict, or anything) holds as a string."""
    if isinstance(obj, dict):
        for name in names:
            value = obj.get(name)
            if isinstance(value, str):
                return value
    return None
