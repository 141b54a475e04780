"""The hook's HTTP contract, driven in memory through StubTreq."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import attrs
import pytest
import pytest_twisted
import treq
from treq.testing import StubTreq
from twisted.internet.task import Clock

from ghhook.config import AppSettings, DaemonSettings
from ghhook.deployer import Deployer
from ghhook.engines import Engines, Slots
from ghhook.journal import Journal
from ghhook.payloads import delivery_headers, encode, ping_payload, push_payload
from ghhook.signature import sign
from ghhook.site import make_site
from ghhook.web import Hook
from tests.fakes import FakeRunner, fill_disk

A, B, C = ("a" * 40, "b" * 40, "c" * 40)
SECRET = b"It's a Secret to Everybody"
URL = "http://ghhook.invalid/github"


def app_settings(
    tmp_path: Path,
    name: str = "app",
    repository: str | None = "example/app",
    branch: str = "main",
    secrets: tuple[bytes, ...] = (b"old secret", SECRET),
) -> AppSettings:
    """An app over a dummy clone: the fake runner runs nothing in it."""
    git_dir = tmp_path / name / ".git"
    git_dir.mkdir(parents=True, exist_ok=True)
    (git_dir / "HEAD").write_text(f"ref: refs/heads/{branch}\n")
    return AppSettings(
        repo=str(tmp_path / name),
        git_dir=str(git_dir),
        remote="origin",
        branch=branch,
        git="/usr/bin/git",
        name=name,
        repository=repository,
        secrets=secrets,
        restart=(f"/bin/restart-{name}",),
        timeout=30.0,
        env={"PATH": "/usr/bin"},
    )


class App:
    """One app's engine, runner and the shared journal and clock."""

    def __init__(self, client: Client, name: str) -> None:
        deployer = client.engines.get(name)
        assert deployer is not None
        self.deployer: Deployer = deployer
        self.runner = client.runners[name]
        self.journal = client.journal
        self._clock = client.clock

    def turn(self) -> None:
        """Let the reactor take its next turn (queued cycles start on it)."""
        self._clock.advance(0)


class Client:
    """
    A hook over real engines (fake runners) and a real journal, and an
    in-memory client. Without ``apps``, one app named ``app`` that deploys
    ``main`` of ``example/app``, as the single-repo options make.
    """

    def __init__(
        self,
        tmp_path: Path,
        apps: tuple[AppSettings, ...] | None = None,
        path: str = "/github",
        **hook_args: Any,
    ) -> None:
        self.clock = Clock()
        self.journal = Journal(tmp_path / "j.sqlite3").open()
        self.runners: dict[str, FakeRunner] = {}
        if apps is None:
            apps = (app_settings(tmp_path),)
        self.engines = Engines(DaemonSettings(apps=apps, path=path), self.make)
        hook_args.setdefault("wall_clock", self.clock.seconds)
        self.hook = Hook(self.engines, self.journal, **hook_args)
        self.stub = StubTreq(self.hook.resource())

    def make(self, app: AppSettings, slots: Slots) -> Deployer:
        runner = self.runners.setdefault(app.name, FakeRunner(head=A))
        return Deployer(
            app, runner, self.journal, self.clock, wall_clock=self.clock.seconds, slots=slots
        )

    def app(self, name: str) -> App:
        return App(self, name)

    @property
    def engine(self) -> App:
        """The first app's engine (the only one unless ``apps`` says otherwise)."""
        return self.app(self.engines.settings.apps[0].name)

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
        self,
        event: str,
        payload: dict[str, Any],
        delivery: str | None = None,
        path: str = "/github",
        secret: bytes = SECRET,
        **kw: Any,
    ) -> tuple[int, dict[str, Any]]:
        body = encode(payload)
        headers = delivery_headers(body, secret, event, delivery)
        headers.update(kw.pop("headers", {}))
        url = "http://ghhook.invalid" + path
        code, answer, _ = self.request("POST", url, body=body, headers=headers)
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
    assert answer == {
        "after": B,
        "delivery": "d-1",
        "deploys": [{"app": "app", "deploy": 1, "coalesced": False}],
    }
    assert client.engine.runner.calls == [], "nothing runs before the answer is sent"
    client.engine.turn()
    assert client.engine.runner.names() == ["pull"]


