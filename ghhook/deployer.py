"""
The deploy engine: one deploy at a time per clone, later pushes coalesced.

A deploy is a cycle of steps run through the :class:`~ghhook.runner.ProcessRunner`:
pull, then (when HEAD differs from what was last deployed) restart. While one
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

import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, Protocol

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ghhook.config import AppSettings
from ghhook.decision import Ignore
from ghhook.escape import printable
from ghhook.gitrepo import current_branch, in_rebase
from ghhook.journal import Journal, JournalError
from ghhook.runner import StepResult

log = Logger(namespace="ghhook.deployer")

#: Journal key of the sha the service was last (re)started on.
DEPLOYED = "deployed"
#: Journal key of the last sha rolled back: it is not deployed again.
ROLLED_BACK = "rolled_back"
#: Journal key of the process group of the step running now: if ghhook is
#: killed, the next start kills what is left of it before touching the clone.
STEP_GROUP = "step_group"
#: Seconds a running step may go on after ghhook is told to stop.
STOP_GRACE = 10.0
#: Seconds between two attempts to write an outcome the journal refused.
RETRY_INTERVAL = 5.0
#: A commit's subject and author as kept with its deploy, in characters.
SUBJECT_CHARS = 200
AUTHOR_CHARS = 100


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
    ) -> Deferred[StepResult]: ...

    def interrupt(self, grace: float) -> Deferred[None]: ...


class Health(Protocol):
    """What the engine needs of a health checker (see :mod:`ghhook.health`)."""

    def check(self, name: str, url: str, timeout: float) -> Deferred[StepResult]: ...


class Listener(Protocol):
    """Told about deploys as they happen (metrics use this)."""

    def deploy_started(self) -> None: ...

    def step_finished(self, step: StepResult) -> None: ...

    def deploy_finished(self, result: str, duration: float, finished: float) -> None: ...


class Listeners:
    """
    Tell every listener what happened. A listener that raises is logged once
    (with its traceback) and the others are told all the same: a broken
    metric or notifier must never stall the engine.
    """

    def __init__(self, listeners: Sequence[Listener] = ()) -> None:
        self._listeners = list(listeners)
        self._failed: set[int] = set()

    def append(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def tell(self, event: str, *args: Any) -> None:
        for listener in self._listeners:
            try:
                getattr(listener, event)(*args)
            except Exception:  # noqa: BLE001 - logged once, and the engine goes on
                if id(listener) not in self._failed:
                    self._failed.add(id(listener))
                    log.failure(
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
        if self.target is None:
            return "catch-up with the remote"
        return f"{self.trigger} of {self.target}"


@attrs.frozen
class Outcome:
    """How a cycle ended: written to the journal in one transaction."""

    deploy: int
    result: str
    sha: str | None
    duration: float
    finished: float
    failed_step: str | None = None
    error: str | None = None
    subject: str | None = None
    author: str | None = None
    #: The journal's state keys this deploy leaves (DEPLOYED, ROLLED_BACK).
    state: Mapping[str, str] = attrs.field(factory=dict)


class StepFailed(Exception):
    """A step did not succeed; carries its result for the journal."""

    def __init__(self, step: StepResult) -> None:
        super().__init__(step.describe())
        self.step = step


class RolledBack(Exception):
    """A release step failed and the previous commit runs again."""

    def __init__(self, failed: StepResult) -> None:
        super().__init__(failed.describe())
        self.step = failed


class RollbackFailed(Exception):
    """A release step failed, and so did putting the previous commit back."""

    def __init__(self, failed: StepResult, rollback: StepResult) -> None:
        super().__init__(f"{failed.describe()}, and the rollback failed too: {rollback.describe()}")
        self.step = failed
        self.rollback = rollback


class Stopping(Exception):
    """
    ghhook is stopping: the cycle ends without starting more steps, and a
    step cut off by the stop is no failure of the commit (no rollback).
    """


class Deployer:
    """Owns the clone: queues deploys and runs their cycles one at a time."""

    def __init__(
        self,
        settings: AppSettings,
        runner: Runner,
        journal: Journal,
        clock: IReactorTime,
        wall_clock: Callable[[], float] = time.time,
        listeners: Sequence[Listener] = (),
        health: Health | None = None,
        retry_interval: float = RETRY_INTERVAL,
    ) -> None:
        self.settings = settings
        self.health = health
        self.journal = journal
        self.listeners = Listeners(listeners)
        self.running: Job | None = None
        self.pending: Job | None = None
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

    @property
    def busy(self) -> bool:
        return self.running is not None

    def start(self) -> None:
        """Close what a previous run left open and queue the catch-up cycle."""
        self._kill_orphaned_step()
        closed = self.journal.close_unfinished(self._wall_clock())
        if closed:
            log.warn("deploys {ids} were cut off by the previous stop", ids=closed)
        self._queue("catch-up", None, None, forced=False)

    def _kill_orphaned_step(self) -> None:
        # A step outlives a SIGKILLed ghhook (it has its own session); a git
        # of ours still running would race the catch-up pull on index.lock.
        group = self.journal.get(STEP_GROUP)
        self.journal.forget(STEP_GROUP)
        if group is None or not group.isdigit():
            return
        try:
            cwd = os.readlink(f"/proc/{group}/cwd")
        except OSError:
            return  # gone, or not ours to inspect
        if os.path.realpath(cwd) != os.path.realpath(self.settings.repo):
            return  # the pid was reused by something else
        log.warn(
            "killing process group {group} left running by the previous stop", group=int(group)
        )
        try:
            os.killpg(int(group), signal.SIGKILL)
        except OSError:
            pass

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
        pending = self.pending
        if pending is not None:
            self.journal.coalesce(pending.id, delivery, after)

            def join() -> None:
                pending.join(after, delivery, forced)
                log.info(
                    "push of {sha} joins pending deploy {deploy}",
                    sha=after,
                    deploy=pending.id,
                    delivery=delivery,
                )

            self.journal.on_commit(join)
            return Submission(pending.id, coalesced=True)
        job = self._queue("push", after, delivery, forced)
        return Submission(job.id, coalesced=False)

    def _queue(self, trigger: str, target: str | None, delivery: str | None, forced: bool) -> Job:
        job_id = self.journal.queue_deploy(trigger, delivery, target, self._wall_clock())
        job = Job(job_id, trigger, delivery, [target], forced=forced)

        def queued() -> None:
            self.pending = job
            log.info(
                "deploy {deploy} queued: {what}",
                deploy=job_id,
                what=job.describe(),
                trigger=trigger,
                sha=target,
                delivery=delivery,
            )
            if self.running is None:
                # Start on the next turn of the reactor, after the answer is sent.
                self._clock.callLater(0, self._next)

        self.journal.on_commit(queued)
        return job

    def _next(self) -> None:
        if self.running is not None or self.pending is None or self._stopping:
            return
        if not self._write_outcomes():
            return  # the retry starts the next cycle once the journal took them
        job, self.pending = self.pending, None
        self.running = job
        cycle = Deferred.fromCoroutine(self._run(job))
        self._cycle = cycle
        cycle.addErrback(self._crashed, job)
        cycle.addCallback(self._cycle_done)

    def _crashed(self, failure: Failure, job: Job) -> Outcome:
        """A bug in a cycle: record the deploy as failed; the engine goes on."""
        log.failure("deploy {deploy} hit an unexpected error", failure, deploy=job.id)
        now = self._wall_clock()
        return Outcome(job.id, "failed", job.target, 0.0, now, error=repr(failure.value))

    def _cycle_done(self, outcome: Outcome) -> None:
        # Idle first: whatever happens below, the engine is not left busy.
        self.running = None
        self._cycle = None
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
                )
            except JournalError as e:
                # _retry stays set (fired or pending) until the outcomes are in:
                # the failure is logged once, however many tries it takes.
                if self._retry is None:
                    log.error(
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
                log.info("deploy {deploy} is recorded now", deploy=outcome.deploy)
        self._stop_retrying()
        return True

    def _retry_now(self) -> None:
        if self._write_outcomes():
            self._next()

    def _stop_retrying(self) -> None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

    def stop(self) -> Deferred[None]:
        """Start no more steps; give a running one ``STOP_GRACE`` then kill it."""
        self._stopping = True
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
            log.error(
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
                log.warn(
                    "deploy {deploy}: the journal could not record {what}; the deploy goes on",
                    deploy=job.id,
                    what=what,
                )

    async def _run(self, job: Job) -> Outcome:
        started = self._wall_clock()
        self.keep(job, "its start", lambda: self.journal.start_deploy(job.id, started))
        self.listeners.tell("deploy_started")
        cycle = Cycle(self, job)
        log.info(
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
            result = "timeout" if e.step.timed_out else "failed"
            sha, failed_step, error = cycle.new or job.target, e.step.name, _explain(e.step)
        except RolledBack as e:
            result, sha, failed_step = "rolled_back", cycle.new, e.step.name
            error = _explain(e.step)
        except RollbackFailed as e:
            result, sha, failed_step = "failed", cycle.new, e.step.name
            error = f"{_explain(e.step)}; the rollback failed too: {_explain(e.rollback)}"
            log.critical(
                "deploy {deploy}: ROLLBACK FAILED, the service may be down: {error}",
                deploy=job.id,
                error=printable(error),
            )
        except Stopping:
            result, sha, failed_step = "interrupted", cycle.new or job.target, cycle.last_step
            error = "ghhook stopped during this deploy; the next start catches up"
        except JournalError as e:
            result, sha, failed_step, error = "failed", job.target, cycle.last_step, str(e)
        except Exception as e:  # noqa: BLE001 - recorded, and the engine goes on
            log.failure("deploy {deploy} hit an unexpected error", deploy=job.id)
            result, sha, failed_step, error = "failed", job.target, None, repr(e)
        finished = self._wall_clock()
        state = {}
        if cycle.running is not None:
            state[DEPLOYED] = cycle.running
        if cycle.rolled_back is not None:
            state[ROLLED_BACK] = cycle.rolled_back
        subject, author = cycle.commits.get(sha, (None, None)) if sha else (None, None)
        emit = log.info if result in ("deployed", "unchanged") else log.error
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
            state,
        )

    # Process helpers used by Cycle

    async def step(
        self,
        job: Job,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
    ) -> StepResult:
        def started(pid: int) -> None:
            self.keep(
                job, "its step's process group", lambda: self.journal.put(STEP_GROUP, str(pid))
            )

        result = await self.observe(
            lambda: self._runner.run(
                name,
                argv,
                cwd=self.settings.repo,
                env=env if env is not None else self.settings.env,
                timeout=self.settings.timeout,
                fields={"deploy": job.id, "delivery": job.delivery},
                on_start=started,
            )
        )
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


def _explain(step: StepResult) -> str:
    headline = _headline(step.output)
    return f"{step.describe()}: {headline}" if headline else step.describe()


def _headline(output: str) -> str:
    """The line of a step's output that best says what went wrong."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("fatal:", "error:", "CONFLICT")):
            return line
    return lines[-1] if lines else ""


