"""
Which apps a verified push reaches.

A pure function over frozen values, so that every routing rule is a row of
a table test. An app takes a push when it holds the secret that verified
the delivery (so a sender that knows one app's secret reaches that app
only) and its repository and branch match (:func:`ghhook.decision.match`).
One push may reach several apps: a repository's ``main`` deployed twice, or
its ``main`` here and its ``staging`` there.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

from ghhook.decision import match
from ghhook.delivery import Push

if TYPE_CHECKING:  # the settings module pulls in Twisted; routing does not need it
    from ghhook.config import AppSettings


@attrs.frozen
class Routed:
    """
    The apps that take a push, by name in the order of the config, or,
    when none does, ``reason``: one sentence for the sender.
    """

    apps: tuple[str, ...]
    reason: str | None = None


def route(push: Push, apps: Sequence[AppSettings], secret: bytes) -> Routed:
    """
    Route ``push``, verified with ``secret``, to ``apps`` (every app on the
    shared path, the one app on its own URL).

    When none takes it and exactly one app holds ``secret``, the reason is
    that app's own (today's sentence, e.g. the branch it deploys): the sender
    could ask that app's URL anyway. With several, one sentence names the
    push's repository and branch, and tells nothing of any app's settings.
    """
    holders = [app for app in apps if _holds(app, secret)]
    taking: list[str] = []
    refusals: list[str] = []
    for app in holders:
        refused = match(push, app)
        if refused is None:
            taking.append(app.name)
        else:
            refusals.append(refused.reason)
    if taking:
        return Routed(tuple(taking))
    if len(refusals) == 1:
        return Routed((), refusals[0])
    return Routed((), _nobody(push))


def _holds(app: AppSettings, secret: bytes) -> bool:
    # Every one of the app's secrets is compared, each in constant time.
    held = False
    for own in app.secrets:
        held |= hmac.compare_digest(own, secret)
    return held


def _nobody(push: Push) -> str:
    if push.repository is None:
        return f"no app deploys branch {push.branch!r} (the push names no repository)"
    return f"no app deploys branch {push.branch!r} of {push.repository!r}"


__all__ = ["Routed", "route"]