def test_pushes_during_a_deploy_join_one_pending_deploy(client: Client) -> None:
    client.deliver("push", push_payload(B))
    client.engine.turn()
    _, second = client.deliver("push", push_payload(C))
    _, third = client.deliver("push", push_payload(C[:39] + "d"))
    assert second["deploys"] == [{"app": "app", "deploy": 2, "coalesced": False}]
    assert third["deploys"] == [{"app": "app", "deploy": 2, "coalesced": True}]


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
    client = Client(tmp_path, path="/deploy")
    body = encode(ping_payload())
    headers = delivery_headers(body, SECRET, "ping")
    assert client.request("POST", "http://x.invalid/deploy", body, headers)[0] == 200
    assert client.request("POST", URL, body, headers)[0] == 404


@pytest.mark.expect_logged_failure
def test_unexpected_failure_is_500_without_internals(client: Client) -> None:
    def explode(after: str, delivery: str | None, forced: bool = False) -> None:
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


# Many apps: their own URLs, the shared path, and what the answers say.

API_SECRET, BLOG_SECRET = b"api secret", b"blog secret"


@pytest.fixture
def host(tmp_path: Path) -> Client:
    """One repository's main deployed twice and its staging once, and a blog."""
    return Client(
        tmp_path,
        apps=(
            app_settings(tmp_path, "api", "me/api", "main", (API_SECRET,)),
            app_settings(tmp_path, "api-staging", "me/api", "staging", (API_SECRET,)),
            app_settings(tmp_path, "api-mirror", "Me/API", "main", (API_SECRET,)),
            app_settings(tmp_path, "blog", "me/blog", "main", (BLOG_SECRET,)),
        ),
    )


def pending(client: Client) -> dict[str, list[str | None]]:
    """Each app's pending deploy, as the shas that joined it."""
    return {
        engine.name: engine.pending.shas for engine in client.engines if engine.pending is not None
    }


def delivery_row(client: Client, delivery: str) -> tuple[Any, ...]:
    row = client.journal._db.execute(
        "SELECT outcome, deploy, app FROM deliveries WHERE delivery = ?", (delivery,)
    ).fetchone()
    return tuple(row)


@pytest.mark.parametrize(
    ("path", "repository", "secret", "code", "apps"),
    [
        pytest.param("/hooks/blog", "me/blog", BLOG_SECRET, 202, ["blog"], id="blog-own"),
        pytest.param("/hooks/blog", "me/blog", API_SECRET, 403, [], id="blog-with-api-secret"),
        pytest.param("/hooks/api", "me/api", BLOG_SECRET, 403, [], id="api-with-blog-secret"),
        pytest.param("/hooks/api", "me/api", API_SECRET, 202, ["api"], id="api-own-not-mirror"),
        pytest.param("/hooks/api/", "me/api", API_SECRET, 202, ["api"], id="trailing-slash"),
    ],
)
def test_an_apps_own_url_is_verified_with_its_secrets_only(
    host: Client, path: str, repository: str, secret: bytes, code: int, apps: list[str]
) -> None:
    got, answer = host.deliver(
        "push", push_payload(B, repository=repository), "d-1", path=path, secret=secret
    )
    assert got == code
    assert [d["app"] for d in answer.get("deploys", [])] == apps
    assert list(pending(host)) == apps, "only the app of the URL takes it"
    assert host.journal.seen_delivery("d-1") is (code == 202)
    if code == 403:
        assert answer == {
            "error": "the X-Hub-Signature-256 signature does not match the body (GitHub delivery)"
        }


