"""
How a push becomes the clone's HEAD, with the engine and the real runner
over real git repositories: the strategies (rebase, ff-only, reset) facing
a force-push and a clone with commits of its own, watch paths, submodules.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted

from ghhook.checks import child_environment
from ghhook.config import AppSettings
from ghhook.cycle import DEPLOYED
from ghhook.deployer import Deployer, Submission
from ghhook.journal import Journal
from ghhook.runner import ProcessRunner
from tests.gitfixture import GitFixture
from tests.gitfixture import git as run_git
from tests.test_engine_git import Finished, reactor

DISCARDED = "refs/ghhook/discarded/"


@attrs.frozen
class Engine:
    deployer: Deployer
    finished: Finished
    fixture: GitFixture

    async def deploy(self, sha: str, forced: bool = False) -> str:
        """Deliver a push of ``sha`` and wait for its deploy's result."""
        done = self.finished.next()
        submitted = self.deployer.submit(sha, f"push of {sha[:7]}", forced=forced)
        assert isinstance(submitted, Submission), submitted
        return await done

    def last(self) -> dict[str, Any]:
        return self.deployer.journal.recent_deploys(1)[0]

    def deployed(self) -> str | None:
        return self.deployer.journal.get(DEPLOYED)

    def restarts(self) -> list[str]:
        path = self.fixture.root / "restarts"
        return path.read_text().split() if path.exists() else []

    def close(self) -> None:
        self.deployer.journal.journal.close()


async def started(
    fixture: GitFixture, wall_clock: Callable[[], float] | None = None, **settings: Any
) -> Engine:
    """An engine on ``fixture``'s clone, its start-up catch-up done (unchanged)."""
    finished = Finished()
    defaults: dict[str, Any] = {
        "repo": str(fixture.clone),
        "git_dir": str(fixture.clone / ".git"),
        "remote": "origin",
        "branch": "main",
        "git": shutil.which("git") or "git",
        "restart": ("sh", "-c", "git rev-parse HEAD >> ../restarts"),
        "timeout": 30,
        "env": child_environment(dict(os.environ)),
    }
    app = AppSettings(**{**defaults, **settings})
    deployer = Deployer(
        app,
        ProcessRunner(reactor()),
        Journal(fixture.root / "journal.sqlite3").open(),
        reactor(),
        wall_clock=wall_clock or time.time,
        listeners=[finished],
    )
    done = finished.next()
    deployer.start()
    assert await done == "unchanged"
    return Engine(deployer, finished, fixture)


def discarded(repo: Path) -> dict[str, str]:
    """The refs under refs/ghhook/discarded/ and the commits they name."""
    lines = run_git(repo, "for-each-ref", "--format=%(refname) %(objectname)", DISCARDED)
    return dict(line.split() for line in lines.splitlines())


def reachable(repo: Path, sha: str, refs: Any) -> bool:
    """Whether ``sha`` is in the history of one of ``refs``."""
    for ref in refs:
        try:
            run_git(repo, "merge-base", "--is-ancestor", sha, ref)
        except RuntimeError:
            continue
        return True
    return False


def rewind(git: GitFixture, to: str) -> None:
    """Force-push the remote branch back to the older commit ``to``."""
    run_git(git.work, "reset", "--quiet", "--hard", to)
    run_git(git.work, "push", "--quiet", "--force", "origin", f"{to}:main")


def rewrite(git: GitFixture, base: str) -> str:
    """Force-push a different commit on ``base`` in place of the branch's head."""
    run_git(git.work, "reset", "--quiet", "--hard", base)
    sha = git.commit("app.txt", "version 2, rewritten\n", "v2 done again")
    run_git(git.work, "push", "--quiet", "--force", "origin", "HEAD:main")
    return sha


async def bad_deployed(git: GitFixture, **settings: Any) -> tuple[Engine, str, str]:
    """An engine with ``bad`` deployed on top of ``good``."""
    engine = await started(git, **settings)
    good = git.head()
    bad = git.commit_and_push("version 2\n")
    assert await engine.deploy(bad) == "deployed"
    assert engine.restarts() == [bad]
    return engine, good, bad


