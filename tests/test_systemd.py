"""ghhook under systemd-socket-activate, with readiness on a NOTIFY_SOCKET."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.daemon import SECRET, TWISTD, Daemon, environment, eventually, free_port
from tests.gitfixture import GitFixture

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("systemd-socket-activate") is None,
        reason="systemd-socket-activate is not installed (Debian package: systemd)",
    ),
]


def test_socket_activated_daemon_deploys_a_push_and_notifies_readiness_and_stop(
    git: GitFixture, tmp_path: Path
) -> None:
    notify_path = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(notify_path))
    receiver.settimeout(30)
    port = free_port()
    argv = [
        "systemd-socket-activate",
        "--fdname=ghhook",
        "-l",
        f"127.0.0.1:{port}",
        "-E",
        "GHHOOK_SECRET",
        "-E",
        "NOTIFY_SOCKET",
        "-E",
        "PYTHONPATH",
        "-E",
        "PATH",
        TWISTD,
        "-n",
        "--pidfile=",
        "ghhook",
        "--listen",
        "systemd:domain=INET:index=0",
        "--admin-listen",
        "none",
        "--repo",
        str(git.clone),
        "--state",
        str(tmp_path / "ghhook.sqlite3"),
        "--restart-cmd",
        "sh -c 'git rev-parse HEAD >> ../restarts'",
    ]
    env = environment(GHHOOK_SECRET=SECRET.decode(), NOTIFY_SOCKET=str(notify_path))
    log = (tmp_path / "activate.log").open("wb")
    process = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        client = Daemon.__new__(Daemon)  # only its HTTP helpers, on the activated port
        client.url = f"http://127.0.0.1:{port}"
        sha = git.commit_and_push("socket activated\n")
        # The first connection starts twistd; it waits in the socket's backlog.
        code, answer = client.push(sha)
        assert code == 202, answer
        assert receiver.recv(4096) == b"READY=1"
        restarts = git.root / "restarts"
        eventually(lambda: restarts.exists() and restarts.read_text().split() == [sha])
        assert git.head() == sha
        process.send_signal(signal.SIGTERM)
        assert receiver.recv(4096) == b"STOPPING=1", "systemd hears of the stop"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()
        receiver.close()
        os.unlink(notify_path)
