"""
The daemon's top service: opens the journal, listens, queues the catch-up,
checkpoints the journal in a thread, handles the signals twistd leaves
alone, and stops the daemon with one line when it cannot start.
"""

from __future__ import annotations

import gc
import os
import signal
import sqlite3
import sys
from collections.abc import Callable, MutableMapping
from types import FrameType
from typing import Any, NoReturn

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.error import CannotListenError, ReactorNotRunning
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from ghhook.deployer import Deployer
from ghhook.frontdoor import raise_open_file_limit
from ghhook.journal import Journal, JournalError
from ghhook.notify import notify

log = Logger(namespace="ghhook")

#: Seconds between two WAL checkpoints of the journal (in a thread).
CHECKPOINT_INTERVAL = 5.0


class Checkpoints:
    """
    Checkpoint the journal's WAL every ``interval`` seconds, in a thread. A
    failure (disk full, a lock held elsewhere) is logged once, not at every
    interval, and tried again at the next; that it works again is logged too.
    """

    def __init__(
        self,
        checkpoint: Callable[[], object],
        clock: IReactorTime,
        in_thread: Callable[[Callable[[], object]], Deferred[object]],
    ) -> None:
        """
        :param checkpoint: what runs in the thread: :meth:`Journal.checkpoint`.
        :param in_thread: runs a callable off the reactor thread, and fires
            with its result; tests run it at once.
        """
        self._checkpoint = checkpoint
        self._in_thread = in_thread
        self._interval = 0.0
        #: Whether the last checkpoint failed: only the first failure is logged.
        self.failing = False
        self._loop = LoopingCall(self._once)
        self._loop.clock = clock

    @property
    def running(self) -> bool:
        return self._loop.running

    def start(self, interval: float) -> None:
        self._interval = interval
        # Every failure of a checkpoint is handled in _once; this only logs a
        # bug that would end the loop.
        self._loop.start(interval, now=False).addErrback(
            lambda f: log.failure("the journal's checkpoints stopped", f)
        )

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def _once(self) -> Deferred[None]:
        d = maybeDeferred(self._in_thread, self._checkpoint)
        return d.addCallbacks(self._worked, self._failed)

    def _worked(self, _: object) -> None:
        if self.failing:
            self.failing = False
            log.info("the journal's checkpoint works again")

    def _failed(self, failure: Failure) -> None:
        if self.failing:
            return
        self.failing = True
        if failure.check(sqlite3.Error, OSError, JournalError):
            log.error(
                "the journal's checkpoint failed: {error}; trying again every {interval} s",
                error=str(failure.value),
                interval=self._interval,
            )
        else:
            log.failure(
                "the journal's checkpoint failed; trying again every {interval} s",
                failure,
                interval=self._interval,
            )