# -- a force-push, strategy by strategy ---------------------------------------


@pytest_twisted.ensureDeferred
async def test_rebase_follows_a_rewind(git: GitFixture) -> None:
    """
    strategy rebase, the branch pushed back to an older commit: the clone
    FOLLOWS the rewind. ``git pull --rebase`` finds the fork point in the
    remote-tracking branch's reflog, sees the clone's newer commit came from
    the old remote branch, and drops it; the older commit is released.
    """
    engine, good, bad = await bad_deployed(git, strategy="rebase")
    rewind(git, good)
    assert await engine.deploy(good, forced=True) == "deployed"
    assert git.head() == good and engine.deployed() == good
    assert engine.restarts() == [bad, good]
    assert discarded(git.clone) == {}
    engine.close()


@pytest_twisted.ensureDeferred
async def test_rebase_follows_a_rewritten_history(git: GitFixture) -> None:
    """
    strategy rebase, the head commit replaced by a different one: the clone
    FOLLOWS the rewrite (the old commit is dropped by the fork point, not
    replayed on top of the new one), and the new commit is released.
    """
    engine, good, bad = await bad_deployed(git, strategy="rebase")
    again = rewrite(git, good)
    assert await engine.deploy(again, forced=True) == "deployed"
    assert git.head() == again, "the old commit is not rebased onto the new one"
    assert engine.restarts() == [bad, again]
    assert (git.clone / "app.txt").read_text() == "version 2, rewritten\n"
    engine.close()


@pytest_twisted.ensureDeferred
async def test_ff_only_refuses_a_rewind(git: GitFixture) -> None:
    """strategy ff-only, the branch pushed back to an older commit: failed, the clone unchanged."""
    engine, good, bad = await bad_deployed(git, strategy="ff-only")
    rewind(git, good)
    result = await engine.deploy(good, forced=True)
    assert git.head() == bad and engine.restarts() == [bad]
    assert result == "failed"
    assert "was rewritten (a force-push)" in engine.last()["error"]
    engine.close()


@pytest_twisted.ensureDeferred
async def test_ff_only_refuses_a_rewritten_history(git: GitFixture) -> None:
    """strategy ff-only, the head commit replaced: failed, saying the branch was rewritten."""
    engine, good, bad = await bad_deployed(git, strategy="ff-only")
    again = rewrite(git, good)
    assert await engine.deploy(again, forced=True) == "failed"
    deploy = engine.last()
    assert deploy["failed_step"] == "pull"
    assert (
        f"origin/main was rewritten (a force-push): it no longer holds {bad[:7]}"
        in (deploy["error"])
    )
    assert "strategy reset follows it" in deploy["error"]
    assert git.head() == bad and git.status() == ""
    assert engine.deployed() == bad and engine.restarts() == [bad]
    engine.close()


@pytest_twisted.ensureDeferred
async def test_ff_only_refusal_says_the_pull_ran(git: GitFixture) -> None:
    engine, good, _ = await bad_deployed(git, strategy="ff-only")
    again = rewrite(git, good)
    assert await engine.deploy(again, forced=True) == "failed"
    error = engine.last()["error"]
    assert "was rewritten" in error
    assert "could not be started" not in error, error
    engine.close()


@pytest_twisted.ensureDeferred
async def test_reset_follows_a_rewind_and_keeps_the_dropped_commit(git: GitFixture) -> None:
    engine, good, bad = await bad_deployed(git, strategy="reset")
    rewind(git, good)
    assert await engine.deploy(good, forced=True) == "deployed"
    assert git.head() == good and engine.restarts() == [bad, good]
    refs = discarded(git.clone)
    assert list(refs.values()) == [bad]
    assert [s["name"] for s in engine.last()["steps"]] == [
        "fetch",
        "keep-discarded",
        "reset",
        "restart",
    ]
    engine.close()


