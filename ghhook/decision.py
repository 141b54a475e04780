"""
Decide what a verified delivery asks of ghhook.

A plain function from an event name and payload to one of three answers, so
that every routing rule is tested without a reactor or a request.
"""

from __future__ import annotations

from typing import Any

import attrs

from ghhook.delivery import TAG_PREFIX, BadDelivery, Push, parse_push


@attrs.frozen
class Tracked:
    """What this ghhook deploys: a branch, and optionally a GitHub repository."""

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


def decide(event: str, payload: dict[str, Any], tracked: Tracked) -> Decision:
    """Route a delivery; raises :class:`BadDelivery` for an unusable push."""
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
    if tracked.repository is not None and (
        push.repository is None or push.repository.lower() != tracked.repository.lower()
    ):
        return Ignore(f"push to repository {push.repository!r}, not {tracked.repository!r}")
    if push.ref.startswith(TAG_PREFIX):
        return Ignore(f"tag push {push.ref!r} does not deploy")
    if push.branch is None:
        return Ignore(f"ref {push.ref!r} is not a branch")
    if push.deleted:
        return Ignore(f"branch {push.branch!r} was deleted")
    if push.branch != tracked.branch:
        return Ignore(f"push to branch {push.branch!r}; only {tracked.branch!r} deploys")
    return Deploy(push)


__all__ = ["BadDelivery", "Decision", "Deploy", "Ignore", "Pong", "Tracked", "decide"]
