"""
The engine's rules for operators, with the controllable runner and a
Clock: pause and resume, a deploy now (forced or not), a rollback.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.defer import Deferred

from ghhook.deployer import DEPLOYED, PAUSED, Deployer, Pause
from tests.test_deployer import Engine

A, B, C, D = ("a" * 40, "b" * 40, "c" * 40, "d" * 40)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = Engine(tmp_path)
    engine.deployer.start()
    engine.turn()
    engine.runner.pull_to(A)  # the catch-up: A runs
    return engine


def release(engine: Engine, sha: str) -> None:
    """Let the pending deploy pull ``sha`` and restart."""
    engine.turn()
    engine.runner.pull_to(sha)
    engine.runner.calls[-1].finish(0)


def test_a_pause_during_a_burst_holds_the_pushes_in_one_deploy_and_resume_releases_the_newest(
    engine: Engine,
) -> None:
    running = engine.submit(B, "d-1")
    engine.turn()  # B's pull runs
    engine.deployer.pause("incident", "alice")
    held = [engine.submit(sha, f"d-{i}") for i, sha in enumerate((C, D), 2)]
    assert [s.held for s in held] == [True, True]
    assert held[0].deploy == held[1].deploy and held[1].coalesced
    engine.runner.pull_to(B)
    engine.runner.calls[-1].finish(0)  # B's restart
    assert engine.result(running.deploy)["result"] == "deployed"
    engine.turn()
    assert engine.runner.names() == ["pull", "pull", "restart"], "nothing ran while paused"
    assert engine.deployer.pending is None and engine.deployer.held is not None
    assert engine.result(held[0].deploy)["result"] == "queued"

    assert engine.deployer.resume("alice") == held[0].deploy
    release(engine, D)
    assert engine.runner.names() == ["pull", "pull", "restart", "pull", "restart"]
    deploy = engine.result(held[0].deploy)
    assert deploy["result"] == "deployed" and deploy["sha"] == D and deploy["deliveries"] == 2
    assert engine.deployer.paused is None


def test_a_pending_push_is_held_by_a_pause(engine: Engine) -> None:
    engine.submit(B, "d-1")
    engine.deployer.pause(None, "alice")
    engine.turn()
    assert engine.runner.names() == ["pull"], "the pending push waits for the resume"
    assert engine.deployer.held is not None and engine.deployer.held.target == B


def test_a_pause_is_kept_across_a_restart_and_holds_the_catch_up(
    engine: Engine, tmp_path: Path
) -> None:
    engine.deployer.pause("maintenance", "uid 0")
    assert Pause.decode(engine.deployer.journal.get(PAUSED)) == engine.deployer.paused
    again = Deployer(
        engine.settings,
        engine.runner,
        engine.journal,
        engine.clock,
        wall_clock=engine.clock.seconds,
    )
    again.start()
    engine.clock.advance(0)
    assert again.paused is not None and again.paused.reason == "maintenance"
    assert again.held is not None and again.held.trigger == "catch-up"
    assert engine.runner.names() == ["pull"], "only the first engine's catch-up ran"
    again.resume("uid 0")
    engine.clock.advance(0)
    assert engine.runner.names() == ["pull", "pull"]
    assert again.journal.get(PAUSED) is None


def test_a_manual_deploy_runs_while_paused_and_records_who_asked(engine: Engine) -> None:
    engine.deployer.pause("incident", "alice")
    submission = engine.deployer.deploy_now(False, "bob")
    release(engine, B)
    deploy = engine.result(submission.deploy)
    assert deploy["trigger"] == "manual" and deploy["requested_by"] == "bob"
    assert deploy["result"] == "deployed" and deploy["sha"] == B
    assert engine.deployer.paused is not None, "a manual deploy does not resume the app"


def test_a_forced_deploy_releases_an_unchanged_head(engine: Engine) -> None:
    plain = engine.deployer.deploy_now(False, "bob")
    engine.turn()
    engine.runner.pull_to(A)
    assert engine.result(plain.deploy)["result"] == "unchanged"
    forced = engine.deployer.deploy_now(True, "bob")
    engine.turn()
    engine.runner.pull_to(A)
    assert engine.runner.names()[-1] == "restart", "force: build, restart, check all the same"
    engine.runner.calls[-1].finish(0)
    assert engine.result(forced.deploy)["result"] == "deployed"


def test_a_manual_deploy_joins_the_pending_push_and_makes_it_manual(engine: Engine) -> None:
    running = engine.submit(B, "d-1")
    engine.turn()
    pushed = engine.submit(C, "d-2")
    manual = engine.deployer.deploy_now(True, "bob")
    assert manual.deploy == pushed.deploy and manual.coalesced
    assert engine.result(pushed.deploy)["trigger"] == "manual"
    assert engine.result(running.deploy)["trigger"] == "push"


def run_check(engine: Engine, sha: str, code: int) -> str | None:
    """Ask whether ``sha`` may be rolled back to; git's merge-base answers ``code``."""
    found: list[str | None] = []
    asked: Deferred[str | None] = Deferred.fromCoroutine(engine.deployer.rollback_refusal(sha))
    asked.addCallback(found.append)
    if not found:
        check = engine.runner.calls[-1]
        assert check.name == "check-rollback"
        assert check.argv[-3:] == ("--is-ancestor", sha, "refs/remotes/origin/main")
        check.finish(code)
    assert found, "the check answered"
    return found[0]


