"""A deploy's live output: ids, caps, followers, the registry; and the runner's ``on_line``."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from ghhook.live import (
    MAX_LINE_CHARS,
    Line,
    LiveDeploys,
    LiveOutput,
    end_line,
    one_line,
    start_line,
)
from ghhook.runner import LOG_LINES, TAIL_LINES, ProcessRunner, StepResult
from tests.fakeprocess import FakeProcessReactor


class Reader:
    """A follower that keeps what it is given."""

    def __init__(self) -> None:
        self.got: list[Line] = []
        self.missed: list[int] = []
        self.result: str | None = None

    def lines(self, missed: int, lines: Sequence[Line]) -> None:
        if missed:
            self.missed.append(missed)
        self.got.extend(lines)

    def ended(self, result: str) -> None:
        assert self.result is None, "ended twice"
        self.result = result

    @property
    def texts(self) -> list[str]:
        return [line.text for line in self.got]


def filled(count: int, **kw: Any) -> LiveOutput:
    output = LiveOutput(7, **kw)
    for n in range(1, count + 1):
        output.add(f"line {n}")
    return output


def step_result(**kw: Any) -> StepResult:
    values: dict[str, Any] = {
        "name": "build",
        "argv": ("make", "all"),
        "exit_code": 0,
        "signal": None,
        "timed_out": False,
        "started": 0.0,
        "duration": 1.23,
        "output": "",
    }
    values.update(kw)
    return StepResult(**values)


# Lines and their ids


def test_ids_count_from_one_and_steps_have_boundary_lines() -> None:
    output = LiveOutput(7)
    output.step_started(["make", "all", "x y"])
    output.add("compiling")
    output.step_ended(step_result())
    assert output.lines_after(0) == (
        0,
        [
            Line(1, "$ make all 'x y'"),
            Line(2, "compiling"),
            Line(3, "[build exited with 0 in 1.2 s]"),
        ],
    )
    assert output.lines_after(2) == (0, [Line(3, "[build exited with 0 in 1.2 s]")])
    assert output.lines_after(99) == (0, []), "an id from the future resumes at the end"


@pytest.mark.parametrize(
    ("kw", "line"),
    [
        ({"exit_code": 2}, "[build exited with 2 in 1.2 s]"),
        ({"exit_code": None, "signal": 9}, "[build was killed by signal 9 after 1.2 s]"),
        ({"exit_code": None, "timed_out": True}, "[build timed out after 1.2 s]"),
        ({"exit_code": None, "duration": 0.0}, "[build could not be started]"),
    ],
)
def test_the_end_line_says_how_the_step_ended(kw: dict[str, Any], line: str) -> None:
    output = LiveOutput(7)
    output.step_ended(step_result(**kw))
    assert output.lines_after(0)[1][-1].text == line


def test_a_step_that_could_not_start_shows_why() -> None:
    output = LiveOutput(7)
    output.step_ended(step_result(exit_code=None, duration=0.0, output="No such file: make"))
    assert [line.text for line in output.lines_after(0)[1]] == [
        "No such file: make",
        "[build could not be started]",
    ]


def test_lines_are_one_printable_line_each() -> None:
    assert one_line("red \x1b[31m\r\nnext") == "red \\x1b[31m\\x0d\\x0anext"
    assert one_line("tab\tstays") == "tab\tstays"
    cut = one_line("z" * (MAX_LINE_CHARS + 10))
    assert cut.startswith("z" * MAX_LINE_CHARS) and cut.endswith("[10 more characters cut]")
    assert start_line(["sh", "-c", "echo $HOME\n"]) == "$ sh -c 'echo $HOME\\x0a'"
    assert end_line("pull", 0, None, False, 0.04) == "[pull exited with 0 in 0.0 s]"


# Bounds


def test_the_oldest_lines_are_dropped_past_the_line_cap_and_ids_go_on() -> None:
    output = filled(25, max_lines=10)
    assert output.last_id == 25 and output.first_id == 16
    missed, lines = output.lines_after(3)
    assert missed == 12
    assert [line.id for line in lines] == list(range(16, 26))
    assert output.lines_after(20) == (0, [Line(n, f"line {n}") for n in range(21, 26)])


def test_the_oldest_lines_are_dropped_past_the_size_cap() -> None:
    output = LiveOutput(7, max_chars=1000)
    for n in range(100):
        output.add(f"{n:09d}")  # ten characters with the newline
    assert [line.id for line in output.lines_after(0)[1]] == list(range(1, 101))
    output.add("x" * 499)
    missed, lines = output.lines_after(0)
    assert sum(len(line.text) + 1 for line in lines) <= 1000
    assert missed == 50 and lines[-1].id == 101


def test_a_line_larger_than_the_cap_is_still_held_alone() -> None:
    output = LiveOutput(7, max_chars=100)
    output.add("a")
    output.add("b" * 500)
    assert output.lines_after(0) == (1, [Line(2, "b" * 500)])


def test_the_limit_of_lines_after() -> None:
    output = filled(10)
    assert [line.id for line in output.lines_after(2, limit=3)[1]] == [3, 4, 5]


# Followers


def test_a_follower_gets_the_backlog_then_live_lines_then_the_end() -> None:
    output = filled(3)
    reader = Reader()
    subscription = output.subscribe(1, reader)
    assert reader.got == [], "nothing before start"
    subscription.start()
    assert reader.texts == ["line 2", "line 3"]
    output.add("line 4")
    assert reader.texts == ["line 2", "line 3", "line 4"] and reader.result is None
    output.finish("deployed")
    assert reader.result == "deployed"
    assert output.followers == 0
    output.add("late")
    output.finish("failed")
    assert reader.texts[-1] == "line 4" and output.result == "deployed"


def test_every_follower_hears_the_end() -> None:
    output = LiveOutput(7)
    readers = [Reader() for _ in range(3)]
    for reader in readers:
        output.subscribe(0, reader).start()
    output.add("only")
    output.finish("failed")
    assert [(r.texts, r.result) for r in readers] == [(["only"], "failed")] * 3


def test_a_follower_of_a_finished_output_gets_all_of_it_and_the_end() -> None:
    output = filled(2)
    output.finish("unchanged")
    reader = Reader()
    output.subscribe(0, reader).start()
    assert reader.texts == ["line 1", "line 2"] and reader.result == "unchanged"


def test_resuming_after_dropped_lines_says_how_many_were_missed() -> None:
    output = filled(30, max_lines=10)
    reader = Reader()
    output.subscribe(5, reader).start()
    assert reader.missed == [15]
    assert [line.id for line in reader.got] == list(range(21, 31))


def test_a_paused_follower_costs_no_memory_and_catches_up_on_resume() -> None:
    output = filled(5, max_lines=100)
    reader = Reader()
    subscription = output.subscribe(0, reader)
    subscription.start()
    subscription.pause()
    for n in range(6, 1006):
        output.add(f"line {n}")
    output.finish("deployed")
    assert len(reader.got) == 5 and reader.result is None
    # What it has not read is the output's own bounded lines, nothing more.
    assert len(output.lines_after(0)[1]) == 100
    subscription.resume()
    assert reader.missed == [900]
    assert [line.id for line in reader.got] == [*range(1, 6), *range(906, 1006)]
    assert reader.result == "deployed"


def test_a_follower_that_pauses_while_taking_lines_stops_at_once() -> None:
    output = filled(1000)
    got: list[int] = []

    class Pausing(Reader):
        def lines(self, missed: int, lines: Sequence[Line]) -> None:
            super().lines(missed, lines)
            got.append(len(lines))
            subscription.pause()

    reader = Pausing()
    subscription = output.subscribe(0, reader)
    subscription.start()
    assert got == [256], "one batch, then paused"
    subscription.resume()
    assert got == [256, 256]


def test_a_closed_subscription_hears_nothing() -> None:
    output = LiveOutput(7)
    reader = Reader()
    subscription = output.subscribe(0, reader)
    subscription.start()
    subscription.close()
    output.add("unheard")
    output.finish("deployed")
    assert reader.got == [] and reader.result is None and output.followers == 0


@pytest.mark.expect_logged_failure
def test_a_failing_follower_is_dropped_and_the_others_go_on() -> None:
    output = LiveOutput(7)

    class Broken(Reader):
        def lines(self, missed: int, lines: Sequence[Line]) -> None:
            raise RuntimeError("broken follower")

    good = Reader()
    output.subscribe(0, Broken()).start()
    output.subscribe(0, good).start()
    output.add("one")
    output.add("two")
    output.finish("deployed")
    assert good.texts == ["one", "two"] and good.result == "deployed"
    assert output.followers == 0


# The registry


def test_the_registry_keeps_running_deploys_and_the_last_finished() -> None:
    live = LiveDeploys(Clock(), keep_finished=2)
    outputs = {}
    for deploy in (1, 2, 3):
        outputs[deploy] = live.start("api", deploy)
        assert live.start("api", deploy) is outputs[deploy], "started once"
        outputs[deploy].add(f"output of {deploy}")
        live.finish("api", deploy, "deployed")
    assert live.get("api", 1) is None
    assert live.get("api", 2) is outputs[2] and live.get("api", 3) is outputs[3]
    assert outputs[3].result == "deployed"
    running = live.start("web", 3)
    assert live.get("web", 3) is running and live.get("api", 3) is outputs[3]
    live.finish("web", 99, "failed")  # never started: nothing to do
    live.forget_app("api")
    assert live.get("api", 3) is None and live.get("web", 3) is running


def test_a_new_deploy_of_an_app_ends_one_that_was_never_finished() -> None:
    live = LiveDeploys(Clock())
    stale = live.start("api", 1)
    reader = Reader()
    stale.subscribe(0, reader).start()
    live.start("api", 2)
    assert reader.result == "unknown" and live.get("api", 1) is stale


def test_the_registry_stays_bounded() -> None:
    live = LiveDeploys(Clock(), keep_finished=20)
    for deploy in range(1, 501):
        live.start(f"app{deploy % 5}", deploy)
        if deploy % 2:
            live.finish(f"app{deploy % 5}", deploy, "deployed")
    held = [d for d in range(1, 501) if live.get(f"app{d % 5}", d) is not None]
    assert len(held) <= 20 + 5


# The runner's on_line


def run_fake(on_line: Any) -> tuple[FakeProcessReactor, Any, list[StepResult]]:
    reactor = FakeProcessReactor()
    runner = ProcessRunner(reactor, kill=reactor.kill, wall_clock=reactor.seconds)
    results: list[StepResult] = []
    runner.run("build", ["make"], cwd="/", env={}, timeout=60.0, on_line=on_line).addCallback(
        results.append
    )
    return reactor, reactor.processes[-1], results


def test_on_line_hears_the_logged_lines_escaped_from_both_streams(
    events: list[dict[str, Any]],
) -> None:
    heard: list[str] = []
    _, process, results = run_fake(heard.append)
    process.write(b"one\ntw")
    process.write(b"o\n")
    process.write(b"\x1b[31mred\r\n", fd=2)
    process.write(b"no newline")
    process.end(0)
    assert heard == ["one", "two", "\\x1b[31mred", "no newline"]
    logged = [e["line"] for e in events if e.get("step") == "build" and "line" in e]
    assert heard == logged
    assert results[0].output.splitlines()[2] == "\x1b[31mred", "the tail keeps the raw text"


def test_on_line_hears_one_line_for_the_lines_not_shown() -> None:
    heard: list[str] = []
    _, process, results = run_fake(heard.append)
    process.write(b"x\n" * (LOG_LINES + 1234))
    process.end(0)
    assert heard[:LOG_LINES] == ["x"] * LOG_LINES
    assert heard[LOG_LINES:] == [
        f"... 1,234 more lines (2.5 kB) not shown live; the last {TAIL_LINES} are kept"
        " with the deploy"
    ]
    assert results[0].ok


def test_no_summary_when_every_line_was_shown() -> None:
    heard: list[str] = []
    _, process, _ = run_fake(heard.append)
    process.write(b"x\n" * LOG_LINES)
    process.end(0)
    assert heard == ["x"] * LOG_LINES


@pytest.mark.expect_logged_failure
def test_a_failing_on_line_is_logged_once_and_the_step_goes_on(
    reactor_left_clean: list[dict[str, Any]],
) -> None:
    calls: list[str] = []

    def broken(line: str) -> None:
        calls.append(line)
        raise RuntimeError("live view broke")

    _, process, results = run_fake(broken)
    process.write(b"a\nb\nc\n")
    process.end(3)
    assert calls == ["a", "b", "c"]
    assert len(reactor_left_clean) == 1
    assert results[0].exit_code == 3 and results[0].output == "a\nb\nc"


def test_a_live_output_as_on_line() -> None:
    output = LiveOutput(7)
    reader = Reader()
    output.subscribe(0, reader).start()
    output.step_started(["make"])
    _, process, results = run_fake(output.add)
    process.write(b"building\n")
    assert reader.texts == ["$ make", "building"]
    process.end(0)
    output.step_ended(results[0])
    output.finish("deployed")
    assert reader.texts == ["$ make", "building", "[build exited with 0 in 0.0 s]"]
    assert reader.result == "deployed"


@pytest_twisted.ensureDeferred
async def test_on_line_with_a_real_process() -> None:
    from twisted.internet import reactor

    sh = shutil.which("sh") or "/bin/sh"
    heard: list[str] = []
    runner = ProcessRunner(reactor)
    result = await runner.run(
        "step",
        [sh, "-c", "echo one; echo two >&2; printf three"],
        cwd="/",
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        timeout=30.0,
        on_line=heard.append,
    ).addTimeout(60, reactor)
    assert result.ok
    assert sorted(heard) == ["one", "three", "two"]
