#!/usr/bin/env python3
"""
What reading a step's output costs: a producer that writes ``--mb`` MB of
100-character lines, run bare with its output to /dev/null, against the same
command run as a step through ``ProcessRunner`` on the real reactor, its log
written to a temporary file by ``textFileLogObserver`` as twistd would.

The target: the step takes less than twice the bare run (a build writing
500 MB once ran 85 times slower for being watched). Each side runs
``--runs`` times; the best of each is compared. On a busy machine the
ratio wanders; ghhook's own CPU seconds per step, printed too, do not. It prints one line per run,
then the figures; the exit status is 0 when it ran, whatever the ratio.

    .venv/bin/python bench/step_output.py
    .venv/bin/python bench/step_output.py --mb 100 --runs 1
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from twisted.internet import task  # noqa: E402
from twisted.internet.defer import ensureDeferred  # noqa: E402
from twisted.logger import globalLogBeginner, textFileLogObserver  # noqa: E402

from ghhook.runner import ProcessRunner, StepResult  # noqa: E402

TARGET = 2.0


def producer(mb: int) -> list[str]:
    """``head -c NM /dev/zero | tr '\\0' x | fold -w 100``: lines of 100 x's."""
    pipeline = f"head -c {mb}M /dev/zero | tr '\\0' x | fold -w 100"
    return [shutil.which("sh") or "/bin/sh", "-c", pipeline]


def bare(argv: list[str]) -> float:
    """Seconds the producer takes with its output going to /dev/null."""
    begun = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - begun


def cpu() -> float:
    """CPU seconds of this process: what reading and logging cost ghhook."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def as_step(reactor: Any, argv: list[str], cwd: str) -> tuple[float, float, StepResult]:
    """Seconds and ghhook's CPU seconds of the producer as a step."""
    runner = ProcessRunner(reactor)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    begun, used = time.perf_counter(), cpu()
    result = await runner.run("build", argv, cwd=cwd, env=env, timeout=3600)
    return time.perf_counter() - begun, cpu() - used, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=500, help="MB of output (default 500)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each side (default 3)")
    options = parser.parse_args()
    argv = producer(options.mb)
    print("producer:", shlex.join(argv), flush=True)
    tmp = tempfile.mkdtemp(prefix="ghhook-step-output-")
    log_path = Path(tmp, "twistd.log")
    log_file = log_path.open("w", encoding="utf-8")
    globalLogBeginner.beginLoggingTo([textFileLogObserver(log_file)], redirectStandardIO=False)

    async def measure(reactor: Any) -> None:
        bare_times: list[float] = []
        step_times: list[float] = []
        try:
            for run in range(options.runs):
                bare_times.append(bare(argv))
                seconds, used, result = await as_step(reactor, argv, tmp)
                step_times.append(seconds)
                if not result.ok:
                    raise SystemExit(f"the step failed: {result.describe()}")
                print(
                    f"run {run + 1}: bare {bare_times[-1]:.2f} s, step {seconds:.2f} s"
                    f" (ghhook's CPU {used:.2f} s)",
                    flush=True,
                )
            log_file.flush()
            best_bare, best_step = min(bare_times), min(step_times)
            ratio = best_step / best_bare
            verdict = "meets" if ratio < TARGET else "MISSES"
            print(f"bare: {best_bare:.2f} s (best of {options.runs})")
            print(f"step: {best_step:.2f} s (best of {options.runs})")
            print(f"log: {log_path.stat().st_size / 1e6:.2f} MB for {options.runs} steps")
            print(f"ratio: {ratio:.2f}x: {verdict} the target of < {TARGET:g}x")
        finally:
            log_file.close()
            shutil.rmtree(tmp, ignore_errors=True)

    task.react(lambda reactor: ensureDeferred(measure(reactor)))


if __name__ == "__main__":
    main()
