"""
Many trivially fast real steps through the real runner: a child can be
reaped inside ``spawnProcess``, which once failed 1 deploy in 15.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest_twisted
from twisted.internet.defer import DeferredList, ensureDeferred

from ghhook.runner import ProcessRunner, StepResult, find_executable

SH = shutil.which("sh") or "/bin/sh"
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
STEPS = 1000
AT_ONCE = 8


def reactor() -> Any:
    from twisted.internet import reactor as r

    return r


@pytest_twisted.ensureDeferred
async def test_a_thousand_fast_steps_all_end_with_their_status() -> None:
    runner = ProcessRunner(reactor())
    true = find_executable("true")
    steps: Iterator[int] = iter(range(STEPS))
    results: list[tuple[int, StepResult]] = []
    groups: list[int] = []

    async def worker() -> None:
        for n in steps:
            argv = [true] if n % 2 else [SH, "-c", "exit 3"]
            d = runner.run(
                f"fast-{n}",
                argv,
                cwd="/",
                env=ENV,
                timeout=60,
                on_start=groups.append,
            )
            results.append((n, await d.addTimeout(60, reactor())))

    # Every worker runs to its end, so that a failure leaves no step behind.
    ended = await DeferredList([ensureDeferred(worker()) for _ in range(AT_ONCE)])
    failures = [str(failure) for ok, failure in ended if not ok]
    assert failures == []
    assert len(results) == STEPS
    wrong = [(n, r.describe()) for n, r in results if r.exit_code != (0 if n % 2 else 3)]
    assert wrong == []
    assert not any(r.timed_out or r.signal is not None for _, r in results)
    assert all(isinstance(group, int) and group > 0 for group in groups)
    assert not runner.busy
