"""
Run one deploy step as a child process, without blocking the reactor.

Every step is spawned through ``IReactorProcess.spawnProcess`` in a new
session (so a timeout can kill its whole process group), with stdin closed,
an explicit environment, its first lines logged one by one, the rest counted,
the last lines kept as a tail, and a deadline on the injected clock: SIGTERM
to the group, then SIGKILL. Logged lines show control characters escaped
(:func:`ghhook.escape.printable`); the tail keeps them, for the journal.
The logged lines, as the log gets them, also go to an ``on_line`` callable
(a deploy's live output, :mod:`ghhook.live`), then one line that says how
many were not.

A fast child can be reaped inside ``spawnProcess``: the transport's ``pid``
is then already ``None``. That is a step like any other; the runner reads the
pid from the transport when it needs it, as Twisted's ``procmon`` does, and a
process without a live pid is never signalled.
"""

from __future__ import annotations

import collections
import fcntl
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import attrs
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import (
    IDelayedCall,
    IPushProducer,
    IReactorProcess,
    IReactorTime,
)
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from ghhook.escape import printable

log = Logger(namespace="ghhook.runner")

#: Seconds between SIGTERM and SIGKILL when a step overruns or ghhook stops.
KILL_GRACE = 5.0
#: Seconds to wait for a step's pipes to close once its main process exited;
#: a restart command may leave a daemon behind that holds them open.
PIPE_GRACE = 1.0
TAIL_LINES = 40
TAIL_CHARS = 4000
#: Lines of each step's output that go to the log (and to ``on_line``);
#: later ones are only counted (a build writing 500 MB once added 810 MB to
#: the log).
LOG_LINES = 200
#: A line longer than this without a newline is cut and treated as a line.
MAX_LINE = 65536
#: Bytes of output kept for the tail once lines are only counted: more than
#: TAIL_CHARS characters in any encoding, so the tail never comes up short.
TAIL_BYTES = 64 * 1024
#: Once lines are only counted, reading pauses this long whenever the pipe
#: is drained, so that output gathers in it: a wakeup of the reactor for each
#: write of the child (about 90,000 for 500 MB) costs more than the reading.
BATCH_PAUSE = 0.001
#: The pipe's size while batching (F_SETPIPE_SZ; the default maximum Linux
#: grants any user): 1 MiB per millisecond keeps a fast producer unblocked.
BATCH_PIPE = 1024 * 1024
#: What one read of Twisted's process reader returns at most: a shorter
#: read means the pipe was drained.
_READ_SIZE = 8192
#: Once lines are only counted, a full read is followed by reads of this
#: size, at most _DRAIN_READS of them per wakeup: Twisted's 8 KiB reads
#: would cost a reactor iteration each, 64,000 for 500 MB.
DRAIN_READ = 1024 * 1024
_DRAIN_READS = 4

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
    #: ghhook refused to go on, without running anything (the output says why).
    refused: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.refused

    def describe(self) -> str:
        """One sentence for the journal and the log."""
        if self.refused:
            return f"{self.name} refused"
        if self.timed_out:
            return f"{self.name} timed out after {self.duration:.1f} s"
        if self.signal is not None:
            return f"{self.name} was killed by signal {self.signal}"
        if self.exit_code is None:
            return f"{self.name} could not be started"
        return f"{self.name} exited with {self.exit_code}"


