"""
The admin listener's POSTs (deploy, rollback, pause, resume), in memory
through StubTreq: who may ask, what each answers, what the engine does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest
from twisted.python.failure import Failure

from ghhook.admin import Admin
from ghhook.config import AdminToken
from ghhook.metrics import Metrics
from tests.test_admin import URL, Client, Host

A, B = ("a" * 40, "b" * 40)
TOKEN = "a-long-enough-admin-token"


class Poster(Client):
    def post(
        self, path: str, body: dict[str, Any] | None = None, token: str | None = TOKEN
    ) -> tuple[int, dict[str, Any]]:
        answers: list[Any] = []
        headers = {"Authorization": [f"Bearer {token}"]} if token is not None else {}
        data = json.dumps(body).encode() if body is not None else b""
        d = self.stub.request("POST", URL + path, headers=headers, data=data)
        d.addCallback(lambda r: answers.append(r) or self.stub.content(r))
        d.addBoth(answers.append)
        self.stub.flush()
        assert len(answers) == 2, f"POST {path} got no answer"
        if isinstance(answers[1], Failure):
            answers[1].raiseException()
        assert answers[0].headers.getRawHeaders("Content-Type") == ["application/json"]
        return answers[0].code, json.loads(answers[1])


def poster(host: Host, tokens: tuple[AdminToken, ...]) -> Poster:
    host.engines.settings = attrs.evolve(host.settings, admin_tokens=tokens)
    return Poster(host, Admin(host.engines, host.journal, Metrics()))


@pytest.fixture
def host(tmp_path: Path) -> Host:
    host = Host(tmp_path, names=("blog",))
    host.engines.start()
    host.turn()
    host.runners["blog"].pull_to(A)
    return host


@pytest.fixture
def client(host: Host) -> Poster:
    return poster(host, (AdminToken("alice", TOKEN.encode()),))


def test_without_tokens_or_a_unix_socket_a_post_is_403_saying_how_to_enable(host: Host) -> None:
    client = poster(host, ())
    code, body = client.post("/apps/blog/pause", {"reason": "x"})
    assert code == 403
    assert "unix:" in body["error"] and "admin_token_file" in body["error"]
    assert host.engine("blog").paused is None


@pytest.mark.parametrize("token", [None, "wrong-token-of-the-same-size", ""])
def test_a_missing_or_wrong_token_is_403_and_changes_nothing(
    client: Poster, host: Host, token: str | None
) -> None:
    code, body = client.post("/apps/blog/pause", {}, token=token)
    assert code == 403 and TOKEN not in json.dumps(body)
    assert host.engine("blog").paused is None


def test_pause_and_resume_with_a_token_record_its_label(client: Poster, host: Host) -> None:
    code, body = client.post("/apps/blog/pause", {"reason": "incident 42"})
    assert code == 200
    assert body["app"] == "blog" and body["paused"] is True
    assert body["reason"] == "incident 42" and body["by"] == "alice"
    status = client.status()["apps"][0]
    assert status["paused"]["reason"] == "incident 42" and status["paused"]["by"] == "alice"
    pushed = host.submit("blog", B, "d-1")
    assert pushed.held
    assert client.status()["apps"][0]["held"]["id"] == pushed.deploy
    code, body = client.post("/apps/blog/resume")
    assert (code, body) == (200, {"app": "blog", "paused": False, "deploy": pushed.deploy})
    assert client.status()["apps"][0]["paused"] is None


def test_deploy_answers_202_and_records_a_manual_deploy(client: Poster, host: Host) -> None:
    code, body = client.post("/apps/blog/deploy", {"force": True})
    assert code == 202 and body["app"] == "blog" and body["coalesced"] is False
    pending = client.status()["apps"][0]["pending"]
    assert pending["trigger"] == "manual" and pending["force"] is True
    assert pending["requested_by"] == "alice"


def test_a_rollback_needs_an_earlier_release_or_a_target(client: Poster) -> None:
    code, body = client.post("/apps/blog/rollback", {})
    assert code == 400 and "no earlier release" in body["error"]
    code, body = client.post("/apps/blog/rollback", {"to": "abc"})
    assert code == 400 and "40-hex-digit" in body["error"]


def test_a_rollback_to_a_commit_it_deployed_is_queued_and_pauses(
    client: Poster, host: Host
) -> None:
    host.submit("blog", B, "d-1")
    host.turn()
    host.runners["blog"].pull_to(B)
    code, body = client.post("/apps/blog/rollback", {})
    assert code == 202 and body["to"] == A
    status = client.status()["apps"][0]
    assert status["paused"]["by"] == "alice" and status["pending"]["trigger"] == "rollback"


@pytest.mark.parametrize(
    ("body", "sentence"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "not a JSON object"),
    ],
)
def test_a_body_that_is_no_json_object_is_400(client: Poster, body: bytes, sentence: str) -> None:
    answers: list[Any] = []
    d = client.stub.request(
        "POST", URL + "/apps/blog/pause", headers={"Authorization": [f"Bearer {TOKEN}"]}, data=body
    )
    d.addCallback(lambda r: answers.append(r) or client.stub.content(r))
    d.addBoth(answers.append)
    client.stub.flush()
    assert answers[0].code == 400 and sentence in json.loads(answers[1])["error"]


def test_an_unknown_app_is_404(client: Poster) -> None:
    code, body = client.post("/apps/nothing/deploy", {})
    assert code == 404 and "no app" in body["error"]


def test_a_pause_reason_is_bounded(client: Poster) -> None:
    code, _ = client.post("/apps/blog/pause", {"reason": "x" * 201})
    assert code == 400


def test_a_get_on_a_post_route_is_405_saying_post(client: Poster) -> None:
    """Found by a review: the admin's 405 named GET for its POST-only routes."""
    code, headers, body = client.json("GET", "/apps/blog/pause")
    assert code == 405 and body["error"].endswith("use POST")
    assert headers.getRawHeaders("Allow") == ["POST"]
