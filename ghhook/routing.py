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

from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

from ghhook.decision import match, skip_ci_refusal
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
    #: For the operator's log, never the answer: apps that deploy the push's
    #: branch but do not hold the secret that signed it (a hook set up with
    #: the wrong secret), in words. Not part of the routing's result.
    hint: str | None = attrs.field(default=None, eq=False)


class RouteTable:
    """
    The apps indexed for routing: built once per configuration (at start
    and at each reload), so that a delivery on the shared path costs a few
    dictionary lookups however many apps there are, not a comparison with
    each of them.
    """

    def __init__(self, apps: Sequence[AppSettings]) -> None:
        self.apps = tuple(apps)
        #: Every distinct secret once, in the order of the config: each costs an HMAC.
        self.secrets = tuple(dict.fromkeys(secret for app in self.apps for secret in app.secrets))
        self._holders: dict[bytes, list[int]] = {}
        #: By secret: (repository in lower case, or None for any, branch) -> app indexes.
        self._targets: dict[bytes, dict[tuple[str | None, str], list[int]]] = {}
        #: The same, whatever secret the apps hold.
        self._any_secret: dict[tuple[str | None, str], list[int]] = {}
        for index, app in enumerate(self.apps):
            repository = app.repository.lower() if app.repository is not None else None
            for secret in dict.fromkeys(app.secrets):
                self._holders.setdefault(secret, []).append(index)
                targets = self._targets.setdefault(secret, {})
                targets.setdefault((repository, app.branch), []).append(index)
            self._any_secret.setdefault((repository, app.branch), []).append(index)

    def route(self, push: Push, secret: bytes) -> Routed:
        """
        Route ``push``, verified with ``secret``. The apps that hold it and
        whose repository and branch match take it, in the order of the config.

        When none takes it and exactly one app holds ``secret``, the reason is
        that app's own (e.g. the branch it deploys): the sender could ask that
        app's URL anyway. With several, one sentence names the push's
        repository and branch, and tells nothing of any app's settings.
        """
        # The secret verified the delivery: looking it up tells its sender nothing.
        holders = self._holders.get(secret, [])
        if len(holders) == 1:
            app = self.apps[holders[0]]
            refused = match(push, app)
            return Routed((app.name,)) if refused is None else Routed((), refused.reason)
        found = self._lookup(self._targets.get(secret, {}), push)
        if found:
            taking = [i for i in found if skip_ci_refusal(push, self.apps[i]) is None]
            if not taking:
                return Routed((), "the head commit says [skip deploy]; skip_ci is on")
            return Routed(tuple(self.apps[index].name for index in taking))
        others = self._lookup(self._any_secret, push)
        hint = None
        if others:
            names = ", ".join(self.apps[index].name for index in others)
            hint = (
                f"{names} {'deploys' if len(others) == 1 else 'deploy'} this branch but"
                " not with the secret that signed the delivery: is the hook's secret right?"
            )
        return Routed((), _nobody(push), hint)

    @staticmethod
    def _lookup(targets: dict[tuple[str | None, str], list[int]], push: Push) -> list[int]:
        """The apps of ``targets`` that deploy ``push``'s branch of its repository."""
        if push.branch is None:
            return []
        found = targets.get((None, push.branch), [])
        if push.repository is not None:
            found = found + targets.get((push.repository.lower(), push.branch), [])
        return sorted(found)


def route(push: Push, apps: Sequence[AppSettings], secret: bytes) -> Routed:
    """Route ``push`` among ``apps`` (see :meth:`RouteTable.route`)."""
    return RouteTable(apps).route(push, secret)


def _nobody(push: Push) -> str:
    if push.repository is None:
        return f"no app deploys branch {push.branch!r} (the push names no repository)"
    return f"no app deploys branch {push.branch!r} of {push.repository!r}"


__all__ = ["RouteTable", "Routed", "route"]
