"""
End to end: the real ``twistd ghhook --config`` reports its deploys to a
forge's API and notifies a receiver, both served here over real HTTP; the
reports survive the API being down and ghhook being killed.

The API runs in a thread of the test (the standard library's server), so
that the test can wait on the daemon with bounded polls meanwhile.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import attrs
import pytest

from tests.daemon import Daemon, eventually, free_port
from tests.gitfixture import GitFixture

pytestmark = pytest.mark.e2e

TOKEN = "e2e forge token"
NOTIFY_SECRET = b"e2e notify secret"


@attrs.frozen
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class FakeApi:
    """GitHub's statuses and deployments, and a notification receiver, on one port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.calls: list[Received] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with api._lock:
                    api.calls.append(Received(self.path, headers, body))
                    deployments = sum(1 for c in api.calls if c.path.endswith("/deployments"))
                if self.path.startswith("/notify"):
                    code, answer = 200, {}
                elif headers.get("authorization") != f"Bearer {TOKEN}":
                    code, answer = 401, {"message": "Bad credentials"}
                else:
                    code, answer = 201, {"id": deployments}
                data = json.dumps(answer).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def received(self) -> list[Received]:
        with self._lock:
            return list(self.calls)

    def statuses(self, sha: str | None = None) -> list[tuple[str, str]]:
        """(state, description) of the commit statuses received, in order."""
        return [
            (c.json["state"], c.json["description"])
            for c in self.received()
            if "/statuses/" in c.path
            and "/deployments/" not in c.path
            and (sha is None or c.path.endswith(sha))
        ]


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi(free_port())
    fake.start()
    yield fake
    fake.stop()


def config(git: GitFixture, api: FakeApi, token_file: Path, notify_secret: Path) -> str:
    restart = "git rev-parse HEAD >> ../restarts"
    return (
        '[defaults]\nsecret_file = "{secret_file}"\ntimeout = 60\n\n'
        f"[apps.site]\n"
        f'repo = "{git.clone}"\n'
        'repository = "me/site"\n'
        f'restart = ["sh", "-c", "{restart}"]\n\n'
        "[apps.site.report]\n"
        f'token_file = "{token_file}"\n'
        f'api_url = "{api.url}"\n'
        "deployments = true\n"
        'public_url = "https://deploy.example.com"\n\n'
        "[[notify]]\n"
        f'url = "{api.url}/notify"\n'
        f'secret_file = "{notify_secret}"\n'
        'on = ["deployed", "rolled_back"]\n'
    )


def test_deploys_are_reported_and_survive_the_api_down_and_a_kill(
    tmp_path: Path, api: FakeApi
) -> None:
    (tmp_path / "site").mkdir()
    git = GitFixture.create(tmp_path / "site")
    token_file, notify_secret = tmp_path / "token", tmp_path / "notify.secret"
    token_file.write_text(TOKEN + "\n")
    notify_secret.write_bytes(NOTIFY_SECRET + b"\n")
    workdir = tmp_path / "daemon"
    workdir.mkdir()
    daemon = Daemon(workdir, None, config=config(git, api, token_file, notify_secret)).start()
    try:
        eventually(lambda: daemon.overview()["apps"][0]["last"] is not None, what="the catch-up")
        assert api.received() == [], "a catch-up reports nothing: no push asked for it"

        # A push: pending, a deployment in progress, then success everywhere.
        first = git.commit("app.txt", "version 2\n", "second")
        git.push()
        code, answer = daemon.push(first, repository="me/site")
        assert code == 202, answer
        eventually(lambda: len(api.received()) >= 6, what="the reports of the first deploy")
        calls = api.received()
        paths = [c.path for c in calls]
        assert paths == [
            f"/repos/me/site/statuses/{first}",
            "/repos/me/site/deployments",
            "/repos/me/site/deployments/1/statuses",
            f"/repos/me/site/statuses/{first}",
            "/repos/me/site/deployments/1/statuses",
            "/notify",
        ]
        assert api.statuses(first)[0] == ("pending", f"deploying {first[:7]}")
        state, description = api.statuses(first)[1]
        assert state == "success" and description.startswith(f"deployed {first[:7]} in ")
        assert [c.json["state"] for c in calls if "/deployments/1/" in c.path] == [
            "in_progress",
            "success",
        ]
        deploy_page = calls[3].json["target_url"]
        assert deploy_page.startswith("https://deploy.example.com/apps/site/deploys/")
        assert all(c.headers.get("authorization") == f"Bearer {TOKEN}" for c in calls[:5])
        notification = calls[5]
        expected = (
            "sha256=" + hmac.new(NOTIFY_SECRET, notification.body, hashlib.sha256).hexdigest()
        )
        assert notification.headers["x-ghhook-signature-256"] == expected
        assert notification.json["result"] == "deployed" and notification.json["sha"] == first
        assert "authorization" not in notification.headers

        # The API goes down: the deploy does not wait for it, the reports do.
        api.stop()
        second = git.commit("app.txt", "version 3\n", "third")
        git.push()
        assert daemon.push(second, repository="me/site")[0] == 202
        eventually(lambda: daemon.status("site")["deployed"] == second, what="the deploy, API down")
        waiting = eventually(
            lambda: daemon.overview()["apps"][0]["reports"]["pending"],
            what="reports waiting in the outbox",
        )
        assert waiting >= 1
        # Killed with reports unsent: they are in the journal, sent after the restart.
        assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
        api.start()
        daemon.start()
        eventually(
            lambda: [s for s, _ in api.statuses(second)] == ["pending", "success"],
            within=30,
            what=f"the second deploy's statuses after the restart; log:\n{daemon.log()}",
        )
        second_calls = [c.path for c in api.received()[6:]]
        assert second_calls[:3] == [
            f"/repos/me/site/statuses/{second}",
            "/repos/me/site/deployments",
            "/repos/me/site/deployments/2/statuses",
        ], "in order, the deployment's id filled in"
        eventually(
            lambda: daemon.overview()["apps"][0]["reports"]["pending"] == 0,
            what="the outbox empty",
        )
        assert TOKEN not in daemon.log()
        assert TOKEN not in (workdir / "ghhook.sqlite3").read_bytes().decode("latin-1")
    finally:
        daemon.stop()
