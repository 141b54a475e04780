"""
End to end: an operator drives the real ``twistd ghhook`` with the real
``ghhook`` command, over TCP with a token and over the unix admin socket.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon import ROOT, Daemon, environment, eventually
from tests.gitfixture import GitFixture
from tests.gitfixture import git as run_git

pytestmark = pytest.mark.e2e

TOKEN = "an-operators-token-0123456789"


def ghhook(daemon: Daemon, *args: str, admin: str | None = None, token: bool = True) -> Any:
    """Run the ``ghhook`` command as an operator would; (exit status, stdout, stderr)."""
    env = environment()
    env.pop("GHHOOK_ADMIN", None)
    if token:
        env["GHHOOK_ADMIN_TOKEN"] = TOKEN
    done = subprocess.run(
        [sys.executable, "-m", "ghhook", *args, "--admin", admin or daemon.admin_url],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout, done.stderr


def ghhook_json(daemon: Daemon, *args: str, admin: str | None = None) -> Any:
    code, out, err = ghhook(daemon, *args, "--json", admin=admin)
    assert code == 0, (code, out, err)
    return json.loads(out)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Daemon, GitFixture]]:
    (tmp_path / "site").mkdir()
    git = GitFixture.create(tmp_path / "site")
    workdir = tmp_path / "daemon"
    workdir.mkdir()
    (workdir / "admin.tokens").write_text(f"alice:{TOKEN}\n")
    os.chmod(workdir / "admin.tokens", 0o600)
    restart = "git rev-parse HEAD >> ../restarts"
    config = (
        f'admin_token_file = "{workdir / "admin.tokens"}"\n'
        '[defaults]\nsecret_file = "{secret_file}"\ntimeout = 60\n\n'
        f'[apps.site]\nrepo = "{git.clone}"\nrepository = "me/site"\n'
        f'restart = ["sh", "-c", "{restart}"]\n'
    )
    daemon = Daemon(workdir, None, config=config)
    # The operators' socket beside the TCP listener.
    socket_path = workdir / "admin.sock"
    daemon.write_config(config)
    text = daemon.config_path.read_text().replace(
        "admin_listen = [", f'admin_listen = ["unix:{socket_path}:mode=600", ', 1
    )
    daemon.config_path.write_text(text)
    daemon.start()
    eventually(lambda: daemon.overview()["apps"][0]["last"] is not None, what="the catch-up")
    yield daemon, git
    daemon.stop()


def restarts(git: GitFixture) -> list[str]:
    path = git.root / "restarts"
    return path.read_text().split() if path.exists() else []


def push(daemon: Daemon, git: GitFixture, text: str) -> str:
    sha = git.commit("app.txt", text, text.strip())
    git.push()
    code, answer = daemon.push(sha, repository="me/site")
    assert code == 202, answer
    return sha


def test_a_post_without_a_token_is_403_and_says_how_to_enable(
    site: tuple[Daemon, GitFixture],
) -> None:
    daemon, _ = site
    request = urllib.request.Request(
        daemon.admin_url + "/apps/site/pause", data=b"{}", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 403
    assert "admin_token_file" in json.loads(refused.value.read())["error"]
    code, _, err = ghhook(daemon, "pause", "site", token=False)
    assert code == 1 and "Bearer" in err and TOKEN not in err
    assert daemon.overview()["apps"][0]["paused"] is None


def test_pause_during_a_burst_then_resume_deploys_only_the_newest(
    site: tuple[Daemon, GitFixture],
) -> None:
    daemon, git = site
    before = restarts(git)
    paused = ghhook_json(daemon, "pause", "site", "--reason", "incident 7")
    assert paused["paused"] is True and paused["by"] == "alice"
    shas = [push(daemon, git, f"burst {i}\n") for i in range(3)]
    status = daemon.overview()["apps"][0]
    assert status["paused"]["reason"] == "incident 7" and status["held"]["target"] == shas[-1]
    assert restarts(git) == before, "nothing released while paused"
    resumed = ghhook_json(daemon, "resume", "site")
    assert resumed["deploy"] == status["held"]["id"]
    eventually(lambda: restarts(git) == [*before, shas[-1]], what="the newest push released")
    assert run_git(git.clone, "rev-parse", "HEAD") == shas[-1]
    code, out, _ = ghhook(daemon, "status", "site")
    assert code == 0 and "deployed" in out


def test_rollback_to_the_previous_commit_then_resume_over_the_unix_socket(
    site: tuple[Daemon, GitFixture],
) -> None:
    daemon, git = site
    first = push(daemon, git, "good\n")
    eventually(lambda: daemon.status("site")["deployed"] == first, what="the good commit")
    second = push(daemon, git, "bad\n")
    eventually(lambda: daemon.status("site")["deployed"] == second, what="the bad commit")

    unix = f"unix:{daemon.workdir / 'admin.sock'}"
    code, out, err = ghhook(daemon, "rollback", "site", "--json", admin=unix, token=False)
    assert code == 0, (out, err)
    assert json.loads(out)["to"] == first, "the one deployed before the current"
    eventually(lambda: daemon.status("site")["deployed"] == first, what="the rollback")
    assert run_git(git.clone, "rev-parse", "HEAD") == first
    status = daemon.overview()["apps"][0]
    assert status["paused"]["reason"].startswith("rolled back to")
    assert status["paused"]["by"] == f"uid {os.getuid()}"
    last = daemon.status("site")["deploys"][0]
    assert last["trigger"] == "rollback" and last["result"] == "deployed"
    assert last["requested_by"] == f"uid {os.getuid()}"

    fixed = push(daemon, git, "fixed\n")
    assert daemon.overview()["apps"][0]["held"]["target"] == fixed
    ghhook_json(daemon, "resume", "site", admin=unix)
    eventually(lambda: daemon.status("site")["deployed"] == fixed, what="the fix after resume")


def test_a_forced_deploy_restarts_an_unchanged_head(site: tuple[Daemon, GitFixture]) -> None:
    daemon, git = site
    before = restarts(git)
    answer = ghhook_json(daemon, "deploy", "site", "--force")
    eventually(
        lambda: daemon.status("site")["deploys"][0]["result"] == "deployed",
        what="the forced deploy",
    )
    assert daemon.status("site")["deploys"][0]["id"] == answer["deploy"]
    assert len(restarts(git)) == len(before) + 1


def test_logs_follow_shows_a_slow_builds_lines_before_it_ends(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    git = GitFixture.create(tmp_path / "site")
    workdir = tmp_path / "daemon"
    workdir.mkdir()
    gate = tmp_path / "site" / "go"
    # The build says a line, then waits (at most 30 s) for the test to let it end.
    build = (
        "echo building step one; i=0;"
        f" while [ ! -e {gate} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done;"
        " echo building step two"
    )
    config = (
        '[defaults]\nsecret_file = "{secret_file}"\ntimeout = 60\n\n'
        f'[apps.site]\nrepo = "{git.clone}"\nrepository = "me/site"\n'
        f"build = [{json.dumps(['sh', '-c', build])}]\n"
        'restart = ["true"]\n'
    )
    daemon = Daemon(workdir, None, config=config).start()
    try:
        eventually(lambda: daemon.overview()["apps"][0]["last"] is not None, what="the catch-up")
        sha = git.commit("app.txt", "slow\n", "slow build")
        git.push()
        code, answer = daemon.push(sha, repository="me/site")
        assert code == 202, answer
        deploy = answer["deploys"][0]["deploy"]
        eventually(lambda: daemon.overview()["apps"][0]["busy"], what="the deploy running")
        follower = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ghhook",
                "logs",
                "site",
                str(deploy),
                "-f",
                "--admin",
                daemon.admin_url,
            ],
            cwd=ROOT,
            env=environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            seen: list[str] = []
            # Read in a thread: a blocking readline must not outlast the bounded wait.
            reader = threading.Thread(
                target=lambda: seen.extend(iter(follower.stdout.readline, "")), daemon=True
            )
            reader.start()
            eventually(
                lambda: any("building step one" in line for line in list(seen)),
                what=f"the build's first line, live; got {seen}",
            )
            assert daemon.overview()["apps"][0]["busy"], "shown before the build ended"
            gate.touch()
            assert follower.wait(timeout=60) == 0
            reader.join(timeout=10)
            assert any("building step two" in line for line in seen)
        finally:
            if follower.poll() is None:
                follower.kill()
                follower.wait(timeout=10)
        eventually(
            lambda: daemon.status("site")["deploys"][0]["result"] == "deployed",
            what="the deploy's end",
        )
    finally:
        daemon.stop()
