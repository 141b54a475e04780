"""
One app's deploy engine: one deploy at a time per clone, later pushes coalesced.

A deploy is a cycle of steps (:mod:`ghhook.cycle`) run through the
:class:`~ghhook.runner.ProcessRunner`: pull, then (when HEAD differs from
what was last deployed) build, restart and check. While one
cycle runs, every new push joins a single pending deploy that targets the
newest ``after`` ("latest wins"), so a burst of pushes costs at most one more
pull. Two git processes never run in the clone at once because every process
of a cycle is awaited before the next starts, and cycles never overlap.

Nothing may leave the engine busy: a cycle always ends with an
:class:`Outcome`; an outcome the journal cannot take yet is kept and written
again every ``RETRY_INTERVAL`` s, and no later cycle starts before it is in.
What the engine holds in memory (pending, running) changes only once the
journal committed the write that records it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ghhook import reports
from ghhook.config import AppSettings
from ghhook.cycle import (
    DEPLOYED,
    ROLLED_BACK,
    STEP_GROUP,
    Cycle,
    RollbackFailed,
    RolledBack,
    StepFailed,
    Stopping,
    explain,
)
from ghhook.decision import Ignore
from ghhook.escape import printable
from ghhook.journal import AppJournal, Journal, JournalError
from ghhook.live import LiveDeploys
from ghhook.reports import Call, Reporting
from ghhook.results import Result
from ghhook.runner import StepResult

log = Logger(namespace="ghhook.deployer")

#: Seconds a running step may go on after ghhook is told to stop.
STOP_GRACE = 10.0
#: Seconds between two attempts to write an outcome the journal refused.
RETRY_INTERVAL = 5.0


class Runner(Protocol):
    """What the engine needs of a process runner (a fake one in unit tests)."""

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
    ) -> Deferred[StepResult]: ...

    def interrupt(self, grace: float) -> Deferred[None]: ...


class Health(Protocol):
    """What the engine needs of a health checker (see :mod:`ghhook.health`)."""

    def check(self, name: str, url: str, timeout: float) -> Deferred[StepResult]: ...


class Listener(Protocol):
    """Told about deploys as they happen (metrics use this)."""

    def deploy_started(self) -> None: ...

    def step_finished(self, step: StepResult) -> None: ...

    def deploy_finished(self, result: Result, duration: float, finished: float) -> None: ...

    # Optional: ``paused(paused: bool)``, told when the app is paused or resumed.


class Slots(Protocol):
    """The turns deploys of different apps take (see :class:`ghhook.engines.Slots`)."""

    def acquire(self) -> Deferred[None]: ...

    def release(self) -> None: ...


class AppLogger(Logger):
    """
    A logger whose every event carries ``app``, and whose text starts with
    the app's name: one daemon logs for many apps.
    """

    def __init__(self, namespace: str, app: str) -> None:
        super().__init__(namespace=namespace)
        self.app = app

    def emit(self, level: Any, format: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("app", self.app)
        super().emit(level, None if format is None else "{app}: " + format, **kwargs)


class Listeners:
    """
    Tell every listener what happened. A listener that raises is logged once
    (with its traceback) and the others are told all the same: a broken
    metric or notifier must never stall the engine.
    """

    def __init__(self, listeners: Sequence[Listener] = (), logger: Logger = log) -> None:
        self._log = logger
        self._listeners = list(listeners)
        self._failed: set[int] = set()

    def append(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def tell(self, event: str, *args: Any) -> None:
        for listener in self._listeners:
            method = getattr(listener, event, None)
            if method is None:
                continue  # a listener hears only of what it has a method for
            try:
                method(*args)
            except Exception:  # noqa: BLE001 - logged once, and the engine goes on
                if id(listener) not in self._failed:
                    self._failed.add(id(listener))
                    self._log.failure(
                        "listener {listener} failed on {event}; later failures of it"
                        " are not logged",
                        listener=type(listener).__name__,
                        event=event,
                    )


@attrs.frozen
class Submission:
    """What the hook answers for a push: the deploy it joined."""

    deploy: int
    coalesced: bool
    #: The app is paused: the deploy waits for ``resume``.
    held: bool = False


@attrs.frozen
class Pause:
    """Why an app's automatic deploys are held, since when, and who asked."""

    reason: str | None
    since: float
    by: str | None

    def encode(self) -> str:
        return json.dumps({"reason": self.reason, "since": self.since, "by": self.by})

    @classmethod
    def decode(cls, text: str | None) -> Pause | None:
        if not text:
            return None
        try:
            found = json.loads(text)
            return cls(found.get("reason"), float(found.get("since", 0.0)), found.get("by"))
        except (ValueError, TypeError, AttributeError):
            return cls(None, 0.0, None)