@pytest_twisted.ensureDeferred
async def test_reset_follows_a_rewritten_history(git: GitFixture) -> None:
    engine, good, bad = await bad_deployed(git, strategy="reset")
    again = rewrite(git, good)
    assert await engine.deploy(again, forced=True) == "deployed"
    assert git.head() == again and engine.deployed() == again
    assert engine.restarts() == [bad, again]
    assert reachable(git.clone, bad, discarded(git.clone))
    assert git.status() == ""
    engine.close()


# -- a clone with commits of its own ------------------------------------------


@pytest_twisted.ensureDeferred
async def test_ff_only_with_a_commit_of_the_clones_own_fails(git: GitFixture) -> None:
    engine = await started(git, strategy="ff-only")
    local = git.commit("local.txt", "hotfix\n", "a hotfix made on the server", repo=git.clone)
    pushed = git.commit_and_push("version 2\n")
    assert await engine.deploy(pushed) == "failed"
    error = engine.last()["error"]
    assert "the clone has commits of its own that origin/main does not have" in error
    assert "rewritten" not in error
    assert git.head() == local and engine.restarts() == []
    engine.close()


@pytest_twisted.ensureDeferred
async def test_reset_discards_a_commit_of_the_clones_own_and_keeps_it(
    git: GitFixture, events: list[dict[str, Any]]
) -> None:
    engine = await started(git, strategy="reset")
    local = git.commit("local.txt", "hotfix\n", "a hotfix made on the server", repo=git.clone)
    pushed = git.commit_and_push("version 2\n")
    assert await engine.deploy(pushed) == "deployed"
    assert git.head() == pushed and engine.restarts() == [pushed]
    assert not (git.clone / "local.txt").exists()
    refs = discarded(git.clone)
    assert list(refs.values()) == [local]
    (warning,) = [e for e in events if e.get("count") is not None and "ref" in e]
    assert warning["count"] == 1 and warning["shas"] == local[:7]
    assert warning["ref"] in refs
    engine.close()


@pytest_twisted.ensureDeferred
async def test_two_resets_in_one_second_keep_both_discarded_commits(git: GitFixture) -> None:
    engine = await started(git, wall_clock=lambda: 1_700_000_000.25, strategy="reset")
    kept = []
    for round in (1, 2):
        kept.append(git.commit("local.txt", f"hotfix {round}\n", "on the server", repo=git.clone))
        git.commit_and_push(f"version {round + 1}\n")
        assert await engine.deploy(git.head(git.work)) == "deployed"
    refs = discarded(git.clone)
    assert all(reachable(git.clone, sha, refs) for sha in kept), refs
    engine.close()


# -- watch paths --------------------------------------------------------------


def commit(git: GitFixture, name: str, text: str, message: str) -> str:
    """Commit ``name`` in the work clone, its directories made first."""
    (git.work / name).parent.mkdir(parents=True, exist_ok=True)
    return git.commit(name, text, message)


def changed(engine: Engine) -> list[str] | None:
    text = engine.last()["changed"]
    return None if text is None else list(json.loads(text))


@pytest_twisted.ensureDeferred
async def test_a_merge_of_a_deployed_side_branch_is_skipped(git: GitFixture) -> None:
    """
    The merge commit touches ``src/`` against its first parent, but that
    change came from the side branch already deployed: the net change since
    the deployed commit is outside the watched paths.
    """
    engine = await started(git, watch=("src/",))
    base = git.head()
    run_git(git.work, "checkout", "--quiet", "-b", "side")
    side = commit(git, "src/app.py", "print('v2')\n", "side: the app changes")
    run_git(git.work, "push", "--quiet", "origin", "side:main")
    assert await engine.deploy(side) == "deployed"
    assert changed(engine) == ["src/app.py"] and engine.restarts() == [side]

    run_git(git.work, "checkout", "--quiet", "-B", "main", base)
    commit(git, "docs/readme.md", "docs\n", "main: docs")
    run_git(git.work, "merge", "--quiet", "--no-ff", "-m", "merge side", "side")
    merge = git.head(git.work)
    assert "src/app.py" in run_git(git.work, "diff", "--name-only", f"{merge}^1", merge)
    git.push()

    assert await engine.deploy(merge) == "skipped"
    assert git.head() == merge and engine.deployed() == merge
    assert engine.restarts() == [side], "no restart ran"
    assert changed(engine) == []
    assert [s["name"] for s in engine.last()["steps"]] == ["pull"]
    engine.close()


