"""The fake forge and the notification receiver, through real loopback HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool

from tests.fakeforge import (
    SECONDARY_RATE_LIMIT,
    TOKEN,
    FakeForge,
    NotifyReceiver,
    fake_forge,  # noqa: F401 (a fixture)
    notify_receiver,  # noqa: F401 (a fixture)
    signature_header,
)
from tests.stallserver import GUARD

SHA = "0123456789abcdef0123456789abcdef01234567"


def reactor() -> Any:
    from twisted.internet import reactor as r

    return r


@pytest.fixture
def pool() -> Iterator[HTTPConnectionPool]:
    """No keep-alive: nothing of the client outlives the test."""
    yield HTTPConnectionPool(reactor(), persistent=False)


async def post(
    pool: HTTPConnectionPool,
    url: str,
    body: Any,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, list[str]], Any]:
    """POST ``body`` (JSON, or bytes as they are); the status, headers and JSON answer."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent: dict[str | bytes, str | bytes] = {"Content-Type": "application/json"}
    sent.update(headers or {})
    response = await treq.post(url, data=data, headers=sent, pool=pool).addTimeout(GUARD, reactor())
    raw = await treq.content(response).addTimeout(GUARD, reactor())
    answered = {
        k.decode().lower(): [v.decode() for v in vs]
        for k, vs in response.headers.getAllRawHeaders()
    }
    return response.code, answered, json.loads(raw) if raw else None


#: forge prefix, path below it, the right auth header, a valid body, the success status
ENDPOINTS = [
    (
        "github",
        f"/repos/me/app/statuses/{SHA}",
        {"Authorization": f"Bearer {TOKEN}"},
        {"state": "success", "context": "ghhook"},
        201,
    ),
    (
        "gitea",
        f"/repos/me/app/statuses/{SHA}",
        {"Authorization": f"token {TOKEN}"},
        {"state": "success", "context": "ghhook"},
        201,
    ),
    (
        "gitlab",
        f"/projects/group%2Fsub%2Fapp/statuses/{SHA}",
        {"PRIVATE-TOKEN": TOKEN},
        {"state": "success", "name": "ghhook"},
        201,
    ),
    (
        "bitbucket",
        f"/repositories/ws/app/commit/{SHA}/statuses/build",
        {"Authorization": f"Bearer {TOKEN}"},
        {"state": "SUCCESSFUL", "key": "ghhook", "url": "https://ghhook.example/"},
        201,
    ),
    (
        "bitbucket-server",
        f"/rest/api/latest/projects/PRJ/repos/app/commits/{SHA}/builds",
        {"Authorization": f"Bearer {TOKEN}"},
        {"state": "SUCCESSFUL", "key": "ghhook", "url": "https://ghhook.example/"},
        204,
    ),
]

#: what each forge says to a wrong token
REFUSALS = {
    "github": {"message": "Bad credentials"},
    "gitea": {"message": "user does not exist"},
    "gitlab": {"message": "401 Unauthorized"},
    "bitbucket": {"type": "error"},
    "bitbucket-server": {},
}


@pytest.mark.parametrize(("forge", "path", "auth", "body", "ok"), ENDPOINTS)
@pytest_twisted.ensureDeferred
async def test_each_forge_takes_the_right_token_and_refuses_a_wrong_one(
    fake_forge: FakeForge,  # noqa: F811
    pool: HTTPConnectionPool,
    forge: str,
    path: str,
    auth: dict[str, str],
    body: dict[str, str],
    ok: int,
) -> None:
    url = fake_forge.api_url(forge) + path
    assert url == f"{fake_forge.url}/{forge}{path}"
    wrong = {name: value.replace(TOKEN, "stolen") for name, value in auth.items()}

    status, _, answer = await post(pool, url, body, auth)
    assert status == ok
    if ok == 201:
        assert answer["state"] == body["state"]
    refused, _, refusal = await post(pool, url, body, wrong)
    assert refused == 401
    assert refusal.items() >= REFUSALS[forge].items()
    if forge == "bitbucket-server":
        assert refusal["errors"][0]["message"]
    missing, _, _ = await post(pool, url, body)
    assert missing == 401

    first, second, third = fake_forge.calls
    assert (first.forge, first.method, first.body, first.status) == (forge, "POST", body, ok)
    assert first.path == path.replace("%2F", "/")
    assert first.raw_path == path
    assert first.headers[next(iter(auth)).lower()] == next(iter(auth.values()))
    assert first.headers["content-type"] == "application/json"
    assert first.at <= second.at <= third.at <= reactor().seconds()
    assert (second.status, third.status) == (401, 401)


