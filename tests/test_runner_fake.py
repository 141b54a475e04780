"""The process runner against a fake process reactor on a Clock: no real process, no real time."""

from __future__ import annotations

import random
import signal
from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet.defer import Deferred

from ghhook.runner import (
    LOG_LINES,
    MAX_LINE,
    PIPE_GRACE,
    TAIL_BYTES,
    TAIL_CHARS,
    TAIL_LINES,
    ProcessRunner,
    StepProtocol,
    StepResult,
    session_prefix,
)
from tests.fakeprocess import FakeProcess, FakeProcessReactor

TIMEOUT = 60.0
GRACE = 5.0


@pytest.fixture
def reactor() -> FakeProcessReactor:
    return FakeProcessReactor()


@pytest.fixture
def runner(reactor: FakeProcessReactor) -> ProcessRunner:
    return ProcessRunner(reactor, kill=reactor.kill, kill_grace=GRACE, wall_clock=reactor.seconds)


class Step:
    """One step started through the runner, with what it told ``on_start``."""

    def __init__(self, runner: ProcessRunner, reactor: FakeProcessReactor) -> None:
        self.started: list[int] = []
        self.results: list[StepResult] = []
        self.deferred: Deferred[StepResult] = runner.run(
            "build",
            ["make", "all"],
            cwd="/srv/app",
            env={"PATH": "/usr/bin"},
            timeout=TIMEOUT,
            on_start=self.started.append,
        )
        self.deferred.addCallback(self._keep)
        self.process = reactor.processes[-1]

    def _keep(self, result: StepResult) -> StepResult:
        self.results.append(result)
        return result

    @property
    def result(self) -> StepResult:
        assert self.results, "the step has not finished"
        return self.results[0]


def start(runner: ProcessRunner, reactor: FakeProcessReactor) -> Step:
    return Step(runner, reactor)


def lines(events: list[dict[str, Any]]) -> list[str]:
    return [e["line"] for e in events if e.get("step") == "build" and "line" in e]


def summaries(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if "unlogged_lines" in e]


def test_spawns_in_a_new_session_with_stdin_closed(
    runner: ProcessRunner, reactor: FakeProcessReactor
) -> None:
    step = start(runner, reactor)
    p = step.process
    assert p.args == [*session_prefix(), "make", "all"]
    assert p.env == {"PATH": "/usr/bin"} and p.path == "/srv/app" and p.stdin_closed
    assert step.started == [p.spawned_pid] and runner.busy
    p.write(b"compiling\n")
    reactor.advance(2.5)
    p.end(0)
    assert step.result.ok and step.result.output == "compiling"
    assert step.result.duration == 2.5
    assert not runner.busy and reactor.getDelayedCalls() == []
    reactor.advance(TIMEOUT)
    assert reactor.signals == []


def test_timeout_sends_term_to_the_group_then_kill_after_the_grace(
    runner: ProcessRunner, reactor: FakeProcessReactor
) -> None:
    step = start(runner, reactor)
    group = step.process.spawned_pid
    reactor.advance(TIMEOUT - 0.1)
    assert reactor.signals == []
    reactor.advance(0.1)
    assert reactor.sent() == [(group, "SIGTERM")]
    reactor.advance(GRACE - 0.1)
    assert reactor.sent() == [(group, "SIGTERM")]
    reactor.advance(0.1)
    assert reactor.sent() == [(group, "SIGTERM"), (group, "SIGKILL")]
    step.process.end(None, signal.SIGKILL)
    assert step.result.timed_out and step.result.signal == signal.SIGKILL
    assert step.result.describe() == f"build timed out after {TIMEOUT + GRACE:.1f} s"
    assert reactor.getDelayedCalls() == []


def test_a_step_ending_on_term_cancels_the_kill(
    runner: ProcessRunner, reactor: FakeProcessReactor
) -> None:
    step = start(runner, reactor)
    reactor.advance(TIMEOUT)
    step.process.end(None, signal.SIGTERM)
    assert step.result.timed_out and step.result.signal == signal.SIGTERM
    assert reactor.getDelayedCalls() == []
    reactor.advance(GRACE)
    assert [s.sig for s in reactor.signals] == [signal.SIGTERM]


def test_no_kill_for_a_leader_reaped_while_its_pipes_are_open(
    reactor: FakeProcessReactor,
) -> None:
    # Its pid may belong to another process by now.
    runner = ProcessRunner(reactor, kill=reactor.kill, kill_grace=PIPE_GRACE / 2)
    step = start(runner, reactor)
    reactor.advance(TIMEOUT)
    step.process.exit(None, signal.SIGTERM)
    reactor.advance(PIPE_GRACE)
    assert [s.sig for s in reactor.signals] == [signal.SIGTERM]
    assert step.process.open_outputs == set(), "the runner closed the pipes"
    assert step.result.timed_out and step.result.signal == signal.SIGTERM
    assert reactor.getDelayedCalls() == []


