"""
Table-driven tests for :mod:`ghhook.decision`: :func:`classify` (what a
delivery is, for any app), :func:`match` (whether one app takes a push) and
:func:`decide`, the two together for one app.
"""

from __future__ import annotations

from typing import Any

import pytest

from ghhook.config import AppSettings
from ghhook.decision import (
    BadDelivery,
    Deploy,
    Ignore,
    Pong,
    Tracked,
    classify,
    decide,
    match,
)
from ghhook.delivery import ZERO_SHA, Push, parse_push

SHA_A = "a" * 40
SHA_B = "b" * 40
MAIN = Tracked(branch="main")
MAIN_IN_APP = Tracked(branch="main", repository="Example/App")


def push(
    ref: str = "refs/heads/main",
    after: str = SHA_A,
    repository: str | None = "example/app",
    **extra: Any,
) -> dict[str, Any]:
    """A push payload with the fields decide() reads."""
    payload: dict[str, Any] = {"ref": ref, "before": SHA_B, "after": after, **extra}
    if repository is not None:
        payload["repository"] = {"full_name": repository}
    return payload


@pytest.mark.parametrize(
    ("payload", "tracked", "reason"),
    [
        pytest.param(
            push(ref="refs/heads/dev"),
            MAIN,
            "push to branch 'dev'; only 'main' deploys",
            id="other-branch",
        ),
        pytest.param(
            push(ref="refs/heads/Main"),
            MAIN,
            "push to branch 'Main'; only 'main' deploys",
            id="case",
        ),
        pytest.param(
            push(ref="refs/heads/main/x"),
            MAIN,
            "push to branch 'main/x'; only 'main' deploys",
            id="branch-under-tracked",
        ),
        pytest.param(
            push(ref="refs/tags/main"), MAIN, "tag push 'refs/tags/main' does not deploy", id="tag"
        ),
        pytest.param(
            push(ref="refs/tags/v1", after=ZERO_SHA),
            MAIN,
            "tag push 'refs/tags/v1' does not deploy",
            id="tag-deletion",
        ),
        pytest.param(
            push(ref="refs/pull/1/head"),
            MAIN,
            "ref 'refs/pull/1/head' is not a branch",
            id="not-a-branch",
        ),
        pytest.param(
            push(after=ZERO_SHA), MAIN, "branch 'main' was deleted", id="tracked-deleted-zero-sha"
        ),
        pytest.param(
            push(deleted=True), MAIN, "branch 'main' was deleted", id="tracked-deleted-flag"
        ),
        pytest.param(
            push(ref="refs/heads/dev", after=ZERO_SHA),
            MAIN,
            "branch 'dev' was deleted",
            id="other-branch-deleted",
        ),
        pytest.param(
            push(repository="example/other"),
            MAIN_IN_APP,
            "push to repository 'example/other', not 'Example/App'",
            id="other-repository",
        ),
        pytest.param(
            push(repository="fork/app"),
            MAIN_IN_APP,
            "push to repository 'fork/app', not 'Example/App'",
            id="fork-same-name",
        ),
        pytest.param(
            push(repository=None),
            MAIN_IN_APP,
            "push to repository None, not 'Example/App'",
            id="repository-unknown-but-required",
        ),
        pytest.param(
            push(ref="refs/tags/v1", repository="example/other"),
            MAIN_IN_APP,
            "tag push 'refs/tags/v1' does not deploy",
            id="app-independent-rules-first",
        ),
        pytest.param(
            push(ref="refs/heads/dev", repository="example/other"),
            MAIN_IN_APP,
            "push to repository 'example/other', not 'Example/App'",
            id="repository-before-branch",
        ),
    ],
)
def test_push_ignored(payload: dict[str, Any], tracked: Tracked, reason: str) -> None:
    """Pushes that must not deploy are ignored with a reason for the sender."""
    assert decide("push", payload, tracked) == Ignore(reason)


@pytest.mark.parametrize(
    ("payload", "tracked"),
    [
        pytest.param(push(), MAIN, id="tracked-branch"),
        pytest.param(push(repository=None), MAIN, id="no-repository-in-payload-not-checked"),
        pytest.param(push(repository="anyone/anything"), MAIN, id="repository-not-checked"),
        pytest.param(push(repository="example/app"), MAIN_IN_APP, id="repository-lowercase"),
        pytest.param(push(repository="EXAMPLE/APP"), MAIN_IN_APP, id="repository-uppercase"),
        pytest.param(push(repository="Example/App"), MAIN_IN_APP, id="repository-exact"),
        pytest.param(
            push(ref="refs/heads/release/2.0"), Tracked("release/2.0"), id="branch-with-slash"
        ),
        pytest.param(push(after=SHA_A.upper()), MAIN, id="uppercase-sha"),
        pytest.param(push(before=ZERO_SHA), MAIN, id="branch-created"),
        pytest.param(push(deleted=False), MAIN, id="explicitly-not-deleted"),
    ],
)
def test_push_deploys(payload: dict[str, Any], tracked: Tracked) -> None:
    """A push to the tracked branch (and repository, when set) deploys its ``after``."""
    decision = decide("push", payload, tracked)
    assert isinstance(decision, Deploy)
    assert decision.push.after == SHA_A
    assert decision.push.branch == tracked.branch