#: The journal's state key of a paused app.
PAUSED = "paused"


@attrs.define
class Job:
    """A deploy waiting or running."""

    id: int
    trigger: str
    delivery: str | None
    #: Every sha that joined, newest last; None stands for a catch-up, which
    #: always pulls. The pull is skipped only for one sha that the remote
    #: branch is known to hold and HEAD holds: a late redelivery of an old
    #: sha must not hide a newer push.
    shas: list[str | None]
    #: A push that joined was forced (a rewind or a rewrite): always pull.
    forced: bool = False
    #: Whether a failed write of this deploy's record was logged already.
    unrecorded: bool = False
    #: Build, restart and check even when HEAD is what runs (``deploy --force``).
    force: bool = False
    #: Who asked for a manual deploy or a rollback (a token's label, a uid).
    requested_by: str | None = None

    @property
    def target(self) -> str | None:
        """The newest sha pushed to this deploy (None for a bare catch-up)."""
        return self.shas[-1]

    @property
    def pushes(self) -> int:
        """How many pushes joined (a catch-up counts none)."""
        return sum(1 for sha in self.shas if sha is not None)

    def join(self, sha: str, delivery: str | None, forced: bool) -> None:
        if sha in self.shas:
            self.shas.remove(sha)
        self.shas.append(sha)
        self.delivery = delivery or self.delivery
        self.forced = self.forced or forced

    def describe(self) -> str:
        """What the deploy is for, in words for the log."""
        if self.trigger == "manual":
            return "manual deploy" + (" (forced)" if self.force else "")
        if self.target is None:
            return "catch-up with the remote"
        return f"{self.trigger} of {self.target}"


@attrs.frozen
class Outcome:
    """How a cycle ended: written to the journal in one transaction."""

    deploy: int
    result: Result
    sha: str | None
    duration: float
    finished: float
    failed_step: str | None = None
    error: str | None = None
    subject: str | None = None
    author: str | None = None
    #: The journal's state keys this deploy leaves (DEPLOYED, ROLLED_BACK).
    state: Mapping[str, str] = attrs.field(factory=dict)
    #: The reports its end makes (statuses, notifications), for the outbox.
    reports: tuple[Call, ...] = ()
    #: The watched paths its change touched (``watch``), the first 50.
    changed: tuple[str, ...] | None = None


def _both(
    first: Callable[[str], None] | None, second: Callable[[str], None] | None
) -> Callable[[str], None] | None:
    """One line callback that tells both (either may be None)."""
    if first is None or second is None:
        return first or second

    def both(line: str) -> None:
        first(line)
        second(line)

    return both


#: Deploys no operator asked for: held while the app is paused.
AUTOMATIC = ("push", "catch-up")


def reporting_of(settings: AppSettings) -> Reporting:
    """What an app reports, and to whom, as :mod:`ghhook.reports` reads it."""
    return Reporting(
        settings.name,
        settings.forge,
        settings.repository,
        settings.report,
        settings.notify,
        settings.branch,
    )


def kill_orphaned_step(group: str | None, clones: Sequence[str], logger: Logger = log) -> None:
    """
    Kill the process group a SIGKILLed ghhook left running (a step has its
    own session, so it outlives ghhook): a git of ours still running would
    race the catch-up's pull on ``index.lock``. Only a group whose leader
    works in one of ``clones``: the pid may have been reused since.
    """
    if group is None or not group.isdigit():
        return
    try:
        cwd = os.path.realpath(os.readlink(f"/proc/{group}/cwd"))
    except OSError:
        return  # gone, or not ours to inspect
    if cwd not in {os.path.realpath(clone) for clone in clones}:
        return  # the pid was reused by something else
    logger.warn("killing process group {group} left running by the previous stop", group=int(group))
    try:
        os.killpg(int(group), signal.SIGKILL)
    except OSError:
        pass


