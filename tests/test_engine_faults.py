"""
The engine under faults: a journal that refuses writes, a listener that
raises, a stop in the middle of a build. Nothing may leave it busy or lose
a push, with the controllable runner and a Clock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ghhook.deployer import DEPLOYED, RETRY_INTERVAL, ROLLED_BACK, Deployer, Submission
from ghhook.journal import Journal, JournalError
from ghhook.runner import StepResult
from tests.fakes import FakeRunner, fill_disk
from tests.test_deployer import A, B, C, Engine


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return Engine(tmp_path)


def logged(events: list[dict[str, Any]], text: str) -> int:
    """How many of ``events`` have ``text`` in their format."""
    return sum(1 for e in events if text in e.get("log_format", ""))


def test_an_outcome_the_journal_refuses_leaves_the_engine_idle_and_is_written_later(
    engine: Engine, events: list[dict[str, Any]]
) -> None:
    disk = fill_disk(engine.journal)
    engine.deployer.start()
    engine.turn()
    engine.runner.pull_to(A)  # the catch-up pull ends: nothing new
    assert engine.result(1)["result"] == "unchanged"
    engine.submit(B, "d-1")
    engine.turn()
    engine.runner.pull_to(B)
    disk.full = True  # the disk fills during the restart
    engine.runner.outstanding.finish(0)
    assert not engine.deployer.busy, "a refused write never leaves the engine busy"
    assert engine.result(2)["result"] == "running"
    engine.clock.advance(RETRY_INTERVAL * 3)
    assert logged(events, "cannot record it yet") == 1, "the failure is logged once"
    disk.full = False
    engine.clock.advance(RETRY_INTERVAL)
    deploy = engine.result(2)
    assert (deploy["result"], deploy["sha"]) == ("deployed", B)
    assert engine.deployer.journal.get(DEPLOYED) == B, "what runs is recorded with the outcome"
    assert engine.clock.getDelayedCalls() == [], "no retry left once written"
    sub = engine.submit(C, "d-2")
    engine.turn()
    assert engine.runner.names()[-1] == "pull", "the next push deploys"
    assert sub.deploy == 3


def test_no_deploy_starts_before_the_outcome_before_it_is_recorded(engine: Engine) -> None:
    disk = fill_disk(engine.journal)
    engine.deployer.start()
    engine.turn()
    engine.submit(B, "d-1")  # pending behind the catch-up
    disk.full = True
    engine.runner.pull_to(A)
    engine.turn()
    assert engine.runner.names() == ["pull"], "the pending deploy waits for the journal"
    assert not engine.deployer.busy and engine.deployer.pending is not None
    disk.full = False
    engine.clock.advance(RETRY_INTERVAL)
    assert engine.result(1)["result"] == "unchanged"
    assert engine.runner.names() == ["pull", "pull"]


def test_a_push_the_journal_cannot_record_queues_nothing(engine: Engine) -> None:
    disk = fill_disk(engine.journal)
    engine.deployer.start()
    engine.turn()  # the catch-up pull runs
    disk.full = True
    with pytest.raises(JournalError), engine.journal.transaction():
        engine.deployer.submit(B, "d-1")
    assert engine.deployer.pending is None
    disk.full = False
    engine.submit(B, "d-1")
    disk.full = True
    with pytest.raises(JournalError), engine.journal.transaction():
        engine.deployer.submit(C, "d-2")  # would join the pending deploy
    pending = engine.deployer.pending
    assert pending is not None and (pending.shas, pending.delivery) == ([B], "d-1")
    disk.full = False
    engine.runner.pull_to(A)
    engine.turn()
    engine.runner.pull_to(B)
    assert engine.runner.outstanding.env["GHHOOK_NEW_SHA"] == B


def test_the_step_records_a_full_disk_refuses_do_not_stop_the_deploy(engine: Engine) -> None:
    disk = fill_disk(engine.journal)
    engine.deployer.start()
    engine.turn()
    engine.runner.pull_to(A)
    engine.submit(B, "d-1")
    disk.full = True
    engine.turn()
    engine.runner.pull_to(B)
    assert engine.runner.outstanding is not None, "the restart runs all the same"
    engine.runner.outstanding.finish(0)
    disk.full = False
    engine.clock.advance(RETRY_INTERVAL)
    assert engine.result(2)["result"] == "deployed"


class Raising:
    def __init__(self) -> None:
        self.calls = 0

    def deploy_started(self) -> None:
        self.calls += 1
        raise RuntimeError("a broken listener")

    def step_finished(self, step: StepResult) -> None:
        raise RuntimeError("a broken listener")

    def deploy_finished(self, result: str, duration: float, finished: float) -> None:
        raise RuntimeError("a broken listener")


class Counting:
    def __init__(self) -> None:
        self.finished: list[str] = []

    def deploy_started(self) -> None:
        pass

    def step_finished(self, step: StepResult) -> None:
        pass

    def deploy_finished(self, result: str, duration: float, finished: float) -> None:
        self.finished.append(result)


@pytest.mark.expect_logged_failure
def test_a_listener_that_raises_is_logged_once_and_the_queue_goes_on(
    engine: Engine, reactor_left_clean: list[dict[str, Any]]
) -> None:
    raising, counting = Raising(), Counting()
    engine.deployer.listeners.append(raising)
    engine.deployer.listeners.append(counting)
    engine.deployer.start()
    engine.turn()
    engine.runner.pull_to(A)
    engine.submit(B, "d-1")
    engine.turn()
    engine.runner.pull_to(B)
    engine.runner.outstanding.finish(0)
    engine.submit(C, "d-2")
    engine.turn()
    engine.runner.pull_to(C)
    engine.runner.outstanding.finish(0)
    assert counting.finished == ["unchanged", "deployed", "deployed"]
    assert raising.calls == 3, "the broken listener is still told"
    assert len(reactor_left_clean) == 1, "logged once, with its traceback"


def test_a_stop_during_the_build_interrupts_the_deploy_without_rolling_back(
    tmp_path: Path,
) -> None:
    engine = Engine(tmp_path, builds=(("make",),))
    engine.deployer.start()
    engine.turn()
    engine.runner.pull_to(B)
    assert engine.runner.outstanding.name == "build"
    stopped = engine.deployer.stop()  # SIGTERM: the runner kills the build
    assert stopped.called
    assert engine.runner.names() == ["pull", "build"], "no rollback step"
    deploy = engine.result(1)
    assert deploy["result"] == "interrupted" and deploy["failed_step"] == "build"
    assert engine.deployer.journal.get(ROLLED_BACK) is None, "the commit is not marked"
    assert engine.deployer.journal.get(DEPLOYED) == A

    # The next start releases what the clone holds, like any new commit.
    runner = FakeRunner(head=B)
    again = Deployer(
        engine.settings,
        runner,
        Journal(tmp_path / "j.sqlite3").open(),
        engine.clock,
        wall_clock=engine.clock.seconds,
    )
    again.start()
    engine.turn()
    runner.pull_to(B)
    runner.outstanding.finish(0)  # build
    runner.outstanding.finish(0)  # restart
    assert runner.names() == ["pull", "build", "restart"]
    assert again.journal.get(DEPLOYED) == B
    assert isinstance(again.submit(C, "d-1"), Submission)
