"""The deploy engine with a controllable runner and a fake clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from ghhook.config import AppSettings
from ghhook.decision import Ignore
from ghhook.deployer import DEPLOYED, Deployer, Submission
from ghhook.journal import Journal
from tests.fakes import FakeRunner

A, B, C, D = ("a" * 40, "b" * 40, "c" * 40, "d" * 40)


class Engine:
    def __init__(
        self, tmp_path: Path, restart: bool = True, builds: tuple[tuple[str, ...], ...] = ()
    ) -> None:
        git_dir = tmp_path / "clone" / ".git"
        git_dir.mkdir(parents=True)
        (git_dir / "HEAD").write_text("ref: refs/heads/main\n")
        self.git_dir = git_dir
        self.clock = Clock()
        self.runner = FakeRunner(head=A)
        self.journal = Journal(tmp_path / "j.sqlite3").open()
        self.settings = AppSettings(
            repo=str(tmp_path / "clone"),
            git_dir=str(git_dir),
            remote="origin",
            branch="main",
            git="/usr/bin/git",
            restart=("/bin/restart-app",) if restart else None,
            timeout=30.0,
            env={"PATH": "/usr/bin"},
            builds=builds,
        )
        self.deployer = Deployer(
            self.settings, self.runner, self.journal, self.clock, wall_clock=self.clock.seconds
        )

    def turn(self) -> None:
        """Let the reactor take its next turn (queued cycles start on it)."""
        self.clock.advance(0)

    def submit(self, sha: str, delivery: str) -> Submission:
        """Submit a push that the engine has to take."""
        sub = self.deployer.submit(sha, delivery)
        assert isinstance(sub, Submission), sub
        return sub

    def result(self, deploy: int) -> dict:
        return next(d for d in self.journal.recent_deploys() if d["id"] == deploy)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return Engine(tmp_path)


def test_catch_up_with_nothing_new_restarts_nothing(engine: Engine) -> None:
    engine.deployer.start()
    engine.turn()
    assert engine.runner.names() == ["pull"]
    engine.runner.pull_to(A)
    assert engine.runner.names() == ["pull"]
    assert engine.result(1)["result"] == "unchanged"
    assert engine.deployer.journal.get(DEPLOYED) == A


def test_push_pulls_then_restarts_when_head_moved(engine: Engine) -> None:
    engine.deployer.start()
    engine.turn()
    engine.runner.pull_to(A)
    sub = engine.submit(B, "d-1")
    assert not sub.coalesced
    assert engine.runner.names() == ["pull"], "the deploy starts only on the next turn"
    engine.turn()
    engine.runner.pull_to(B)
    assert engine.runner.names() == ["pull", "pull", "restart"]
    restart = engine.runner.calls[-1]
    assert restart.argv == ("/bin/restart-app",)
    restart.finish(0)
    deploy = engine.result(sub.deploy)
    assert deploy["result"] == "deployed"
    assert deploy["sha"] == B and deploy["before"] == A and deploy["delivery"] == "d-1"
    assert [s["name"] for s in deploy["steps"]] == ["pull", "restart"]
    assert engine.deployer.journal.get(DEPLOYED) == B


def test_burst_coalesces_into_one_pending_deploy_of_the_latest_sha(engine: Engine) -> None:
    engine.deployer.start()
    engine.turn()  # catch-up pull now running
    subs = [engine.submit(sha, f"d-{i}") for i, sha in enumerate((B, C, D))]
    assert [s.coalesced for s in subs] == [False, True, True]
    assert len({s.deploy for s in subs}) == 1
    assert engine.deployer.pending is not None and engine.deployer.pending.target == D
    engine.runner.pull_to(A)  # catch-up: nothing new
    engine.turn()
    engine.runner.pull_to(D)
    engine.runner.calls[-1].finish(0)
    assert engine.runner.names() == ["pull", "pull", "restart"]
    deploy = engine.result(subs[0].deploy)
    assert deploy["result"] == "deployed" and deploy["sha"] == D
    assert deploy["delivery"] == "d-2" and deploy["deliveries"] == 3


def test_push_of_the_fetched_remote_head_already_in_head_runs_no_pull(engine: Engine) -> None:
    engine.deployer.start()
    engine.turn()
    engine.runner.pull_to(A)
    # Someone pulled C by hand: the clone has fetched it and HEAD holds it.
    engine.runner.head = engine.runner.tracking = C
    engine.runner.contained.add(C)
    sub = engine.submit(C, "d-1")
    engine.turn()
    assert engine.runner.names() == ["pull", "restart"], "no pull, but C is released"
    engine.runner.outstanding.finish(0)
    assert engine.result(sub.deploy)["result"] == "deployed"


def test_late_push_of_an_older_sha_in_head_still_pulls(engine: Engine) -> None:
    """The sha is not the remote branch's head: only a pull says what is."""
    engine.deployer.start()
    engine.turn()
    engine.runner.pull_to(C)  # the catch-up brought C (and B before it)
    engine.runner.calls[-1].finish(0)  # restart for C
    engine.runner.contained.add(B)
    sub = engine.submit(B, "late")
    engine.turn()
    assert engine.runner.names() == ["pull", "restart", "pull"]
    engine.runner.pull_to(C)
    assert engine.result(sub.deploy)["result"] == "unchanged"
    assert engine.runner.asked == [], "git is asked only about shas the clone has fetched"


