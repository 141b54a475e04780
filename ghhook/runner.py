"""
Run one deploy step as a child process, without blocking the reactor.

Every step is spawned through ``IReactorProcess.spawnProcess`` in a new
session (so a timeout can kill its whole process group), with stdin closed,
an explicit environment, its output logged line by line and kept as a tail,
and a deadline on the injected clock: SIGTERM to the group, then SIGKILL.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IDelayedCall, IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger(namespace="ghhook.runner")

#: Seconds between SIGTERM and SIGKILL when a step overruns or ghhook stops.
KILL_GRACE = 5.0
#: Seconds to wait for a step's pipes to close once its main process exited;
#: a restart command may leave a daemon behind that holds them open.
PIPE_GRACE = 1.0
TAIL_LINES = 40
TAIL_CHARS = 4000

# Used when util-linux's setsid is not on PATH: start a new session, then exec.
_SETSID_TRAMPOLINE = "import os,sys; os.setsid(); os.execvp(sys.argv[1], sys.argv[1:])"


class ExecutableNotFound(ValueError):
    """A command's program is not on PATH; the message names it."""


def find_executable(name: str, path: str | None = None) -> str:
    """Resolve ``name`` on PATH once, at start-up, to an absolute path."""
    found = shutil.which(name, path=path)
    if found is None:
        raise ExecutableNotFound(f"{name!r} is not an executable on PATH")
    return os.path.abspath(found)


def session_prefix() -> tuple[str, ...]:
    """The argv prefix that starts a step in its own session and process group."""
    setsid = shutil.which("setsid")
    if setsid is not None:
        return (setsid,)
    return (sys.executable, "-c", _SETSID_TRAMPOLINE)


@attrs.frozen
class StepResult:
    """How one step ended; kept in the journal and shown on /status."""

    name: str
    argv: tuple[str, ...]
    exit_code: int | None
    signal: int | None
    timed_out: bool
    started: float
    duration: float
    output: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def describe(self) -> str:
        """One sentence for the journal and the log."""
        if self.timed_out:
            return f"{self.name} timed out after {self.duration:.1f} s"
        if self.signal is not None:
            return f"{self.name} was killed by signal {self.signal}"
        if self.exit_code is None:
            return f"{self.name} could not be started"
        return f"{self.name} exited with {self.exit_code}"


class _Tail:
    """The last lines of a step's combined output, bounded in lines and size."""

    def __init__(self) -> None:
        self._lines: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)

    def add(self, line: str) -> None:
        self._lines.append(line)

    def text(self) -> str:
        return "\n".join(self._lines)[-TAIL_CHARS:]


