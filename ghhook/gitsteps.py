"""
The git operations one deploy runs in its clone: the questions it asks
(HEAD, the fetched remote head, whether HEAD holds a sha, a commit's
subject), the pull, and putting HEAD back after a failed one. Each is a
step through the engine's runner, so no two git processes of ghhook ever
run in the clone at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from ghhook.gitrepo import in_rebase
from ghhook.runner import StepResult

if TYPE_CHECKING:
    from ghhook.deployer import Deployer, Job

#: A commit's subject and author as kept with its deploy, in characters.
SUBJECT_CHARS = 200
AUTHOR_CHARS = 100


class StepFailed(Exception):
    """A step did not succeed; carries its result for the journal."""

    def __init__(self, step: StepResult) -> None:
        super().__init__(step.describe())
        self.step = step


class GitSteps:
    """
    The git operations of one deploy on its clone, each a step run through
    the engine and, unless it is a read-only question, recorded in order in
    the journal. :class:`~ghhook.cycle.Cycle` builds the release on them.
    """

    def __init__(self, deployer: Deployer, job: Job) -> None:
        self.deployer = deployer
        self.job = job
        self.settings = deployer.settings
        self.journal = deployer.journal
        self.last_step: str | None = None
        #: Subject and author of the commits looked at, by sha.
        self.commits: dict[str, tuple[str, str]] = {}
        self._seq = 0

    def git(self, *args: str) -> list[str]:
        return [self.settings.git, *args]

    def _env(self, argv: Sequence[str], env: Mapping[str, str] | None) -> Mapping[str, str] | None:
        """git's steps get the app's SSH key (``ssh_key``); the others as given."""
        if env is None and argv and argv[0] == self.settings.git and self.settings.ssh_key:
            return self.settings.git_env
        return env

    async def record(
        self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None
    ) -> StepResult:
        """Run a step that belongs in the deploy's record."""
        self.last_step = name
        return self.keep(
            await self.deployer.step(self.job, name, argv, self._env(argv, env), self.settings)
        )

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

    async def query(
        self, name: str, argv: Sequence[str], on_line: Callable[[str], None] | None = None
    ) -> StepResult:
        """Run a read-only git question; not part of the deploy's record."""
        return await self.deployer.step(
            self.job, name, argv, self._env(argv, None), settings=self.settings, on_line=on_line
        )

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

    async def pull(self, before: str) -> None:
        """Bring the pushed commits into HEAD the app's way (``strategy``), then its submodules."""
        settings = self.settings
        if settings.strategy == "reset":
            await self.fetch_and_reset(before)
        else:
            known = await self.remote_head() if settings.strategy == "ff-only" else None
            mode = (
                ["--ff-only"] if settings.strategy == "ff-only" else ["--rebase", "--no-autostash"]
            )
            pull = await self.record(
                "pull", self.git("pull", *mode, settings.remote, settings.branch)
            )
            if not pull.ok:
                await self.restore(before, lock_left=pull.timed_out or pull.signal is not None)
                if settings.strategy == "ff-only" and pull.exit_code is not None:
                    self.fail("pull", await self.why_not_fast_forward(known))
                raise StepFailed(pull)
            if settings.strategy == "ff-only" and await self.head() != await self.remote_head():
                # Rewound to an ancestor: "Already up to date", yet the remote no
                # longer holds what runs. ff-only does not follow a force-push.
                self.fail("pull", await self.why_not_fast_forward(known))
        await self.update_submodules(before)

    async def why_not_fast_forward(self, known: str | None) -> str:
        """Why ``git pull --ff-only`` refused: a force-push, or commits of the clone's own."""
        remote = f"{self.settings.remote}/{self.settings.branch}"
        now = await self.remote_head()
        if known is not None and now is not None and known != now:
            moved = await self.query(
                "merge-base", self.git("merge-base", "--is-ancestor", known, now)
            )
            if moved.exit_code == 1:
                return (
                    f"{remote} was rewritten (a force-push): it no longer holds {known[:7]};"
                    " with strategy ff-only that fails the deploy (strategy reset follows it)"
                )
        return (
            f"the clone has commits of its own that {remote} does not have, so it cannot"
            " fast-forward; with strategy ff-only that fails the deploy"
        )

    async def fetch_and_reset(self, before: str) -> None:
        """
        strategy reset: the remote is the truth. Commits only the clone had
        are kept reachable under ``refs/ghhook/discarded/<time>`` and logged.
        """
        settings = self.settings
        remote = f"refs/remotes/{settings.remote}/{settings.branch}"
        await self.must(
            "fetch",
            self.git("fetch", settings.remote, f"+refs/heads/{settings.branch}:{remote}"),
        )
        own = await self.query(
            "rev-list", self.git("rev-list", "--max-count=20", f"{remote}..HEAD")
        )
        discarded = own.output.split() if own.ok else []
        if discarded:
            ref = f"refs/ghhook/discarded/{int(self.deployer._wall_clock())}-{self.job.id}"
            await self.must("keep-discarded", self.git("update-ref", ref, before))
            self.deployer.log.warn(
                "deploy {deploy}: strategy reset discards {count} commit(s) only the clone"
                " had ({shas}); they stay reachable as {ref}",
                deploy=self.job.id,
                count=len(discarded),
                shas=", ".join(sha[:7] for sha in discarded[:5]),
                ref=ref,
            )
        await self.must("reset", self.git("reset", "--hard", remote))

    async def update_submodules(self, before: str) -> None:
        """``submodules = true``: bring them to what HEAD records; a failure puts HEAD back."""
        if not self.settings.submodules:
            return
        result = await self.record(
            "submodules", self.git("submodule", "update", "--init", "--recursive")
        )
        if not result.ok:
            await self.restore(before, lock_left=result.timed_out or result.signal is not None)
            raise StepFailed(result)

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

    def fail(self, name: str, why: str) -> NoReturn:
        """Record a step that failed before anything could be run."""
        now = self.deployer._wall_clock()
        raise StepFailed(
            self.keep(StepResult(name, (), None, None, False, now, 0.0, why, refused=True))
        )
