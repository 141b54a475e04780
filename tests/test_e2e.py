"""End to end: the real ``twistd ghhook`` against a real bare remote and clone."""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

import pytest

from tests.daemon import Daemon, alive, environment, eventually, run_twistd
from tests.gitfixture import GitFixture
from tests.gitfixture import git as run_git

pytestmark = pytest.mark.e2e

RESTART = "sh -c 'git rev-parse HEAD >> ../restarts'"


def restarts(git: GitFixture) -> list[str]:
    path = git.root / "restarts"
    return path.read_text().split() if path.exists() else []


@pytest.fixture
def daemon(git: GitFixture, tmp_path: Path):
    d = Daemon(tmp_path, git.clone, "--restart-cmd", RESTART).start()
    eventually(lambda: caught_up(d), what="the catch-up at start")
    yield d
    d.stop()


def caught_up(d: Daemon) -> bool:
    """
    Whether the catch-up at start is over: a push made before then may be
    pulled and released by the catch-up itself, not by its own deploy.
    """
    deploys = d.status()["deploys"]
    return bool(deploys) and deploys[-1]["result"] not in ("queued", "running")


def test_signed_push_pulls_and_restarts(git: GitFixture, daemon: Daemon) -> None:
    sha = git.commit_and_push("version 2\n")
    code, answer = daemon.push(sha, delivery="e2e-1")
    assert code == 202 and answer["after"] == sha
    eventually(lambda: restarts(git) == [sha], what="the restart after the pull")
    assert git.head() == sha
    assert (git.clone / "app.txt").read_text() == "version 2\n"
    eventually(lambda: f"deployed: {sha}" in daemon.log(), what="the deployed sha in the log")
    assert "e2e secret" not in daemon.log()
    status = eventually(lambda: (s := daemon.status())["deploys"][0]["result"] == "deployed" and s)
    assert status["head"] == sha and status["busy"] is False
    latest = status["deploys"][0]
    assert latest["sha"] == sha and latest["delivery"] == "e2e-1"
    assert [step["name"] for step in latest["steps"]] == ["pull", "restart"]
    assert daemon.get("/status")[0] == 404, "the public listener serves only the hook and /healthz"


def test_unsigned_and_ignored_deliveries_over_real_http(git: GitFixture, daemon: Daemon) -> None:
    assert daemon.request("POST", "/github", b"{}", {"X-GitHub-Event": "push"})[0] == 401
    assert daemon.deliver("ping", {"zen": "z", "hook_id": 7})[1]["pong"] is True
    sha = git.commit_and_push("elsewhere\n")
    code, answer = daemon.push(sha, branch="feature")
    assert code == 200 and "feature" in answer["ignored"]
    assert daemon.get("/github")[0] == 405
    assert daemon.get("/nothing")[0] == 404