def test_forced_push_rewinding_to_a_commit_in_head_pulls_and_releases_it(engine: Engine) -> None:
    engine.deployer.start()
    engine.turn()
    engine.runner.pull_to(B)  # the catch-up brought B on top of A
    engine.runner.calls[-1].finish(0)  # restart for B
    # The branch is pushed back to A: A is in HEAD, and was the remote's head once.
    engine.runner.tracking = A
    sub = engine.deployer.submit(A, "rewind", forced=True)
    assert isinstance(sub, Submission)
    engine.turn()
    assert engine.runner.names() == ["pull", "restart", "pull"]
    engine.runner.pull_to(A)
    assert engine.runner.names() == ["pull", "restart", "pull", "restart"]
    engine.runner.outstanding.finish(0)
    deploy = engine.result(sub.deploy)
    assert (deploy["result"], deploy["sha"]) == ("deployed", A)
    assert engine.deployer.journal.get(DEPLOYED) == A


def test_late_redelivery_of_an_old_sha_does_not_hide_a_newer_push(engine: Engine) -> None:
    engine.deployer.start()
    engine.turn()
    engine.runner.pull_to(B)  # the catch-up brought B
    engine.runner.outstanding.finish(0)  # restart for B
    engine.submit(C, "c")
    engine.turn()  # C's pull runs
    engine.submit(D, "d")  # pending: D
    engine.submit(B, "an old push, delivered late")  # joins D's deploy, and is in HEAD
    engine.runner.pull_to(C)
    engine.runner.outstanding.finish(0)  # restart for C
    engine.turn()
    assert engine.runner.names()[-1] == "pull", "D's push still pulls"
    engine.runner.pull_to(D)
    engine.runner.outstanding.finish(0)
    assert engine.result(2)["sha"] == C and engine.result(3)["sha"] == D
    assert engine.deployer.journal.get(DEPLOYED) == D


def test_catch_up_joined_by_a_push_already_in_head_still_pulls(engine: Engine) -> None:
    engine.deployer.start()
    sub = engine.submit(A, "redelivered while starting")
    assert sub.deploy == 1 and sub.coalesced
    engine.turn()
    assert engine.runner.names() == ["pull"], "the catch-up asks the remote all the same"


def test_many_pushes_in_one_deploy_pull_without_asking_git_about_each(engine: Engine) -> None:
    engine.deployer.start()
    engine.turn()
    engine.runner.pull_to(A)
    engine.runner.contained.update({B, C, D})
    first = engine.submit("e" * 40, "busy")
    engine.turn()
    for i, sha in enumerate((B, C, D, "f" * 40)):
        engine.submit(sha, f"burst-{i}")
    engine.runner.asked.clear()
    engine.runner.pull_to("e" * 40)
    engine.runner.outstanding.finish(0)
    engine.turn()
    assert engine.runner.asked == [] and engine.runner.names()[-1] == "pull"
    assert engine.result(first.deploy)["result"] == "deployed"


