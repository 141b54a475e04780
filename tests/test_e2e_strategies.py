"""
End to end: the real ``twistd ghhook --config`` with an app that resets to
the remote (``strategy = "reset"``), watches paths and honours
``[skip deploy]``; and an ``ssh_key`` the daemon refuses or takes at start.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ghhook.payloads import push_payload
from tests.daemon import Daemon, environment, eventually, free_port, run_twistd
from tests.gitfixture import GitFixture
from tests.gitfixture import git as run_git

pytestmark = pytest.mark.e2e
APP = "web"


def app_config(git: GitFixture) -> str:
    return (
        '[defaults]\nsecret_file = "{secret_file}"\ntimeout = 30\n\n'
        f"[apps.{APP}]\n"
        f'repo = "{git.clone}"\n'
        'github_repo = "me/web"\n'
        'strategy = "reset"\n'
        'watch = ["src/", "*.cfg"]\n'
        "skip_ci = true\n"
        'restart = ["sh", "-c", "git rev-parse HEAD >> ../restarts"]\n'
    )


@pytest.fixture
def daemon(git: GitFixture, tmp_path: Path) -> Iterator[Daemon]:
    workdir = tmp_path / "daemon"
    workdir.mkdir()
    d = Daemon(workdir, None, config=app_config(git)).start()
    eventually(lambda: deploys(d), what=f"the catch-up at start; log:\n{d.log()}")
    assert not d.status(APP)["busy"]
    yield d
    d.stop()


def deploys(d: Daemon) -> list[dict[str, Any]]:
    """The app's finished deploys, newest first."""
    return [x for x in d.status(APP)["deploys"] if x["result"] not in ("queued", "running")]


def restarts(git: GitFixture) -> list[str]:
    path = git.root / "restarts"
    return path.read_text().split() if path.exists() else []


def push(d: Daemon, sha: str, message: str = "a change", forced: bool = False) -> tuple[int, Any]:
    payload = push_payload(sha, repository="me/web", message=message, forced=forced)
    return d.deliver("push", payload)


def deployed(d: Daemon, sha: str, message: str = "a change", forced: bool = False) -> Any:
    """Deliver a push of ``sha`` and wait for its deploy to finish; its document."""
    code, answer = push(d, sha, message, forced)
    assert code == 202, answer
    (queued,) = answer["deploys"]

    def done() -> dict[str, Any] | None:
        return next((x for x in deploys(d) if x["id"] == queued["deploy"]), None)

    return eventually(done, what=f"deploy {queued['deploy']} finished; log:\n{d.log()}")


def commit_and_push(git: GitFixture, name: str, text: str, message: str | None = None) -> str:
    (git.work / name).parent.mkdir(parents=True, exist_ok=True)
    return git.commit_and_push(text, name=name, message=message)


def test_a_push_saying_skip_deploy_is_ignored_and_nothing_runs(
    git: GitFixture, daemon: Daemon
) -> None:
    before, seen = git.head(), deploys(daemon)
    message = "tidy the docs [skip deploy]"
    sha = commit_and_push(git, "src/app.py", "v2\n", message)
    code, answer = push(daemon, sha, message)
    assert code == 200 and "skip deploy" in answer["ignored"], answer
    status = daemon.status(APP)
    assert status["pending"] is None and not status["busy"]
    assert deploys(daemon) == seen
    assert git.head() == before and restarts(git) == []

    # The next push without the marker deploys both commits.
    after = commit_and_push(git, "src/app.py", "v3\n")
    deploy = deployed(daemon, after)
    assert deploy["result"] == "deployed" and git.head() == after
    assert restarts(git) == [after]


def test_a_force_push_is_deployed_with_reset(git: GitFixture, daemon: Daemon) -> None:
    good = git.head()
    bad = commit_and_push(git, "src/app.py", "broken\n")
    assert deployed(daemon, bad)["result"] == "deployed"
    run_git(git.work, "reset", "--quiet", "--hard", good)
    run_git(git.work, "push", "--quiet", "--force", "origin", f"{good}:main")
    deploy = deployed(daemon, good, "revert by force", forced=True)
    assert deploy["result"] == "deployed", deploy
    assert [s["name"] for s in deploy["steps"]] == ["fetch", "keep-discarded", "reset", "restart"]
    assert git.head() == good and restarts(git) == [bad, good]
    assert daemon.status(APP)["deployed"] == good
    kept = run_git(git.clone, "for-each-ref", "--format=%(objectname)", "refs/ghhook/discarded/")
    assert kept == bad
    assert "strategy reset discards 1 commit(s)" in daemon.log()


def test_a_watched_change_deploys_and_an_unwatched_one_is_skipped(
    git: GitFixture, daemon: Daemon
) -> None:
    watched = commit_and_push(git, "src/lib/core.py", "x = 1\n")
    deploy = deployed(daemon, watched)
    assert (deploy["result"], deploy["changed"]) == ("deployed", ["src/lib/core.py"])

    unwatched = commit_and_push(git, "docs/index.md", "# docs\n")
    deploy = deployed(daemon, unwatched)
    assert (deploy["result"], deploy["changed"]) == ("skipped", [])
    assert [s["name"] for s in deploy["steps"]] == ["fetch", "reset"]
    status = daemon.status(APP)
    assert status["deployed"] == unwatched and status["head"] == unwatched
    assert [x["result"] for x in status["deploys"][:2]] == ["skipped", "deployed"]
    assert git.head() == unwatched and restarts(git) == [watched]


# -- an SSH key at start ---------------------------------------------------------


def ssh_config(git: GitFixture, tmp_path: Path, mode: int) -> Path:
    key = tmp_path / "deploy_key"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot a real key\n")
    key.chmod(mode)
    hosts = tmp_path / "known_hosts"
    hosts.write_text("github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH\n")
    (tmp_path / "secret").write_text("s\n")
    config = tmp_path / "ghhook.toml"
    config.write_text(
        f'listen = ["tcp:{free_port()}:interface=127.0.0.1"]\n'
        "admin_listen = []\n"
        f'state = "{tmp_path / "ghhook.sqlite3"}"\n'
        f'[defaults]\nsecret_file = "{tmp_path / "secret"}"\n'
        f'[apps.{APP}]\nrepo = "{git.clone}"\nrestart = "true"\n'
        f'ssh_key = "{key}"\nknown_hosts = "{hosts}"\n'
    )
    return config


def test_an_ssh_key_others_may_read_is_refused_at_start(git: GitFixture, tmp_path: Path) -> None:
    config = ssh_config(git, tmp_path, 0o644)
    done = run_twistd(["-n", "--pidfile=", "ghhook", "--config", str(config)], tmp_path)
    assert done.returncode != 0
    out = done.stdout + done.stderr
    assert "Traceback" not in out, out
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ghhook: "), done.stderr
    assert f"apps.{APP}.ssh_key" in lines[0]
    assert "is readable by others than its owner" in lines[0]
    assert f"chmod 600 {tmp_path / 'deploy_key'}" in lines[0]


def test_an_ssh_key_of_mode_600_is_taken(git: GitFixture, tmp_path: Path) -> None:
    config = ssh_config(git, tmp_path, 0o600)
    done = subprocess.run(
        [sys.executable, "-m", "ghhook", "check-config", str(config)],
        cwd=tmp_path,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert APP in done.stdout
