"""
One deploy's cycle: the pull (:mod:`ghhook.gitsteps`), then the release
(build, restart, health check) and the rollback when the release fails.
Each step is recorded in the journal in order; the engine
(:mod:`ghhook.deployer`) runs one cycle at a time.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ghhook.gitrepo import current_branch
from ghhook.gitsteps import GitSteps, StepFailed
from ghhook.results import Result
from ghhook.runner import StepResult
from ghhook.watch import SHOWN, pathspecs

if TYPE_CHECKING:
    from ghhook.deployer import Deployer, Job

#: Journal key of the sha the service was last (re)started on.
DEPLOYED = "deployed"
#: Journal key of the last sha rolled back: it is not deployed again.
ROLLED_BACK = "rolled_back"
#: Journal key of the process group of the step running now: if ghhook is
#: killed, the next start kills what is left of it before touching the clone.
STEP_GROUP = "step_group"


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


def explain(step: StepResult) -> str:
    headline = _headline(step.output)
    return f"{step.describe()}: {headline}" if headline else step.describe()


def _headline(output: str) -> str:
    """The line of a step's output that best says what went wrong."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("fatal:", "error:", "CONFLICT")):
            return line
    return lines[-1] if lines else ""


class Cycle(GitSteps):
    """One deploy: pull, then release when HEAD moved, or roll back."""

    def __init__(self, deployer: Deployer, job: Job) -> None:
        super().__init__(deployer, job)
        #: The commit this deploy pulled, once HEAD moved to it.
        self.new: str | None = None
        #: What the service runs, as far as this deploy knows; the journal
        #: takes it (as DEPLOYED) with the deploy's outcome.
        self.running: str | None = None
        #: A commit this deploy rolled back; the journal keeps it from coming back.
        self.rolled_back: str | None = None
        #: The watched paths the deploy's change touched (``watch``), the first 50.
        self.changed: list[str] | None = None

    async def run(self) -> tuple[Result, str]:
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
        if self.job.trigger == "rollback" and self.job.target is not None:
            return await self.roll_back_to(deployed, self.job.target)
        if await self.fetched_already():
            self.deployer.log.info(
                "{sha} is the remote's head and in HEAD already; no pull",
                sha=self.job.target,
                deploy=self.job.id,
            )
        else:
            await self.pull(before)
        after = await self.head()
        await self.describe(after)
        if after == deployed and not self.job.force:
            return Result.UNCHANGED, after
        if after == self.journal.get(ROLLED_BACK):
            # The pull brought back the commit rolled back before: keep what runs.
            self.deployer.log.warn(
                "{sha} was rolled back before; staying on {deployed}",
                sha=after,
                deployed=deployed,
                deploy=self.job.id,
            )
            await self.must("reset", self.git("reset", "--hard", deployed))
            await self.head()
            await self.describe(deployed)
            return Result.UNCHANGED, deployed
        if self.settings.watch and not self.job.force:
            changed = await self.watched_changes(deployed, after)
            if changed is not None and not changed:
                self.deployer.log.info(
                    "{sha}: none of the watched paths changed since {deployed}; skipped",
                    sha=after,
                    deployed=deployed,
                    deploy=self.job.id,
                )
                self.running = after
                return Result.SKIPPED, after
        self.new = after
        await self.release(deployed, after)
        self.running = after
        return Result.DEPLOYED, after

    async def watched_changes(self, deployed: str, after: str) -> list[str] | None:
        """
        The watched paths the net change from ``deployed`` to ``after``
        touches (kept with the deploy, the first 50); None when git cannot
        say, and then the release goes ahead.
        """
        # git matches every changed path (however many) against the globs; the
        # first lines it prints are kept (a step's own record keeps its last).
        first: list[str] = []

        def keep_first(line: str) -> None:
            if len(first) < SHOWN:
                first.append(line)

        result = await self.query(
            "changed-files",
            self.git(
                "-c",
                "core.quotePath=off",
                "diff",
                "--name-only",
                "--no-renames",
                deployed,
                after,
                "--",
                *pathspecs(self.settings.watch),
            ),
            on_line=keep_first,
        )
        if not result.ok:
            self.deployer.log.warn(
                "deploy {deploy}: git cannot list what changed since {deployed}; releasing",
                deploy=self.job.id,
                deployed=deployed,
            )
            return None
        found = [path for path in result.output.splitlines() if path]
        self.changed = [path for path in first if path][:SHOWN] if first else found[:SHOWN]
        return found

    async def roll_back_to(self, deployed: str, target: str) -> tuple[Result, str]:
        """
        An operator's rollback: put ``target`` in the clone and release it
        like a push (build, restart, health); if that fails, ``deployed``
        is put back as after any failed release.
        """
        await self.must("reset", self.git("reset", "--hard", target))
        await self.update_submodules(deployed)
        after = await self.head()
        await self.describe(after)
        self.new = after
        await self.release(deployed, after)
        self.running = after
        return Result.DEPLOYED, after

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
        self.deployer.log.error(
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
            if self.settings.submodules:
                await self.must(
                    "rollback-submodules", self.git("submodule", "update", "--init", "--recursive")
                )
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
