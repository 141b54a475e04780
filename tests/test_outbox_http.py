"""
The outbox over real loopback HTTP: the real :class:`Outbox` and
:class:`TreqPoster` on the test's reactor, reports planned by
:mod:`ghhook.reports` and written by the journal, sent to the fake forge
and the fake notification receiver. Every wait is bounded.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.task import deferLater
from twisted.logger import LogLevel

import ghhook.httpclient
from ghhook import outbox as outbox_module
from ghhook.config import AppSettings, DaemonSettings
from ghhook.journal import Journal
from ghhook.outbox import Outbox, TreqPoster
from ghhook.reports import (
    Ending,
    NotifySettings,
    Reporting,
    ReportSettings,
    finished,
    started,
)
from ghhook.results import Result
from tests.fakeforge import (
    FORGES,
    TOKEN,
    FakeForge,
    NotifyReceiver,
    fake_forge,  # noqa: F401 (a fixture)
    notify_receiver,  # noqa: F401 (a fixture)
)

#: The longest any one wait of these tests may take.
BOUND = 5.0
SHA0 = "0" * 40
SHA1 = "1111111111111111111111111111111111111111"
SHA2 = "2222222222222222222222222222222222222222"
REPOSITORY = {
    "github": "me/app",
    "gitea": "me/app",
    "gitlab": "group/sub/app",
    "bitbucket": "me/app",
    "bitbucket-server": "PROJ/app",
}
#: Each forge's words for pending, success and failure.
STATES = {
    "github": ("pending", "success", "failure"),
    "gitea": ("pending", "success", "failure"),
    "gitlab": ("running", "success", "failed"),
    "bitbucket": ("INPROGRESS", "SUCCESSFUL", "FAILED"),
    "bitbucket-server": ("INPROGRESS", "SUCCESSFUL", "FAILED"),
}
STATUS_PATH = {
    "github": "/repos/me/app/statuses/{sha}",
    "gitea": "/repos/me/app/statuses/{sha}",
    "gitlab": "/projects/group/sub/app/statuses/{sha}",
    "bitbucket": "/repositories/me/app/commit/{sha}/statuses/build",
    "bitbucket-server": "/rest/api/latest/projects/PROJ/repos/app/commits/{sha}/builds",
}


def reactor() -> Any:
    from twisted.internet import reactor as r

    return r


async def until(check: Callable[[], bool], what: str, timeout: float = BOUND) -> None:
    """Poll ``check`` on the reactor every 10 ms, for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await deferLater(reactor(), 0.01, lambda: None)


