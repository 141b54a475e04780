"""
A fake process reactor on a ``task.Clock``, for the runner's unit tests.

Its transports behave like Twisted's ``Process`` where the runner can tell:
a reaped child's ``pid`` becomes ``None`` and its protocol hears
``processExited`` at once, but ``processEnded`` only once the output pipes are
closed too. The test drives each child and chooses when it is reaped,
including inside ``spawnProcess``, before or after the protocol connects.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IProcessProtocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure

#: The fd numbers a step's output arrives on.
OUTPUTS = (1, 2)


class FakeProcess:
    """One fake child and its transport; the test drives it."""

    def __init__(
        self,
        protocol: IProcessProtocol,
        executable: str,
        args: Sequence[str],
        env: Mapping[str, str] | None,
        path: str | None,
        pid: int,
    ) -> None:
        self.proto: IProcessProtocol | None = protocol
        #: The protocol, kept after the end (``proto`` is cleared, as Twisted does).
        self.protocol = protocol
        self.executable = executable
        self.args = list(args)
        self.env = dict(env) if env is not None else None
        self.path = path
        self.pid: int | None = pid
        #: The pid it was spawned with, kept for assertions after the reap.
        self.spawned_pid = pid
        self.stdin_closed = False
        self.open_outputs = set(OUTPUTS)
        self.status: tuple[int | None, int | None] | None = None

    # The transport side the runner uses.

    def closeStdin(self) -> None:
        self.stdin_closed = True

    def closeChildFD(self, fd: int) -> None:
        self.close_output(fd)

    # The child's side, driven by the test.

    def write(self, data: bytes, fd: int = 1) -> None:
        """The child writes ``data`` on ``fd``; the protocol hears it at once."""
        assert fd in self.open_outputs, f"fd {fd} is closed"
        assert self.proto is not None
        self.proto.childDataReceived(fd, data)

    def exit(self, code: int | None = 0, sig: int | None = None) -> None:
        """The main process exits and is reaped; its pipes may stay open."""
        assert self.status is None, "exited twice"
        self.status = (code, sig)
        self.pid = None
        if self.proto is not None:
            self.proto.processExited(self._reason())
        self._maybe_ended()

    def close_output(self, fd: int | None = None) -> None:
        """Close one output pipe (every one when ``fd`` is None)."""
        self.open_outputs -= set(OUTPUTS) if fd is None else {fd}
        self._maybe_ended()

    def end(self, code: int | None = 0, sig: int | None = None) -> None:
        """Exit and close every pipe: the usual end of a step."""
        self.exit(code, sig)
        self.close_output()

    def forget_pid(self) -> None:
        """Lose the pid while running, which no real reactor does; the worst case."""
        self.pid = None

    def _reason(self) -> Failure:
        assert self.status is not None
        code, sig = self.status
        if code == 0 and sig is None:
            return Failure(ProcessDone(0))
        return Failure(ProcessTerminated(code, sig))

    def _maybe_ended(self) -> None:
        # As Process.maybeCallProcessEnded: reaped and every pipe closed.
        if self.status is None or self.open_outputs or self.proto is None:
            return
        proto, self.proto = self.proto, None
        proto.processEnded(self._reason())


@attrs.define
class Signal:
    group: int
    sig: int


class FakeProcessReactor(Clock):
    """
    A ``task.Clock`` whose ``spawnProcess`` returns a :class:`FakeProcess`.

    ``before_connect`` and ``after_connect`` run inside ``spawnProcess``
    around ``makeConnection``: ``before_connect = lambda p: p.exit(0)`` is a
    child reaped before the protocol can read its pid, ``after_connect`` one
    reaped where Twisted registers its reap handler. :meth:`kill` stands in
    for ``os.killpg`` and only records.
    """

    def __init__(self) -> None:
        super().__init__()
        self.processes: list[FakeProcess] = []
        self.signals: list[Signal] = []
        self.spawn_error: OSError | None = None
        self.before_connect: Callable[[FakeProcess], None] | None = None
        self.after_connect: Callable[[FakeProcess], None] | None = None
        self._next_pid = 4000

    def spawnProcess(
        self,
        processProtocol: IProcessProtocol,
        executable: str,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        path: str | None = None,
        uid: int | None = None,
        gid: int | None = None,
        usePTY: bool = False,
        childFDs: Mapping[int, Any] | None = None,
    ) -> FakeProcess:
        assert not usePTY and childFDs is None, "steps use plain pipes"
        if self.spawn_error is not None:
            raise self.spawn_error
        self._next_pid += 1
        process = FakeProcess(processProtocol, executable, args, env, path, self._next_pid)
        self.processes.append(process)
        if self.before_connect is not None:
            self.before_connect(process)
        processProtocol.makeConnection(process)  # type: ignore[arg-type]
        if self.after_connect is not None:
            self.after_connect(process)
        return process

    def kill(self, group: int, sig: int) -> None:
        """Record a signal to a process group; raise as killpg does for no live group."""
        self.signals.append(Signal(group, sig))
        if not any(p.pid == group for p in self.processes):
            raise ProcessLookupError(group)

    def sent(self) -> list[tuple[int, str]]:
        """The signals sent so far, readable: ``[(group, "SIGTERM"), ...]``."""
        return [(s.group, signal.Signals(s.sig).name) for s in self.signals]
