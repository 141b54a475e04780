"""
The daemon's top service: opens the journal, listens, starts every app's
engine (each queues its catch-up), checkpoints the journal in a thread,
reloads the config file on SIGHUP, handles the other signals twistd leaves
alone, and stops the daemon with one line when it cannot start.
"""

from __future__ import annotations

import gc
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable, MutableMapping
from types import FrameType
from typing import Any, NoReturn

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.error import CannotListenError, ReactorNotRunning
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from ghhook.config import AppSettings, ConfigError, DaemonSettings
from ghhook.deployer import kill_orphans_of_removed_apps
from ghhook.engines import Engines
from ghhook.frontdoor import raise_open_file_limit
from ghhook.journal import Journal, JournalError
from ghhook.notify import notify

log = Logger(namespace="ghhook")

#: Seconds between two WAL checkpoints of the journal (in a thread).
CHECKPOINT_INTERVAL = 5.0
#: Problems of a refused reload shown in ``/status``; all of them are logged.
SHOWN_PROBLEMS = 5


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

    def __init__(self, reactor: Any, reload: Callable[[], object] | None = None) -> None:
        """:param reload: what SIGHUP does; None when there is nothing to reload."""
        self._reactor = reactor
        self._reload = reload
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
        if number == signal.SIGHUP and self._reload is not None:
            log.info("received SIGHUP: reloading the config file", signal=name)
            self._reload()
        elif number == signal.SIGHUP:
            log.info(
                "received SIGHUP: nothing to reload; ghhook started with --repo reads its"
                " settings at start, so restart it to change them (or use --config)",
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


def _ignore(new: DaemonSettings, old: DaemonSettings | None) -> None:
    return None


def _all_fine(apps: list[AppSettings]) -> Deferred[list[str]]:
    return succeed([])


class GhhookService(MultiService):
    """
    Opens the journal, then listens, then queues the catch-up deploy; stops
    the daemon with one line when it cannot.
    """

    def __init__(
        self,
        journal: Journal,
        engines: Engines,
        reactor: Any,
        twistd: MutableMapping[str, Any] | None = None,
        raise_limit: Callable[[], tuple[int, int]] = raise_open_file_limit,
        load: Callable[[], DaemonSettings] | None = None,
        on_reload: Callable[[DaemonSettings, DaemonSettings | None], object] = _ignore,
        check_clones: Callable[[list[AppSettings]], Deferred[list[str]]] | None = None,
    ) -> None:
        """
        :param twistd: twistd's options, for its pidfile and the status pipe a
            daemonizing twistd waits on; empty outside twistd.
        :param raise_limit: raises the open-file limit and returns it before and
            after (:func:`~ghhook.frontdoor.raise_open_file_limit`).
        :param load: reads and validates the config file again (SIGHUP);
            raises :class:`~ghhook.config.ConfigError`. None: nothing to reload.
        :param on_reload: told the settings after each reload attempt (the old
            ones, or None when it was refused), e.g. to update metrics.
        :param check_clones: asks git, without blocking, whether it works in
            the clones of apps a reload adds or moves; fires with the problems.
        """
        super().__init__()
        self._raise_limit = raise_limit
        self.journal = journal
        self.engines = engines
        self._load = load
        self._on_reload = on_reload
        self._check_clones = check_clones if check_clones is not None else _all_fine
        self._reloading = False
        #: Why the last reload was refused, until one succeeds.
        self.config_error: str | None = None
        self._stopping = False
        self._twistd: MutableMapping[str, Any] = twistd if twistd is not None else {}
        self._listeners: dict[IService, str] = {}
        self._opened = False
        self.signals = SignalHandlers(reactor, self.reload if load is not None else None)
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
            apps = self.engines.settings.apps
            # A journal older than apps gives its history to the first one.
            self.journal.open(upgrade_app=apps[0].name)
            self._opened = True
            self.journal.checkpoint_elsewhere()
            super().startService()
            log.info(
                "ghhook serving {count} app{s}: {names}",
                count=len(apps),
                s="" if len(apps) == 1 else "s",
                names=", ".join(app.name for app in apps),
            )
            # Steps and deploys left by apps no longer configured (an app
            # renamed); each engine kills and closes its own at its start.
            configured = {app.name for app in apps}
            kill_orphans_of_removed_apps(self.journal, apps)
            closed = self.journal.close_unfinished(time.time(), exclude=configured)
            if closed:
                log.warn(
                    "deploys {ids} of apps no longer configured were cut off by the previous stop",
                    ids=closed,
                )
            self.engines.start()
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

    def reload(self) -> Deferred[None]:
        """
        Read the config file again and serve what it says; a file with any
        problem changes nothing, each problem logged on a line of its own.
        The clones of apps added or moved are checked with git first, in
        child processes. systemd hears RELOADING=1 before and READY=1 after,
        either way. Fires once the reload is over.
        """
        assert self._load is not None
        if self._stopping:
            log.info("reload ignored: ghhook is stopping")
            return succeed(None)
        if self._reloading:
            log.info("reload ignored: the previous one is still checking clones")
            return succeed(None)
        self._reloading = True
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        notify(b"RELOADING=1\nMONOTONIC_USEC=%d" % usec)
        old = self.engines.settings
        d: Deferred[DaemonSettings] = maybeDeferred(self._load)
        d.addCallback(self._vet, old)
        d.addCallbacks(self._reloaded, self._refused, callbackArgs=(old,), errbackArgs=(old,))
        d.addErrback(self._reload_failed)

        def over(_: object) -> None:
            self._reloading = False
            notify(b"READY=1")

        return d.addBoth(over)

    def _vet(self, new: DaemonSettings, old: DaemonSettings) -> Deferred[DaemonSettings]:
        """Ask git about the clones the running daemon does not deploy yet."""
        known = {(app.name, app.repo) for app in old.apps}
        fresh = [app for app in new.apps if (app.name, app.repo) not in known]
        checked = self._check_clones(fresh)

        def verdict(problems: list[str]) -> DaemonSettings:
            if problems:
                raise ConfigError(problems)
            return new

        return checked.addCallback(verdict)

    def _reloaded(self, new: DaemonSettings, old: DaemonSettings) -> None:
        if self._stopping:
            log.info("reload ignored: ghhook is stopping")
            return
        changes = self.engines.apply(new)
        self.config_error = None
        for change in changes:
            log.info("reload: {change}", change=change)
        if not changes:
            log.info("reload: nothing changed")
        self._on_reload(old, new)

    def _refused(self, failure: Failure, old: DaemonSettings) -> None:
        error = failure.trap(ConfigError) and failure.value
        assert isinstance(error, ConfigError)
        problems = error.problems
        for problem in problems:
            log.error("reload refused: {problem}", problem=problem)
        log.error(
            "the config file was not reloaded ({count} problem{s}); ghhook goes on"
            " with the settings it had",
            count=len(problems),
            s="" if len(problems) == 1 else "s",
        )
        # One problem per line: the overview page shows them so.
        shown = list(problems[:SHOWN_PROBLEMS])
        more = len(problems) - SHOWN_PROBLEMS
        if more > 0:
            shown.append(f"and {more} more (see the log)")
        self.config_error = "\n".join(shown)
        self._on_reload(old, None)

    def _reload_failed(self, failure: Failure) -> None:
        # A bug in a reload must not end the daemon.
        log.failure("the reload failed", failure)
        self.config_error = "the reload failed unexpectedly; see ghhook's log"

    def stopService(self) -> Deferred[None]:
        self._stopping = True
        notify(b"STOPPING=1")
        # Stop listening first, then let the deploys finish or kill them.
        d: Deferred[object] = maybeDeferred(super().stopService)

        def stop_engines(_: object) -> Deferred[None]:
            return self.engines.stop()

        d.addCallback(stop_engines)
        d.addBoth(self._closed)
        return d.addCallback(lambda _: None)

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