@pytest_twisted.ensureDeferred
async def test_a_github_deployment_then_its_statuses_by_the_returned_id(
    fake_forge: FakeForge,  # noqa: F811
    pool: HTTPConnectionPool,
) -> None:
    api = fake_forge.api_url("github") + "/repos/me/app"
    auth = {"Authorization": f"Bearer {TOKEN}"}

    created, _, one = await post(pool, f"{api}/deployments", {"ref": SHA}, auth)
    _, _, two = await post(pool, f"{api}/deployments", {"ref": SHA, "environment": "staging"}, auth)
    assert created == 201
    assert (one["id"], two["id"]) == (1, 2)
    assert (one["environment"], two["environment"]) == ("production", "staging")

    status, _, answer = await post(
        pool, f"{api}/deployments/{two['id']}/statuses", {"state": "in_progress"}, auth
    )
    assert status == 201
    assert answer["state"] == "in_progress"
    assert isinstance(answer["id"], int)

    unknown, _, not_found = await post(
        pool, f"{api}/deployments/99/statuses", {"state": "success"}, auth
    )
    assert (unknown, not_found["message"]) == (404, "Not Found")
    other_repo = fake_forge.api_url("github") + f"/repos/me/other/deployments/{one['id']}/statuses"
    assert (await post(pool, other_repo, {"state": "success"}, auth))[0] == 404
    invalid, _, _ = await post(pool, f"{api}/deployments/1/statuses", {"state": "done"}, auth)
    assert invalid == 422

    assert [(c.path, c.status) for c in fake_forge.calls] == [
        ("/repos/me/app/deployments", 201),
        ("/repos/me/app/deployments", 201),
        ("/repos/me/app/deployments/2/statuses", 201),
        ("/repos/me/app/deployments/99/statuses", 404),
        ("/repos/me/other/deployments/1/statuses", 404),
        ("/repos/me/app/deployments/1/statuses", 422),
    ]


@pytest_twisted.ensureDeferred
async def test_github_enterprise_paths_are_served_under_api_v3(
    fake_forge: FakeForge,  # noqa: F811
    pool: HTTPConnectionPool,
) -> None:
    url = f"{fake_forge.url}/github/api/v3/repos/me/app/statuses/{SHA}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert (await post(pool, url, {"state": "pending"}, auth))[0] == 201
    (call,) = fake_forge.calls
    assert (call.forge, call.path) == ("github", f"/api/v3/repos/me/app/statuses/{SHA}")


@pytest_twisted.ensureDeferred
async def test_gitlab_takes_the_project_path_encoded_and_only_encoded(
    fake_forge: FakeForge,  # noqa: F811
    pool: HTTPConnectionPool,
) -> None:
    api = fake_forge.api_url("gitlab")
    auth = {"PRIVATE-TOKEN": TOKEN}
    body = {"state": "running"}

    encoded, _, answer = await post(
        pool, f"{api}/projects/group%2Fsub%2Fapp/statuses/{SHA}", body, auth
    )
    numeric, _, _ = await post(pool, f"{api}/projects/42/statuses/{SHA}", body, auth)
    raw, _, _ = await post(pool, f"{api}/projects/group/sub/app/statuses/{SHA}", body, auth)

    assert (encoded, numeric, raw) == (201, 201, 404)
    assert answer["status"] == "running"
    assert [(c.path, c.raw_path) for c in fake_forge.calls] == [
        (f"/projects/group/sub/app/statuses/{SHA}", f"/projects/group%2Fsub%2Fapp/statuses/{SHA}"),
        (f"/projects/42/statuses/{SHA}", f"/projects/42/statuses/{SHA}"),
        (f"/projects/group/sub/app/statuses/{SHA}", f"/projects/group/sub/app/statuses/{SHA}"),
    ]