def test_one_delivery_on_the_shared_path_deploys_every_matching_app(host: Client) -> None:
    code, answer = host.deliver(
        "push", push_payload(B, repository="me/api"), "d-1", secret=API_SECRET
    )
    assert (code, answer) == (
        202,
        {
            "after": B,
            "delivery": "d-1",
            "deploys": [
                {"app": "api", "deploy": 1, "coalesced": False},
                {"app": "api-mirror", "deploy": 2, "coalesced": False},
            ],
        },
    )
    assert pending(host) == {"api": [B], "api-mirror": [B]}
    assert delivery_row(host, "d-1") == ("accepted", 1, "api,api-mirror")
    assert all(runner.calls == [] for runner in host.runners.values()), "nothing before the answer"
    host.engine.turn()
    assert {name: runner.names() for name, runner in host.runners.items() if runner.calls} == {
        "api": ["pull"],
        "api-mirror": ["pull"],
    }


@pytest.mark.parametrize(
    ("repository", "branch", "secret", "apps"),
    [
        pytest.param("me/api", "staging", API_SECRET, ["api-staging"], id="other-branch"),
        pytest.param("ME/Api", "main", API_SECRET, ["api", "api-mirror"], id="repository-case"),
        pytest.param("me/blog", "main", BLOG_SECRET, ["blog"], id="other-repository"),
        pytest.param("me/blog", "main", API_SECRET, [], id="blog-needs-its-secret"),
    ],
)
def test_the_shared_path_routes_by_repository_branch_and_secret(
    host: Client, repository: str, branch: str, secret: bytes, apps: list[str]
) -> None:
    payload = push_payload(B, repository=repository, ref=f"refs/heads/{branch}")
    code, answer = host.deliver("push", payload, "d-1", secret=secret)
    assert code == (202 if apps else 200)
    assert [d["app"] for d in answer.get("deploys", [])] == apps
    assert list(pending(host)) == apps


@pytest.mark.parametrize(
    ("path", "repository", "branch", "secret", "reason"),
    [
        pytest.param(
            "/github",
            "me/api",
            "dev",
            API_SECRET,
            "no app deploys branch 'dev' of 'me/api'",
            id="shared-no-match",
        ),
        pytest.param(
            "/github",
            "me/api",
            "main",
            BLOG_SECRET,
            "push to repository 'me/api', not 'me/blog'",
            id="shared-one-holder-its-reason",
        ),
        pytest.param(
            "/hooks/api",
            "me/api",
            "dev",
            API_SECRET,
            "push to branch 'dev'; only 'main' deploys",
            id="own-branch",
        ),
        pytest.param(
            "/hooks/api",
            "me/blog",
            "main",
            API_SECRET,
            "push to repository 'me/blog', not 'me/api'",
            id="own-repository",
        ),
    ],
)
def test_a_push_no_app_takes_is_ignored_with_one_reason(
    host: Client, path: str, repository: str, branch: str, secret: bytes, reason: str
) -> None:
    payload = push_payload(B, repository=repository, ref=f"refs/heads/{branch}")
    code, answer = host.deliver("push", payload, "d-1", path=path, secret=secret)
    assert (code, answer) == (200, {"ignored": reason})
    assert pending(host) == {}
    assert delivery_row(host, "d-1") == ("ignored", None, None)


@pytest.mark.parametrize("path", ["/github", "/hooks/api"])
@pytest.mark.parametrize(
    ("event", "payload", "reason"),
    [
        ("push", push_payload(B, ref="refs/tags/v1", repository="me/api"), "tag push"),
        ("push", push_payload("0" * 40, before=B, repository="me/api"), "was deleted"),
        ("push", push_payload(B, ref="refs/pull/1/head", repository="me/api"), "not a branch"),
        ("issues", {"action": "opened"}, "only push does"),
    ],
)
def test_deliveries_that_are_no_push_to_a_branch_are_ignored_on_every_path(
    host: Client, path: str, event: str, payload: dict[str, Any], reason: str
) -> None:
    code, answer = host.deliver(event, payload, path=path, secret=API_SECRET)
    assert code == 200 and reason in answer["ignored"]
    assert pending(host) == {}


@pytest.mark.parametrize("path", ["/github", "/hooks/api", "/hooks/blog"])
def test_pings_are_answered_on_every_path(host: Client, path: str) -> None:
    secret = BLOG_SECRET if path.endswith("blog") else API_SECRET
    code, answer = host.deliver("ping", ping_payload(), path=path, secret=secret)
    assert (code, answer) == (
        200,
        {"pong": True, "zen": "Keep it logically awesome.", "hook_id": 1},
    )