@pytest_twisted.ensureDeferred
async def test_a_change_of_a_watched_path_releases_and_one_outside_is_skipped(
    git: GitFixture,
) -> None:
    engine = await started(git, watch=("src/", "*.cfg"))
    inside = commit(git, "src/lib/core.py", "x = 1\n", "core")
    git.commit("README.md", "read me\n", "readme")
    both = git.commit("setup.cfg", "[x]\n", "cfg")
    git.push()
    assert await engine.deploy(both) == "deployed"
    assert sorted(changed(engine) or []) == ["setup.cfg", "src/lib/core.py"]
    assert engine.restarts() == [both] and inside != both

    outside = git.commit_and_push("version 2\n", name="app.txt")
    assert await engine.deploy(outside) == "skipped"
    assert git.head() == outside and engine.deployed() == outside
    assert engine.restarts() == [both]
    assert changed(engine) == []

    # The next release compares with the skipped commit, now the deployed one.
    again = git.commit_and_push("x = 2\n", name="src/lib/core.py")
    assert await engine.deploy(again) == "deployed"
    assert changed(engine) == ["src/lib/core.py"]
    assert engine.restarts() == [both, again]
    engine.close()


@pytest_twisted.ensureDeferred
async def test_a_change_of_many_watched_paths_keeps_the_first_fifty(git: GitFixture) -> None:
    engine = await started(git, watch=("src/",))
    names = [f"src/file{number:03}.py" for number in range(60)]
    for name in names:
        (git.work / name).parent.mkdir(parents=True, exist_ok=True)
        (git.work / name).write_text(f"{name}\n")
    run_git(git.work, "add", "src")
    run_git(git.work, "commit", "--quiet", "-m", "sixty files")
    git.push()
    assert await engine.deploy(git.head(git.work)) == "deployed"
    assert changed(engine) == names[:50], "git's first fifty, in its order"
    engine.close()


# -- submodules ---------------------------------------------------------------

FILE_ALLOWED = ("-c", "protocol.file.allow=always")


@attrs.frozen
class WithSubmodule:
    app: GitFixture
    lib: GitFixture

    def lib_in_work(self) -> Path:
        return self.app.work / "lib"

    def move_pointer(self, text: str, push_lib: bool = True) -> str:
        """Commit in the submodule (pushed to its remote or not), then the pointer."""
        lib_sha = self.lib.commit("lib.txt", text, f"lib: {text.strip()}", repo=self.lib_in_work())
        if push_lib:
            run_git(self.lib_in_work(), "push", "--quiet", "origin", "HEAD:main")
        run_git(self.app.work, "add", "lib")
        run_git(self.app.work, "commit", "--quiet", "-m", f"lib at {lib_sha[:7]}")
        self.app.push()
        return lib_sha

    def checked_out(self) -> str:
        return run_git(self.app.clone / "lib", "rev-parse", "HEAD")


@pytest.fixture
def with_submodule(tmp_path: Path) -> WithSubmodule:
    """An app whose ``lib`` is a submodule served over file://, checked out in the clone."""
    (tmp_path / "lib").mkdir()
    lib = GitFixture.create(tmp_path / "lib")
    app = GitFixture.create(tmp_path)
    url = lib.remote.as_uri()
    run_git(app.work, *FILE_ALLOWED, "submodule", "add", "--quiet", url, "lib")
    run_git(app.work, "commit", "--quiet", "-m", "add lib")
    app.push()
    for key, value in (("user.name", "ghhook tests"), ("user.email", "t@example.invalid")):
        run_git(app.work / "lib", "config", key, value)
    run_git(app.clone, "pull", "--quiet", "--ff-only")
    run_git(app.clone, *FILE_ALLOWED, "submodule", "update", "--quiet", "--init")
    # ghhook's own `git submodule update` may then fetch over file:// too.
    run_git(app.clone, "config", "protocol.file.allow", "always")
    return WithSubmodule(app, lib)


