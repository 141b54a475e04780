"""The hook's HTTP contract, driven in memory through StubTreq."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import pytest_twisted
import treq
from treq.testing import StubTreq

from ghhook.decision import Tracked
from ghhook.payloads import delivery_headers, encode, ping_payload, push_payload
from ghhook.signature import sign
from ghhook.site import make_site
from ghhook.web import Hook
from tests.fakes import fill_disk
from tests.test_deployer import A, B, C, Engine

SECRET = b"It's a Secret to Everybody"
URL = "http://ghhook.invalid/github"


class Client:
    """A hook over a real journal and engine, and an in-memory client."""

    def __init__(self, tmp_path: Path, **hook_args: Any) -> None:
        self.engine = Engine(tmp_path)
        self.hook = Hook(
            [b"old secret", SECRET],
            Tracked(branch="main", repository="example/app"),
            self.engine.deployer,
            self.engine.journal,
            **hook_args,
        )
        self.stub = StubTreq(self.hook.resource())

    def request(
        self, method: str, url: str = URL, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any], Any]:
        answers: list[Any] = []
        d = self.stub.request(method, url, data=body, headers=headers or {})
        d.addCallback(lambda r: answers.append(r) or self.stub.content(r))
        d.addCallback(answers.append)
        self.stub.flush()
        response, content = answers
        assert response.headers.getRawHeaders("Content-Type") == ["application/json"], (
            "every answer is JSON"
        )
        return response.code, json.loads(content), response

    def deliver(
        self, event: str, payload: dict[str, Any], delivery: str | None = None, **kw: Any
    ) -> tuple[int, dict[str, Any]]:
        body = encode(payload)
        headers = delivery_headers(body, SECRET, event, delivery)
        headers.update(kw.pop("headers", {}))
        code, answer, _ = self.request("POST", body=body, headers=headers)
        return code, answer


@pytest.fixture
def client(tmp_path: Path) -> Client:
    return Client(tmp_path)


def test_ping_is_answered(client: Client) -> None:
    code, answer = client.deliver("ping", ping_payload())
    assert code == 200
    assert answer == {"pong": True, "zen": "Keep it logically awesome.", "hook_id": 1}


def test_push_to_tracked_branch_is_accepted_before_the_deploy_runs(client: Client) -> None:
    code, answer = client.deliver("push", push_payload(B, before=A), delivery="d-1")
    assert code == 202
    assert answer == {"deploy": 1, "after": B, "delivery": "d-1", "coalesced": False}
    assert client.engine.runner.calls == [], "nothing runs before the answer is sent"
    client.engine.turn()
    assert client.engine.runner.names() == ["pull"]


def test_pushes_during_a_deploy_join_one_pending_deploy(client: Client) -> None:
    client.deliver("push", push_payload(B))
    client.engine.turn()
    _, second = client.deliver("push", push_payload(C))
    _, third = client.deliver("push", push_payload(C[:39] + "d"))
    assert second["deploy"] == third["deploy"] == 2
    assert (second["coalesced"], third["coalesced"]) == (False, True)


@pytest.mark.parametrize(
    ("event", "payload", "reason"),
    [
        ("push", push_payload(B, ref="refs/heads/feature"), "only 'main' deploys"),
        ("push", push_payload(B, ref="refs/tags/v1"), "tag push"),
        ("push", {**push_payload("0" * 40, before=B), "deleted": True}, "deleted"),
        ("push", push_payload(B, repository="someone/else"), "not 'example/app'"),
        ("issues", {"action": "opened"}, "only push does"),
    ],
)
def test_deliveries_that_deploy_nothing_are_ignored(
    client: Client, event: str, payload: dict[str, Any], reason: str
) -> None:
    code, answer = client.deliver(event, payload)
    assert code == 200
    assert reason in answer["ignored"]
    client.engine.turn()
    assert client.engine.deployer.pending is None and client.engine.runner.calls == []


def test_form_encoded_deliveries_are_read_from_the_payload_field(client: Client) -> None:
    body = urlencode({"payload": json.dumps(push_payload(B))}).encode()
    headers = delivery_headers(
        body, SECRET, "push", content_type="application/x-www-form-urlencoded"
    )
    code, answer, _ = client.request("POST", body=body, headers=headers)
    assert code == 202 and answer["after"] == B


def test_sha1_signature_alone_is_accepted(client: Client) -> None:
    body = encode(ping_payload())
    headers = {"X-GitHub-Event": "ping", "X-Hub-Signature": sign(body, SECRET, "sha1")}
    code, _, _ = client.request("POST", body=body, headers=headers)
    assert code == 200


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, 401),
        ({"X-Hub-Signature-256": "sha256=" + "0" * 64}, 403),
        ({"X-Hub-Signature-256": "md5=abc"}, 403),
        ({"X-Hub-Signature-256": "sha256=nothex"}, 403),
        ({"X-Hub-Signature-256": "garbage"}, 403),
        ({"X-Hub-Signature": "sha1=" + "0" * 40}, 403),
    ],
)
def test_unsigned_or_badly_signed_deliveries_are_refused_and_start_nothing(
    client: Client, headers: dict[str, str], code: int
) -> None:
    body = encode(push_payload(B))
    got, answer, _ = client.request(
        "POST", body=body, headers={"X-GitHub-Event": "push", "X-GitHub-Delivery": "x", **headers}
    )
    assert got == code
    assert "error" in answer and SECRET.decode() not in answer["error"]
    client.engine.turn()
    assert client.engine.runner.calls == []
    assert not client.engine.journal.seen_delivery("x")


def test_signature_is_checked_on_the_raw_body(client: Client) -> None:
    body = encode(push_payload(B))
    headers = delivery_headers(body, SECRET, "push")
    code, _, _ = client.request("POST", body=body + b" ", headers=headers)
    assert code == 403


@pytest.mark.parametrize(
    ("body", "content_type", "headers", "fragment"),
    [
        (b"{not json", "application/json", {}, "not valid JSON"),
        (b"[1, 2]", "application/json", {}, "not a JSON object"),
        (b"x=1", "application/x-www-form-urlencoded", {}, "no payload field"),
        (encode(push_payload("B" * 39)), "application/json", {}, "40-hex-digit"),
        (encode(push_payload(B)), "text/plain", {}, "not supported"),
        (encode(push_payload(B)), "application/json", {"X-GitHub-Event": ""}, "X-GitHub-Event"),
        (encode(push_payload(B)), "application/json", {"X-GitHub-Delivery": "a b"}, "delivery id"),
        (encode(push_payload(B)), "application/json", {"X-GitHub-Delivery": "-rf"}, "delivery id"),
        (encode(push_payload(B)), "application/json", {"X-GitHub-Delivery": "-"}, "delivery id"),
        (encode(push_payload(B)), "application/json", {"X-GitHub-Delivery": ".x"}, "delivery id"),
        (encode(push_payload(B)), "application/json", {"X-GitHub-Delivery": ":x"}, "delivery id"),
        (encode(push_payload(B)), "application/json", {"X-GitHub-Delivery": "a" * 101}, "id"),
    ],
)
def test_malformed_deliveries_get_400_with_one_sentence(
    client: Client, body: bytes, content_type: str, headers: dict[str, str], fragment: str
) -> None:
    all_headers = {**delivery_headers(body, SECRET, "push", content_type=content_type), **headers}
    code, answer, _ = client.request("POST", body=body, headers=all_headers)
    assert code == 400
    assert fragment in answer["error"] and "\n" not in answer["error"]
    client.engine.turn()
    assert client.engine.runner.calls == []


@pytest.mark.parametrize("delivery", ["0", "a-", "72d3162e-cc78-11e3-81ab-4c9367dc0958", "x" * 100])
def test_delivery_ids_starting_with_a_letter_or_digit_are_taken(
    client: Client, delivery: str
) -> None:
    code, answer = client.deliver("push", push_payload(B), delivery=delivery)
    assert code == 202 and answer["delivery"] == delivery


def test_redelivery_of_a_seen_delivery_id_runs_nothing(client: Client) -> None:
    assert client.deliver("push", push_payload(B), delivery="same")[0] == 202
    client.engine.turn()
    client.engine.runner.pull_to(B)
    client.engine.runner.outstanding.finish(0)
    code, answer = client.deliver("push", push_payload(B), delivery="same")
    assert (code, answer) == (200, {"duplicate": "same"})
    client.engine.turn()
    assert client.engine.runner.names() == ["pull", "restart"]


def test_push_of_the_deployed_sha_is_ignored(client: Client) -> None:
    client.engine.deployer.start()
    client.engine.turn()
    client.engine.runner.pull_to(A)
    code, answer = client.deliver("push", push_payload(A))
    assert code == 200 and "already deployed" in answer["ignored"]


def test_push_of_a_rolled_back_sha_is_ignored_and_says_so(client: Client) -> None:
    engine = client.engine
    engine.deployer.start()
    engine.turn()
    engine.runner.pull_to(B)
    engine.runner.outstanding.finish(3, "unit failed")  # restart fails
    engine.runner.head = A
    engine.runner.outstanding.finish(0)  # rollback-reset
    engine.runner.outstanding.finish(0)  # rollback-restart
    code, answer = client.deliver("push", push_payload(B), delivery="again")
    assert (code, answer) == (200, {"ignored": f"{B} was rolled back"})
    engine.turn()
    assert engine.runner.outstanding is None
    outcomes = engine.journal._db.execute(
        "SELECT outcome, deploy FROM deliveries WHERE delivery = 'again'"
    ).fetchall()
    assert [tuple(row) for row in outcomes] == [("ignored", None)]


def test_other_methods_get_405(client: Client) -> None:
    code, answer, response = client.request("GET")
    assert code == 405 and "use POST" in answer["error"]
    assert response.headers.getRawHeaders("Allow") == ["POST"]


def test_other_paths_get_404_and_healthz_answers(client: Client) -> None:
    assert client.request("POST", "http://ghhook.invalid/admin")[0] == 404
    assert client.request("GET", "http://ghhook.invalid/healthz")[:2] == (200, {"ok": True})


def test_hook_path_is_configurable(tmp_path: Path) -> None:
    client = Client(tmp_path, path="/hooks/deploy")
    body = encode(ping_payload())
    headers = delivery_headers(body, SECRET, "ping")
    assert client.request("POST", "http://x.invalid/hooks/deploy", body, headers)[0] == 200
    assert client.request("POST", URL, body, headers)[0] == 404


@pytest.mark.expect_logged_failure
def test_unexpected_failure_is_500_without_internals(client: Client) -> None:
    def explode(after: str, delivery: str | None) -> None:
        raise RuntimeError("secret internals /etc/passwd")

    client.engine.deployer.submit = explode  # type: ignore[method-assign]
    code, answer = client.deliver("push", push_payload(B))
    assert code == 500
    assert answer == {"error": "internal error; see ghhook's log"}


@pytest_twisted.ensureDeferred
async def test_oversized_bodies_get_413_over_real_http(tmp_path: Path) -> None:
    from twisted.internet import reactor

    client = Client(tmp_path)
    port = reactor.listenTCP(
        0, make_site(client.hook.resource(), max_body=1000), interface="127.0.0.1"
    )
    try:
        url = f"http://127.0.0.1:{port.getHost().port}/github"
        response = await treq.post(
            url, data=b"x" * 5000, headers={"X-GitHub-Event": "push"}
        ).addTimeout(30, reactor)
        assert response.code == 413
        assert "limit of 1000 bytes" in (await treq.json_content(response))["error"]

        def chunks() -> Any:
            from io import BytesIO

            return BytesIO(b"y" * 5000)

        # A body without Content-Length (chunked) is cut off the same way.
        from twisted.web.client import FileBodyProducer
        from twisted.web.iweb import UNKNOWN_LENGTH

        producer = FileBodyProducer(chunks(), readSize=512)
        producer.length = UNKNOWN_LENGTH  # sent chunked
        response = await treq.post(url, data=producer).addTimeout(30, reactor)
        assert response.code == 413
        await treq.content(response)
        response = await treq.post(url, data=encode(ping_payload())).addTimeout(30, reactor)
        assert response.code == 401, "a body under the cap is read and checked as usual"
        await treq.content(response)
    finally:
        await port.stopListening()


def test_bad_signature_warnings_are_rate_limited_per_peer(tmp_path: Path) -> None:
    from twisted.logger import globalLogPublisher

    now = [1000.0]
    client = Client(tmp_path, wall_clock=lambda: now[0])
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        body = encode(ping_payload())
        bad = {"X-GitHub-Event": "ping", "X-Hub-Signature-256": "sha256=" + "0" * 64}
        for _ in range(3):
            assert client.request("POST", body=body, headers=bad)[0] == 403
        now[0] += 11
        assert client.request("POST", body=body, headers=bad)[0] == 403
    finally:
        globalLogPublisher.removeObserver(events.append)
    warnings = [e for e in events if e.get("log_format", "").startswith("rejected a delivery")]
    assert [w["suppressed"] for w in warnings] == [0, 2]


def test_a_delivery_the_journal_cannot_record_is_answered_503_and_queues_nothing(
    client: Client,
) -> None:
    disk = fill_disk(client.engine.journal)
    disk.full = True
    code, answer = client.deliver("push", push_payload(B, before=A), delivery="d-1")
    assert code == 503 and "redeliver" in answer["error"]
    assert set(answer) == {"error"}
    client.engine.turn()
    assert client.engine.deployer.pending is None and client.engine.runner.calls == []
    code, health, _ = client.request("GET", "http://ghhook.invalid/healthz")
    assert code == 503 and health["ok"] is False and "disk is full" in health["error"]
    disk.full = False
    client.engine.journal._last_probe = -1e18  # the next probe is due
    assert client.request("GET", "http://ghhook.invalid/healthz")[:2] == (200, {"ok": True})
    code, answer = client.deliver("push", push_payload(B, before=A), delivery="d-1")
    assert code == 202, "the redelivery is taken: the refused one left no trace"


def test_a_forced_push_is_handed_to_the_engine_as_forced(client: Client) -> None:
    payload = {**push_payload(B, before=A), "forced": True}
    code, _ = client.deliver("push", payload)
    assert code == 202
    pending = client.engine.deployer.pending
    assert pending is not None and pending.forced