def deploy_first(client: Client, name: str, sha: str) -> None:
    """Start ``name``'s engine and let its catch-up deploy ``sha``."""
    app = client.app(name)
    app.deployer.start()
    app.turn()
    app.runner.pull_to(sha)
    assert app.deployer.busy is False


def test_apps_that_decline_a_push_are_listed_beside_those_that_take_it(host: Client) -> None:
    deploy_first(host, "api", A)
    code, answer = host.deliver(
        "push", push_payload(A, repository="me/api"), "d-1", secret=API_SECRET
    )
    assert (code, answer) == (
        202,
        {
            "after": A,
            "delivery": "d-1",
            "deploys": [{"app": "api-mirror", "deploy": 2, "coalesced": False}],
            "ignored": {"api": f"{A} is already deployed"},
        },
    )
    assert pending(host) == {"api-mirror": [A]}
    assert delivery_row(host, "d-1") == ("accepted", 2, "api-mirror")


def test_a_push_every_app_declines_is_ignored_with_each_apps_reason(host: Client) -> None:
    deploy_first(host, "api", A)
    deploy_first(host, "api-mirror", A)
    code, answer = host.deliver(
        "push", push_payload(A, repository="me/api"), "d-1", secret=API_SECRET
    )
    assert (code, answer) == (
        200,
        {"ignored": f"api: {A} is already deployed; api-mirror: {A} is already deployed"},
    )
    assert delivery_row(host, "d-1") == ("ignored", None, None)
    code, answer = host.deliver(
        "push", push_payload(A, repository="me/api"), "d-2", path="/hooks/api", secret=API_SECRET
    )
    assert (code, answer) == (200, {"ignored": f"{A} is already deployed"}), "one app: its reason"


def test_a_delivery_id_is_recorded_once_for_every_app_it_reached(host: Client) -> None:
    payload = push_payload(B, repository="me/api")
    assert host.deliver("push", payload, "same", secret=API_SECRET)[0] == 202
    again = [
        host.deliver("push", payload, "same", secret=API_SECRET),
        host.deliver("push", payload, "same", path="/hooks/api-mirror", secret=API_SECRET),
        host.deliver("push", push_payload(C, repository="me/api"), "same", secret=API_SECRET),
        host.deliver("ping", ping_payload(), "same", path="/hooks/blog", secret=BLOG_SECRET),
    ]
    assert again == [(200, {"duplicate": "same"})] * 4
    assert pending(host) == {"api": [B], "api-mirror": [B]}, "no redelivery joined a deploy"
    count = host.journal._db.execute("SELECT count(*) FROM deliveries").fetchone()[0]
    assert count == 1


@pytest.mark.parametrize("path", ["/hooks/nope", "/hooks/API", "/hooks/"])
def test_an_unknown_app_is_404_even_with_a_valid_signature(host: Client, path: str) -> None:
    code, answer = host.deliver("push", push_payload(B, repository="me/api"), "d-1", path=path)
    assert (code, answer) == (404, {"error": "nothing is served at this path"})
    assert not host.journal.seen_delivery("d-1")


def test_a_reload_applies_to_both_paths_without_a_new_resource(
    host: Client, tmp_path: Path
) -> None:
    """Removed apps answer 404 and leave the shared path; added ones are served at once."""
    old = host.engines.settings
    api = old.app("api")
    assert api is not None
    new_secret = b"rotated api secret"
    apps = (
        attrs.evolve(api, secrets=(new_secret,)),
        app_settings(tmp_path, "docs", "me/blog", "main", (BLOG_SECRET,)),
    )
    host.engines.apply(attrs.evolve(old, apps=apps))
    blog = push_payload(B, repository="me/blog")
    code, answer = host.deliver("push", blog, "d-1", path="/hooks/blog", secret=BLOG_SECRET)
    assert code == 404
    code, answer = host.deliver("push", blog, "d-2", secret=BLOG_SECRET)
    assert code == 202 and [d["app"] for d in answer["deploys"]] == ["docs"]
    api_push = push_payload(B, repository="me/api")
    assert host.deliver("push", api_push, "d-3", path="/hooks/api", secret=API_SECRET)[0] == 403
    assert host.deliver("push", api_push, "d-4", path="/hooks/api", secret=new_secret)[0] == 202