@pytest_twisted.ensureDeferred
async def test_a_moved_submodule_pointer_is_checked_out(with_submodule: WithSubmodule) -> None:
    repos = with_submodule
    engine = await started(repos.app, submodules=True)
    lib_sha = repos.move_pointer("lib v2\n")
    pushed = repos.app.head(repos.app.work)
    assert await engine.deploy(pushed) == "deployed"
    assert repos.app.head() == pushed
    assert repos.checked_out() == lib_sha
    assert (repos.app.clone / "lib" / "lib.txt").read_text() == "lib v2\n"
    assert repos.app.status() == ""
    assert [s["name"] for s in engine.last()["steps"]] == ["pull", "submodules", "restart"]
    engine.close()


@pytest_twisted.ensureDeferred
async def test_a_pointer_to_a_commit_the_submodule_lacks_fails_in_the_pull(
    with_submodule: WithSubmodule,
) -> None:
    """
    The submodule is checked out, so ``git pull`` fetches into it on demand
    and fails there already: failed in the pull, HEAD and the submodule untouched.
    """
    repos = with_submodule
    engine = await started(repos.app, submodules=True)
    before, lib_before = repos.app.head(), repos.checked_out()
    missing = repos.move_pointer("never pushed\n", push_lib=False)
    assert await engine.deploy(repos.app.head(repos.app.work)) == "failed"
    deploy = engine.last()
    assert deploy["failed_step"] == "pull"
    assert f"not our ref {missing}" in deploy["steps"][0]["output"]
    assert repos.app.head() == before and repos.checked_out() == lib_before
    assert repos.app.status() == ""
    assert engine.deployed() == before and engine.restarts() == []
    engine.close()


@pytest_twisted.ensureDeferred
async def test_a_new_submodule_at_a_commit_its_remote_lacks_fails_and_restores_head(
    tmp_path: Path,
) -> None:
    """
    A push adds a submodule whose pointer its remote does not have: the
    pull succeeds (nothing to fetch into), ``git submodule update`` fails,
    and HEAD is put back on the commit before.
    """
    (tmp_path / "lib").mkdir()
    lib = GitFixture.create(tmp_path / "lib")
    app = GitFixture.create(tmp_path)
    # A new submodule is cloned, and a clone reads no config of the clone's:
    # file:// is allowed in git's environment instead.
    file_allowed = {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "protocol.file.allow",
        "GIT_CONFIG_VALUE_0": "always",
    }
    env = {**child_environment(dict(os.environ)), **file_allowed}
    engine = await started(app, submodules=True, env=env)
    before = app.head()
    run_git(app.work, *FILE_ALLOWED, "submodule", "add", "--quiet", lib.remote.as_uri(), "lib")
    for key, value in (("user.name", "ghhook tests"), ("user.email", "t@example.invalid")):
        run_git(app.work / "lib", "config", key, value)
    missing = lib.commit("lib.txt", "never pushed\n", "local only", repo=app.work / "lib")
    run_git(app.work, "add", "lib")
    run_git(app.work, "commit", "--quiet", "-m", "add lib")
    app.push()

    assert await engine.deploy(app.head(app.work)) == "failed"
    deploy = engine.last()
    assert deploy["failed_step"] == "submodules"
    assert missing in deploy["steps"][1]["output"]
    assert [s["name"] for s in deploy["steps"]] == ["pull", "submodules", "reset"]
    assert app.head() == before, "HEAD is put back"
    assert not (app.clone / ".gitmodules").exists()
    assert engine.deployed() == before and engine.restarts() == []
    # The failed clone's directory stays behind, untracked (the next deploy reuses it).
    assert run_git(app.clone, "status", "--porcelain", "--untracked-files=no") == ""

    # Once the submodule's commit is pushed, the same push deploys.
    run_git(app.work / "lib", "push", "--quiet", "origin", "HEAD:main")
    assert await engine.deploy(app.head(app.work)) == "deployed"
    assert run_git(app.clone / "lib", "rev-parse", "HEAD") == missing
    assert app.status() == ""
    engine.close()
