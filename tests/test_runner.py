"""The process runner against real processes on the real reactor."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.logger import formatEvent, globalLogPublisher

from ghhook.runner import LOG_LINES, TAIL_LINES, ProcessRunner, StepResult, find_executable
from tests.daemon import alive

SH = shutil.which("sh") or "/bin/sh"
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def reactor() -> Any:
    from twisted.internet import reactor as r

    return r


async def run(
    argv: list[str], timeout: float = 30.0, kill_grace: float = 5.0, **kw: Any
) -> StepResult:
    runner = ProcessRunner(reactor(), kill_grace=kill_grace)
    d = runner.run("step", argv, cwd=kw.pop("cwd", "/"), env=kw.pop("env", ENV), timeout=timeout)
    return await d.addTimeout(60, reactor())


async def eventually(predicate: Any, within: float = 10.0) -> None:
    """Poll ``predicate`` on the reactor until true, failing after ``within`` s."""
    from twisted.internet.task import deferLater

    waited = 0.0
    while not predicate():
        assert waited < within, "condition not reached in time"
        await deferLater(reactor(), 0.05, lambda: None)
        waited += 0.05


@pytest.fixture
def events() -> Any:
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    yield seen
    globalLogPublisher.removeObserver(seen.append)


@pytest_twisted.ensureDeferred
async def test_output_is_logged_line_by_line_and_kept_as_tail(events: list) -> None:
    result = await run([SH, "-c", "echo one; echo two >&2; printf three"])
    assert result.ok and result.exit_code == 0
    assert result.output.splitlines() == ["one", "two", "three"]
    lines = [(e["line"], e["stream"]) for e in events if e.get("step") == "step" and "line" in e]
    assert sorted(lines) == sorted([("one", "stdout"), ("two", "stderr"), ("three", "stdout")])


@pytest_twisted.ensureDeferred
async def test_logged_lines_show_control_characters_escaped(events: list) -> None:
    """An ANSI escape in a build's output must not act on whoever reads the log."""
    result = await run([SH, "-c", r"printf 'a\033[2Jb\tc\n\033]0;title\007\n'"])
    logged = [e for e in events if e.get("step") == "step" and "line" in e]
    assert [e["line"] for e in logged] == ["a\\x1b[2Jb\tc", "\\x1b]0;title\\x07"]
    assert [formatEvent(e) for e in logged] == ["step: a\\x1b[2Jb\tc", "step: \\x1b]0;title\\x07"]
    assert result.output == "a\x1b[2Jb\tc\n\x1b]0;title\x07", "the journal keeps them as they were"


@pytest_twisted.ensureDeferred
async def test_exit_code_decides() -> None:
    result = await run([SH, "-c", "echo nope >&2; exit 3"])
    assert not result.ok and result.exit_code == 3
    assert result.describe() == "step exited with 3"


@pytest_twisted.ensureDeferred
async def test_environment_is_exactly_what_is_given() -> None:
    result = await run([find_executable("env")], env={"ONLY": "this"})
    assert result.output.splitlines() == ["ONLY=this"]


@pytest_twisted.ensureDeferred
async def test_runs_in_the_given_directory_with_stdin_closed(tmp_path: Path) -> None:
    result = await run([SH, "-c", "pwd; cat; echo read-done"], cwd=str(tmp_path))
    assert result.output.splitlines() == [str(tmp_path), "read-done"]


@pytest_twisted.ensureDeferred
async def test_timeout_kills_the_whole_process_group() -> None:
    result = await run([SH, "-c", "sleep 60 & echo $!; sleep 60"], timeout=0.5, kill_grace=2.0)
    assert result.timed_out and not result.ok
    assert result.describe().startswith("step timed out")
    child = int(result.output.splitlines()[0])
    await eventually(lambda: not alive(child))


@pytest_twisted.ensureDeferred
async def test_a_step_ignoring_sigterm_gets_sigkill() -> None:
    result = await run(
        [SH, "-c", "trap '' TERM; echo ready; while :; do sleep 1; done"],
        timeout=0.5,
        kill_grace=0.5,
    )
    assert result.timed_out
    assert result.signal == 9 or result.exit_code != 0


@pytest_twisted.ensureDeferred
async def test_a_daemon_left_holding_the_pipes_does_not_hang_the_step() -> None:
    result = await run([SH, "-c", "sleep 30 & echo $!"])
    assert result.ok
    daemon = int(result.output.splitlines()[0])
    assert alive(daemon), "a service started by a restart command keeps running"
    os.kill(daemon, 9)


@pytest_twisted.ensureDeferred
async def test_interrupt_gives_grace_then_kills() -> None:
    runner = ProcessRunner(reactor(), kill_grace=0.5)
    step = runner.run("slow", [SH, "-c", "sleep 60"], cwd="/", env=ENV, timeout=600)
    step.addTimeout(60, reactor())
    assert runner.busy
    await runner.interrupt(0.2).addTimeout(60, reactor())
    result = await step
    assert not result.ok and not result.timed_out and result.signal == 15
    assert not runner.busy


@pytest_twisted.ensureDeferred
async def test_a_long_output_logs_its_first_lines_and_a_count(events: list) -> None:
    result = await run([SH, "-c", "seq 1 5000"])
    assert result.ok
    logged = [e["line"] for e in events if e.get("step") == "step" and "line" in e]
    assert logged == [str(n) for n in range(1, LOG_LINES + 1)]
    (summary,) = [e for e in events if "unlogged_lines" in e]
    assert summary["unlogged_lines"] == 5000 - LOG_LINES
    assert result.output.splitlines() == [str(n) for n in range(5001 - TAIL_LINES, 5001)]


@pytest_twisted.ensureDeferred
async def test_a_flood_of_output_is_counted_whole_in_large_reads(events: list) -> None:
    """Past the logged lines, reads drain the pipe in bulk and pause between: none is lost."""
    lines = 3_000_000  # about 21 MB: many full pipes, drains and pauses
    result = await run([SH, "-c", f"seq 1 {lines}"])
    assert result.ok
    (summary,) = [e for e in events if "unlogged_lines" in e]
    assert summary["unlogged_lines"] == lines - LOG_LINES
    digits = sum(len(str(n)) + 1 for n in range(1, lines + 1))
    assert summary["unlogged_bytes"] == digits - sum(len(str(n)) + 1 for n in range(1, 201))
    assert result.output.splitlines() == [str(n) for n in range(lines + 1 - TAIL_LINES, lines + 1)]