def test_push_of_what_runs_already_starts_nothing(engine: Engine) -> None:
    engine.deployer.start()
    engine.turn()
    engine.runner.pull_to(A)
    assert engine.deployer.submit(A, "again") == Ignore(f"{A} is already deployed")
    engine.turn()
    assert engine.runner.names() == ["pull"]


def test_failed_pull_does_not_restart_and_next_push_is_tried(engine: Engine) -> None:
    engine.deployer.start()
    engine.turn()
    engine.runner.pull_to(A)
    first = engine.submit(B, "d-1")
    engine.turn()
    engine.runner.outstanding.finish(1, "fatal: unable to access remote\n")
    deploy = engine.result(first.deploy)
    assert deploy["result"] == "failed" and deploy["failed_step"] == "pull"
    assert "unable to access remote" in deploy["error"]
    assert engine.runner.names() == ["pull", "pull"]
    second = engine.submit(B, "d-2")
    engine.turn()
    engine.runner.pull_to(B)
    engine.runner.calls[-1].finish(0)
    assert engine.result(second.deploy)["result"] == "deployed"


def test_control_bytes_in_git_output_are_logged_escaped_and_journaled_raw(
    engine: Engine, events: list[dict[str, Any]]
) -> None:
    engine.deployer.start()
    engine.turn()
    engine.runner.pull_to(A)
    engine.submit(B, "d-1")
    engine.turn()
    engine.runner.outstanding.finish(1, "fatal: \x1b[2J\x1b]0;owned\x07 refused\n")
    assert "\x1b[2J" in engine.result(2)["error"], "the journal keeps git's words as they were"
    ended = next(
        e
        for e in events
        if "deploy {deploy} {result}" in e.get("log_format", "") and e["deploy"] == 2
    )
    assert ended["result"] == "failed"
    assert ended["app"] == "app", "every engine event carries its app"
    assert "\x1b" not in ended["why"] and "\x07" not in ended["why"]
    assert "\\x1b[2J" in ended["why"] and "\\x07" in ended["why"]


def test_timed_out_pull_is_recorded_as_timeout(engine: Engine) -> None:
    engine.deployer.start()
    engine.turn()
    pull = engine.runner.outstanding
    assert pull.timeout == 30.0
    pull.finish(None, "", timed_out=True)
    assert engine.result(1)["result"] == "timeout"


def test_failed_restart_rolls_back_and_the_bad_sha_is_not_redeployed(engine: Engine) -> None:
    engine.deployer.start()
    engine.turn()
    engine.runner.pull_to(B)
    engine.runner.outstanding.finish(3, "unit failed")
    reset = engine.runner.outstanding
    assert reset.name == "rollback-reset" and reset.argv[-3:] == ("reset", "--hard", A)
    engine.runner.head = A
    reset.finish(0)
    again = engine.runner.outstanding
    assert again.name == "rollback-restart"
    assert again.env["GHHOOK_NEW_SHA"] == A and again.env["GHHOOK_ROLLBACK"] == "1"
    again.finish(0)
    deploy = engine.result(1)
    assert deploy["result"] == "rolled_back" and deploy["failed_step"] == "restart"
    assert "unit failed" in deploy["error"]
    assert engine.deployer.journal.get(DEPLOYED) == A
    assert engine.deployer.submit(B, "redelivered") == Ignore(f"{B} was rolled back")
    sub = engine.submit(C, "the fix")
    engine.turn()
    engine.runner.pull_to(C)
    engine.runner.outstanding.finish(0)
    assert engine.result(sub.deploy)["result"] == "deployed"


def test_failing_rollback_is_a_failed_deploy(engine: Engine) -> None:
    engine.deployer.start()
    engine.turn()
    engine.runner.pull_to(B)
    engine.runner.outstanding.finish(1, "restart broke")
    engine.runner.outstanding.finish(0)  # rollback-reset
    engine.runner.outstanding.finish(1, "still broken")  # rollback-restart
    deploy = engine.result(1)
    assert deploy["result"] == "failed"
    assert "rollback failed too" in deploy["error"] and "still broken" in deploy["error"]


