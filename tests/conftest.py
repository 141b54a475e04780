"""
Shared fixtures. Nothing here imports the reactor or klein at module level:
pytest-twisted installs the reactor, and importing klein would install the
default one first.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from tests.gitfixture import GitFixture


@pytest.fixture(autouse=True)
def reactor_left_clean(request: pytest.FixtureRequest) -> Iterator[list[dict[str, Any]]]:
    """
    Fail a test that logs a failure or leaves delayed calls on the reactor,
    unless it is marked ``expect_logged_failure`` (it then asserts on them).
    """
    from twisted.logger import globalLogPublisher

    failures: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_failure") is not None:
            failures.append(event)

    import sys

    reactor = sys.modules.get("twisted.internet.reactor")
    before = set(reactor.getDelayedCalls()) if reactor is not None else set()
    globalLogPublisher.addObserver(observe)
    try:
        yield failures
    finally:
        globalLogPublisher.removeObserver(observe)
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is not None:
        leaked = [c for c in reactor.getDelayedCalls() if c not in before and c.active()]
        # Twisted's HTTP client pool and the like schedule their own; ours
        # must not leak. Keep only calls whose function is in ghhook.
        ours = [c for c in leaked if "ghhook" in getattr(c.func, "__module__", "")]
        assert not ours, f"delayed calls left behind: {ours}"
    if request.node.get_closest_marker("expect_logged_failure"):
        assert failures, "a failure was expected in the log"
        return
    assert not failures, "failures were logged: " + "; ".join(
        str(e["log_failure"].getTraceback()) for e in failures
    )


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    """Every log event the test causes, as the global log publisher has it."""
    from twisted.logger import ILogObserver, globalLogPublisher

    seen: list[dict[str, Any]] = []
    observer = cast(ILogObserver, seen.append)
    globalLogPublisher.addObserver(observer)
    yield seen
    globalLogPublisher.removeObserver(observer)


@pytest.fixture
def git(tmp_path: Path) -> GitFixture:
    """A bare remote, a deployed clone of it, and a work clone to push from."""
    return GitFixture.create(tmp_path)