class _Tail:
    """
    The last lines of a step's combined output, bounded in lines and size.

    Logged lines arrive decoded. Once a step's lines are only counted, its
    complete lines arrive as raw chunks and only the last ``TAIL_BYTES`` are
    kept: a copy per chunk instead of a split and a decode per line.
    """

    def __init__(self) -> None:
        self._lines: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._raw = bytearray()
        # Set once _raw lost its start: the decoded lines no longer adjoin it.
        self._cut = False

    def add(self, line: str) -> None:
        self._lines.append(line)

    def add_raw(self, *chunks: bytes | memoryview) -> None:
        """Keep complete lines, each ending with a newline, that come after every decoded one."""
        for chunk in chunks:
            self._raw += chunk
        if len(self._raw) > 2 * TAIL_BYTES:  # trimmed rarely: each byte moves about once
            del self._raw[:-TAIL_BYTES]
            self._cut = True

    def held(self) -> int:
        """Bytes kept raw; the decoded lines are bounded by ``TAIL_LINES``."""
        return len(self._raw)

    def text(self) -> str:
        lines = [] if self._cut else list(self._lines)
        if self._raw:
            # _raw ends with a newline: the last part is empty, and the first
            # of TAIL_LINES + 2 parts is everything before the kept lines.
            raw = bytes(self._raw).rsplit(b"\n", TAIL_LINES + 1)[:-1][-TAIL_LINES:]
            lines += [_decode(line) for line in raw]
        return "\n".join(lines[-TAIL_LINES:])[-TAIL_CHARS:]


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").rstrip("\r")


def _size(count: int) -> str:
    """A byte count as people read it: 812 bytes, 4.1 kB, 512.0 MB."""
    if count < 1000:
        return f"{count} bytes"
    if count < 1000**2:
        return f"{count / 1000:.1f} kB"
    return f"{count / 1000**2:.1f} MB"


