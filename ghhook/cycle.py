"""
One deploy's steps: the git operations on the clone (pull, the questions
asked of it, resets), then the release (build, restart, health check) and
the rollback when the release fails. Each step is recorded in the journal in
order; the engine (:mod:`ghhook.deployer`) runs one cycle at a time.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from ghhook.gitrepo import current_branch, in_rebase
from ghhook.results import Result
from ghhook.runner import StepResult

if TYPE_CHECKING:
    from ghhook.deployer import Deployer, Job

#: Journal key of the sha the service was last (re)started on.
DEPLOYED = "deployed"
#: Journal key of the last sha rolled back: it is not deployed again.
ROLLED_BACK = "rolled_back"
#: Journal key of the process group of the step running now: if ghhook is
#: killed, the next start kills what is left of it before touching the clone.
STEP_GROUP = "step_group"
#: A commit's subject and author as kept with its deploy, in characters.
SUBJECT_CHARS = 200
AUTHOR_CHARS = 100


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
        return self.keep(await self.deployer.step(self.job, name, argv, env, self.settings))

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
        return await self.deployer.step(self.job, name, argv, settings=self.settings)

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
            self.deployer.log.warn(
                "aborting a rebase left in progress in {repo}", repo=self.settings.repo
            )
            await self.record("abort-rebase", self.git("rebase", "--abort"))

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
        if after == deployed:
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
        self.new = after
        await self.release(deployed, after)
        self.running = after
        return Result.DEPLOYED, after

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
                self.deployer.log.warn("removing {lock} left by the killed pull", lock=str(lock))
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
