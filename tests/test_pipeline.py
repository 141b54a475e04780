"""Build, restart, health check and rollback with real processes and HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from ghhook.checks import child_environment
from ghhook.config import AppSettings
from ghhook.deployer import Deployer, Submission
from ghhook.health import HealthCheck
from ghhook.journal import Journal
from ghhook.runner import ProcessRunner
from tests.daemon import eventually, free_port
from tests.gitfixture import GitFixture
from tests.test_engine_git import Finished, reactor

SERVICE = str(Path(__file__).with_name("service.py"))


def get(url: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode().strip()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode().strip()
    except OSError:
        return 0, ""


class Pipeline:
    def __init__(self, git: GitFixture, **settings: Any) -> None:
        self.git = git
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.pidfile = git.root / "service.pid"
        self.finished = Finished()
        defaults: dict[str, Any] = {
            "restart": (sys.executable, SERVICE, "restart", str(self.pidfile), str(self.port)),
            "health_url": self.url + "/health",
            "health_timeout": 5.0,
        }
        defaults.update(settings)
        self.settings = AppSettings(
            repo=str(git.clone),
            git_dir=str(git.clone / ".git"),
            remote="origin",
            branch="main",
            git="git",
            timeout=60,
            env=child_environment(dict(os.environ)),
            **defaults,
        )
        self.deployer = Deployer(
            self.settings,
            ProcessRunner(reactor()),
            Journal(git.root / "journal.sqlite3").open(),
            reactor(),
            listeners=[self.finished],
            health=HealthCheck(reactor(), interval=0.1),
        )

    def start_service(self) -> None:
        subprocess.run(
            [sys.executable, SERVICE, "restart", str(self.pidfile), str(self.port)],
            cwd=self.git.clone,
            check=True,
            capture_output=True,
            timeout=30,
        )
        eventually(lambda: get(self.url)[0] == 200, what="the service")

    async def start(self) -> None:
        done = self.finished.next()
        self.deployer.start()
        assert await done == "unchanged"

    async def deploy(self, text: str) -> tuple[str, dict[str, Any]]:
        sha = self.git.commit_and_push(text)
        done = self.finished.next()
        assert isinstance(self.deployer.submit(sha, f"push-{sha[:7]}"), Submission)
        result = await done
        return result, self.deployer.journal.recent_deploys(1)[0]

    def stop_service(self) -> None:
        if self.pidfile.exists():
            try:
                os.kill(int(self.pidfile.read_text()), signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.deployer.journal.journal.close()


@pytest.fixture
def pipeline(git: GitFixture) -> Iterator[Pipeline]:
    p = Pipeline(git)
    p.start_service()
    yield p
    p.stop_service()


def steps(deploy: dict[str, Any]) -> list[str]:
    return [s["name"] for s in deploy["steps"]]


@pytest_twisted.ensureDeferred
async def test_healthy_deploy(pipeline: Pipeline) -> None:
    await pipeline.start()
    result, deploy = await pipeline.deploy("version 2\n")
    assert result == "deployed", deploy
    assert steps(deploy) == ["pull", "restart", "health"]
    assert get(pipeline.url) == (200, "version 2")


@pytest_twisted.ensureDeferred
async def test_unhealthy_commit_is_rolled_back_and_the_old_code_serves_again(
    pipeline: Pipeline,
) -> None:
    await pipeline.start()
    good = pipeline.git.head()
    result, deploy = await pipeline.deploy("broken\n")
    assert result == "rolled_back", deploy
    assert deploy["failed_step"] == "health" and "500" in deploy["error"]
    assert steps(deploy) == [
        "pull",
        "restart",
        "health",
        "rollback-reset",
        "rollback-restart",
        "rollback-health",
    ]
    assert pipeline.git.head() == good
    assert get(pipeline.url) == (200, "version 1")
    # The next good push deploys normally.
    result, deploy = await pipeline.deploy("version 3\n")
    assert result == "deployed", deploy
    assert get(pipeline.url) == (200, "version 3")


@pytest_twisted.ensureDeferred
async def test_failing_build_restarts_nothing(git: GitFixture) -> None:
    pipeline = Pipeline(git, builds=(("sh", "-c", "! grep -q broken app.txt"),))
    pipeline.start_service()
    try:
        await pipeline.start()
        service_pid = pipeline.pidfile.read_text()
        result, deploy = await pipeline.deploy("broken build\n")
        assert result == "rolled_back", deploy
        assert steps(deploy) == ["pull", "build", "rollback-reset", "rollback-build"]
        assert pipeline.pidfile.read_text() == service_pid, "the old service never stopped"
        assert get(pipeline.url) == (200, "version 1")
    finally:
        pipeline.stop_service()


@pytest_twisted.ensureDeferred
async def test_build_sees_the_deploy_in_its_environment(git: GitFixture) -> None:
    record = git.root / "build-env"
    script = f'echo "$GHHOOK_OLD_SHA $GHHOOK_NEW_SHA $GHHOOK_BRANCH $GHHOOK_DELIVERY $GHHOOK_REPO" > {record}'
    pipeline = Pipeline(git, builds=(("sh", "-c", script),))
    pipeline.start_service()
    try:
        await pipeline.start()
        old = git.head()
        result, _ = await pipeline.deploy("version 2\n")
        assert result == "deployed"
        new = git.head()
        assert record.read_text().split() == [old, new, "main", f"push-{new[:7]}", str(git.clone)]
    finally:
        pipeline.stop_service()


@pytest_twisted.ensureDeferred
async def test_signal_restart_reaches_the_process(git: GitFixture) -> None:
    pidfile = git.root / "counter.pid"
    counter = subprocess.Popen([sys.executable, SERVICE, "hup-counter", str(pidfile)])
    try:
        eventually(lambda: pidfile.exists() and pidfile.read_text().strip(), what="counter pid")
        pipeline = Pipeline(
            git,
            restart=None,
            health_url=None,
            restart_signal=int(signal.SIGHUP),
            restart_pidfile=str(pidfile),
        )
        await pipeline.start()
        result, deploy = await pipeline.deploy("version 2\n")
        assert result == "deployed", deploy
        eventually(lambda: pidfile.with_suffix(".hups").exists(), what="the HUP")
        assert "sent SIGHUP" in deploy["steps"][-1]["output"]
        pipeline.deployer.journal.journal.close()
    finally:
        counter.kill()
        counter.wait(timeout=10)


@pytest_twisted.ensureDeferred
async def test_missing_pidfile_is_a_failed_step_with_a_clear_message(git: GitFixture) -> None:
    pipeline = Pipeline(
        git,
        restart=None,
        health_url=None,
        restart_signal=int(signal.SIGHUP),
        restart_pidfile=str(git.root / "none.pid"),
    )
    await pipeline.start()
    result, deploy = await pipeline.deploy("version 2\n")
    assert result == "failed", "the rollback's restart cannot signal either"
    assert "cannot read the pidfile" in deploy["error"]
    assert deploy["failed_step"] == "restart"
    pipeline.deployer.journal.journal.close()