class StepProtocol(ProcessProtocol):
    """Log a child's output line by line and report how it ended."""

    def __init__(
        self,
        name: str,
        clock: IReactorTime,
        fields: Mapping[str, Any],
    ) -> None:
        self.name = name
        self.ended: Deferred[tuple[int | None, int | None]] = Deferred()
        self.tail = _Tail()
        self._clock = clock
        self._fields = dict(fields)
        self._partial = {1: b"", 2: b""}
        self._pipe_timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.closeStdin()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        buffered = self._partial.get(childFD, b"") + data
        *lines, rest = buffered.split(b"\n")
        if len(rest) > 65536:  # a runaway line without newline: cut it
            lines.append(rest)
            rest = b""
        self._partial[childFD] = rest
        for line in lines:
            self._line(childFD, line)

    def _line(self, fd: int, raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        self.tail.add(line)
        log.info(
            "{step}: {line}",
            step=self.name,
            line=line,
            stream="stderr" if fd == 2 else "stdout",
            **self._fields,
        )

    def processExited(self, reason: Failure) -> None:
        # The main process is gone; give its pipes a moment, then stop
        # waiting for descendants that keep them open.
        self._pipe_timer = self._clock.callLater(PIPE_GRACE, self._close_pipes)

    def _close_pipes(self) -> None:
        self._pipe_timer = None
        if self.transport is not None:
            for fd in (1, 2):
                self.transport.closeChildFD(fd)

    def processEnded(self, reason: Failure) -> None:
        if self._pipe_timer is not None and self._pipe_timer.active():
            self._pipe_timer.cancel()
        self._pipe_timer = None
        for fd, rest in self._partial.items():
            if rest:
                self._line(fd, rest)
        self._partial = {1: b"", 2: b""}
        value = reason.value
        if isinstance(value, ProcessDone):
            self.ended.callback((0, None))
        elif isinstance(value, ProcessTerminated):
            self.ended.callback((value.exitCode, value.signal))
        else:
            self.ended.callback((None, None))


class ProcessRunner:
    """
    Spawn steps, one ``run`` per step, each bounded by a timeout.

    :param reactor: provides ``spawnProcess`` and ``callLater``.
    :param kill: sends a signal to a process group; injectable so that unit
        tests with a fake reactor never signal a real process.
    """

    def __init__(
        self,
        reactor: Any,
        kill: Callable[[int, int], None] = os.killpg,
        kill_grace: float = KILL_GRACE,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._process: IReactorProcess = reactor
        self._clock: IReactorTime = reactor
        self._kill = kill
        self._kill_grace = kill_grace
        self._wall_clock = wall_clock
        self._prefix = session_prefix()
        self._running: dict[int, _Running] = {}

    @property
    def busy(self) -> bool:
        return bool(self._running)

    def run(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: str,
        env: Mapping[str, str],
        timeout: float,
        fields: Mapping[str, Any] | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> Deferred[StepResult]:
        """
        Start ``argv`` (never through a shell) and fire with its result;
        ``on_start`` hears the pid, which is also the step's process group.
        """
        argv = tuple(argv)
        fields = dict(fields or {})
        protocol = StepProtocol(name, self._clock, fields)
        started = self._wall_clock()
        begun = self._clock.seconds()
        log.info("step {step} started: {argv}", step=name, argv=list(argv), **fields)
        try:
            transport = self._process.spawnProcess(
                protocol,
                self._prefix[0],
                [*self._prefix, *argv],
                env=dict(env),
                path=cwd,
                usePTY=False,
            )
        except OSError as e:
            log.error(
                "step {step} could not start: {error}",
                step=name,
                error=str(e),
                **fields,
            )
            return succeed(StepResult(name, argv, None, None, False, started, 0.0, str(e)))
        pid = transport.pid
        assert pid is not None, "a process just spawned has a pid"
        running = _Running(pid, protocol)
        if on_start is not None:
            on_start(pid)
        self._running[pid] = running
        running.deadline = self._clock.callLater(timeout, self._expire, running, "timeout")

        def finished(status: tuple[int | None, int | None]) -> None:
            running.cancel_timers()
            self._running.pop(pid, None)
            exit_code, sig = status
            result = StepResult(
                name=name,
                argv=argv,
                exit_code=exit_code,
                signal=sig,
                timed_out=running.timed_out,
                started=started,
                duration=self._clock.seconds() - begun,
                output=protocol.tail.text(),
            )
            log.info(
                "step {step} finished: {outcome}",
                step=name,
                outcome=result.describe(),
                exit_code=exit_code,
                duration=result.duration,
                **fields,
            )
            done.callback(result)
            # Only once the step's own waiter has its result: stop() waits here.
            for waiter in running.waiters:
                waiter.callback(None)

        done: Deferred[StepResult] = Deferred()
        protocol.ended.addCallback(finished)
        return done

    def _expire(self, running: _Running, why: str) -> None:
        running.deadline = None
        running.timed_out = why == "timeout"
        log.warn(
            "step {step} {why}: sending SIGTERM to its process group",
            step=running.protocol.name,
            why="timed out" if running.timed_out else "interrupted",
        )
        self._signal(running, signal.SIGTERM)
        running.kill_timer = self._clock.callLater(
            self._kill_grace, self._signal, running, signal.SIGKILL
        )

    def _signal(self, running: _Running, sig: int) -> None:
        if sig == signal.SIGKILL:
            running.kill_timer = None
            log.warn(
                "step {step} still running: sending SIGKILL",
                step=running.protocol.name,
            )
        try:
            self._kill(running.pid, sig)
        except ProcessLookupError:
            pass

    def interrupt(self, grace: float) -> Deferred[None]:
        """
        Let running steps finish for up to ``grace`` seconds, then kill them;
        fire once none runs. Used when ghhook stops.
        """
        waits = []
        for running in list(self._running.values()):
            running.cancel_timers()
            running.deadline = self._clock.callLater(grace, self._expire, running, "interrupted")
            done: Deferred[None] = Deferred()
            running.waiters.append(done)
            waits.append(done)
        return gatherResults(waits).addCallback(lambda _: None)


@attrs.define
class _Running:
    pid: int
    protocol: StepProtocol
    deadline: IDelayedCall | None = None
    kill_timer: IDelayedCall | None = None
    timed_out: bool = False
    waiters: list[Deferred[None]] = attrs.Factory(list)

    def cancel_timers(self) -> None:
        for timer in (self.deadline, self.kill_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self.deadline = self.kill_timer = None