class Harness:
    """A journal, the daemon's settings and a running outbox that sends over HTTP."""

    def __init__(self, tmp_path: Path, fake: FakeForge) -> None:
        self.fake = fake
        self.journal = Journal(tmp_path / "journal.sqlite3").open()
        self.settings = DaemonSettings(apps=())
        self.outbox = Outbox(
            self.journal, lambda: self.settings, reactor(), poster=TreqPoster(reactor())
        )
        self.journal.reported = self.outbox.wake

    def reporting(
        self,
        forge: str,
        token: str = TOKEN,
        notify: tuple[NotifySettings, ...] = (),
    ) -> Reporting:
        """Make ``app`` report to ``forge`` on the fake, and say how."""
        report = ReportSettings(
            token=token,
            api_url=self.fake.api_url(forge),
            deployments=forge == "github",
            public_url="https://ghhook.example",
        )
        app = AppSettings(
            repo="/srv/app",
            git_dir="/srv/app/.git",
            remote="origin",
            branch="main",
            git="/usr/bin/git",
            name="app",
            repository=REPOSITORY[forge],
            forge=forge,
            report=report,
            notify=notify,
        )
        self.settings = DaemonSettings(apps=(app,), notify=notify)
        return Reporting("app", forge, REPOSITORY[forge], report, notify)

    def deploy(
        self,
        reporting: Reporting,
        sha: str,
        result: Result,
        previous: str,
        failed_step: str | None = None,
    ) -> int:
        """A whole deploy, start and end, written as the engine writes it."""
        now = time.time()
        deploy = self.journal.queue_deploy("push", None, sha, now, app="app")
        self.journal.start_deploy(deploy, now, app="app", reports=started(reporting, deploy, sha))
        ending = Ending(deploy, result, sha, previous, 3.0, failed_step=failed_step)
        calls, state = finished(reporting, ending, sha, {}, now)
        self.journal.finish_deploy(
            deploy, result, sha, time.time(), failed_step, app="app", state=state, reports=calls
        )
        return deploy

    def rows(self) -> list[dict[str, Any]]:
        return [
            r
            for d in self.journal.recent_deploys()
            for r in self.journal.reports_of("app", d["id"])
        ]

    def states(self) -> list[str]:
        return [r["state"] for r in sorted(self.rows(), key=lambda r: r["id"])]

    async def settled(self) -> None:
        await until(lambda: "pending" not in self.states(), "every report sent or given up")


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries after about 50 ms, 100 ms, ... instead of seconds."""
    monkeypatch.setattr(outbox_module, "BACKOFF_FIRST", 0.05)


@pytest_twisted.async_yield_fixture
async def harness(
    tmp_path: Path,
    fake_forge: FakeForge,  # noqa: F811 (the fixture)
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Harness]:
    pools: list[ghhook.httpclient.QuietPool] = []

    class RecordedPool(ghhook.httpclient.QuietPool):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            pools.append(self)

    monkeypatch.setattr(ghhook.httpclient, "QuietPool", RecordedPool)
    h = Harness(tmp_path, fake_forge)
    h.outbox.startService()
    try:
        yield h
    finally:
        await h.outbox.stopService().addTimeout(BOUND, reactor())
        for pool in pools:
            await pool.closeCachedConnections().addTimeout(BOUND, reactor())
        h.journal.close()


def auth_of(forge: str, token: str = TOKEN) -> tuple[str, str]:
    spec = FORGES[forge]
    return spec.header, f"{spec.scheme} {token}" if spec.scheme else token


@pytest.mark.parametrize("forge", sorted(REPOSITORY))
@pytest_twisted.ensureDeferred
async def test_a_deployed_and_a_rolled_back_deploy_reach_the_forge_in_order(
    harness: Harness, forge: str
) -> None:
    fake = harness.fake
    reporting = harness.reporting(forge)
    pending, success, failure = STATES[forge]
    per_deploy = 5 if forge == "github" else 2

    harness.deploy(reporting, SHA1, Result.DEPLOYED, SHA0)
    await fake.wait_for(per_deploy, BOUND)
    harness.deploy(reporting, SHA2, Result.ROLLED_BACK, SHA1, failed_step="health")
    calls = await fake.wait_for(2 * per_deploy, BOUND)
    await harness.settled()

    assert len(fake.calls) == 2 * per_deploy
    header, value = auth_of(forge)
    for call in calls:
        assert (call.forge, call.method, call.status) == (
            forge,
            "POST",
            204 if forge == "bitbucket-server" else 201,
        )
        assert call.headers[header] == value
        assert call.headers["content-type"] == "application/json"
    if forge == "gitlab":
        assert calls[0].raw_path == f"/projects/group%2Fsub%2Fapp/statuses/{SHA1}"

    def status(sha: str) -> str:
        return STATUS_PATH[forge].format(sha=sha)

    if forge == "github":
        assert calls[0].headers["accept"] == "application/vnd.github+json"
        expected = [
            (status(SHA1), pending),
            ("/repos/me/app/deployments", None),
            ("/repos/me/app/deployments/1/statuses", "in_progress"),
            (status(SHA1), success),
            ("/repos/me/app/deployments/1/statuses", "success"),
            (status(SHA2), pending),
            ("/repos/me/app/deployments", None),
            ("/repos/me/app/deployments/2/statuses", "in_progress"),
            (status(SHA2), failure),
            ("/repos/me/app/deployments/2/statuses", "failure"),
        ]
        assert [fake.deployments[n][1]["ref"] for n in (1, 2)] == [SHA1, SHA2]
        assert calls[1].body["environment"] == "app"
    else:
        expected = [
            (status(SHA1), pending),
            (status(SHA1), success),
            (status(SHA2), pending),
            (status(SHA2), failure),
        ]
    assert [(c.path, c.body.get("state")) for c in calls] == expected
    commit_statuses = [c.body for c in calls if "/deployments" not in c.path]
    assert [b["description"] for b in commit_statuses] == [
        "deploying 1111111",
        "deployed 1111111 in 3 s",
        "deploying 2222222",
        "health check failed; rolled back to 1111111",
    ]
    link_key = "url" if forge.startswith("bitbucket") else "target_url"
    assert commit_statuses[0][link_key] == "https://ghhook.example/apps/app/deploys/1"
    assert harness.states() == ["sent"] * (2 * per_deploy)
    assert all(TOKEN not in repr(r) for r in harness.rows())


@pytest_twisted.ensureDeferred
async def test_a_token_the_forge_refuses_is_given_up(
    harness: Harness, events: list[dict[str, Any]]
) -> None:
    reporting = harness.reporting("gitea", token="expired-token")
    harness.deploy(reporting, SHA1, Result.DEPLOYED, SHA0)
    await harness.settled()
    assert harness.states() == ["failed", "failed"]
    assert [c.status for c in harness.fake.calls] == [401, 401]
    given_up = [
        e
        for e in events
        if e.get("log_namespace") == "ghhook.outbox" and e["log_level"] == LogLevel.error
    ]
    assert [e["why"] for e in given_up] == ["HTTP 401 from gitea: user does not exist"] * 2
    assert not any("expired-token" in repr(e) for e in events)


@pytest_twisted.ensureDeferred
async def test_a_redirect_takes_no_token_elsewhere(
    harness: Harness,
    notify_receiver: NotifyReceiver,  # noqa: F811 (the fixture)
) -> None:
    """Found by a review: treq followed a 303, and GitLab's PRIVATE-TOKEN went along."""
    harness.fake.fail_next(303, {"Location": notify_receiver.hook_url})
    reporting = harness.reporting("gitlab")
    now = time.time()
    deploy = harness.journal.queue_deploy("push", None, SHA1, now, app="app")
    harness.journal.start_deploy(deploy, now, app="app", reports=started(reporting, deploy, SHA1))
    await harness.settled()
    assert harness.states() == ["failed"]
    assert [c.status for c in harness.fake.calls] == [303]
    assert notify_receiver.calls == [], "the redirect was not followed"