@pytest_twisted.ensureDeferred
async def test_invalid_bodies_unknown_paths_and_methods_are_refused_and_recorded(
    fake_forge: FakeForge,  # noqa: F811
    pool: HTTPConnectionPool,
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status_url = fake_forge.api_url("github") + f"/repos/me/app/statuses/{SHA}"
    assert (await post(pool, status_url, {"state": "green"}, auth))[0] == 422
    assert (await post(pool, status_url, b"not json", auth))[0] == 422
    bitbucket = (
        fake_forge.api_url("bitbucket") + f"/repositories/ws/app/commit/{SHA}/statuses/build"
    )
    assert (await post(pool, bitbucket, {"state": "SUCCESSFUL"}, auth))[0] == 400  # no key, url
    assert (await post(pool, fake_forge.api_url("gitea") + "/nowhere", {}, auth))[0] == 404
    got = await treq.get(status_url, pool=pool).addTimeout(GUARD, reactor())
    await treq.content(got).addTimeout(GUARD, reactor())
    assert got.code == 405

    assert [(c.forge, c.method, c.status) for c in fake_forge.calls] == [
        ("github", "POST", 422),
        ("github", "POST", 422),
        ("bitbucket", "POST", 400),
        ("gitea", "POST", 404),
        ("github", "GET", 405),
    ]
    assert fake_forge.calls[1].body is None


@pytest_twisted.ensureDeferred
async def test_fail_next_answers_the_next_requests_with_what_it_is_told(
    fake_forge: FakeForge,  # noqa: F811
    pool: HTTPConnectionPool,
) -> None:
    url = fake_forge.api_url("github") + f"/repos/me/app/statuses/{SHA}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    fake_forge.fail_next(429, headers={"Retry-After": "2"}, count=2)
    fake_forge.fail_next(403, headers={"Retry-After": "7"}, body=SECONDARY_RATE_LIMIT)
    fake_forge.fail_next(500)

    first, first_headers, _ = await post(pool, url, {"state": "success"}, auth)
    second, second_headers, _ = await post(pool, url, {"state": "success"}, auth)
    limited, limited_headers, limit = await post(pool, url, {"state": "success"}, auth)
    broken, _, _ = await post(pool, url, {"state": "success"}, auth)
    fine, _, _ = await post(pool, url, {"state": "success"}, auth)

    assert (first, second, limited, broken, fine) == (429, 429, 403, 500, 201)
    assert first_headers["retry-after"] == second_headers["retry-after"] == ["2"]
    assert limited_headers["retry-after"] == ["7"]
    assert limit["message"].startswith("You have exceeded a secondary rate limit")
    assert [c.status for c in fake_forge.calls] == [429, 429, 403, 500, 201]


@pytest_twisted.ensureDeferred
async def test_down_answers_503_until_up(
    fake_forge: FakeForge,  # noqa: F811
    pool: HTTPConnectionPool,
) -> None:
    url = fake_forge.api_url("gitea") + f"/repos/me/app/statuses/{SHA}"
    auth = {"Authorization": f"token {TOKEN}"}
    fake_forge.down()
    assert (await post(pool, url, {"state": "success"}, auth))[0] == 503
    fake_forge.up()
    assert (await post(pool, url, {"state": "success"}, auth))[0] == 201


class Held(Protocol):
    """A client connection held open, to see the server drop it."""

    def __init__(self) -> None:
        self.lost: Deferred[None] = Deferred()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(None)


@pytest_twisted.ensureDeferred
async def test_stopped_refuses_connections_and_starts_again_on_the_same_port(
    fake_forge: FakeForge,  # noqa: F811
    pool: HTTPConnectionPool,
) -> None:
    url = fake_forge.api_url("github") + f"/repos/me/app/statuses/{SHA}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert (await post(pool, url, {"state": "pending"}, auth))[0] == 201
    endpoint = TCP4ClientEndpoint(reactor(), "127.0.0.1", fake_forge.port_number)
    held = await connectProtocol(endpoint, Held()).addTimeout(GUARD, reactor())

    await fake_forge.stop_listening()
    await held.lost.addTimeout(GUARD, reactor())  # open connections are dropped too
    with pytest.raises(ConnectionRefusedError):
        await post(pool, url, {"state": "failure"}, auth)

    await fake_forge.start_listening()
    assert url.startswith(fake_forge.url)
    assert (await post(pool, url, {"state": "success"}, auth))[0] == 201
    assert [c.body["state"] for c in fake_forge.calls] == ["pending", "success"]


@pytest_twisted.ensureDeferred
async def test_wait_for_fires_at_the_count_and_times_out_short_of_it(
    fake_forge: FakeForge,  # noqa: F811
    pool: HTTPConnectionPool,
) -> None:
    url = fake_forge.api_url("github") + f"/repos/me/app/statuses/{SHA}"
    auth: dict[str | bytes, str | bytes] = {"Authorization": f"Bearer {TOKEN}"}
    two = fake_forge.wait_for(2)
    treq_requests = [
        treq.post(url, json={"state": state}, headers=auth, pool=pool)
        for state in ("pending", "success")
    ]
    calls = await two
    assert [c.body["state"] for c in calls] == ["pending", "success"]
    for request in treq_requests:
        await treq.content(await request.addTimeout(GUARD, reactor()))
    assert len(await fake_forge.wait_for(1)) == 2  # already there: at once

    with pytest.raises(TimeoutError):
        await fake_forge.wait_for(3, timeout=0.05)
    assert not fake_forge._waiters


@pytest_twisted.ensureDeferred
async def test_the_receiver_verifies_the_signature_over_the_raw_body(
    notify_receiver: NotifyReceiver,  # noqa: F811
    pool: HTTPConnectionPool,
) -> None:
    body = b'{"app": "site", "result": "deployed",  "sha": "%s"}' % SHA.encode()
    good = signature_header(notify_receiver.secret, body)
    bad = signature_header(b"another secret", body)

    ok, _, _ = await post(pool, notify_receiver.hook_url, body, {"X-Ghhook-Signature-256": good})
    forged, _, _ = await post(pool, notify_receiver.hook_url, body, {"X-Ghhook-Signature-256": bad})
    unsigned, _, _ = await post(pool, notify_receiver.hook_url, body)
    resigned, _, _ = await post(
        pool, notify_receiver.hook_url, json.loads(body), {"X-Ghhook-Signature-256": good}
    )

    assert (ok, forged, unsigned, resigned) == (200, 403, 401, 403)
    calls = await notify_receiver.wait_for(4)
    assert [c.verified for c in calls] == [True, False, False, False]
    assert calls[0].body == body
    assert calls[0].json == {"app": "site", "result": "deployed", "sha": SHA}
    assert calls[0].headers["x-ghhook-signature-256"] == good


@pytest_twisted.ensureDeferred
async def test_start_and_stop_without_the_fixture() -> None:
    fake = await FakeForge.start(reactor(), token="other")
    receiver = await NotifyReceiver.start(reactor(), secret=b"s")
    try:
        assert fake.token == "other"
        assert fake.url != receiver.url
        pending = receiver.wait_for(1)
    finally:
        await fake.stop()
        await receiver.stop()
    assert pending.called  # cancelled by stop
    with pytest.raises(CancelledError):
        await pending