class Cycle:
    """One deploy's steps, recorded in order in the journal."""

    def __init__(self, deployer: Deployer, job: Job) -> None:
        self.deployer = deployer
        self.job = job
        self.settings = deployer.settings
        self.journal = deployer.journal
        self.last_step: str | None = None
        #: The commit this deploy pulled, once HEAD moved to it.
        self.new: str | None = None
        #: What the service runs, as far as this deploy knows; the journal
        #: takes it (as DEPLOYED) with the deploy's outcome.
        self.running: str | None = None
        #: A commit this deploy rolled back; the journal keeps it from coming back.
        self.rolled_back: str | None = None
        #: Subject and author of the commits looked at, by sha.
        self.commits: dict[str, tuple[str, str]] = {}
        self._seq = 0

    def git(self, *args: str) -> list[str]:
        return [self.settings.git, *args]

    async def record(
        self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None
    ) -> StepResult:
        """Run a step that belongs in the deploy's record."""
        self.last_step = name
        return self.keep(await self.deployer.step(self.job, name, argv, env))

    def keep(self, result: StepResult) -> StepResult:
        self._seq += 1
        seq = self._seq
        self.deployer.keep(
            self.job, f"step {result.name}", lambda: self.journal.add_step(self.job.id, seq, result)
        )
        return result

    async def must(
        self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None
    ) -> StepResult:
        """Run a recorded step that has to succeed."""
        result = await self.record(name, argv, env)
        if not result.ok:
            raise StepFailed(result)
        return result

    async def query(self, name: str, argv: Sequence[str]) -> StepResult:
        """Run a read-only git question; not part of the deploy's record."""
        return await self.deployer.step(self.job, name, argv)

    async def head(self) -> str:
        result = await self.query("rev-parse", self.git("rev-parse", "--verify", "HEAD"))
        if not result.ok:
            raise StepFailed(result)
        sha = result.output.strip().splitlines()[-1].strip()
        self.deployer.head = sha
        return sha

    async def remote_head(self) -> str | None:
        """The remote branch's head as last fetched into the clone, if any."""
        ref = f"refs/remotes/{self.settings.remote}/{self.settings.branch}^{{commit}}"
        result = await self.query("remote-head", self.git("rev-parse", "--verify", "--quiet", ref))
        lines = result.output.strip().splitlines()
        return lines[-1].strip() if result.ok and lines else None

    async def contains(self, sha: str) -> bool:
        result = await self.query(
            "merge-base", self.git("merge-base", "--is-ancestor", sha, "HEAD")
        )
        return result.exit_code == 0

    async def fetched_already(self) -> bool:
        """
        Whether the pull can be skipped: one sha was pushed, not forced, it is
        the remote branch's head as last fetched, and HEAD holds it. Anything
        else pulls: a forced push may rewind the branch to a commit HEAD
        holds, and git is asked only about a sha the clone has fetched.
        """
        shas = set(self.job.shas)
        if self.job.forced or len(shas) != 1 or None in shas:
            return False
        (sha,) = shas
        assert sha is not None
        return await self.remote_head() == sha and await self.contains(sha)

    async def describe(self, sha: str) -> None:
        """Note the subject and author of ``sha`` for the deploy's record."""
        result = await self.query(
            "show-commit", self.git("log", "-1", "--no-show-signature", "--format=%an%n%s", sha)
        )
        author, _, subject = result.output.strip("\n").partition("\n")
        if result.ok and subject:
            self.commits[sha] = (subject[:SUBJECT_CHARS], author[:AUTHOR_CHARS])

    async def repair(self) -> None:
        """Abort a rebase that a conflict or a crash left in the clone."""
        if in_rebase(Path(self.settings.git_dir)):
            log.warn("aborting a rebase left in progress in {repo}", repo=self.settings.repo)
            await self.record("abort-rebase", self.git("rebase", "--abort"))

    async def run(self) -> tuple[str, str]:
        """Pull, then release if HEAD is not what was last deployed."""
        await self.repair()
        branch = current_branch(Path(self.settings.git_dir))
        if branch != self.settings.branch:
            self.fail(
                "check-branch",
                f"the clone is on {branch or 'a detached HEAD'}, not {self.settings.branch}",
            )
        before = await self.head()
        self.deployer.keep(
            self.job, "the commit before", lambda: self.journal.set_before(self.job.id, before)
        )
        # On the first run the service is taken to run what the clone holds.
        deployed = self.journal.get(DEPLOYED) or before
        self.running = deployed
        if await self.fetched_already():
            log.info(
                "{sha} is the remote's head and in HEAD already; no pull",
                sha=self.job.target,
                deploy=self.job.id,
            )
        else:
            await self.pull(before)
        after = await self.head()
        await self.describe(after)
        if after == deployed:
            return "unchanged", after
        if after == self.journal.get(ROLLED_BACK):
            # The pull brought back the commit rolled back before: keep what runs.
            log.warn(
                "{sha} was rolled back before; staying on {deployed}",
                sha=after,
                deployed=deployed,
                deploy=self.job.id,
            )
            await self.must("reset", self.git("reset", "--hard", deployed))
            await self.head()
            await self.describe(deployed)
            return "unchanged", deployed
        self.new = after
        await self.release(deployed, after)
        self.running = after
        return "deployed", after

    async def pull(self, before: str) -> None:
        pull = await self.record(
            "pull",
            self.git(
                "pull",
                "--rebase",
                "--no-autostash",
                self.settings.remote,
                self.settings.branch,
            ),
        )
        if pull.ok:
            return
        await self.restore(before, lock_left=pull.timed_out or pull.signal is not None)
        raise StepFailed(pull)

    async def restore(self, before: str, lock_left: bool) -> None:
        """Put HEAD and the work tree back as they were before the pull."""
        if lock_left:
            # Our git was killed: its lock file is stale, and no other git of
            # ours runs in this clone.
            lock = Path(self.settings.git_dir) / "index.lock"
            if lock.exists():
                log.warn("removing {lock} left by the killed pull", lock=str(lock))
                os.unlink(lock)
        await self.repair()
        if await self.head() != before:
            # Keeps local edits: --keep refuses rather than overwrite them.
            await self.record("reset", self.git("reset", "--keep", before))

    def release_env(self, old: str, new: str, rollback: bool = False) -> dict[str, str]:
        """What build and restart commands learn of the deploy."""
        return {
            **self.settings.env,
            "GHHOOK_OLD_SHA": old,
            "GHHOOK_NEW_SHA": new,
            "GHHOOK_BRANCH": self.settings.branch,
            "GHHOOK_DELIVERY": self.job.delivery or "",
            "GHHOOK_REPO": self.settings.repo,
            "GHHOOK_ROLLBACK": "1" if rollback else "0",
        }

    async def release(self, old: str, new: str) -> None:
        """Build, restart and check ``new``; on failure, put ``old`` back."""
        env = self.release_env(old, new)
        try:
            for argv in self.settings.builds:
                await self.must("build", argv, env)
        except StepFailed as e:
            # The old service never stopped: rebuild its code, restart nothing.
            await self.rollback(old, new, e.step, restart=False)
        try:
            await self.restart("restart", env)
            await self.check_health("health")
        except StepFailed as e:
            await self.rollback(old, new, e.step, restart=True)

    async def rollback(self, old: str, new: str, failed: StepResult, restart: bool) -> None:
        """Reset to ``old``, build (and restart and check) it; always raises."""
        log.error(
            "deploy {deploy}: {step} failed for {sha}; rolling back to {old}",
            deploy=self.job.id,
            step=failed.name,
            sha=new,
            old=old,
        )
        self.rolled_back = new
        env = self.release_env(new, old, rollback=True)
        try:
            await self.must("rollback-reset", self.git("reset", "--hard", old))
            await self.head()
            for argv in self.settings.builds:
                await self.must("rollback-build", argv, env)
            if restart:
                await self.restart("rollback-restart", env)
                await self.check_health("rollback-health")
        except StepFailed as e:
            raise RollbackFailed(failed, e.step) from None
        raise RolledBack(failed)

    async def restart(self, name: str, env: Mapping[str, str]) -> None:
        """Restart by command, or by a signal to the pid in a pidfile."""
        settings = self.settings
        if settings.restart is not None:
            await self.must(name, settings.restart, env)
        elif settings.restart_signal is not None and settings.restart_pidfile is not None:
            await self.must(name, self.signal_argv(name), env)

    def signal_argv(self, name: str) -> list[str]:
        """The argv that signals the pid read from the pidfile now."""
        settings = self.settings
        assert settings.restart_signal is not None and settings.restart_pidfile is not None
        try:
            text = Path(settings.restart_pidfile).read_text().strip()
        except OSError as e:
            self.fail(name, f"cannot read the pidfile {settings.restart_pidfile}: {e.strerror}")
        if not text.isdigit() or int(text) <= 1:
            self.fail(name, f"the pidfile {settings.restart_pidfile} holds no pid: {text[:40]!r}")
        return [sys.executable, "-c", _SIGNAL_SCRIPT, str(settings.restart_signal), text]

    def fail(self, name: str, why: str) -> NoReturn:
        """Record a step that failed before anything could be run."""
        now = self.deployer._wall_clock()
        raise StepFailed(self.keep(StepResult(name, (), None, None, False, now, 0.0, why)))

    async def check_health(self, name: str) -> None:
        url, health = self.settings.health_url, self.deployer.health
        if url is None or health is None:
            return
        self.last_step = name
        result = self.keep(
            await self.deployer.observe(
                lambda: health.check(name, url, self.settings.health_timeout)
            )
        )
        if not result.ok:
            raise StepFailed(result)


# Signals a pid and says so; a stale pid fails with Python's own words.
_SIGNAL_SCRIPT = (
    "import os, signal, sys\n"
    "sig, pid = int(sys.argv[1]), int(sys.argv[2])\n"
    "os.kill(pid, sig)\n"
    "print(f'sent {signal.Signals(sig).name} to {pid}')\n"
)