@pytest_twisted.ensureDeferred
async def test_a_rate_limit_is_waited_out(harness: Harness) -> None:
    fake = harness.fake
    fake.fail_next(429, {"Retry-After": "1"}, {"message": "slow down"})
    reporting = harness.reporting("gitlab")
    now = time.time()
    deploy = harness.journal.queue_deploy("push", None, SHA1, now, app="app")
    harness.journal.start_deploy(deploy, now, app="app", reports=started(reporting, deploy, SHA1))
    first, second = await fake.wait_for(2, BOUND)
    assert (first.status, second.status) == (429, 201)
    assert second.at - first.at >= 0.9
    assert first.body == second.body
    await harness.settled()
    assert harness.states() == ["sent"]


@pytest_twisted.ensureDeferred
async def test_reports_made_while_the_forge_is_away_are_all_sent_in_order(
    harness: Harness, fast: None
) -> None:
    fake = harness.fake
    await fake.stop_listening()
    reporting = harness.reporting("github")
    harness.deploy(reporting, SHA1, Result.DEPLOYED, SHA0)
    harness.deploy(reporting, SHA2, Result.ROLLED_BACK, SHA1, failed_step="build")
    await until(
        lambda: (
            min(r["id"] for r in harness.rows())
            in [r["id"] for r in harness.rows() if r["attempts"] >= 2]
        ),
        "the first report tried twice",
    )
    assert fake.calls == []
    await fake.start_listening()
    calls = await fake.wait_for(10, BOUND)
    await harness.settled()
    assert harness.states() == ["sent"] * 10

    def what(call: Any) -> tuple[str, str, str | None]:
        """The call's deploy (its sha), what it is, and the state it sets."""
        parts = call.path.split("/")
        if call.path.endswith("/deployments"):
            return call.body["ref"], "deployment", None
        if "deployments" in parts:
            return (
                fake.deployments[int(parts[5])][1]["ref"],
                "deployment_status",
                call.body["state"],
            )
        return parts[-1], "status", call.body["state"]

    for sha, final in ((SHA1, "success"), (SHA2, "failure")):
        assert [w[1:] for w in map(what, calls) if w[0] == sha] == [
            ("status", "pending"),
            ("deployment", None),
            ("deployment_status", "in_progress"),
            ("status", final),
            ("deployment_status", final),
        ]


@pytest_twisted.ensureDeferred
async def test_a_notification_arrives_signed(
    harness: Harness,
    notify_receiver: NotifyReceiver,  # noqa: F811 (the fixture)
) -> None:
    notify = NotifySettings(
        "notify[0]",
        url=notify_receiver.hook_url,
        secret=notify_receiver.secret,
        on=("rolled_back",),
    )
    reporting = harness.reporting("gitea", notify=(notify,))
    harness.deploy(reporting, SHA1, Result.DEPLOYED, SHA0)  # not one it wants
    harness.deploy(reporting, SHA2, Result.ROLLED_BACK, SHA1, failed_step="health")
    (note,) = await notify_receiver.wait_for(1, BOUND)
    await harness.settled()
    assert (note.status, note.verified) == (200, True)
    assert note.json["app"] == "app"
    assert note.json["result"] == "rolled_back"
    assert note.json["summary"] == "health check failed; rolled back to 1111111"
    assert note.json["link"] == "https://ghhook.example/apps/app/deploys/2"
    assert "authorization" not in note.headers
    assert harness.states() == ["sent"] * 5


@pytest.mark.parametrize(("secret", "code"), [(b"not the secret", 403), (None, 401)])
@pytest_twisted.ensureDeferred
async def test_a_notification_the_receiver_refuses_is_given_up(
    harness: Harness,
    notify_receiver: NotifyReceiver,  # noqa: F811 (the fixture)
    secret: bytes | None,
    code: int,
) -> None:
    notify = NotifySettings(
        "notify[0]", url=notify_receiver.hook_url, secret=secret, on=("deployed",)
    )
    reporting = harness.reporting("gitea", notify=(notify,))
    harness.deploy(reporting, SHA1, Result.DEPLOYED, SHA0)
    (note,) = await notify_receiver.wait_for(1, BOUND)
    await harness.settled()
    assert (note.status, note.verified) == (code, False)
    assert harness.states() == ["sent", "sent", "failed"]
