"""The engine with the real runner, against real git repositories."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet.defer import Deferred

from ghhook.checks import child_environment
from ghhook.config import AppSettings
from ghhook.decision import Ignore
from ghhook.deployer import Deployer, Submission
from ghhook.gitrepo import in_rebase
from ghhook.journal import Journal
from ghhook.runner import ProcessRunner, StepResult
from tests.gitfixture import GitFixture
from tests.gitfixture import git as run_git


def reactor() -> Any:
    from twisted.internet import reactor as r

    return r


class Finished:
    """A listener whose ``next()`` fires when the next deploy finishes."""

    def __init__(self) -> None:
        self._waiting: list[Deferred[str]] = []

    def next(self) -> Deferred[str]:
        d: Deferred[str] = Deferred()
        self._waiting.append(d)
        return d.addTimeout(60, reactor())

    def deploy_started(self) -> None:
        pass

    def step_finished(self, step: StepResult) -> None:
        pass

    def deploy_finished(self, result: str, duration: float, finished: float) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(result)


def engine(fixture: GitFixture, journal: Path | None = None) -> tuple[Deployer, Finished]:
    finished = Finished()
    settings = AppSettings(
        repo=str(fixture.clone),
        git_dir=str(fixture.clone / ".git"),
        remote="origin",
        branch="main",
        git=shutil.which("git") or "git",
        restart=("sh", "-c", "git rev-parse HEAD >> ../restarts"),
        timeout=60,
        env=child_environment(dict(os.environ)),
    )
    deployer = Deployer(
        settings,
        ProcessRunner(reactor()),
        Journal(journal or fixture.root / "journal.sqlite3").open(),
        reactor(),
        listeners=[finished],
    )
    return deployer, finished


def restarts(fixture: GitFixture) -> list[str]:
    path = fixture.root / "restarts"
    return path.read_text().split() if path.exists() else []


async def started(fixture: GitFixture) -> tuple[Deployer, Finished]:
    deployer, finished = engine(fixture)
    done = finished.next()
    deployer.start()
    assert await done == "unchanged"
    return deployer, finished


def last(deployer: Deployer) -> dict[str, Any]:
    return deployer.journal.recent_deploys(1)[0]


@pytest_twisted.ensureDeferred
async def test_push_deploys_and_a_redelivered_sha_restarts_nothing(git: GitFixture) -> None:
    deployer, finished = await started(git)
    sha = git.commit_and_push("v2\n")
    done = finished.next()
    deployer.submit(sha, "one")
    assert await done == "deployed"
    assert git.head() == sha and restarts(git) == [sha]
    assert deployer.submit(sha, "two") == Ignore(f"{sha} is already deployed")
    deployer.journal.journal.close()


@pytest_twisted.ensureDeferred
async def test_conflicting_rebase_is_aborted_and_the_clone_is_left_as_it_was(
    git: GitFixture,
) -> None:
    deployer, finished = await started(git)
    local = git.commit("app.txt", "local edit\n", "a local commit", repo=git.clone)
    sha = git.commit_and_push("remote edit\n")
    done = finished.next()
    deployer.submit(sha, "conflict")
    assert await done == "failed"
    assert not in_rebase(git.clone / ".git")
    assert git.head() == local and git.status() == ""
    assert (git.clone / "app.txt").read_text() == "local edit\n"
    assert restarts(git) == []
    deploy = last(deployer)
    assert deploy["failed_step"] == "pull"
    assert "conflict" in deploy["steps"][0]["output"].lower()
    assert [s["name"] for s in deploy["steps"]] == ["pull", "abort-rebase"]
    deployer.journal.journal.close()


@pytest_twisted.ensureDeferred
async def test_dirty_tree_is_never_discarded(git: GitFixture) -> None:
    deployer, finished = await started(git)
    before = git.head()
    (git.clone / "app.txt").write_text("edited on the server\n")
    sha = git.commit_and_push("v2\n")
    done = finished.next()
    deployer.submit(sha, "dirty")
    assert await done == "failed"
    assert git.head() == before
    assert (git.clone / "app.txt").read_text() == "edited on the server\n"
    assert restarts(git) == []
    # Once the operator cleans up, the next push deploys normally.
    git_checkout = ("checkout", "--", "app.txt")
    run_git(git.clone, *git_checkout)
    done = finished.next()
    deployer.submit(sha, "after cleanup")
    assert await done == "deployed"
    assert restarts(git) == [sha]
    deployer.journal.journal.close()


@pytest_twisted.ensureDeferred
async def test_unreachable_remote_fails_with_gits_words(git: GitFixture) -> None:
    deployer, finished = await started(git)
    run_git(git.clone, "remote", "set-url", "origin", str(git.root / "gone.git"))
    done = finished.next()
    deployer.submit("f" * 40, "unreachable")
    assert await done == "failed"
    assert "gone.git" in last(deployer)["error"]
    deployer.journal.journal.close()


@pytest_twisted.ensureDeferred
async def test_start_catches_up_with_pushes_missed_while_down(git: GitFixture) -> None:
    deployer, _ = await started(git)
    deployer.journal.journal.close()
    git.commit_and_push("v2\n")
    newest = git.commit_and_push("v3\n")
    again, finished = engine(git)
    done = finished.next()
    again.start()
    assert await done == "deployed"
    assert git.head() == newest and restarts(git) == [newest]
    assert last(again)["trigger"] == "catch-up"
    again.journal.journal.close()


@pytest_twisted.ensureDeferred
async def test_start_aborts_a_rebase_left_by_a_crash(git: GitFixture) -> None:
    git.commit("app.txt", "local\n", "local commit", repo=git.clone)
    git.commit_and_push("remote\n")
    try:
        run_git(git.clone, "pull", "--rebase", "origin", "main")
    except RuntimeError:
        pass
    assert in_rebase(git.clone / ".git")
    deployer, finished = engine(git)
    done = finished.next()
    deployer.start()
    await done
    assert not in_rebase(git.clone / ".git")
    assert last(deployer)["steps"][0]["name"] == "abort-rebase"
    deployer.journal.journal.close()


async def deployed_then_rewound(git: GitFixture) -> tuple[Deployer, Finished, str, str]:
    """A bad commit deployed, then the branch pushed back to the good one before it."""
    deployer, finished = await started(git)
    good = git.head()
    bad = git.commit_and_push("v2 (broken)\n")
    done = finished.next()
    deployer.submit(bad, "bad")
    assert await done == "deployed"
    run_git(git.work, "push", "--quiet", "--force", "origin", f"{good}:main")
    return deployer, finished, good, bad


@pytest_twisted.ensureDeferred
async def test_a_forced_push_back_to_an_earlier_commit_is_deployed(git: GitFixture) -> None:
    """The usual emergency rollback: push the branch back to a commit HEAD holds."""
    deployer, finished, good, bad = await deployed_then_rewound(git)
    done = finished.next()
    assert isinstance(deployer.submit(good, "rewind", forced=True), Submission)
    assert await done == "deployed"
    assert git.head() == good, "the clone ends on the pushed commit"
    assert restarts(git) == [bad, good], "and the service is released on it"
    assert last(deployer)["subject"] == "first commit"
    deployer.journal.journal.close()


@pytest_twisted.ensureDeferred
async def test_a_rewind_delivered_without_forced_still_pulls(git: GitFixture) -> None:
    """A sender that omits ``forced``: the sha is not the fetched remote head."""
    deployer, finished, good, bad = await deployed_then_rewound(git)
    done = finished.next()
    deployer.submit(good, "rewind")
    assert await done == "deployed"
    assert git.head() == good and restarts(git) == [bad, good]
    deployer.journal.journal.close()