def test_a_journal_failure_queues_nothing_for_any_app(host: Client) -> None:
    disk = fill_disk(host.journal)
    disk.full = True
    payload = push_payload(B, repository="me/api")
    code, answer = host.deliver("push", payload, "d-1", secret=API_SECRET)
    assert code == 503 and "redeliver" in answer["error"]
    assert pending(host) == {}
    disk.full = False
    assert host.deliver("push", payload, "d-1", secret=API_SECRET)[0] == 202


def test_a_failure_at_the_second_app_leaves_the_first_app_untouched(host: Client) -> None:
    """The apps take a push in one transaction: all of them, or (503) none."""
    from ghhook.journal import JournalError

    mirror = host.app("api-mirror").deployer

    def refuse(after: str, delivery: str | None, forced: bool = False) -> None:
        raise JournalError("the journal failed")

    mirror.submit = refuse  # type: ignore[method-assign]
    code, _ = host.deliver("push", push_payload(B, repository="me/api"), "d-1", secret=API_SECRET)
    assert code == 503
    assert pending(host) == {}, "api's deploy was rolled back with the rest"
    assert not host.journal.seen_delivery("d-1")
    assert host.journal.recent_deploys() == []


def test_log_lines_name_the_app_and_ignored_deliveries_are_debug(
    host: Client, events: list[dict[str, Any]]
) -> None:
    from twisted.logger import LogLevel

    host.deliver("push", push_payload(B, repository="me/api"), "d-1", secret=API_SECRET)
    host.deliver(
        "push", push_payload(B, repository="me/api", ref="refs/heads/dev"), "d-2", secret=API_SECRET
    )
    host.deliver(
        "push",
        push_payload(B, repository="me/api", ref="refs/heads/dev"),
        "d-3",
        path="/hooks/api",
        secret=API_SECRET,
    )
    web = [e for e in events if e.get("log_namespace") == "ghhook.web"]
    accepted = [e for e in web if e["log_format"].startswith("push {delivery}")]
    assert [(e["app"], e["deploy"], e["log_level"]) for e in accepted] == [
        ("api", 1, LogLevel.info),
        ("api-mirror", 2, LogLevel.info),
    ]
    ignored = [e for e in web if "ignored" in e["log_format"]]
    assert [(e["delivery"], e.get("app"), e["log_level"]) for e in ignored] == [
        ("d-2", None, LogLevel.debug),
        ("d-3", "api", LogLevel.debug),
    ]
    assert all(API_SECRET.decode() not in str(e) for e in web)


def test_deliveries_are_counted_by_event_and_outcome(tmp_path: Path) -> None:
    counted: list[tuple[str, str]] = []

    class Counter:
        def delivery(self, event: str, outcome: str) -> None:
            counted.append((event, outcome))

    client = Client(tmp_path, counter=Counter())
    client.deliver("push", push_payload(B), "d-1")
    client.deliver("push", push_payload(B), "d-1")
    client.deliver("ping", ping_payload())
    client.deliver("push", push_payload(B, ref="refs/heads/dev"))
    client.deliver("push", push_payload(B), path="/hooks/nope")
    client.deliver("push", push_payload(B), secret=b"wrong")
    assert counted == [
        ("push", "accepted"),
        ("push", "duplicate"),
        ("ping", "pong"),
        ("push", "ignored"),
        ("push", "bad_signature"),
    ]


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("GET", "/hooks/nosuchapp", 404),
        ("PUT", "/hooks/nosuchapp", 404),
        ("GET", "/hooks/app", 405),
        ("DELETE", "/hooks/app", 405),
    ],
)
def test_an_unknown_app_is_404_whatever_the_method(
    tmp_path: Path, method: str, path: str, code: int
) -> None:
    client = Client(tmp_path)
    answer_code, answer, response = client.request(method, "http://ghhook.invalid" + path)
    assert answer_code == code, answer
    if code == 405:
        assert response.headers.getRawHeaders(b"Allow") == [b"POST"]