class SignalHandlers:
    """
    ghhook's handlers for SIGHUP, SIGQUIT, SIGUSR2 and, unless twistd rotates
    its --logfile on it, SIGUSR1: each would end the process at once,
    leaving a deploy's step running and the deploy recorded as running. A
    handler only hands the signal to the reactor thread with
    ``callFromThread``, as Twisted's own handlers do.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for number in (signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR2):
            self._previous[number] = signal.signal(number, self._received)
        # twistd installs its log rotation on SIGUSR1 when it logs to a file.
        if signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
            self._previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, self._received)

    def uninstall(self) -> None:
        """Give back the handlers found at :meth:`install`."""
        for number, previous in self._previous.items():
            signal.signal(number, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()

    def _received(self, number: int, frame: FrameType | None) -> None:
        self._reactor.callFromThread(self.handle, number)

    def handle(self, number: int) -> None:
        """Act on a signal, in the reactor thread."""
        name = signal.Signals(number).name
        if number == signal.SIGHUP:
            log.info(
                "received SIGHUP: nothing to reload; ghhook reads its settings at start,"
                " so restart it to change them",
                signal=name,
            )
        elif number == signal.SIGUSR1:
            log.info(
                "received SIGUSR1: it reopens twistd's --logfile, and this ghhook logs to"
                " none; nothing done",
                signal=name,
            )
        else:
            log.info("received {signal}, shutting down", signal=name)
            try:
                self._reactor.stop()
            except ReactorNotRunning:
                pass  # already stopping


def _listen_failure(error: Exception) -> str:
    """Why a listener could not start, in a few words."""
    if isinstance(error, CannotListenError):
        reason = error.socketError
        if isinstance(reason, OSError) and reason.strerror:
            return f"cannot listen: {reason.strerror}"
        return f"cannot listen: {reason}"
    if isinstance(error, OSError) and error.strerror:
        # A UNIX endpoint's lock file, say: name the path, not the pid.
        path = error.filename2 if error.filename2 is not None else error.filename
        return f"cannot listen: {error.strerror}" + (f" ({os.fsdecode(path)})" if path else "")
    return str(error) or type(error).__name__


def _fit(line: str, limit: int) -> bytes:
    """``line`` as ASCII, cut at a word to ``limit`` bytes."""
    data = line.encode("ascii", "backslashreplace")
    if len(data) <= limit:
        return data
    cut = data[: limit - 3].rsplit(b" ", 1)[0]
    return cut + b"..."


class GhhookService(MultiService):
    """
    Opens the journal, then listens, then queues the catch-up deploy; stops
    the daemon with one line when it cannot.
    """

    def __init__(
        self,
        journal: Journal,
        deployer: Deployer,
        reactor: Any,
        twistd: MutableMapping[str, Any] | None = None,
        raise_limit: Callable[[], tuple[int, int]] = raise_open_file_limit,
    ) -> None:
        """
        :param twistd: twistd's options, for its pidfile and the status pipe a
            daemonizing twistd waits on; empty outside twistd.
        :param raise_limit: raises the open-file limit and returns it before and
            after (:func:`~ghhook.frontdoor.raise_open_file_limit`).
        """
        super().__init__()
        self._raise_limit = raise_limit
        self.journal = journal
        self.deployer = deployer
        self._twistd: MutableMapping[str, Any] = twistd if twistd is not None else {}
        self._listeners: dict[IService, str] = {}
        self._opened = False
        self.signals = SignalHandlers(reactor)
        self.checkpoints = Checkpoints(
            journal.checkpoint,
            reactor,
            lambda work: deferToThreadPool(reactor, reactor.getThreadPool(), work),
        )

    def listen(self, option: str, description: str, listener: IService) -> None:
        """Add a listener, named by the option that asked for it."""
        listener.setServiceParent(self)
        self._listeners[listener] = f"{option} {description}"

    def privilegedStartService(self) -> None:
        # Before anything listens: the listeners' default caps are read from it.
        before, after = self._raise_limit()
        if after > before:
            log.info(
                "raised the open-file limit from {before} to {after}, its hard limit",
                before=before,
                after=after,
            )
        else:
            log.info("the open-file limit is {limit}", limit=after)
        # MultiService's, with a failure to listen named by its option.
        Service.privilegedStartService(self)
        for child in self:
            try:
                child.privilegedStartService()
            except Exception as e:  # noqa: BLE001 - endpoints raise many kinds
                self.refuse(f"{self._listeners.get(child, child.name)}: {_listen_failure(e)}")

    def startService(self) -> None:
        try:
            self.journal.open()
            self._opened = True
            self.journal.checkpoint_elsewhere()
            deployed = self.journal.get("deployed")
            super().startService()
            log.info(
                "ghhook serving {repo} ({branch}); {what}",
                repo=self.deployer.settings.repo,
                branch=self.deployer.settings.branch,
                sha=deployed,
                what=f"last deployed: {deployed}"
                if deployed
                else "nothing deployed yet: the catch-up takes what the clone holds",
            )
            self.deployer.start()
        except JournalError as e:
            self.refuse(str(e))
        # systemd (Type=notify) learns we are ready once every port listens.
        ports = [getattr(child, "_waitingForPort", None) for child in self]
        gatherResults([p for p in ports if p is not None]).addCallback(
            lambda _: notify(b"READY=1")
        ).addErrback(lambda f: log.failure("a listener failed to start", f))
        self.checkpoints.start(CHECKPOINT_INTERVAL)
        self.signals.install()
        # Everything loaded at start lives as long as the daemon: keep it out
        # of the collector's full passes, which would pause the reactor.
        gc.collect()
        gc.freeze()

    def refuse(self, reason: str) -> NoReturn:
        """
        End a start that cannot go on with one line, on stderr and in the log,
        and a non-zero exit. Any exception but SystemExit makes twistd print
        its traceback, and pass a daemonizing parent its first 100 bytes; so
        this does the rest of what twistd does on a failed start itself: tell
        that parent through twistd's status pipe and remove the pidfile.
        """
        line = f"ghhook: {reason}"
        log.critical("ghhook cannot start: {reason}", reason=reason)
        for child in list(self):
            if getattr(child, "_waitingForPort", None) is not None:
                child.stopService()  # and the process exits: nothing listens
        if self._opened:
            self.journal.close()
        pidfile = self._twistd.get("pidfile")
        if pidfile:
            try:
                os.unlink(pidfile)
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warn("cannot remove the pidfile {pidfile}: {error}", pidfile=pidfile, error=e)
        # A daemonizing twistd's parent exits with what it reads here: last.
        pipe = self._twistd.get("statusPipe")
        if pipe is not None:
            self._twistd["statusPipe"] = None  # told once
            os.write(pipe, b"1 " + _fit(line, 98))
            os.close(pipe)
        # twistd sends sys.stderr to the log; the one line goes to the real one.
        print(line, file=sys.__stderr__, flush=True)
        raise SystemExit(1)

    def stopService(self) -> Deferred[None]:
        notify(b"STOPPING=1")
        # Stop listening first, then let the deploy finish or kill it.
        d = maybeDeferred(super().stopService)
        d.addCallback(lambda _: self.deployer.stop())
        d.addBoth(self._closed)
        return d

    def _closed(self, result: object) -> object:
        try:
            self.checkpoints.stop()
            try:
                self.journal.checkpoint()
            except (sqlite3.Error, OSError, JournalError) as e:
                log.error("the journal's last checkpoint failed: {error}", error=str(e))
            self.journal.close()
        finally:
            # Until the stop is done, a second signal finds the reactor stopping.
            self.signals.uninstall()
        return result
