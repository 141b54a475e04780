"""
One engine per app, and the one limit they share.

:class:`Engines` holds a :class:`~ghhook.deployer.Deployer` for each app of
the :class:`~ghhook.config.DaemonSettings`, in the order of the config, and
the :class:`Slots` that let at most
``parallel`` of them run a deploy at once: an engine with a pending deploy
waits its turn in arrival order, and pushes keep coalescing into that
pending deploy while it waits.

A reload hands :meth:`Engines.apply` new settings: apps added start (with
their catch-up), apps removed stop taking pushes at once (their URL answers
404), finish a running deploy, and have their pending one recorded
``cancelled``; apps changed use the new settings from their next deploy.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger

from ghhook.config import AppSettings, DaemonSettings
from ghhook.deployer import Deployer

log = Logger(namespace="ghhook.engines")


class Slots:
    """
    At most ``limit`` deploys at once, handed out in arrival order. Like
    :class:`~twisted.internet.defer.DeferredSemaphore`, whose limit a reload
    cannot change while tokens are out: here a lower limit lets running
    deploys finish and hands out no slot until fewer run.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.taken = 0
        self._waiting: list[Deferred[None]] = []

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def acquire(self) -> Deferred[None]:
        """Fires once a slot is the caller's; cancel it to stop waiting."""
        d: Deferred[None] = Deferred(canceller=self._cancelled)
        self._waiting.append(d)
        self._hand_out()
        return d

    def release(self) -> None:
        assert self.taken > 0, "a slot released twice"
        self.taken -= 1
        self._hand_out()

    def resize(self, limit: int) -> None:
        self.limit = limit
        self._hand_out()

    def _cancelled(self, d: Deferred[None]) -> None:
        self._waiting.remove(d)

    def _hand_out(self) -> None:
        while self._waiting and self.taken < self.limit:
            self.taken += 1
            self._waiting.pop(0).callback(None)


#: Builds an app's engine: its settings, and the slots it shares with the others.
EngineFactory = Callable[[AppSettings, Slots], Deployer]


class Engines:
    """The apps' engines by name, in the order of the config."""

    def __init__(self, settings: DaemonSettings, make: EngineFactory) -> None:
        self.settings = settings
        self.slots = Slots(settings.parallel)
        self._make = make
        self._engines: dict[str, Deployer] = {}
        #: Engines of removed apps that still finish a deploy or record one.
        self._retiring: set[Deployer] = set()
        self._stopped = False
        for app in settings.apps:
            self._engines[app.name] = make(app, self.slots)

    def __iter__(self) -> Iterator[Deployer]:
        return iter(list(self._engines.values()))

    def __len__(self) -> int:
        return len(self._engines)

    def get(self, name: str) -> Deployer | None:
        return self._engines.get(name)

    @property
    def running(self) -> int:
        """How many deploys run now, across apps (at most ``parallel``)."""
        return sum(1 for engine in self._all() if engine.busy)

    def _all(self) -> list[Deployer]:
        return [*self._engines.values(), *self._retiring]

    def start(self) -> None:
        """Start every engine: each closes what a previous run left and catches up."""
        for engine in self:
            engine.start()

    def apply(self, new: DaemonSettings) -> list[str]:
        """
        Serve ``new`` from now on; return what changed, one line each, for
        the log. ``parallel`` applies to the next deploys that wait. The
        table changes before anything that touches the journal runs, and
        nothing after raises: a journal that fails meanwhile leaves no app
        without its engine.
        """
        if self._stopped:
            return ["ghhook is stopping: the reload is not applied"]
        changes = [
            f"{key} changed; it applies at the next start, not now"
            for key in self.settings.needs_restart(new)
        ]
        # The plan, in memory only.
        remaining = dict(self._engines)
        engines: dict[str, Deployer] = {}
        added: list[Deployer] = []
        revived: list[tuple[Deployer, AppSettings]] = []
        changed: list[tuple[Deployer, AppSettings]] = []
        for app in new.apps:
            engine = remaining.pop(app.name, None)
            if engine is None:
                engine = self._retired_engine(app)
                if engine is not None:
                    revived.append((engine, app))
                    changes.append(f"app {app.name} added back; its running deploy goes on")
                else:
                    engine = self._make(app, self.slots)
                    added.append(engine)
                    changes.append(f"app {app.name} added")
            elif engine.settings != app:
                changed.append((engine, app))
                changes.append(f"app {app.name} changed; its next deploy uses the new settings")
            engines[app.name] = engine
        changes += [f"app {name} removed" for name in remaining]
        if new.parallel != self.settings.parallel:
            changes.append(f"parallel is now {new.parallel}")
        # Carry it out.
        self._engines = engines
        self.settings = new.keeping_restart_only(self.settings)
        self.slots.resize(new.parallel)
        for engine, app in changed:
            engine.settings = app
        for engine, _app in revived:
            self._retiring.discard(engine)
        for engine in remaining.values():
            self._retire(engine)
        # One deploy at a time in a clone: an engine whose clone another one
        # still deploys (an app renamed, or moved to another's clone) waits.
        for engine in engines.values():
            busy = [
                other
                for other in self._all()
                if other is not engine
                and other.deploying is not None
                and _same_path(other.deploying, engine.settings.repo)
            ]
            if busy:
                engine.hold(gatherResults([other.idle() for other in busy]).addCallback(_none))
        for engine, app in revived:
            engine.revive(app)
        for engine in added:
            engine.start(reloaded=True)
        return changes

    def _retired_engine(self, app: AppSettings) -> Deployer | None:
        """The engine of a removed app of this name still at work on the same clone."""
        for engine in self._retiring:
            if engine.name == app.name and _same_path(engine.settings.repo, app.repo):
                return engine
        return None

    def _retire(self, engine: Deployer) -> None:
        """
        Retire a removed app's engine; it stays here, to be stopped with the
        others, until its deploy ended and its outcomes are in the journal.
        """
        engine.retire()
        self._retiring.add(engine)

        def settled(_: object) -> None:
            if engine.retired:
                self._retiring.discard(engine)

        engine.settled().addBoth(settled)

    def stop(self) -> Deferred[None]:
        """Stop every engine, retiring ones too; fires once all have stopped."""
        self._stopped = True
        engines = self._all()
        d = gatherResults([engine.stop() for engine in engines], consumeErrors=True)
        return d.addCallback(lambda _: None)


def _same_path(one: str, other: str) -> bool:
    """Whether two clone paths are one clone (the config refuses that within one file)."""
    return os.path.realpath(one) == os.path.realpath(other)


def _none(_: object) -> None:
    return None