def test_a_rollback_target_is_a_deployed_or_a_reachable_commit(engine: Engine) -> None:
    submit = engine.submit(B, "d-1")
    release(engine, B)
    assert engine.result(submit.deploy)["result"] == "deployed"
    assert engine.deployer.previous_release() == A
    assert run_check(engine, A, 1) is None, "A was deployed: git is not asked"
    assert run_check(engine, C, 0) is None, "C is reachable from origin/main"
    refusal = run_check(engine, D, 1)
    assert refusal is not None and "neither a commit app deployed" in refusal


def test_a_rollback_releases_the_target_then_pauses_the_app(engine: Engine) -> None:
    engine.submit(B, "d-1")
    release(engine, B)
    rollback = engine.deployer.rollback(A, "alice")
    assert engine.deployer.paused is not None and "rolled back to aaaaaaa" in str(
        engine.deployer.paused.reason
    )
    held = engine.submit(C, "d-2")
    assert held.held, "a push after a rollback waits for the resume"
    engine.turn()
    reset = engine.runner.calls[-1]
    assert reset.name == "reset" and reset.argv[-2:] == ("--hard", A)
    engine.runner.head = A
    reset.finish(0)
    engine.runner.calls[-1].finish(0)  # the restart
    deploy = engine.result(rollback.deploy)
    assert deploy["trigger"] == "rollback" and deploy["requested_by"] == "alice"
    assert deploy["result"] == "deployed" and deploy["sha"] == A
    assert engine.deployer.journal.get(DEPLOYED) == A
    engine.turn()
    assert engine.runner.names()[-1] == "restart", "the held push did not run"


def test_a_rollback_that_fails_its_restart_puts_back_what_ran(engine: Engine) -> None:
    engine.submit(B, "d-1")
    release(engine, B)
    rollback = engine.deployer.rollback(A, "alice")
    engine.turn()
    engine.runner.head = A
    engine.runner.calls[-1].finish(0)  # reset to A
    engine.runner.calls[-1].finish(1, "the service would not start")  # restart fails
    back = engine.runner.calls[-1]
    assert back.name == "rollback-reset" and back.argv[-1] == B
    engine.runner.head = B
    back.finish(0)
    engine.runner.calls[-1].finish(0)  # rollback-restart
    deploy = engine.result(rollback.deploy)
    assert deploy["result"] == "rolled_back" and deploy["failed_step"] == "restart"
    assert engine.deployer.journal.get(DEPLOYED) == B
