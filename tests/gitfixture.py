"""Real git repositories in a temporary directory, for tests and scripts."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import attrs

GIT_ENV = {
    "GIT_AUTHOR_NAME": "ghhook tests",
    "GIT_AUTHOR_EMAIL": "tests@example.invalid",
    "GIT_COMMITTER_NAME": "ghhook tests",
    "GIT_COMMITTER_EMAIL": "tests@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(cwd: Path, *args: str) -> str:
    """Run git synchronously (test set-up only, never in the daemon)."""
    env = {**os.environ, **GIT_ENV, "HOME": str(cwd)}
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


@attrs.frozen
class GitFixture:
    """``remote`` (bare), ``clone`` (what ghhook deploys), ``work`` (pushes)."""

    root: Path
    remote: Path
    clone: Path
    work: Path
    branch: str = "main"

    @classmethod
    def create(cls, root: Path, branch: str = "main") -> GitFixture:
        remote, clone, work = root / "remote.git", root / "clone", root / "work"
        git(root, "init", "--quiet", "--bare", f"--initial-branch={branch}", str(remote))
        git(root, "clone", "--quiet", str(remote), str(work))
        fixture = cls(root, remote, clone, work, branch)
        fixture.commit("app.txt", "version 1\n", "first commit")
        fixture.push()
        git(root, "clone", "--quiet", str(remote), str(clone))
        for repo in (clone, work):
            for key, value in (("user.name", "ghhook tests"), ("user.email", "t@example.invalid")):
                git(repo, "config", key, value)
        return fixture

    def commit(self, name: str, text: str, message: str, repo: Path | None = None) -> str:
        repo = repo or self.work
        (repo / name).write_text(text)
        git(repo, "add", name)
        git(repo, "commit", "--quiet", "-m", message)
        return git(repo, "rev-parse", "HEAD")

    def push(self, repo: Path | None = None) -> None:
        git(repo or self.work, "push", "--quiet", "origin", f"HEAD:{self.branch}")

    def commit_and_push(self, text: str, name: str = "app.txt", message: str | None = None) -> str:
        sha = self.commit(name, text, message or f"set {name} to {text.strip()}")
        self.push()
        return sha

    def head(self, repo: Path | None = None) -> str:
        return git(repo or self.clone, "rev-parse", "HEAD")

    def status(self, repo: Path | None = None) -> str:
        return git(repo or self.clone, "status", "--porcelain")