@pytest.mark.parametrize("code", [0, 3])
@pytest.mark.parametrize("when", ["before_connect", "after_connect"])
def test_a_step_reaped_inside_spawn_process_is_a_normal_step(
    runner: ProcessRunner, reactor: FakeProcessReactor, when: str, code: int
) -> None:
    def reaped(p: FakeProcess) -> None:
        p.exit(code)

    setattr(reactor, when, reaped)
    step = start(runner, reactor)
    assert step.started == ([] if when == "before_connect" else [step.process.spawned_pid])
    assert runner.busy, "its output is still to come"
    step.process.write(b"Already up to date.\n")
    step.process.close_output()
    assert step.result.exit_code == code and not step.result.timed_out
    assert step.result.output == "Already up to date."
    assert not runner.busy and reactor.getDelayedCalls() == []
    assert reactor.signals == []


def test_a_step_ended_inside_spawn_process_is_a_normal_step(
    runner: ProcessRunner, reactor: FakeProcessReactor
) -> None:
    reactor.before_connect = lambda p: p.exit(3)
    reactor.after_connect = lambda p: p.close_output()
    step = start(runner, reactor)
    assert step.result.exit_code == 3 and step.started == []
    assert not runner.busy and reactor.getDelayedCalls() == []


def test_its_pipes_are_closed_a_grace_after_it_exited(
    runner: ProcessRunner, reactor: FakeProcessReactor
) -> None:
    # A restart command leaves a daemon behind that holds the pipes.
    step = start(runner, reactor)
    step.process.exit(0)
    reactor.advance(PIPE_GRACE - 0.1)
    assert not step.results
    reactor.advance(0.1)
    assert step.result.ok and reactor.getDelayedCalls() == []


def test_a_timeout_after_the_exit_signals_nothing_and_keeps_the_status(
    runner: ProcessRunner, reactor: FakeProcessReactor
) -> None:
    step = start(runner, reactor)
    reactor.advance(TIMEOUT - PIPE_GRACE / 2)
    step.process.exit(0)
    reactor.advance(PIPE_GRACE)
    assert reactor.signals == []
    assert step.result.ok and not step.result.timed_out
    assert reactor.getDelayedCalls() == []


def test_a_timeout_without_a_pid_does_not_crash(
    runner: ProcessRunner, reactor: FakeProcessReactor
) -> None:
    reactor.before_connect = FakeProcess.forget_pid
    step = start(runner, reactor)
    assert step.started == []
    reactor.advance(TIMEOUT + GRACE)
    assert reactor.signals == [] and runner.busy
    step.process.end(0)
    assert step.result.ok and not step.result.timed_out
    assert reactor.getDelayedCalls() == []


def test_interrupt_without_a_pid_waits_for_the_end(
    runner: ProcessRunner, reactor: FakeProcessReactor
) -> None:
    reactor.after_connect = lambda p: p.exit(0)
    step = start(runner, reactor)
    stopped: list[None] = []
    runner.interrupt(0.1).addCallback(stopped.append)
    reactor.advance(0.1)
    assert reactor.signals == [] and not stopped
    reactor.advance(PIPE_GRACE)
    assert stopped == [None] and step.result.ok
    assert reactor.getDelayedCalls() == []


def test_interrupt_gives_grace_then_terms(
    runner: ProcessRunner, reactor: FakeProcessReactor
) -> None:
    step = start(runner, reactor)
    stopped: list[None] = []
    runner.interrupt(2.0).addCallback(stopped.append)
    reactor.advance(2.0)
    assert reactor.sent() == [(step.process.spawned_pid, "SIGTERM")]
    step.process.end(None, signal.SIGTERM)
    assert stopped == [None] and not step.result.timed_out
    assert reactor.getDelayedCalls() == []


def test_a_step_that_cannot_start(runner: ProcessRunner, reactor: FakeProcessReactor) -> None:
    reactor.spawn_error = OSError("no such directory")
    results: list[StepResult] = []
    runner.run("build", ["make"], cwd="/gone", env={}, timeout=1).addCallback(results.append)
    assert results[0].exit_code is None and results[0].output == "no such directory"
    assert not runner.busy and reactor.getDelayedCalls() == []