def test_build_runs_before_restart_with_the_deploy_in_its_environment(tmp_path: Path) -> None:
    engine = Engine(tmp_path, builds=(("make", "assets"), ("pip", "install", "-r", "req.txt")))
    engine.deployer.start()
    engine.turn()
    engine.runner.pull_to(A)
    engine.deployer.submit(B, "d-9")
    engine.turn()
    engine.runner.pull_to(B)
    first = engine.runner.outstanding
    assert (first.name, first.argv) == ("build", ("make", "assets"))
    assert first.env["GHHOOK_OLD_SHA"] == A and first.env["GHHOOK_NEW_SHA"] == B
    assert first.env["GHHOOK_BRANCH"] == "main" and first.env["GHHOOK_DELIVERY"] == "d-9"
    assert first.env["GHHOOK_REPO"] == engine.settings.repo and first.env["PATH"] == "/usr/bin"
    first.finish(0)
    engine.runner.outstanding.finish(0)
    restart = engine.runner.outstanding
    assert restart.name == "restart" and restart.env["GHHOOK_NEW_SHA"] == B
    restart.finish(0)
    assert engine.result(2)["result"] == "deployed"


def test_failing_build_rolls_back_and_rebuilds_without_restarting(tmp_path: Path) -> None:
    engine = Engine(tmp_path, builds=(("make",),))
    engine.deployer.start()
    engine.turn()
    engine.runner.pull_to(B)
    engine.runner.outstanding.finish(2, "make: *** [all] Error 1")
    engine.runner.outstanding.finish(0)  # rollback-reset
    rebuild = engine.runner.outstanding
    assert rebuild.name == "rollback-build" and rebuild.env["GHHOOK_NEW_SHA"] == A
    rebuild.finish(0)
    assert engine.runner.names() == ["pull", "build", "rollback-reset", "rollback-build"]
    deploy = engine.result(1)
    assert deploy["result"] == "rolled_back" and deploy["failed_step"] == "build"


def test_stop_interrupts_the_running_step_and_starts_no_more(engine: Engine) -> None:
    engine.deployer.start()
    engine.turn()
    engine.deployer.submit(B, "queued")
    stopped = engine.deployer.stop()
    assert engine.runner.interrupted == [10.0]
    assert stopped.called
    engine.turn()
    assert engine.runner.names() == ["pull"]
    deploy = engine.result(1)
    assert deploy["result"] == "interrupted" and "stopped" in deploy["error"]


def test_next_start_closes_deploys_left_open(tmp_path: Path) -> None:
    engine = Engine(tmp_path)
    engine.deployer.start()
    engine.turn()
    engine.deployer.submit(B, "never ran")
    # The daemon dies here (SIGKILL): a new engine opens the same journal.
    again = Deployer(
        engine.settings,
        FakeRunner(head=A),
        Journal(engine.journal.path).open(),
        engine.clock,
        wall_clock=engine.clock.seconds,
    )
    again.start()
    rows = {d["id"]: d for d in again.journal.recent_deploys()}
    assert rows[1]["result"] == "interrupted" and "during" in rows[1]["error"]
    assert rows[2]["result"] == "interrupted" and "before" in rows[2]["error"]
    assert rows[3]["result"] == "queued" and rows[3]["trigger"] == "catch-up"


def test_clone_on_another_branch_fails_without_pulling(engine: Engine) -> None:
    (engine.git_dir / "HEAD").write_text("ref: refs/heads/feature\n")
    engine.deployer.start()
    engine.turn()
    assert engine.runner.names() == []
    deploy = engine.result(1)
    assert deploy["result"] == "failed" and "feature" in deploy["error"]


def test_no_restart_command_still_records_the_deploy(tmp_path: Path) -> None:
    engine = Engine(tmp_path, restart=False)
    engine.deployer.start()
    engine.turn()
    engine.runner.pull_to(B)
    assert engine.runner.names() == ["pull"]
    assert engine.result(1)["result"] == "deployed"