def test_deploy_carries_the_parsed_push() -> None:
    """Deploy holds the validated Push, so the deployer never re-reads the payload."""
    payload = push(pusher={"name": "octocat"}, head_commit={"message": "ship"})
    assert decide("push", payload, MAIN_IN_APP) == Deploy(
        Push(
            ref="refs/heads/main",
            before=SHA_B,
            after=SHA_A,
            repository="example/app",
            deleted=False,
            pusher="octocat",
            message="ship",
        )
    )


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param(
            {"zen": "Speak like a human.", "hook_id": 42},
            Pong("Speak like a human.", 42),
            id="full",
        ),
        pytest.param({}, Pong(None, None), id="empty"),
        pytest.param({"zen": 3, "hook_id": "42"}, Pong(None, None), id="wrong-types"),
        pytest.param({"zen": None, "hook_id": None}, Pong(None, None), id="nulls"),
        pytest.param(push(after="nonsense"), Pong(None, None), id="push-fields-not-read"),
    ],
)
@pytest.mark.parametrize("tracked", [MAIN, MAIN_IN_APP])
def test_ping(payload: dict[str, Any], expected: Pong, tracked: Tracked) -> None:
    """A ping is answered whatever its payload and whatever is tracked."""
    assert decide("ping", payload, tracked) == expected


@pytest.mark.parametrize(
    "event",
    ["issues", "pull_request", "create", "delete", "release", "workflow_run", "Push", "PING", ""],
)
def test_other_events_ignored(event: str) -> None:
    """Only ``push`` deploys; any other event (names are case-sensitive) is ignored."""
    assert decide(event, push(), MAIN) == Ignore(f"event {event!r} does not deploy; only push does")


def test_other_events_do_not_validate_payload() -> None:
    """A non-push event is ignored without parsing its payload as a push."""
    assert isinstance(decide("issues", {"after": "bad"}, MAIN), Ignore)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(push(after="bad"), id="bad-after"),
        pytest.param(push(after=SHA_A[:-1]), id="short-after"),
        pytest.param(push(before="bad"), id="bad-before"),
        pytest.param(push(ref="main"), id="bad-ref"),
        pytest.param(push(repository="example/other", after="bad"), id="bad-even-if-other-repo"),
        pytest.param(push(ref="refs/heads/dev", after="bad"), id="bad-even-if-other-branch"),
        pytest.param({}, id="empty"),
    ],
)
def test_bad_push_raises(payload: dict[str, Any]) -> None:
    """An unusable push is a BadDelivery (a 400), never silently ignored."""
    with pytest.raises(BadDelivery):
        decide("push", payload, MAIN_IN_APP)


def test_tracked_defaults_to_no_repository() -> None:
    """Tracked without a repository accepts pushes from any repository."""
    assert Tracked("main").repository is None


@pytest.mark.parametrize(
    ("event", "payload", "expected"),
    [
        pytest.param("ping", {"zen": "z", "hook_id": 7}, Pong("z", 7), id="ping"),
        pytest.param(
            "issues", push(), Ignore("event 'issues' does not deploy; only push does"), id="event"
        ),
        pytest.param(
            "push",
            push(ref="refs/tags/v1"),
            Ignore("tag push 'refs/tags/v1' does not deploy"),
            id="tag",
        ),
        pytest.param(
            "push",
            push(ref="refs/pull/1/head"),
            Ignore("ref 'refs/pull/1/head' is not a branch"),
            id="not-a-branch",
        ),
        pytest.param(
            "push", push(after=ZERO_SHA), Ignore("branch 'main' was deleted"), id="deleted"
        ),
        pytest.param(
            "push",
            push(ref="refs/heads/dev", repository="anyone/else"),
            parse_push(push(ref="refs/heads/dev", repository="anyone/else")),
            id="any-branch-of-any-repository-is-a-push",
        ),
    ],
)
def test_classify_settles_what_no_app_changes(
    event: str, payload: dict[str, Any], expected: object
) -> None:
    """Pings, other events, tags, deletions and non-branch refs need no app; pushes do."""
    assert classify(event, payload) == expected


def test_classify_refuses_a_bad_push() -> None:
    """A malformed push is a 400 whatever app it might be for."""
    with pytest.raises(BadDelivery):
        classify("push", push(after="bad", repository="someone/else"))


def settings(branch: str, repository: str | None) -> AppSettings:
    return AppSettings(
        repo="/srv/app",
        git_dir="/srv/app/.git",
        remote="origin",
        branch=branch,
        git="/usr/bin/git",
        repository=repository,
    )


@pytest.mark.parametrize(
    ("payload", "branch", "repository", "expected"),
    [
        pytest.param(push(), "main", None, None, id="any-repository"),
        pytest.param(push(repository="EXAMPLE/app"), "main", "example/APP", None, id="case"),
        pytest.param(
            push(ref="refs/heads/dev"),
            "main",
            None,
            Ignore("push to branch 'dev'; only 'main' deploys"),
            id="branch",
        ),
        pytest.param(
            push(repository="fork/app"),
            "main",
            "example/app",
            Ignore("push to repository 'fork/app', not 'example/app'"),
            id="repository",
        ),
        pytest.param(
            push(repository=None),
            "main",
            "example/app",
            Ignore("push to repository None, not 'example/app'"),
            id="unnamed-repository",
        ),
    ],
)
@pytest.mark.parametrize("as_settings", [False, True], ids=["tracked", "app-settings"])
def test_match_one_app(
    payload: dict[str, Any],
    branch: str,
    repository: str | None,
    expected: Ignore | None,
    as_settings: bool,
) -> None:
    """An app's settings match a push as a Tracked does, with today's reasons."""
    target = settings(branch, repository) if as_settings else Tracked(branch, repository)
    assert match(parse_push(payload), target) == expected