def kill_orphans_of_removed_apps(journal: Journal, apps: Sequence[AppSettings]) -> None:
    """
    Kill the steps a SIGKILLed ghhook left running for apps the config no
    longer names (an app renamed keeps its clone): each engine kills its
    own at its start, and no engine is left for these.
    """
    configured = {app.name for app in apps}
    for app, group in journal.values(STEP_GROUP).items():
        if app not in configured:
            journal.forget(STEP_GROUP, app=app)
            kill_orphaned_step(group, [each.repo for each in apps])


class Deployer:
    """
    One app's engine: owns its clone, queues deploys and runs their cycles
    one at a time. With ``slots``, a cycle also waits for its turn among the
    apps; the pending deploy keeps taking pushes while it waits.
    """

    def __init__(
        self,
        settings: AppSettings,
        runner: Runner,
        journal: Journal | AppJournal,
        clock: IReactorTime,
        wall_clock: Callable[[], float] = time.time,
        listeners: Sequence[Listener] = (),
        health: Health | None = None,
        retry_interval: float = RETRY_INTERVAL,
        slots: Slots | None = None,
        live: LiveDeploys | None = None,
    ) -> None:
        #: The app's settings; a reload may replace them, and a cycle keeps
        #: the ones it started with.
        self.settings = settings
        self.health = health
        self.journal = journal.for_app(settings.name) if isinstance(journal, Journal) else journal
        self.log = AppLogger("ghhook.deployer", settings.name)
        self.listeners = Listeners(listeners, self.log)
        self.running: Job | None = None
        self.pending: Job | None = None
        #: While paused: the deploy the pushes join, until ``resume``.
        self.held: Job | None = None
        #: Why automatic deploys are held (``pause``), kept in the journal.
        self.paused: Pause | None = None
        self.head: str | None = None
        self._runner = runner
        self._clock = clock
        self._wall_clock = wall_clock
        self._retry_interval = retry_interval
        self._stopping = False
        self._cycle: Deferred[Outcome] | None = None
        #: Outcomes the journal has not taken yet, oldest first.
        self._unwritten: list[Outcome] = []
        self._retry: IDelayedCall | None = None
        self._slots = slots
        #: The turn asked of the slots, until it is given.
        self._turn: Deferred[None] | None = None
        self._has_slot = False
        #: The app was removed from the configuration: no more deploys.
        self.retired = False
        #: Other engines still deploying this clone: no cycle starts before they end.
        self._holds = 0
        #: The settings of the cycle running now.
        self._cycle_settings: AppSettings | None = None
        self._catch_up_call: IDelayedCall | None = None
        self._catch_up_failed = False
        #: Told once no cycle runs and every outcome is in the journal.
        self._settled: list[Deferred[None]] = []
        #: Where followers read a running deploy's output (``ghhook logs -f``).
        self.live = live
        self._live_key: tuple[str, int] | None = None

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def busy(self) -> bool:
        return self.running is not None

    @property
    def waiting(self) -> bool:
        """Whether a pending deploy waits for another app's deploy to end."""
        return self._turn is not None

    def start(self, reloaded: bool = False) -> None:
        """
        Close what a previous run left open and queue the catch-up cycle.

        :param reloaded: the app was added by a reload: nothing of a previous
            run is left (the daemon closed it at its start), and a step of
            this app's still running belongs to an engine of this daemon.
        """
        if reloaded:
            # Nothing may raise here: the engine is in the table already.
            self.log.info(
                "serving {repo} ({branch})",
                repo=self.settings.repo,
                branch=self.settings.branch,
            )
            self._catch_up()
            return
        self.paused = Pause.decode(self.journal.get(PAUSED))
        if self.paused is not None:
            self.listeners.tell("paused", True)
        group = self.journal.get(STEP_GROUP)
        self.journal.forget(STEP_GROUP)
        kill_orphaned_step(group, [self.settings.repo], self.log)
        cut_off = self.journal.running_deploys()
        closed = self.journal.close_unfinished(self._wall_clock())
        if closed:
            self.log.warn("deploys {ids} were cut off by the previous stop", ids=closed)
        for row in cut_off:
            self._report_cut_off(row)
        deployed = self.journal.get(DEPLOYED)
        self.log.info(
            "serving {repo} ({branch}); {what}",
            repo=self.settings.repo,
            branch=self.settings.branch,
            sha=deployed,
            what=f"last deployed: {deployed}"
            if deployed
            else "nothing deployed yet: the catch-up takes what the clone holds",
        )
        self._queue("catch-up", None, None, forced=False)

    def _report_cut_off(self, row: Mapping[str, Any]) -> None:
        """
        A deploy a kill cut off told its forge it was deploying: tell the end,
        as a stop during it would have (best effort: the catch-up goes on).
        """
        now = self._wall_clock()
        reporting = reporting_of(self.settings)
        ending = reports.Ending(
            int(row["id"]),
            Result.INTERRUPTED,
            row["target"],
            self._state_or_none(DEPLOYED),
            0.0,
            error="ghhook was killed during this deploy",
        )
        calls, written = reports.finished(
            reporting, ending, row["target"], self._told(reporting), now
        )
        try:
            self.journal.add_reports(int(row["id"]), calls, now, written)
        except JournalError:
            self.log.warn("deploy {deploy}: its end could not be reported", deploy=row["id"])

    def _catch_up(self) -> None:
        """
        Queue a catch-up; while the journal refuses it, try again every
        ``retry_interval`` s (logged once). A deploy pending meanwhile pulls
        anyway, and takes its place.
        """
        self._catch_up_call = None
        if self.pending is not None or self.retired or self._stopping:
            return
        try:
            self._queue("catch-up", None, None, forced=False)
        except JournalError as e:
            if not self._catch_up_failed:
                self._catch_up_failed = True
                self.log.error(
                    "cannot queue the catch-up: {error}; trying again every {interval:g} s",
                    error=str(e),
                    interval=self._retry_interval,
                )
            self._catch_up_call = self._clock.callLater(self._retry_interval, self._catch_up)

    def submit(self, after: str, delivery: str | None, forced: bool = False) -> Submission | Ignore:
        """
        Queue a deploy of ``after``, or join the pending one. Ignored when the
        engine is idle and ``after`` is exactly what runs already, or when
        ``after`` was rolled back. Raises :class:`JournalError` when the
        journal cannot record it; nothing is queued then.
        """
        if (
            self.running is None
            and self.pending is None
            and after == self.head
            and after == self.journal.get(DEPLOYED)
        ):
            return Ignore(f"{after} is already deployed")
        if after == self.journal.get(ROLLED_BACK):
            return Ignore(f"{after} was rolled back")
        held = self.paused is not None
        pending = self.held if held else self.pending
        if pending is not None:
            self.journal.coalesce(pending.id, delivery, after)

            def join() -> None:
                pending.join(after, delivery, forced)
                self.log.info(
                    "push of {sha} joins pending deploy {deploy}",
                    sha=after,
                    deploy=pending.id,
                    delivery=delivery,
                )

            self.journal.on_commit(join)
            return Submission(pending.id, coalesced=True, held=held)
        job = self._queue("push", after, delivery, forced)
        return Submission(job.id, coalesced=False, held=held)

    def _queue(
        self,
        trigger: str,
        target: str | None,
        delivery: str | None,
        forced: bool,
        *,
        force: bool = False,
        by: str | None = None,
    ) -> Job:
        """
        Record a deploy and, once recorded, make it the pending one; an
        automatic one (a push, a catch-up) is held instead while the app is paused.
        """
        job_id = self.journal.queue_deploy(
            trigger, delivery, target, self._wall_clock(), requested_by=by
        )
        job = Job(job_id, trigger, delivery, [target], forced=forced, force=force, requested_by=by)

        def queued() -> None:
            held = self.paused is not None and trigger in AUTOMATIC
            if held:
                self.held = job
            else:
                self.pending = job
            self.log.info(
                "deploy {deploy} {queued}: {what}",
                deploy=job_id,
                queued="held (the app is paused)" if held else "queued",
                what=job.describe(),
                trigger=trigger,
                sha=target,
                delivery=delivery,
                by=by,
            )
            if self.running is None and not held:
                # Start on the next turn of the reactor, after the answer is sent.
                self._clock.callLater(0, self._next)

        self.journal.on_commit(queued)
        return job

    # Operators: pause, resume, a deploy now, a rollback

    def pause(self, reason: str | None, by: str | None) -> Pause:
        """
        Hold automatic deploys (pushes and catch-ups) until :meth:`resume`;
        they keep joining one held deploy. A running deploy goes on. Kept in
        the journal, so a restart stays paused.
        """
        pause = Pause(reason, self._wall_clock(), by)
        self.journal.put(PAUSED, pause.encode())

        def paused() -> None:
            self.paused = pause
            pending = self.pending
            if pending is not None and pending.trigger in AUTOMATIC and self.held is None:
                self.pending, self.held = None, pending
                self._stop_waiting()
            self.log.info(
                "paused{why}: automatic deploys are held until resumed",
                why=f" ({reason})" if reason else "",
                by=by,
            )
            self.listeners.tell("paused", True)

        self.journal.on_commit(paused)
        return pause

    def resume(self, by: str | None) -> int | None:
        """
        Deploy again: the held deploy (the newest push while paused), if
        any, is released; returns its id.
        """
        self.journal.forget(PAUSED)
        held = self.held
        if held is not None and self.pending is not None:
            # A manual deploy waits already: it pulls what the held one would.
            self.journal.coalesce(self.pending.id, held.delivery, held.target or "")
            self.journal.finish_deploy(
                held.id,
                Result.CANCELLED,
                held.target,
                self._wall_clock(),
                error=f"joined deploy {self.pending.id} at the resume",
            )

        def resumed() -> None:
            self.paused = None
            if held is not None:
                self.held = None
                if self.pending is None:
                    self.pending = held
                else:
                    self.pending.join(held.target or "", held.delivery, held.forced)
            self.log.info("resumed: automatic deploys run again", by=by)
            self.listeners.tell("paused", False)
            if self.running is None:
                self._clock.callLater(0, self._next)

        self.journal.on_commit(resumed)
        return held.id if held is not None else None

    def deploy_now(self, force: bool, by: str | None) -> Submission:
        """
        A manual deploy: pull and release now, even while paused; with
        ``force``, build, restart and check even when HEAD is what runs.
        """
        pending = self.pending
        if pending is not None:
            self.journal.set_trigger(pending.id, "manual", by)

            def joined() -> None:
                pending.trigger, pending.requested_by = "manual", by
                pending.force = pending.force or force
                pending.shas.append(None)  # a manual deploy always pulls

            self.journal.on_commit(joined)
            return Submission(pending.id, coalesced=True)
        job = self._queue("manual", None, None, False, force=force, by=by)
        return Submission(job.id, coalesced=False)

    def previous_release(self) -> str | None:
        """The commit deployed before the one that runs now: the default rollback target."""
        return self.journal.previous_deployed(self.journal.get(DEPLOYED))

    async def rollback_refusal(self, sha: str) -> str | None:
        """
        Why ``sha`` cannot be rolled back to, or None: it must be a commit
        this app deployed, or one reachable from the tracked branch.
        """
        if self.journal.was_deployed(sha):
            return None
        settings = self.settings
        result = await self._runner.run(
            "check-rollback",
            [
                settings.git,
                "merge-base",
                "--is-ancestor",
                sha,
                f"refs/remotes/{settings.remote}/{settings.branch}",
            ],
            cwd=settings.repo,
            env=settings.env,
            timeout=30.0,
            fields={"app": settings.name},
        )
        if result.exit_code == 0:
            return None
        return (
            f"{sha} is neither a commit {settings.name} deployed nor one reachable from"
            f" {settings.remote}/{settings.branch} in its clone"
        )

    def rollback(self, sha: str, by: str | None) -> Submission:
        """
        Release ``sha`` (checked by :meth:`rollback_refusal`) with build,
        restart and health check, then hold automatic deploys: the app is
        paused, so the next push does not undo the rollback.
        """
        self.pause(f"rolled back to {sha[:7]}", by)
        pending = self.pending
        if pending is not None and pending.trigger not in AUTOMATIC:
            # A manual deploy waiting is replaced by the rollback.
            self.journal.finish_deploy(
                pending.id,
                Result.CANCELLED,
                pending.target,
                self._wall_clock(),
                error="replaced by a rollback",
            )
            self.journal.on_commit(lambda: setattr(self, "pending", None))
        job = self._queue("rollback", sha, None, False, by=by)
        return Submission(job.id, coalesced=False)

    def _next(self) -> None:
        if (
            self.running is not None
            or self.pending is None
            or self._stopping
            or self.retired
            or self._holds
        ):
            return
        if not self._write_outcomes():
            return  # the retry starts the next cycle once the journal took them
        if self._slots is not None and not self._has_slot:
            if self._turn is None:
                turn = self._turn = self._slots.acquire()
                # Fires at once when a slot is free.
                turn.addCallbacks(self._given_turn, lambda f: f.trap(CancelledError))
            return
        job, self.pending = self.pending, None
        self.running = job
        self._cycle_settings = self.settings
        cycle = Deferred.fromCoroutine(self._run(job))
        self._cycle = cycle
        cycle.addErrback(self._crashed, job)
        cycle.addCallback(self._cycle_done)

    def _given_turn(self, _: None) -> None:
        self._turn = None
        self._has_slot = True
        if self.running is not None or self.pending is None or self._stopping or self.retired:
            self._release_slot()
            return
        self._next()

    def _release_slot(self) -> None:
        if self._has_slot:
            self._has_slot = False
            assert self._slots is not None
            self._slots.release()

    def _stop_waiting(self) -> None:
        turn, self._turn = self._turn, None
        if turn is not None:
            turn.cancel()

    def _crashed(self, failure: Failure, job: Job) -> Outcome:
        """A bug in a cycle: record the deploy as failed; the engine goes on."""
        self.log.failure("deploy {deploy} hit an unexpected error", failure, deploy=job.id)
        now = self._wall_clock()
        return Outcome(job.id, Result.FAILED, job.target, 0.0, now, error=repr(failure.value))

    def _cycle_done(self, outcome: Outcome) -> None:
        # Idle first: whatever happens below, the engine is not left busy,
        # and the turn goes to the next app waiting.
        self.running = None
        self._cycle = None
        self._cycle_settings = None
        self._release_slot()
        if self.live is not None and self._live_key is not None:
            self.live.finish(*self._live_key, str(outcome.result))
            self._live_key = None
        try:
            self._unwritten.append(outcome)
            self._write_outcomes()
            # Listeners hear of the end once the engine is idle again.
            self.listeners.tell(
                "deploy_finished", outcome.result, outcome.duration, outcome.finished
            )
        finally:
            self._next()

    def _write_outcomes(self) -> bool:
        """Write the outcomes the journal has not taken yet; False if it still refuses."""
        while self._unwritten:
            outcome = self._unwritten[0]
            try:
                self.journal.finish_deploy(
                    outcome.deploy,
                    outcome.result,
                    outcome.sha,
                    outcome.finished,
                    outcome.failed_step,
                    outcome.error,
                    subject=outcome.subject,
                    author=outcome.author,
                    state=dict(outcome.state),
                    reports=outcome.reports,
                    changed=outcome.changed,
                )
            except JournalError as e:
                # _retry stays set (fired or pending) until the outcomes are in:
                # the failure is logged once, however many tries it takes.
                if self._retry is None:
                    self.log.error(
                        "deploy {deploy} {result}, but the journal cannot record it yet;"
                        " trying again every {interval:g} s, and no deploy starts until"
                        " it is recorded: {error}",
                        deploy=outcome.deploy,
                        result=outcome.result,
                        interval=self._retry_interval,
                        error=str(e),
                    )
                if self._retry is None or not self._retry.active():
                    self._retry = self._clock.callLater(self._retry_interval, self._retry_now)
                return False
            self._unwritten.pop(0)
            if self._retry is not None:
                self.log.info("deploy {deploy} is recorded now", deploy=outcome.deploy)
        self._stop_retrying()
        self._check_settled()
        return True

    def _retry_now(self) -> None:
        if self._write_outcomes():
            self._next()

    def _stop_retrying(self) -> None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

    def retire(self) -> None:
        """
        The app was removed from the configuration: start no more deploys,
        record the pending one ``cancelled`` (through the outbox, so a failing
        journal still gets it later) and let a running one finish.
        """
        self.retired = True
        self._stop_waiting()
        pending, self.pending = self.pending, None
        if pending is None:
            return
        self.log.info(
            "deploy {deploy} cancelled: the app was removed from the configuration",
            deploy=pending.id,
        )
        now = self._wall_clock()
        self._unwritten.append(
            Outcome(
                pending.id,
                Result.CANCELLED,
                pending.target,
                0.0,
                now,
                error="the app was removed from the configuration before this deploy ran",
            )
        )
        self._write_outcomes()
        self.listeners.tell("deploy_finished", Result.CANCELLED, 0.0, now)

    def hold(self, until: Deferred[None]) -> None:
        """
        Start no cycle before ``until`` fires: the engine of an app a reload
        removed still deploys this clone, and one clone has one deploy at a time.
        """
        self._holds += 1
        self.log.info("waits for the deploy another app runs in its clone to end")

        def released(_: object) -> None:
            self._holds -= 1
            self._next()

        until.addBoth(released)

    def revive(self, settings: AppSettings) -> None:
        """
        The app a reload removed is back before its running deploy ended:
        this engine serves it again (the running deploy goes on), and catches
        up for the pushes refused meanwhile.
        """
        self.retired = False
        self.settings = settings
        self._catch_up()

    @property
    def deploying(self) -> str | None:
        """The clone the running cycle deploys (its settings may differ from ours now)."""
        return self._cycle_settings.repo if self._cycle_settings is not None else None

    def settled(self) -> Deferred[None]:
        """Fires once no cycle runs and every outcome is in the journal."""
        done: Deferred[None] = Deferred()
        self._settled.append(done)
        self._check_settled()
        return done

    def _check_settled(self) -> None:
        if self.running is None and not self._unwritten:
            waiting, self._settled = self._settled, []
            for done in waiting:
                done.callback(None)

    def idle(self) -> Deferred[None]:
        """Fires once no cycle runs (at once when none does)."""
        done: Deferred[None] = Deferred()
        if self._cycle is None:
            done.callback(None)
            return done

        def ended(outcome: object) -> object:
            done.callback(None)
            return outcome

        self._cycle.addBoth(ended)
        return done

    def stop(self) -> Deferred[None]:
        """Start no more steps; give a running one ``STOP_GRACE`` then kill it."""
        self._stopping = True
        self._stop_waiting()
        if self._catch_up_call is not None and self._catch_up_call.active():
            self._catch_up_call.cancel()
        self._catch_up_call = None
        cycle = self._cycle
        done: Deferred[None] = Deferred()
        done.addCallback(lambda _: self._last_write())
        if cycle is None:
            done.callback(None)
            return done
        cycle.addBoth(lambda _: done.callback(None))
        self._runner.interrupt(STOP_GRACE)
        return done

    def _last_write(self) -> None:
        """One more try for unrecorded outcomes, then no timer outlives the stop."""
        if not self._write_outcomes():
            self.log.error(
                "deploys {ids} could not be recorded; the next start marks them interrupted",
                ids=[outcome.deploy for outcome in self._unwritten],
            )
        self._stop_retrying()

    def keep(self, job: Job, what: str, write: Callable[[], object]) -> None:
        """
        Write part of a deploy's record that the deploy can do without (its
        start, a step): when the journal refuses it, say so once and go on.
        """
        try:
            write()
        except JournalError:
            if not job.unrecorded:
                job.unrecorded = True
                self.log.warn(
                    "deploy {deploy}: the journal could not record {what}; the deploy goes on",
                    deploy=job.id,
                    what=what,
                )

    async def _run(self, job: Job) -> Outcome:
        started = self._wall_clock()
        reporting = reporting_of(self.settings)
        previous = self.journal.get(DEPLOYED)
        opening = reports.started(reporting, job.id, job.target)
        self.keep(job, "its start", lambda: self.journal.start_deploy(job.id, started, opening))
        self.listeners.tell("deploy_started")
        if self.live is not None:
            self._live_key = (self.settings.name, job.id)
            self.live.start(*self._live_key)
        cycle = Cycle(self, job)
        self.log.info(
            "deploy {deploy} started: {what}",
            deploy=job.id,
            what=job.describe(),
            trigger=job.trigger,
            sha=job.target,
            delivery=job.delivery,
        )
        sha: str | None
        failed_step: str | None = None
        error: str | None = None
        try:
            result, sha = await cycle.run()
        except StepFailed as e:
            result = Result.TIMEOUT if e.step.timed_out else Result.FAILED
            sha, failed_step, error = cycle.new or job.target, e.step.name, explain(e.step)
        except RolledBack as e:
            result, sha, failed_step = Result.ROLLED_BACK, cycle.new, e.step.name
            error = explain(e.step)
        except RollbackFailed as e:
            result, sha, failed_step = Result.FAILED, cycle.new, e.step.name
            error = f"{explain(e.step)}; the rollback failed too: {explain(e.rollback)}"
            self.log.critical(
                "deploy {deploy}: ROLLBACK FAILED, the service may be down: {error}",
                deploy=job.id,
                error=printable(error),
            )
        except Stopping:
            result, sha, failed_step = Result.INTERRUPTED, cycle.new or job.target, cycle.last_step
            error = "ghhook stopped during this deploy; the next start catches up"
        except JournalError as e:
            result, sha, failed_step, error = Result.FAILED, job.target, cycle.last_step, str(e)
        except Exception as e:  # noqa: BLE001 - recorded, and the engine goes on
            self.log.failure("deploy {deploy} hit an unexpected error", deploy=job.id)
            result, sha, failed_step, error = Result.FAILED, job.target, None, repr(e)
        finished = self._wall_clock()
        state = {}
        if cycle.running is not None:
            state[DEPLOYED] = cycle.running
        if cycle.rolled_back is not None:
            state[ROLLED_BACK] = cycle.rolled_back
        subject, author = cycle.commits.get(sha, (None, None)) if sha else (None, None)
        emit = self.log.info if result in (Result.DEPLOYED, Result.UNCHANGED) else self.log.error
        emit(
            "deploy {deploy} {result}: {what}{why}",
            deploy=job.id,
            result=result,
            what=sha or "nothing pulled",
            why=f" ({printable(error)})" if error else "",
            sha=sha,
            error=printable(error) if error else None,
            step=failed_step,
            delivery=job.delivery,
            duration=finished - started,
        )
        ending = reports.Ending(
            job.id,
            result,
            sha,
            state.get(DEPLOYED) if result.bad else previous,
            finished - started,
            failed_step,
            error,
        )
        closing, written = reports.finished(
            reporting, ending, job.target, self._told(reporting), finished
        )
        return Outcome(
            job.id,
            result,
            sha,
            finished - started,
            finished,
            failed_step,
            error,
            subject,
            author,
            {**written, **state},
            tuple(closing),
            tuple(cycle.changed) if cycle.changed is not None else None,
        )

    def _told(self, reporting: Reporting) -> dict[str, str]:
        """The state keys a deploy's end reads to tell a repeated result once."""
        keys = (reports.LAST_RESULT, *(reports.NOTIFIED + n.name for n in reporting.notify))
        return {key: value for key in keys if (value := self._state_or_none(key)) is not None}

    def _state_or_none(self, key: str) -> str | None:
        """A state key, or None when the journal cannot say (reports then repeat)."""
        try:
            return self.journal.get(key)
        except JournalError:
            return None

    # Process helpers used by Cycle

    async def step(
        self,
        job: Job,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        settings: AppSettings | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> StepResult:
        """
        Run one process of ``job`` with the settings its cycle started with.

        :param on_line: told each line of output the log gets, besides the live view.
        """
        settings = settings if settings is not None else self.settings

        def started(pid: int) -> None:
            self.keep(
                job, "its step's process group", lambda: self.journal.put(STEP_GROUP, str(pid))
            )

        live = self.live.get(settings.name, job.id) if self.live is not None else None

        def start() -> Deferred[StepResult]:
            if live is not None:
                live.step_started(argv)
            running = self._runner.run(
                name,
                argv,
                cwd=settings.repo,
                env=env if env is not None else settings.env,
                timeout=settings.timeout,
                fields={"app": settings.name, "deploy": job.id, "delivery": job.delivery},
                on_start=started,
                on_line=_both(live.add if live is not None else None, on_line),
            )
            if live is not None:

                def ended(result: StepResult) -> StepResult:
                    live.step_ended(result)
                    return result

                running.addCallback(ended)
            return running

        result = await self.observe(start)
        self.keep(job, "the end of a step", lambda: self.journal.forget(STEP_GROUP))
        return result

    async def observe(self, start: Callable[[], Deferred[StepResult]]) -> StepResult:
        """
        Start a step unless ghhook is stopping; tell the listeners its end. A
        step that did not succeed while ghhook stops was cut off by the stop.
        """
        if self._stopping:
            raise Stopping()
        result = await start()
        self.listeners.tell("step_finished", result)
        if self._stopping and not result.ok:
            raise Stopping()
        return result


__all__ = [
    "DEPLOYED",
    "ROLLED_BACK",
    "STEP_GROUP",
    "Deployer",
    "Job",
    "Listener",
    "Outcome",
    "Submission",
]
