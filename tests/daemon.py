"""Start the real ``twistd ghhook`` as a user would, and talk to it over HTTP."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ghhook.payloads import delivery_headers, encode, push_payload

_TICK = threading.Event()  # never set: its wait() is the poll interval
ROOT = Path(__file__).resolve().parent.parent
TWISTD = str(Path(sys.executable).parent / "twistd")
SECRET = b"e2e secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def eventually(predicate: Callable[[], Any], within: float = 20.0, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something true, for at most ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {within} s: {what or predicate}")
        _TICK.wait(0.02)  # the interval of a bounded poll


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting to be reaped does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GHHOOK_SECRET", "GITHUB_SECRET")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def run_twistd(
    args: Sequence[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run twistd to completion (for start-up errors)."""
    return subprocess.run(
        [TWISTD, *args],
        cwd=cwd,
        env=env or environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Daemon:
    """A ``twistd -n ghhook`` process on a loopback port."""

    def __init__(
        self,
        workdir: Path,
        repo: Path | None,
        *extra: str,
        env: dict[str, str] | None = None,
        twistd_args: Sequence[str] = (),
        listen_options: str = "",
        nofile: tuple[int, int] | None = None,
        config: str | None = None,
    ) -> None:
        """
        :param repo: the clone of the one app the single-repo options define.
        :param listen_options: appended to the hook's endpoint, e.g. ":backlog=1024".
        :param nofile: the (soft, hard) open-file limit twistd starts with.
        :param config: instead of ``repo``, a config file's text written to
            ``workdir/ghhook.toml``; its daemon keys (listen, admin_listen,
            state) are added here, and ``{secret_file}`` is filled in.
        """
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_port = free_port()
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        self.log_path = workdir / "ghhook.log"
        secret_file = workdir / "secret"
        secret_file.write_bytes(SECRET + b"\n")
        self.pidfile = workdir / "twistd.pid"
        self.config_path = workdir / "ghhook.toml"
        if config is not None:
            self.write_config(config)
            self.args = [
                "-n",
                "--pidfile",
                str(self.pidfile),
                *twistd_args,
                "ghhook",
                "--config",
                str(self.config_path),
                *extra,
            ]
        self.args = (
            self.args
            if config is not None
            else [
                "-n",
                "--pidfile",
                str(self.pidfile),
                *twistd_args,
                "ghhook",
                "--repo",
                str(repo),
                "--secret-file",
                str(secret_file),
                "--listen",
                f"tcp:{self.port}:interface=127.0.0.1{listen_options}",
                "--state",
                str(workdir / "ghhook.sqlite3"),
                "--admin-listen",
                f"tcp:{self.admin_port}:interface=127.0.0.1",
                *extra,
            ]
        )
        self.env = env or environment()
        self.nofile = nofile
        self.secret_file = secret_file
        self.process: subprocess.Popen[bytes] | None = None

    def _limit(self) -> None:
        """In the child, before exec: the open-file limit it starts with."""
        if self.nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, self.nofile)

    def start(self) -> Daemon:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [TWISTD, *self.args],
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=self._limit if self.nofile is not None else None,
            )
        eventually(self._answers, what=f"ghhook listening; log:\n{self.log()}")
        return self

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"twistd exited with {self.process.returncode}:\n{self.log()}")
        try:
            return self.get("/healthz")[0] == 200
        except OSError:
            return False

    def write_config(self, text: str) -> None:
        """Write the config file: ``text`` after this daemon's listeners and journal."""
        head = (
            f'listen = ["tcp:{self.port}:interface=127.0.0.1"]\n'
            f'admin_listen = ["tcp:{self.admin_port}:interface=127.0.0.1"]\n'
            f'state = "{self.workdir / "ghhook.sqlite3"}"\n'
        )
        body = text.replace("{secret_file}", str(self.workdir / "secret"))
        self.config_path.write_text(head + body)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        base: str | None = None,
    ) -> tuple[int, Any]:
        request = urllib.request.Request(
            (base or self.url) + path, data=body, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path)

    def overview(self) -> dict[str, Any]:
        """The admin listener's /status document: every app."""
        code, document = self.request("GET", "/status", base=self.admin_url)
        assert code == 200
        return dict(document)

    def status(self, app: str | None = None) -> dict[str, Any]:
        """One app's status document (``/apps/<name>``); the only app's by default."""
        if app is None:
            (only,) = self.overview()["apps"]
            app = only["name"]
        code, document = self.request("GET", f"/apps/{app}", base=self.admin_url)
        assert code == 200, (code, document)
        return dict(document)

    def deliver(
        self,
        event: str,
        payload: dict[str, Any],
        delivery: str | None = None,
        path: str = "/github",
        secret: bytes = SECRET,
    ) -> tuple[int, Any]:
        body = encode(payload)
        return self.request("POST", path, body, delivery_headers(body, secret, event, delivery))

    def push(
        self,
        after: str,
        before: str = "0" * 40,
        branch: str = "main",
        delivery: str | None = None,
        path: str = "/github",
        repository: str | None = None,
    ) -> tuple[int, Any]:
        payload = push_payload(
            after, before, ref=f"refs/heads/{branch}", repository=repository or "example/app"
        )
        return self.deliver("push", payload, delivery, path)

    def running(self) -> bool:
        assert self.process is not None
        return self.process.poll() is None

    def send(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            raise AssertionError(f"ghhook did not stop on signal {sig}:\n{self.log()}") from None


def ghhook(git: Any, *extra: str, twistd: tuple[str, ...] = ()) -> list[str]:
    """twistd's arguments for ghhook on ``git``'s clone, a free loopback port, no admin listener."""
    return [
        *twistd,
        "ghhook",
        "--repo",
        str(git.clone),
        "--listen",
        f"tcp:{free_port()}:interface=127.0.0.1",
        "--admin-listen",
        "none",
        *extra,
    ]