def test_requests_are_answered_while_a_slow_pull_runs(git: GitFixture, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    slow = tmp_path / "slow-upload-pack"
    slow.write_text(
        f'#!/bin/sh\nwhile [ ! -e "{gate}" ]; do sleep 0.05; done\nexec git-upload-pack "$@"\n'
    )
    slow.chmod(0o755)
    git_config = ("config", "remote.origin.uploadpack", str(slow))
    run_git(git.clone, *git_config)
    d = Daemon(tmp_path, git.clone, "--restart-cmd", RESTART).start()
    try:
        # The catch-up pull is now held at the gate: the pull is running.
        eventually(lambda: "step pull started" in d.log(), what="the pull to start")
        sha = git.commit_and_push("v3\n")
        assert d.push(sha)[0] == 202
        for _ in range(5):
            assert d.get("/healthz")[0] == 200
            assert d.deliver("ping", {"zen": "z"})[0] == 200
        assert git.head() != sha, "the pull is still held while all of that was answered"
        gate.touch()
        eventually(lambda: git.head() == sha, what="the deploy after the gate opened")
        eventually(lambda: restarts(git) == [sha])
    finally:
        gate.touch()
        d.stop()


def test_sigterm_stops_cleanly_and_removes_the_pidfile(git: GitFixture, tmp_path: Path) -> None:
    d = Daemon(tmp_path, git.clone).start()
    pidfile = tmp_path / "twistd.pid"
    assert pidfile.read_text().strip() == str(d.process.pid)
    # twistd re-raises the stopping signal once shut down, as systemd expects.
    assert d.stop() in (0, -signal.SIGTERM)
    assert not pidfile.exists()
    assert "Server Shut Down" in d.log()


def test_daemonized_with_pidfile_and_logfile(git: GitFixture, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s\n")
    port_daemon = Daemon(tmp_path, git.clone)  # for its port and URL helpers
    args = [
        "--pidfile",
        "ghhook.pid",
        "--logfile",
        "ghhook-daemon.log",
        "--rundir",
        str(tmp_path),
        "ghhook",
        "--repo",
        str(git.clone),
        "--secret-file",
        str(tmp_path / "secret"),
        "--listen",
        f"tcp:{port_daemon.port}:interface=127.0.0.1",
        "--admin-listen",
        "none",
    ]
    done = run_twistd(args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    pidfile = tmp_path / "ghhook.pid"
    pid = int(eventually(lambda: pidfile.exists() and pidfile.read_text().strip(), what="pidfile"))
    try:
        eventually(lambda: _answers(port_daemon), what="the daemon listening")
        assert (tmp_path / "ghhook.sqlite3").exists(), "the journal sits next to the pidfile"
    finally:
        os.kill(pid, signal.SIGTERM)
    eventually(lambda: not pidfile.exists(), what="pidfile removed at stop")
    assert "Server Shut Down" in (tmp_path / "ghhook-daemon.log").read_text()


def _answers(daemon: Daemon) -> bool:
    try:
        return daemon.get("/healthz")[0] == 200
    except OSError:
        return False


@pytest.mark.parametrize(
    ("args", "env", "fragment"),
    [
        (["--repo", "/nonexistent/app"], {"GHHOOK_SECRET": "s"}, "/nonexistent/app"),
        (["--repo", "{tmp}"], {"GHHOOK_SECRET": "s"}, "not a git work tree"),
        (["--repo", "{clone}"], {}, "GHHOOK_SECRET"),
        (["--repo", "{clone}", "--secret-file", "/nonexistent/secret"], {}, "/nonexistent/secret"),
        (
            ["--repo", "{clone}", "--restart-cmd", "no-such-program-x"],
            {"GHHOOK_SECRET": "s"},
            "no-such-program-x",
        ),
        (["--repo", "{clone}", "--listen", "bogus:1"], {"GHHOOK_SECRET": "s"}, "bogus:1"),
        (["--repo", "{clone}", "--remote", "upstream"], {"GHHOOK_SECRET": "s"}, "upstream"),
        (["--repo", "{clone}", "--timeout", "-1"], {"GHHOOK_SECRET": "s"}, "--timeout"),
        (["--repo", "{clone}", "--branch", "prod"], {"GHHOOK_SECRET": "s"}, "on branch main"),
        (["--repo", "{clone}", "--keep-deploys", "0"], {"GHHOOK_SECRET": "s"}, "--keep-deploys"),
        (["--repo", "{clone}", "--state", "{tmp}"], {"GHHOOK_SECRET": "s"}, "is a directory"),
        (
            ["--repo", "{clone}", "--state", "/nonexistent/dir/j.sqlite3"],
            {"GHHOOK_SECRET": "s"},
            "no such directory: /nonexistent/dir",
        ),
        (
            ["--repo", "{clone}", "--state", "{tmp}/notes.txt"],
            {"GHHOOK_SECRET": "s"},
            "not an SQLite database",
        ),
        (["--repo", "{clone}"], {"GITHUB_SECRET": "s", "X": "--bad-port"}, None),
    ],
)
def test_bad_settings_exit_with_one_clear_line(
    git: GitFixture, tmp_path: Path, args: list[str], env: dict[str, str], fragment: str | None
) -> None:
    args = [a.format(tmp=tmp_path, clone=git.clone) for a in args]
    (tmp_path / "notes.txt").write_text("not a journal\n" * 100)
    if fragment is None:
        # The tutorial's GITHUB_SECRET suffices; an occupied port then fails the start.
        import socket

        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            done = run_twistd(
                [
                    "-n",
                    "--pidfile=",
                    "ghhook",
                    *args,
                    "--listen",
                    f"tcp:{port}:interface=127.0.0.1",
                    "--admin-listen",
                    "none",
                ],
                tmp_path,
                environment(**env),
            )
        assert done.returncode != 0
        output = done.stdout + done.stderr
        assert "Address already in use" in output and "Traceback" not in output, output
        assert len(output.strip().splitlines()) == 1, output
        return
    done = run_twistd(
        ["-n", "--pidfile=", "ghhook", *args, "--admin-listen", "none"],
        tmp_path,
        environment(**env),
    )
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert fragment in output and "Traceback" not in output, output
    assert len(output.strip().splitlines()) == 1, output


def test_help_lists_every_option_with_defaults(tmp_path: Path) -> None:
    done = run_twistd(["ghhook", "--help"], tmp_path)
    for option in (
        "--repo",
        "--listen",
        "--path",
        "--secret-file",
        "--branch",
        "--remote",
        "--github-repo",
        "--restart-cmd",
        "--timeout",
        "--state",
        "--keep-deploys",
        "--admin-host",
    ):
        assert option in done.stdout
    assert "/github" in done.stdout and "origin" in done.stdout and "tcp:8000" in done.stdout
    assert "ghhook" in run_twistd(["--help"], tmp_path).stdout


def _gated_remote(git: GitFixture, tmp_path: Path) -> Path:
    """Make the clone's fetches wait until the returned gate file exists."""
    gate = tmp_path / "gate"
    slow = tmp_path / "gated-upload-pack"
    slow.write_text(
        f'#!/bin/sh\necho $$ > "{tmp_path}/upload-pack.pid"\n'
        f'while [ ! -e "{gate}" ]; do sleep 0.05; done\nexec git-upload-pack "$@"\n'
    )
    slow.chmod(0o755)
    run_git(git.clone, "config", "remote.origin.uploadpack", str(slow))
    return gate


def test_sigkill_mid_deploy_then_restart_catches_up(git: GitFixture, tmp_path: Path) -> None:
    gate = _gated_remote(git, tmp_path)
    first = Daemon(tmp_path, git.clone, "--restart-cmd", RESTART).start()
    eventually(lambda: (tmp_path / "upload-pack.pid").exists(), what="the catch-up fetch")
    sha = git.commit_and_push("v2\n")
    assert first.push(sha)[0] == 202
    orphan = int((tmp_path / "upload-pack.pid").read_text())
    first.stop(signal.SIGKILL)
    assert alive(orphan), "the pull's process group outlives a SIGKILLed daemon"
    (tmp_path / "upload-pack.pid").unlink()

    second = Daemon(tmp_path, git.clone, "--restart-cmd", RESTART).start()
    try:
        eventually(lambda: not alive(orphan), what="the orphaned pull killed at start")
        eventually(lambda: (tmp_path / "upload-pack.pid").exists(), what="the new catch-up fetch")
        gate.touch()
        eventually(lambda: restarts(git) == [sha], what="one restart for the missed push")
        assert git.head() == sha
        status = second.log()
        assert "cut off by the previous stop" in status
    finally:
        gate.touch()
        second.stop()


def _journal_result(state: Path, deploy: int) -> str:
    db = sqlite3.connect(state)
    try:
        row = db.execute("SELECT result FROM deploys WHERE id = ?", (deploy,)).fetchone()
    finally:
        db.close()
    return str(row[0])


@pytest.mark.parametrize("sig", [signal.SIGQUIT, signal.SIGUSR2], ids=["SIGQUIT", "SIGUSR2"])
def test_sigquit_and_sigusr2_stop_cleanly_during_a_slow_build(
    git: GitFixture, tmp_path: Path, sig: signal.Signals
) -> None:
    build_pid = tmp_path / "build.pid"
    build = f"sh -c 'echo $$ > {build_pid}; exec sleep 600'"
    d = Daemon(tmp_path, git.clone, "--build-cmd", build, "--restart-cmd", RESTART).start()
    try:
        eventually(lambda: caught_up(d), what="the catch-up at start")
        sha = git.commit_and_push("v2\n")
        code, answer = d.push(sha)
        assert code == 202
        pid = int(eventually(lambda: build_pid.exists() and build_pid.read_text().strip()))
        assert d.status()["deploys"][0]["result"] == "running"
    finally:
        code = d.stop(sig)
    assert code == 0, d.log()
    assert f"received {sig.name}, shutting down" in d.log()
    assert not alive(pid), "the build is stopped with the daemon"
    assert not d.pidfile.exists()
    result = _journal_result(tmp_path / "ghhook.sqlite3", answer["deploys"][0]["deploy"])
    assert result not in ("running", "queued"), result
    assert restarts(git) == [], "a stopped deploy restarts nothing"


def test_sighup_and_sigusr1_leave_it_running(git: GitFixture, tmp_path: Path) -> None:
    d = Daemon(tmp_path, git.clone).start()
    try:
        d.send(signal.SIGHUP)
        eventually(lambda: "received SIGHUP: nothing to reload" in d.log(), what="the HUP line")
        # twistd -n logs to stdout here, so there is no log file to reopen.
        d.send(signal.SIGUSR1)
        eventually(lambda: "received SIGUSR1" in d.log(), what="the USR1 line")
        assert d.running()
        assert d.get("/healthz")[0] == 200
    finally:
        assert d.stop() in (0, -signal.SIGTERM)


def test_sigusr1_still_rotates_twistds_logfile(git: GitFixture, tmp_path: Path) -> None:
    logfile = tmp_path / "twistd.log"
    d = Daemon(tmp_path, git.clone, twistd_args=["--logfile", str(logfile)]).start()
    try:
        d.send(signal.SIGUSR1)
        eventually(lambda: Path(f"{logfile}.1").exists(), what="the rotated log file")
        assert d.running()
    finally:
        d.stop()
    assert "received SIGUSR1" not in logfile.read_text() + Path(f"{logfile}.1").read_text()


def test_admin_host_names_the_hosts_the_admin_listener_answers(
    git: GitFixture, tmp_path: Path
) -> None:
    d = Daemon(tmp_path, git.clone, "--admin-host", "ghhook.example").start()
    try:
        ok = d.request("GET", "/healthz", base=d.admin_url, headers={"Host": "ghhook.example"})
        assert ok == (200, {"ok": True})
        code, answer = d.request(
            "GET", "/status", base=d.admin_url, headers={"Host": "rebound.example"}
        )
        assert code == 421 and "error" in answer
    finally:
        d.stop()
    done = run_twistd(
        ["-n", "--pidfile=", "ghhook", "--repo", str(git.clone), "--admin-host", "a b"],
        tmp_path,
        environment(GHHOOK_SECRET="s"),
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "--admin-host a b" in output
    assert len(output.strip().splitlines()) == 1 and "Traceback" not in output, output