class StepProtocol(ProcessProtocol):
    """
    Log a child's first lines, count the rest, keep the tail, report how it
    ended. The reading side stays cheap past ``LOG_LINES``: a build that
    writes without end must not run slower for being watched.
    """

    def __init__(
        self,
        name: str,
        clock: IReactorTime,
        fields: Mapping[str, Any],
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.ended: Deferred[tuple[int | None, int | None]] = Deferred()
        self.tail = _Tail()
        #: The pid when the transport connected, which is also the step's
        #: process group; None when the child was reaped before that.
        self.pid: int | None = None
        #: The main process has exited (it may have been reaped already).
        self.exited = False
        self._clock = clock
        self._fields = dict(fields)
        self._partial: dict[int, bytes] = {}
        self._pipe_timer: IDelayedCall | None = None
        self._logged = 0
        self._logged_bytes = 0
        self._received = 0
        self._unlogged_lines = 0
        #: None until counting starts; then whether the pipes could be enlarged.
        self._batching: bool | None = None
        self._resume: IDelayedCall | None = None
        self._on_line = on_line
        self._on_line_failed = False

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.pid = self.transport.pid
        self.transport.closeStdin()

    def live_pid(self) -> int | None:
        """
        The pid while the main process has not been reaped, else None: once
        reaped, the pid (and the group it named) may belong to another process.
        """
        if self.exited or self.transport is None:
            return None
        pid: int | None = self.transport.pid
        return pid

    def held(self) -> int:
        """Bytes of output held in memory: bounded, whatever the child writes."""
        return sum(map(len, self._partial.values())) + self.tail.held()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self._received += len(data)
        if self._logged < LOG_LINES:
            data = self._log_lines(childFD, data)
        if data:
            self._count_lines(childFD, data)
            if len(data) >= _READ_SIZE:
                self._drain(childFD)
            else:
                self._gather()

    def _drain(self, fd: int) -> None:
        """
        Read what the pipe holds in large reads, in order, right after the
        reader's own read of it. End of file is left for the reader to see.
        """
        fileno = getattr(getattr(self.transport, "pipes", {}).get(fd), "fd", None)
        if not isinstance(fileno, int):
            return
        for _ in range(_DRAIN_READS):
            try:
                more = os.read(fileno, DRAIN_READ)
            except OSError:  # EAGAIN: drained; anything else: the reader sees it
                return
            if not more:
                return
            self._received += len(more)
            self._count_lines(fd, more)
            if len(more) < DRAIN_READ:
                self._gather()
                return

    def _gather(self) -> None:
        """Let output gather in the pipe for BATCH_PAUSE before reading on."""
        if self._resume is not None or self.transport is None:
            return
        if self._batching is None:
            self._batching = self._enlarge_pipes()
        if not self._batching:
            return
        # The process transport is an IProducer (Twisted's Process is).
        cast(IPushProducer, self.transport).pauseProducing()
        self._resume = self._clock.callLater(BATCH_PAUSE, self._read_on)

    def _read_on(self) -> None:
        self._resume = None
        if self.transport is not None:
            cast(IPushProducer, self.transport).resumeProducing()

    def _enlarge_pipes(self) -> bool:
        """Give the output pipes room for BATCH_PAUSE of output; False if not possible."""
        pipes = getattr(self.transport, "pipes", {})
        enlarged = False
        for fd in (1, 2):
            fileno = getattr(pipes.get(fd), "fd", None)
            if not isinstance(fileno, int):
                continue
            try:
                fcntl.fcntl(fileno, fcntl.F_SETPIPE_SZ, BATCH_PIPE)
            except (OSError, AttributeError):
                return False
            enlarged = True
        return enlarged

    def _log_lines(self, fd: int, data: bytes) -> bytes:
        """Log whole lines until ``LOG_LINES``; return what is left to count."""
        buffered = self._partial.get(fd, b"") + data
        start = 0
        while self._logged < LOG_LINES:
            end = buffered.find(b"\n", start)
            if end < 0:
                break
            self._line(fd, buffered[start:end], newline=True)
            start = end + 1
        rest = buffered[start:]
        if self._logged >= LOG_LINES:
            self._partial[fd] = b""
            return rest
        if len(rest) > MAX_LINE:  # a runaway line without newline: cut it
            self._line(fd, rest, newline=False)
            rest = b""
        self._partial[fd] = rest
        return b""

    def _count_lines(self, fd: int, data: bytes) -> None:
        """Count lines and keep their bytes for the tail, without splitting them."""
        partial = self._partial.get(fd, b"")
        end = data.rfind(b"\n")
        if end < 0:
            rest = partial + data
            if len(rest) > MAX_LINE:  # cut, as a logged line would be
                self.tail.add_raw(rest, b"\n")
                self._unlogged_lines += 1
                rest = b""
            self._partial[fd] = rest
            return
        self._unlogged_lines += data.count(b"\n")
        self.tail.add_raw(partial, memoryview(data)[: end + 1])
        self._partial[fd] = data[end + 1 :]

    def _line(self, fd: int, raw: bytes, newline: bool) -> None:
        line = _decode(raw)
        self._logged += 1
        self._logged_bytes += len(raw) + newline
        self.tail.add(line)
        # Escaped for the log only: an ANSI escape in a build's output
        # must not act on the terminal of whoever reads the log.
        shown = printable(line)
        log.info(
            "{step}: {line}",
            step=self.name,
            line=shown,
            stream="stderr" if fd == 2 else "stdout",
            **self._fields,
        )
        self._tell(shown)

    def _tell(self, shown: str) -> None:
        """
        Give ``on_line`` a line; whatever it raises is logged once per step
        and goes no further: a live view must never break a deploy.
        """
        if self._on_line is None:
            return
        try:
            self._on_line(shown)
        except Exception:  # noqa: BLE001 - logged once; the step goes on
            if not self._on_line_failed:
                self._on_line_failed = True
                log.failure(
                    "step {step}: the live output failed; the step goes on",
                    step=self.name,
                    **self._fields,
                )

    def _flush(self) -> None:
        """Treat what is left without a newline as last lines; say what was not logged."""
        for fd, rest in sorted(self._partial.items()):
            if not rest:
                continue
            if self._logged < LOG_LINES:
                self._line(fd, rest, newline=False)
            else:
                self.tail.add_raw(rest, b"\n")
                self._unlogged_lines += 1
        self._partial = {}
        if self._unlogged_lines:
            unlogged_bytes = max(0, self._received - self._logged_bytes)
            log.info(
                "{step}: {unlogged_lines:,} more lines ({unlogged_size}) not logged;"
                " the last {kept} are kept with the deploy",
                step=self.name,
                unlogged_lines=self._unlogged_lines,
                unlogged_bytes=unlogged_bytes,
                unlogged_size=_size(unlogged_bytes),
                kept=TAIL_LINES,
                **self._fields,
            )
            self._tell(
                f"... {self._unlogged_lines:,} more lines ({_size(unlogged_bytes)})"
                f" not shown live; the last {TAIL_LINES} are kept with the deploy"
            )

    def processExited(self, reason: Failure) -> None:
        # The main process is gone; give its pipes a moment, then stop
        # waiting for descendants that keep them open.
        self.exited = True
        self._pipe_timer = self._clock.callLater(PIPE_GRACE, self._close_pipes)

    def _close_pipes(self) -> None:
        self._pipe_timer = None
        if self.transport is not None:
            for fd in (1, 2):
                self.transport.closeChildFD(fd)

    def processEnded(self, reason: Failure) -> None:
        self.exited = True
        if self._resume is not None and self._resume.active():
            self._resume.cancel()
        self._resume = None
        if self._pipe_timer is not None and self._pipe_timer.active():
            self._pipe_timer.cancel()
        self._pipe_timer = None
        self._flush()
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
        self._running: set[_Running] = set()

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
        on_line: Callable[[str], None] | None = None,
    ) -> Deferred[StepResult]:
        """
        Start ``argv`` (never through a shell) and fire with its result;
        ``on_start`` hears the pid, which is also the step's process group,
        unless the child was reaped before its pid could be read.
        ``on_line`` hears each line the log gets (stdout and stderr, escaped
        by :func:`~ghhook.escape.printable`), then, if the output went on past
        ``LOG_LINES``, one line saying how much was not shown; what it raises
        is logged once and does not touch the step.
        """
        argv = tuple(argv)
        fields = dict(fields or {})
        protocol = StepProtocol(name, self._clock, fields, on_line)
        started = self._wall_clock()
        begun = self._clock.seconds()
        log.info("step {step} started: {argv}", step=name, argv=list(argv), **fields)
        try:
            self._process.spawnProcess(
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
        # The child may have exited, even been reaped, already: its end is
        # then on its way to the protocol like any other step's.
        if protocol.pid is not None and on_start is not None:
            on_start(protocol.pid)
        running = _Running(protocol)
        self._running.add(running)
        running.deadline = self._clock.callLater(timeout, self._expire, running, "timeout")
        done: Deferred[StepResult] = Deferred()

        def finished(status: tuple[int | None, int | None]) -> None:
            running.cancel_timers()
            self._running.discard(running)
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

        protocol.ended.addCallback(finished)
        return done

    def _expire(self, running: _Running, why: str) -> None:
        running.deadline = None
        step = running.protocol.name
        if running.protocol.live_pid() is None:
            # Exited: its pipes close within PIPE_GRACE and it ends with its
            # own status. Not started as far as we know: nothing to signal.
            log.info(
                "step {step} {why} with no live process to signal",
                step=step,
                why="timed out" if why == "timeout" else "interrupted",
            )
            return
        running.timed_out = why == "timeout"
        log.warn(
            "step {step} {why}: sending SIGTERM to its process group",
            step=step,
            why="timed out" if running.timed_out else "interrupted",
        )
        self._signal(running, signal.SIGTERM)
        running.kill_timer = self._clock.callLater(
            self._kill_grace, self._signal, running, signal.SIGKILL
        )

    def _signal(self, running: _Running, sig: int) -> None:
        if sig == signal.SIGKILL:
            running.kill_timer = None
        # Read at the moment of the signal: a reaped leader's pid may be reused.
        pid = running.protocol.live_pid()
        if pid is None:
            return
        if sig == signal.SIGKILL:
            log.warn(
                "step {step} still running: sending SIGKILL",
                step=running.protocol.name,
            )
        try:
            self._kill(pid, sig)
        except ProcessLookupError:
            pass

    def interrupt(self, grace: float) -> Deferred[None]:
        """
        Let running steps finish for up to ``grace`` seconds, then kill them;
        fire once none runs. Used when ghhook stops.
        """
        waits = []
        for running in list(self._running):
            running.cancel_timers()
            running.deadline = self._clock.callLater(grace, self._expire, running, "interrupted")
            done: Deferred[None] = Deferred()
            running.waiters.append(done)
            waits.append(done)
        return gatherResults(waits).addCallback(lambda _: None)


@attrs.define(eq=False)
class _Running:
    """A step between its spawn and its end; hashed by identity."""

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