# Output: the first LOG_LINES lines are logged, the rest counted, the tail kept.


def feed(process: FakeProcess, data: bytes, sizes: Callable[[], int], fd: int = 1) -> None:
    """Write ``data`` in chunks of the sizes given, as pipes cut it."""
    at = 0
    while at < len(data):
        size = sizes()
        process.write(data[at : at + size], fd)
        at += size


def expected_tail(all_lines: list[str]) -> str:
    return "\n".join(all_lines[-TAIL_LINES:])[-TAIL_CHARS:]


@pytest.mark.parametrize("seed", range(6))
def test_logs_the_first_lines_counts_the_rest_and_keeps_the_tail(
    runner: ProcessRunner,
    reactor: FakeProcessReactor,
    events: list[dict[str, Any]],
    seed: int,
) -> None:
    rng = random.Random(seed)
    # Short and long lines, CRLF and invalid UTF-8 among them.
    all_raw = [
        (
            b"x" * rng.choice([0, 1, 80, 3000, 20000])
            + b" %d" % n
            + rng.choice([b"", b"\r", b"\xff"])
        )
        for n in range(3000)
    ]
    data = b"".join(raw + b"\n" for raw in all_raw)
    step = start(runner, reactor)
    feed(step.process, data, lambda: rng.choice([1, 7, 8192, 65536, 300000]))
    step.process.end(0)
    decoded = [raw.decode("utf-8", "replace").rstrip("\r") for raw in all_raw]
    assert lines(events) == decoded[:LOG_LINES]
    (summary,) = summaries(events)
    assert summary["unlogged_lines"] == len(all_raw) - LOG_LINES
    logged_bytes = sum(len(raw) + 1 for raw in all_raw[:LOG_LINES])
    assert summary["unlogged_bytes"] == len(data) - logged_bytes
    assert step.result.output == expected_tail(decoded)


def test_short_output_has_no_summary(
    runner: ProcessRunner, reactor: FakeProcessReactor, events: list[dict[str, Any]]
) -> None:
    step = start(runner, reactor)
    step.process.write(b"".join(b"%d\n" % n for n in range(LOG_LINES)))
    step.process.end(0)
    assert len(lines(events)) == LOG_LINES and summaries(events) == []


def test_the_summary_says_what_was_not_logged(
    runner: ProcessRunner, reactor: FakeProcessReactor, events: list[dict[str, Any]]
) -> None:
    step = start(runner, reactor)
    line = b"y" * 99 + b"\n"
    step.process.write(line * (LOG_LINES + 10_000))
    step.process.write(b"no newline at the end", fd=2)
    step.process.end(0)
    (summary,) = summaries(events)
    assert summary["unlogged_lines"] == 10_001
    assert summary["unlogged_bytes"] == 10_000 * 100 + 21
    assert summary["unlogged_size"] == "1.0 MB" and summary["kept"] == TAIL_LINES
    assert step.result.output.splitlines()[-1] == "no newline at the end"


def test_stdout_and_stderr_lines_stay_whole_when_interleaved(
    runner: ProcessRunner, reactor: FakeProcessReactor, events: list[dict[str, Any]]
) -> None:
    step = start(runner, reactor)
    for n in range(LOG_LINES + 100):
        step.process.write(b"out %d" % n, fd=1)
        step.process.write(b"err %d\n" % n, fd=2)
        step.process.write(b"\n", fd=1)
    step.process.end(0)
    assert len(lines(events)) == LOG_LINES
    tail = step.result.output.splitlines()
    assert len(tail) == TAIL_LINES
    assert all(line.split()[0] in ("out", "err") and len(line.split()) == 2 for line in tail)
    assert tail[-1] == f"out {LOG_LINES + 99}"


@pytest.mark.parametrize("after", [0, LOG_LINES])
def test_a_runaway_line_stays_bounded(
    runner: ProcessRunner, reactor: FakeProcessReactor, events: list[dict[str, Any]], after: int
) -> None:
    step = start(runner, reactor)
    step.process.write(b"ok\n" * after)
    protocol = step.process.protocol
    assert isinstance(protocol, StepProtocol)
    for _ in range(2000):  # 16 MB without a newline
        step.process.write(b"z" * 8192)
        assert protocol.held() <= 2 * TAIL_BYTES + 2 * (MAX_LINE + 8192)
    step.process.end(0)
    assert len(lines(events)) == LOG_LINES
    assert all(len(line) <= MAX_LINE + 8192 for line in lines(events)[after:])
    assert len(step.result.output) == TAIL_CHARS
    assert set(step.result.output) <= {"z", "\n"}
