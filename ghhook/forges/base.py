"""
What every forge adapter is: recognise, authenticate, read.

An adapter is stateless; :mod:`ghhook.web` asks it, in this order, whether
a delivery is its forge's (:meth:`Adapter.recognises`, from headers only),
whether one of the secrets signed it (:meth:`Adapter.authenticate`, on the
raw bytes, before anything is parsed), and what it says
(:meth:`Adapter.read`, only once it is authentic).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

from ghhook.decision import Ignore, Pong, undeployable
from ghhook.delivery import BadDelivery, Push, str_field
from ghhook.signature import Verdict

#: A request's header by name (any case): the first value, as the bytes sent.
Headers = Callable[[str], bytes | None]

#: Delivery ids start with a letter or digit, so that one can never pass for
#: an option where it is used (GHHOOK_DELIVERY); GUIDs and GitLab's
#: idempotency keys fit.
_DELIVERY_ID = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}")
JSON_TYPES = ("application/json", "")


class BadHeader(ValueError):
    """A header of a signed request cannot be used; the message is one sentence."""


@attrs.frozen
class Read:
    """What an authentic delivery says, in the forge-neutral terms of ghhook."""

    #: ``push``, ``ping``, or the forge's own name of another event.
    event: str
    delivery: str | None
    #: A ping, a delivery no app acts on (and why), or the pushes to
    #: branches that still exist (several for a Bitbucket push of many refs).
    what: Pong | Ignore | tuple[Push, ...]


class Adapter:
    """
    One forge. Subclasses set the class attributes and implement
    :meth:`authenticate` and :meth:`pushes`; the rest is shared.
    """

    #: The ``forge`` setting's value.
    name: str = ""
    #: How a sentence names the forge.
    title: str = ""
    #: The header naming the event; its presence says the delivery is this forge's.
    event_header: str = ""
    #: The forge's event names, raw, for ``push`` and ``ping`` (and tag pushes).
    events: dict[bytes, str] = {}
    #: Headers holding the delivery id, the first present wins.
    delivery_headers: tuple[str, ...] = ()

    def recognises(self, header: Headers) -> bool:
        """Whether the headers are this forge's (nothing is trusted yet)."""
        return header(self.event_header) is not None

    def label(self, header: Headers) -> str:
        """``push``, ``ping`` or ``other``: the delivery's metric label, before it is trusted."""
        return self.events.get(header(self.event_header) or b"", "other")

    def authenticate(
        self, header: Headers, body: bytes, secrets: Sequence[bytes], now: float
    ) -> Verdict:
        """
        Whether one of ``secrets`` signed (or is the token of) ``body``,
        in constant time; a valid verdict names that secret.

        :param now: the wall clock, for signatures that carry a timestamp.
        """
        raise NotImplementedError

    def read(self, header: Headers, body: bytes) -> Read:
        """
        What an authentic delivery says.

        :raises BadHeader: a header it needs is missing or unusable.
        :raises BadDelivery: the body cannot be understood.
        """
        raw_event = header(self.event_header)
        event = text(raw_event, self.event_header)
        if not event:
            raise BadHeader(f"the request carries no {self.event_header} header")
        delivery = self.delivery_id(header)
        content_type = text(header("Content-Type"), "Content-Type")
        kind = self.events.get(raw_event or b"")
        payload = self.payload(body, content_type)
        if kind == "ping":
            return Read("ping", delivery, self.pong(payload))
        if kind != "push":
            only = self.push_event()
            return Read(
                event, delivery, Ignore(f"event {event!r} does not deploy; only {only} does")
            )
        return Read("push", delivery, deployable(self.pushes(event, payload)))

    def delivery_id(self, header: Headers) -> str | None:
        """The delivery id, checked on the raw bytes (so it is ASCII once it passes)."""
        for name in self.delivery_headers:
            value = header(name)
            if value is None:
                continue
            if not _DELIVERY_ID.fullmatch(value):
                raise BadHeader(f"the {name} header is not a delivery id")
            return value.decode("ascii")
        return None

    def payload(self, body: bytes, content_type: str | None) -> dict[str, Any]:
        """The body's JSON object."""
        media_type = (content_type or "").split(";")[0].strip().lower()
        if media_type not in JSON_TYPES:
            raise BadDelivery(
                f"content type {media_type!r} is not supported; choose application/json"
                f" as the content type in {self.title}'s webhook settings"
            )
        return json_object(body)

    def pong(self, payload: dict[str, Any]) -> Pong:
        return Pong(zen=None, hook_id=None)

    def pushes(self, event: str, payload: dict[str, Any]) -> list[Push]:
        """The refs the push moved (raises :class:`BadDelivery` when out of shape)."""
        raise NotImplementedError

    def push_event(self) -> str:
        """The forge's name of a push event, for a sentence."""
        return next(raw.decode() for raw, kind in self.events.items() if kind == "push")


def deployable(pushes: Iterable[Push]) -> Ignore | tuple[Push, ...]:
    """
    The pushes to branches that still exist, or, when there is none, why
    the delivery deploys nothing (the first ref's reason).
    """
    live: list[Push] = []
    reasons: list[str] = []
    for push in pushes:
        why = undeployable(push)
        if why is None:
            live.append(push)
        else:
            reasons.append(why.reason)
    if live:
        return tuple(live)
    if not reasons:
        return Ignore("the push changes no ref")
    if len(reasons) == 1:
        return Ignore(reasons[0])
    return Ignore(f"{reasons[0]} (and {len(reasons) - 1} more refs that do not deploy)")


def commit_message(commits: object, sha: str) -> str | None:
    """The message of the commit ``sha`` in a payload's list of ``commits``, if it is there."""
    if isinstance(commits, list):
        for commit in commits:
            if isinstance(commit, dict) and commit.get("id") == sha:
                return str_field(commit, "message")
    return None


def json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or :class:`BadDelivery`."""
    try:
        payload = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadDelivery("the body is not UTF-8") from None
    except (ValueError, RecursionError):
        raise BadDelivery("the payload is not valid JSON") from None
    if not isinstance(payload, dict):
        raise BadDelivery("the payload is not a JSON object")
    return payload


def text(value: bytes | None, name: str) -> str | None:
    """A header value decoded where it is used; not UTF-8 is the sender's fault."""
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise BadHeader(f"the {name} header is not UTF-8") from None


def same_token(given: bytes, secrets: Iterable[bytes]) -> bytes | None:
    """
    The secret equal to ``given``, or None. Both sides are hashed first and
    every secret is compared without stopping at a match, so that timing
    tells neither the secrets' lengths nor which one matched.
    """
    digest = hashlib.sha256(given).digest()
    found: bytes | None = None
    for secret in secrets:
        matched = hmac.compare_digest(hashlib.sha256(secret).digest(), digest)
        if matched and found is None:
            found = secret
    return found


__all__ = [
    "Adapter",
    "BadHeader",
    "Headers",
    "Read",
    "commit_message",
    "deployable",
    "json_object",
    "same_token",
    "text",
]
