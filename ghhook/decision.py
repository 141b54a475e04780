"""
Decide what a verified delivery asks of ghhook.

Plain functions, so that every rule is tested without a reactor or a
request, in two parts: :func:`classify` settles what does not depend on any
app (a ping, another event, a tag, a deleted branch, a ref that is not a
branch) and leaves a :class:`~ghhook.delivery.Push` to a branch;
:func:`match` then says whether one app's repository and branch take that
push. :mod:`ghhook.routing` applies :func:`match` to every app.
"""

from __future__ import annotations

from typing import Any, Protocol

import attrs

from ghhook.delivery import TAG_PREFIX, BadDelivery, Push, parse_push


class Target(Protocol):
    """What a push must match: an app's settings or a :class:`Tracked`."""

    @property
    def branch(self) -> str: ...

    @property
    def repository(self) -> str | None: ...


@attrs.frozen
class Tracked:
    """A branch, and optionally a GitHub repository: one app's :class:`Target`."""

    branch: str
    repository: str | None = None


@attrs.frozen
class Pong:
    """A ping: GitHub checking that the hook answers."""

    zen: str | None
    hook_id: int | None


@attrs.frozen
class Ignore:
    """A delivery that deploys nothing; ``reason`` says why, for the sender."""

    reason: str


@attrs.frozen
class Deploy:
    """A push to the tracked branch: deploy ``push.after``."""

    push: Push


Decision = Pong | Ignore | Deploy
#: What :func:`classify` makes of a delivery: a push here is to a branch
#: that still exists, for the apps to :func:`match`.
Classified = Pong | Ignore | Push


def classify(event: str, payload: dict[str, Any]) -> Classified:
    """
    What a delivery is, whichever app it is for; raises
    :class:`BadDelivery` for an unusable push (checked before anything else,
    so a malformed push is a 400 on every path and for every app).
    """
    if event == "ping":
        zen = payload.get("zen")
        hook_id = payload.get("hook_id")
        return Pong(
            zen=zen if isinstance(zen, str) else None,
            hook_id=hook_id if isinstance(hook_id, int) else None,
        )
    if event != "push":
        return Ignore(f"event {event!r} does not deploy; only push does")
    push = parse_push(payload)
    return undeployable(push) or push


def undeployable(push: Push) -> Ignore | None:
    """Why ``push`` deploys nothing for any app (a tag, a deleted branch), or None."""
    if push.ref.startswith(TAG_PREFIX):
        return Ignore(f"tag push {push.ref!r} does not deploy")
    if push.branch is None:
        return Ignore(f"ref {push.ref!r} is not a branch")
    if push.deleted:
        return Ignore(f"branch {push.branch!r} was deleted")
    return None


#: What a head commit's message says to have it not deployed (``skip_ci``).
SKIP_MARKERS = ("[skip deploy]", "[deploy skip]")


def asks_to_skip(push: Push) -> bool:
    """Whether the push's head commit message says [skip deploy] or [deploy skip]."""
    message = (push.message or "").lower()
    return any(marker in message for marker in SKIP_MARKERS)


def skip_ci_refusal(push: Push, target: object) -> Ignore | None:
    """Why an app with ``skip_ci`` does not take a push that asks to be skipped."""
    if getattr(target, "skip_ci", False) and asks_to_skip(push):
        return Ignore("the head commit says [skip deploy]; skip_ci is on")
    return None


def match(push: Push, target: Target) -> Ignore | None:
    """
    Why ``target`` does not take ``push``, or None when it does. The
    repository is compared case-insensitively, as GitHub treats it; a
    target without one takes pushes from any repository. An app with
    ``skip_ci`` does not take a push whose head commit asks to be skipped.
    """
    if target.repository is not None and (
        push.repository is None or push.repository.lower() != target.repository.lower()
    ):
        return Ignore(f"push to repository {push.repository!r}, not {target.repository!r}")
    if push.branch != target.branch:
        return Ignore(f"push to branch {push.branch!r}; only {target.branch!r} deploys")
    return skip_ci_refusal(push, target)


def decide(event: str, payload: dict[str, Any], tracked: Target) -> Decision:
    """:func:`classify`, then :func:`match` for one app: the single-app decision."""
    classified = classify(event, payload)
    if not isinstance(classified, Push):
        return classified
    return match(classified, tracked) or Deploy(classified)


__all__ = [
    "BadDelivery",
    "Classified",
    "Decision",
    "Deploy",
    "Ignore",
    "Pong",
    "Target",
    "Tracked",
    "classify",
    "decide",
    "match",
    "undeployable",
]
