"""The admin listener's HTTP contract, driven in memory through StubTreq."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from treq.testing import StubTreq
from twisted.python.failure import Failure

from ghhook.admin import RECENT_DEPLOYS, Admin, status_document
from ghhook.deployer import Deployer
from ghhook.journal import Journal, JournalError
from ghhook.metrics import Metrics
from ghhook.runner import StepResult
from tests.fakes import FakeRunner, fill_disk
from tests.test_deployer import A, B, C, Engine

#: The admin listener answers only Host names it knows: loopback ones by default.
URL = "http://127.0.0.1:9000"
#: What a pusher controls ends up in git's output and so in the journal.
HOSTILE = '<script>document.title="pwned"</script><img src=x onerror="document.title=1">'
T0 = 1_700_000_000.0


def fill(journal: Journal) -> dict[str, int]:
    """Three finished deploys (deployed, failed with hostile output, timeout) and a queued one."""
    ids = {}
    ids["deployed"] = journal.queue_deploy("push", "d-1", B, T0)
    journal.start_deploy(ids["deployed"], T0 + 1)
    journal.set_before(ids["deployed"], A)
    journal.add_step(
        ids["deployed"],
        1,
        StepResult("pull", ("git", "pull"), 0, None, False, T0 + 1, 1.5, "Fast-forward"),
    )
    journal.add_step(
        ids["deployed"],
        2,
        StepResult("restart", ("/bin/restart-app",), 0, None, False, T0 + 2.5, 0.25, ""),
    )
    journal.finish_deploy(
        ids["deployed"], "deployed", B, T0 + 3, subject="Fix the <b>login</b>", author="Ann"
    )

    ids["failed"] = journal.queue_deploy("push", "d-2", C, T0 + 10)
    journal.start_deploy(ids["failed"], T0 + 11)
    journal.set_before(ids["failed"], B)
    output = f"error: could not apply 1234567... {HOSTILE}\nCONFLICT (content): app.txt"
    journal.add_step(
        ids["failed"],
        1,
        StepResult("pull", ("git", "pull", "--rebase"), 1, None, False, T0 + 11, 0.5, output),
    )
    journal.finish_deploy(
        ids["failed"], "failed", C, T0 + 12, "pull", f"pull exited with 1: {HOSTILE}"
    )

    ids["timeout"] = journal.queue_deploy("catch-up", None, None, T0 + 20)
    journal.start_deploy(ids["timeout"], T0 + 20)
    journal.add_step(
        ids["timeout"],
        1,
        StepResult("pull", ("git", "pull"), None, 15, True, T0 + 20, 600.0, "Receiving objects"),
    )
    journal.finish_deploy(ids["timeout"], "timeout", None, T0 + 620, "pull", "pull timed out")

    ids["queued"] = journal.queue_deploy("push", "d-4", C, T0 + 700)
    return ids


class Client:
    """An admin resource over a real journal and engine, and an in-memory client."""

    def __init__(self, engine: Engine, admin: Admin | None = None) -> None:
        self.engine = engine
        self.metrics = Metrics()
        self.admin = admin or Admin(engine.deployer, engine.journal, self.metrics)
        self.stub = StubTreq(self.admin.resource())

    def request(self, method: str, path: str) -> tuple[int, Any, bytes]:
        answers: list[Any] = []
        d = self.stub.request(method, URL + path)
        d.addCallback(lambda r: answers.append(r) or self.stub.content(r))
        d.addBoth(answers.append)
        self.stub.flush()
        assert len(answers) == 2, f"{method} {path} got no answer"
        if isinstance(answers[1], Failure):
            answers[1].raiseException()
        return answers[0].code, answers[0].headers, answers[1]

    def json(self, method: str, path: str) -> tuple[int, Any, dict[str, Any]]:
        code, headers, body = self.request(method, path)
        assert headers.getRawHeaders("Content-Type") == ["application/json"]
        return code, headers, json.loads(body)

    def status(self) -> dict[str, Any]:
        code, headers, body = self.json("GET", "/status")
        assert code == 200
        assert headers.getRawHeaders("Cache-Control") == ["no-store"]
        return body


@pytest.fixture
def client(tmp_path: Path) -> Client:
    return Client(Engine(tmp_path))


def test_status_of_a_fresh_daemon(client: Client) -> None:
    assert client.status() == {
        "repo": client.engine.settings.repo,
        "branch": "main",
        "remote": "origin",
        "head": None,
        "deployed": None,
        "busy": False,
        "running": None,
        "pending": None,
        "journal_error": None,
        "deploys": [],
    }


def test_status_lists_deploys_newest_first_with_their_steps(client: Client) -> None:
    ids = fill(client.engine.journal)
    deploys = client.status()["deploys"]
    assert [d["id"] for d in deploys] == [
        ids["queued"],
        ids["timeout"],
        ids["failed"],
        ids["deployed"],
    ]
    assert [d["result"] for d in deploys] == ["queued", "timeout", "failed", "deployed"]
    deployed = deploys[3]
    assert deployed == {
        "id": ids["deployed"],
        "trigger": "push",
        "delivery": "d-1",
        "deliveries": 1,
        "sha": B,
        "before": A,
        "result": "deployed",
        "queued": "2023-11-14T22:13:20.000Z",
        "started": "2023-11-14T22:13:21.000Z",
        "finished": "2023-11-14T22:13:23.000Z",
        "duration": 2.0,
        "failed_step": None,
        "error": None,
        "subject": "Fix the <b>login</b>",
        "author": "Ann",
        "steps": [
            {
                "name": "pull",
                "argv": ["git", "pull"],
                "exit_code": 0,
                "signal": None,
                "timed_out": False,
                "started": "2023-11-14T22:13:21.000Z",
                "duration": 1.5,
                "output": "Fast-forward",
            },
            {
                "name": "restart",
                "argv": ["/bin/restart-app"],
                "exit_code": 0,
                "signal": None,
                "timed_out": False,
                "started": "2023-11-14T22:13:22.500Z",
                "duration": 0.25,
                "output": "",
            },
        ],
    }
    failed = deploys[2]
    assert failed["failed_step"] == "pull"
    assert failed["error"] == f"pull exited with 1: {HOSTILE}"
    assert failed["steps"][0]["output"].endswith("CONFLICT (content): app.txt")
    timeout = deploys[1]
    assert timeout["sha"] is None and timeout["trigger"] == "catch-up"
    assert timeout["duration"] == 600.0
    assert timeout["steps"][0]["timed_out"] is True and timeout["steps"][0]["signal"] == 15
    queued = deploys[0]
    assert queued["sha"] == C, "a deploy not yet finished shows the sha it targets"
    assert (queued["started"], queued["finished"], queued["duration"]) == (None, None, None)


def test_status_shows_the_running_and_the_pending_deploy(client: Client) -> None:
    engine = client.engine
    engine.deployer.start()
    first = client.status()
    assert first["busy"] is False
    assert first["pending"] == {
        "id": 1,
        "trigger": "catch-up",
        "target": None,
        "delivery": None,
        "pushes": 0,
        "forced": False,
    }
    engine.turn()  # the catch-up pull runs
    sub = engine.submit(B, "d-1")
    status = client.status()
    assert status["busy"] is True
    assert status["head"] == A
    assert status["running"] == {
        "id": 1,
        "trigger": "catch-up",
        "target": None,
        "delivery": None,
        "pushes": 0,
        "forced": False,
    }
    assert status["pending"] == {
        "id": sub.deploy,
        "trigger": "push",
        "target": B,
        "delivery": "d-1",
        "pushes": 1,
        "forced": False,
    }
    assert [(d["id"], d["result"]) for d in status["deploys"]] == [
        (sub.deploy, "queued"),
        (1, "running"),
    ]
    assert status["deploys"][1]["started"] is not None
    assert status["deploys"][1]["duration"] is None

    engine.runner.pull_to(A)  # catch-up done; the push's deploy starts next turn
    engine.turn()
    engine.runner.pull_to(B)
    engine.runner.outstanding.finish(0)  # the restart
    status = client.status()
    assert (status["busy"], status["running"], status["pending"]) == (False, None, None)
    assert (status["head"], status["deployed"]) == (B, B)
    assert [(d["id"], d["result"], d["sha"]) for d in status["deploys"]] == [
        (sub.deploy, "deployed", B),
        (1, "unchanged", A),
    ]


def test_deploys_survive_reopening_the_journal(tmp_path: Path, client: Client) -> None:
    fill(client.engine.journal)
    before = client.status()["deploys"]
    client.engine.journal.close()

    journal = Journal(tmp_path / "j.sqlite3").open()
    deployer = Deployer(client.engine.settings, FakeRunner(head=A), journal, client.engine.clock)
    again = Client(client.engine, Admin(deployer, journal, Metrics()))
    assert again.status()["deploys"] == before
    journal.close()


def test_status_shows_the_last_fifty_deploys(client: Client) -> None:
    journal = client.engine.journal
    for i in range(RECENT_DEPLOYS + 10):
        deploy = journal.queue_deploy("push", f"d-{i}", B, T0 + i)
        journal.finish_deploy(deploy, "unchanged", B, T0 + i)
    ids = [d["id"] for d in client.status()["deploys"]]
    assert ids == list(range(RECENT_DEPLOYS + 10, 10, -1))


def test_status_document_is_plain_json(client: Client) -> None:
    fill(client.engine.journal)
    document = status_document(client.engine.deployer, client.engine.journal)
    assert json.loads(json.dumps(document)) == document


def test_status_keeps_control_characters_as_they_were(client: Client) -> None:
    """The page shows them escaped; the JSON is faithful, and JSON escapes them itself."""
    journal = client.engine.journal
    deploy = journal.queue_deploy("push", "d-1", B, T0)
    output = "\x1b[31merror\x1b[0m: \x9b2J\x7f"
    journal.add_step(deploy, 1, StepResult("build", ("make",), 2, None, False, T0, 1.0, output))
    journal.finish_deploy(
        deploy, "failed", B, T0 + 1, "build", f"build exited with 2: {output}", subject=output
    )
    code, _, body = client.request("GET", "/status")
    assert code == 200
    assert b"\x1b" not in body and b"\\u001b[31m" in body
    [shown] = json.loads(body)["deploys"]
    assert shown["steps"][0]["output"] == output
    assert (shown["subject"], shown["error"]) == (output, f"build exited with 2: {output}")
    page = client.request("GET", "/")[2].decode("utf-8")
    assert "\x1b" not in page and '<span class="ctl">\\x1b</span>[31merror' in page


def test_page_is_html_with_a_strict_policy_and_escapes_the_journal(client: Client) -> None:
    fill(client.engine.journal)
    client.engine.deployer.head = B
    code, headers, body = client.request("GET", "/")
    assert code == 200
    assert headers.getRawHeaders("Content-Type") == ["text/html; charset=utf-8"]
    policy = headers.getRawHeaders("Content-Security-Policy")[0]
    assert "default-src 'none'" in policy and "script-src" not in policy
    assert headers.getRawHeaders("X-Content-Type-Options") == ["nosniff"]
    assert headers.getRawHeaders("Cache-Control") == ["no-store"]
    page = body.decode("utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert B in page
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;" in page


def test_head_of_the_page_sends_no_body(client: Client) -> None:
    code, _, body = client.request("HEAD", "/")
    assert code == 200
    assert body == b""


def test_metrics_are_prometheus_text(client: Client) -> None:
    client.metrics.delivery("push", "accepted")
    code, headers, body = client.request("GET", "/metrics")
    assert code == 200
    assert headers.getRawHeaders("Content-Type") == [CONTENT_TYPE_LATEST]
    text = body.decode("utf-8")
    assert 'ghhook_deliveries_total{event="push",outcome="accepted"} 1.0' in text
    for name in (
        "ghhook_deploys_total",
        "ghhook_deploy_duration_seconds",
        "ghhook_step_duration_seconds",
        "ghhook_deploy_in_progress",
        "ghhook_last_deploy_timestamp_seconds",
    ):
        assert f"# TYPE {name}" in text or f"# TYPE {name.removesuffix('_total')}" in text


def test_metrics_follow_the_engine(client: Client) -> None:
    engine = client.engine
    engine.deployer.listeners.append(client.metrics)
    engine.deployer.start()
    engine.turn()
    text = client.request("GET", "/metrics")[2].decode("utf-8")
    assert "ghhook_deploy_in_progress 1.0" in text
    engine.runner.pull_to(A)
    text = client.request("GET", "/metrics")[2].decode("utf-8")
    assert "ghhook_deploy_in_progress 0.0" in text
    assert 'ghhook_deploys_total{result="unchanged"} 1.0' in text
    assert 'ghhook_step_duration_seconds_count{step="pull"} 1.0' in text


def test_healthz(client: Client) -> None:
    assert client.json("GET", "/healthz")[::2] == (200, {"ok": True})


def test_healthz_and_status_say_why_while_the_journal_fails(client: Client) -> None:
    disk = fill_disk(client.engine.journal)
    disk.full = True
    with pytest.raises(JournalError):
        client.engine.journal.put("deployed", A)
    code, _, answer = client.json("GET", "/healthz")
    assert code == 503 and "disk is full" in answer["error"]
    assert "disk is full" in client.status()["journal_error"]
    disk.full = False
    client.engine.journal._last_probe = -1e18  # the next probe is due
    assert client.json("GET", "/healthz")[::2] == (200, {"ok": True})
    assert client.status()["journal_error"] is None


@pytest.mark.parametrize("path", ["/nothing", "/status/", "/github", "/metrics/x"])
def test_unknown_paths_are_404_json(client: Client, path: str) -> None:
    code, _, body = client.json("GET", path)
    assert (code, body) == (404, {"error": "nothing is served at this path"})


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
@pytest.mark.parametrize("path", ["/", "/status", "/metrics", "/healthz"])
def test_other_methods_are_405_json(client: Client, method: str, path: str) -> None:
    code, headers, body = client.json(method, path)
    assert code == 405
    assert body == {"error": f"method {method} is not allowed here; use GET"}
    assert headers.getRawHeaders("Allow") == ["GET, HEAD"]
    assert client.engine.journal.recent_deploys() == [], "nothing was started"
