"""
The outbox on a fake clock: a real journal in tmp_path, a poster the test
answers by hand, and time that moves only when the test advances it.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest
from twisted.internet import task
from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.error import ConnectionRefusedError
from twisted.logger import LogLevel, formatEvent

from ghhook.config import AppSettings, DaemonSettings
from ghhook.journal import Journal, JournalError
from ghhook.outbox import (
    BACKOFF_FIRST,
    BACKOFF_MOST,
    GIVE_UP_AFTER,
    SECONDARY_WAIT,
    SEND_TIMEOUT,
    WAIT_MOST,
    Answer,
    Outbox,
)
from ghhook.reports import SIGNATURE_HEADER, Call, Kind, NotifySettings, ReportSettings

#: Where the fake clock starts: a plausible time, so HTTP dates make sense.
T0 = 1_700_000_000.0
TOKEN = "s3cr3t-forge-token"
API = "https://forge.example/api"
SHA = "0123456789abcdef0123456789abcdef01234567"
#: What the backoff waits before the retry after ``n`` failed attempts (jitter 0.5).
STEP = [BACKOFF_FIRST * 2**n * 0.75 for n in range(4)]


@attrs.define
class Request:
    """One post the outbox made; the test answers it."""

    url: str
    body: bytes
    headers: dict[str, str]
    timeout: float
    answer: Deferred[Answer]

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def reply(
        self, code: int = 201, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body or {"id": 1}).encode()
        self.answer.callback(Answer(code, {k.lower(): v for k, v in (headers or {}).items()}, raw))

    def fail(self, error: BaseException) -> None:
        self.answer.errback(error)


class FakePoster:
    """A :class:`ghhook.outbox.Poster` whose answers the test gives."""

    def __init__(self) -> None:
        self.requests: list[Request] = []

    def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> Deferred[Answer]:
        answer: Deferred[Answer] = Deferred()
        self.requests.append(Request(url, body, dict(headers), timeout, answer))
        return answer

    @property
    def waiting(self) -> list[Request]:
        return [r for r in self.requests if not r.answer.called]

    def only(self) -> Request:
        """The one request waiting for its answer."""
        waiting = self.waiting
        assert len(waiting) == 1, f"{len(waiting)} requests wait"
        return waiting[0]


class FakeCounter:
    def __init__(self) -> None:
        self.counted: list[tuple[str, str, str]] = []

    def report(self, app: str, kind: str, outcome: str) -> None:
        self.counted.append((app, kind, outcome))


def app_settings(
    name: str = "app",
    forge: str = "github",
    token: str = TOKEN,
    notify: tuple[NotifySettings, ...] = (),
    report: bool = True,
) -> AppSettings:
    return AppSettings(
        repo=f"/srv/{name}",
        git_dir=f"/srv/{name}/.git",
        remote="origin",
        branch="main",
        git="/usr/bin/git",
        name=name,
        repository="me/app",
        forge=forge,
        report=ReportSettings(token=token, api_url=API) if report else None,
        notify=notify,
    )


def status(n: int, app: str = "app") -> Call:
    return Call(Kind.STATUS, "forge", f"{API}/repos/me/{app}/statuses/{SHA}", {"n": n})


class Spinning(Exception):
    """The outbox keeps asking to be woken at once: a busy loop on a real reactor."""


class GuardedClock(task.Clock):
    """:class:`task.Clock`, but a busy loop of calls due now fails instead of hanging."""

    def advance(self, amount: float) -> None:
        self.rightNow += amount
        self._sortCalls()
        fired = 0
        while self.calls and self.calls[0].getTime() <= self.seconds():
            fired += 1
            if fired > 1000:
                raise Spinning(f"more than 1000 calls ran at {self.seconds()}")
            call = self.calls.pop(0)
            call.called = 1
            call.func(*call.args, **call.kw)
            self._sortCalls()


#: When the next report that may go is due: the first waiting of each deploy only.
NEXT_DUE = (
    "SELECT MIN(due) FROM outbox AS o WHERE state = 'pending' AND NOT EXISTS"
    " (SELECT 1 FROM outbox AS p WHERE p.state = 'pending' AND p.app = o.app"
    " AND p.deploy = o.deploy AND p.id < o.id)"
)


class World:
    """The outbox under test and everything around it."""

    def __init__(self, tmp_path: Path) -> None:
        self.clock = GuardedClock()
        self.clock.advance(T0)
        self.journal = Journal(tmp_path / "journal.sqlite3").open()
        self.poster = FakePoster()
        self.counter = FakeCounter()
        self.settings = DaemonSettings(apps=(app_settings(), app_settings("other")))
        self.apprised: list[tuple[str, str, str]] = []
        self.apprise: Callable[[str, str, str], bool] = self._apprise
        self.in_thread: Callable[..., Deferred[Any]] = lambda f, *a: maybeDeferred(f, *a)
        self.outbox = Outbox(
            self.journal,
            lambda: self.settings,
            self.clock,
            poster=self.poster,
            counter=self.counter,
            wall_clock=self.clock.seconds,
            jitter=lambda: 0.5,
            apprise=lambda *a: self.apprise(*a),
            in_thread=lambda f, *a: self.in_thread(f, *a),
        )
        self.journal.reported = self.outbox.wake

    def _apprise(self, url: str, title: str, body: str) -> bool:
        self.apprised.append((url, title, body))
        return True

    def start(self) -> None:
        self.outbox.startService()

    def deploy(self, *calls: Call, app: str = "app") -> int:
        """A deploy of ``app`` that starts now and makes ``calls``."""
        now = self.clock.seconds()
        deploy = self.journal.queue_deploy("push", None, SHA, now, app=app)
        self.journal.start_deploy(deploy, now, app=app, reports=calls)
        return deploy

    def rows(self) -> list[dict[str, Any]]:
        """Every outbox row, as stored."""
        with sqlite3.connect(self.journal.path) as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute("SELECT * FROM outbox ORDER BY id")]

    def row(self, index: int = 0) -> dict[str, Any]:
        return self.rows()[index]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    if w.outbox.running:
        w.outbox.stopService()
    w.journal.close()


def at(when: float) -> Any:
    """``when``, give or take float rounding (approx's default 1e-6 is 1700 s at T0)."""
    return pytest.approx(when, rel=0, abs=1e-6)


def outbox_events(
    events: list[dict[str, Any]], level: LogLevel | None = None
) -> list[dict[str, Any]]:
    return [
        e
        for e in events
        if e.get("log_namespace") == "ghhook.outbox" and (level is None or e["log_level"] == level)
    ]


# --- Order -------------------------------------------------------------------------


def test_a_deploys_reports_go_one_at_a_time_in_order(world: World) -> None:
    world.start()
    world.deploy(status(1), status(2), status(3))
    for n in (1, 2, 3):
        request = world.poster.only()
        assert request.json == {"n": n}
        request.reply(201)
    assert len(world.poster.requests) == 3
    assert [(r["state"], r["outcome"], r["attempts"]) for r in world.rows()] == [
        ("sent", "HTTP 201", 1)
    ] * 3
    assert world.clock.getDelayedCalls() == []  # nothing waits: no timer


def test_the_next_report_waits_while_the_first_is_retried(world: World) -> None:
    world.start()
    world.deploy(status(1), status(2))
    world.poster.only().reply(503)
    assert world.poster.waiting == []
    world.clock.advance(STEP[0] - 0.25)
    assert world.poster.waiting == []
    world.clock.advance(0.25)
    again = world.poster.only()
    assert again.json == {"n": 1}
    again.reply(201)
    assert world.poster.only().json == {"n": 2}


def test_a_retrying_deploy_does_not_hold_other_deploys(world: World) -> None:
    world.start()
    world.deploy(status(1), status(2))
    world.deploy(status(10, app="other"), app="other")
    world.poster.only().reply(500)
    # the other app's deploy is sent, the first one's second report is not
    other = world.poster.only()
    assert other.json == {"n": 10}
    other.reply(201)
    world.deploy(status(20))  # another deploy of the same app
    assert world.poster.only().json == {"n": 20}


def test_reports_made_before_the_start_are_sent_at_the_start(world: World) -> None:
    world.deploy(status(1))
    assert world.poster.requests == []
    world.start()
    world.poster.only().reply(201)
    assert world.row()["state"] == "sent"


# --- Retries -----------------------------------------------------------------------


def test_errors_are_retried_with_growing_backoff(
    world: World, events: list[dict[str, Any]]
) -> None:
    world.start()
    world.deploy(status(1))
    failures: list[Callable[[Request], None]] = [
        lambda r: r.reply(503, {"message": "Service Unavailable"}),
        lambda r: r.fail(ConnectionRefusedError()),
        lambda r: r.reply(502, b"<html>Bad Gateway</html>"),
        lambda r: r.fail(ValueError("something else")),
    ]
    for attempt, failure in enumerate(failures):
        now = world.clock.seconds()
        failure(world.poster.only())
        row = world.row()
        assert row["state"] == "pending"
        assert row["attempts"] == attempt + 1
        assert row["due"] == at(now + STEP[attempt])
        world.clock.advance(STEP[attempt])
    world.poster.only().reply(201)
    assert world.row()["state"] == "sent"
    assert len(world.poster.requests) == 5
    warned = outbox_events(events, LogLevel.warn)
    assert len(warned) == 1, "a report that keeps failing is logged once"
    assert warned[0]["app"] == "app"
    assert "HTTP 503" in warned[0]["why"]
    info = outbox_events(events, LogLevel.info)
    assert [e["tries"] for e in info] == [5]


def test_the_outcome_says_why(world: World) -> None:
    world.start()
    world.deploy(status(1))
    world.poster.only().fail(ConnectionRefusedError())
    assert "connection refused" in world.row()["outcome"]
    world.clock.advance(STEP[0])
    world.poster.only().reply(503, {"message": "down for maintenance"})
    assert world.row()["outcome"] == "HTTP 503 from github: down for maintenance"


def test_the_backoff_stops_growing(world: World) -> None:
    world.start()
    world.deploy(status(1))
    for _ in range(12):
        world.poster.only().reply(503)
        world.clock.advance(world.row()["due"] - world.clock.seconds())
    assert world.row()["due"] - world.clock.seconds() == 0
    now = world.clock.seconds()
    world.poster.only().reply(503)
    assert world.row()["due"] == at(now + BACKOFF_MOST * 0.75)


@pytest.mark.parametrize(
    ("code", "headers", "body", "wait"),
    [
        (503, {"Retry-After": "120"}, None, 120.0),
        (429, {"Retry-After": "7"}, None, 7.0),
        (429, {}, None, STEP[0]),  # no hint: the backoff
        (503, {"Retry-After": str(10 * 24 * 3600)}, None, WAIT_MOST),
        (403, {}, {"message": "You have exceeded a secondary rate limit."}, SECONDARY_WAIT),
        (
            403,
            {"Retry-After": "30"},
            {"message": "You have exceeded a secondary rate limit."},
            30.0,
        ),
        (403, {}, {"message": "API rate limit exceeded for installation"}, STEP[0]),
    ],
    ids=[
        "retry-after",
        "429-retry-after",
        "429-bare",
        "retry-after-capped",
        "secondary-rate-limit",
        "secondary-rate-limit-retry-after",
        "rate-limit-words",
    ],
)
def test_the_forge_says_when_to_try_again(
    world: World, code: int, headers: dict[str, str], body: Any, wait: float
) -> None:
    world.start()
    world.deploy(status(1))
    now = world.clock.seconds()
    world.poster.only().reply(code, body, headers)
    row = world.row()
    assert (row["state"], row["due"]) == ("pending", at(now + wait))
    world.clock.advance(wait - 0.5)
    assert world.poster.waiting == []
    world.clock.advance(0.5)
    world.poster.only().reply(201)
    assert world.row()["state"] == "sent"


def real_time_world(world: World) -> float:
    """Move the fake clock to the real time: ``_wait`` reads time.time() for dates."""
    world.clock.advance(time.time() - world.clock.seconds())
    return world.clock.seconds()


def test_a_retry_after_date_is_honoured(world: World) -> None:
    now = real_time_world(world)
    world.start()
    world.deploy(status(1))
    when = email.utils.formatdate(now + 300, usegmt=True)
    world.poster.only().reply(503, None, {"Retry-After": when})
    assert world.row()["due"] == pytest.approx(now + 300, rel=0, abs=2)


@pytest.mark.parametrize("code", [403, 429])
def test_a_rate_limit_reset_is_honoured(world: World, code: int) -> None:
    now = real_time_world(world)
    world.start()
    world.deploy(status(1))
    reset = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(now) + 900)}
    world.poster.only().reply(code, {"message": "API rate limit exceeded"}, reset)
    assert world.row()["state"] == "pending"
    assert world.row()["due"] == pytest.approx(now + 900, rel=0, abs=2)


def test_a_reset_with_requests_left_is_no_rate_limit(world: World) -> None:
    now = real_time_world(world)
    world.start()
    world.deploy(status(1))
    headers = {"X-RateLimit-Remaining": "4999", "X-RateLimit-Reset": str(int(now) + 900)}
    world.poster.only().reply(403, {"message": "Resource not accessible by integration"}, headers)
    assert world.row()["state"] == "failed"


@pytest.mark.parametrize(
    "headers",
    [
        {"Retry-After": email.utils.formatdate(T0 + 300, usegmt=True)},
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(T0) + 300)},
    ],
    ids=["retry-after-date", "rate-limit-reset"],
)
def test_waits_are_on_the_outboxs_wall_clock(world: World, headers: dict[str, str]) -> None:
    world.start()
    world.deploy(status(1))
    world.poster.only().reply(429, None, headers)
    assert world.row()["due"] == at(T0 + 300)


@pytest.mark.parametrize("retry_after", ["0", "Mon, 01 Jan 2001 00:00:00 GMT"])
def test_a_retry_after_of_nothing_does_not_resend_at_once(world: World, retry_after: str) -> None:
    world.start()
    world.deploy(status(1))
    world.poster.only().reply(503, None, {"Retry-After": retry_after})
    assert world.poster.waiting == []


def test_a_rate_limit_holds_every_report_to_that_forge(world: World) -> None:
    world.start()
    world.deploy(status(1))
    world.poster.only().reply(429, None, {"Retry-After": "60"})
    world.deploy(status(2))  # another deploy, same app, same token
    assert world.poster.waiting == []


# --- Giving up ---------------------------------------------------------------------


@pytest.mark.parametrize("code", [400, 401, 403, 404, 405, 410, 422])
def test_final_answers_are_given_up_at_once(
    world: World, events: list[dict[str, Any]], code: int
) -> None:
    world.start()
    world.deploy(status(1), status(2))
    world.poster.only().reply(code, {"message": "Bad credentials"})
    row = world.row()
    assert row["state"] == "failed"
    assert row["outcome"] == f"HTTP {code} from github: Bad credentials"
    errors = outbox_events(events, LogLevel.error)
    assert len(errors) == 1
    assert (errors[0]["app"], errors[0]["kind"]) == ("app", "status")
    assert errors[0]["why"] == f"HTTP {code} from github: Bad credentials"
    # the deploy's next report goes on; the given-up one never comes back
    world.poster.only().reply(201)
    world.clock.advance(2 * GIVE_UP_AFTER)
    assert len(world.poster.requests) == 2
    assert [r["state"] for r in world.rows()] == ["failed", "sent"]
    assert len(outbox_events(events, LogLevel.error)) == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"message": "Not Found"}, "Not Found"),
        ({"error": {"message": "Resource not found"}}, "Resource not found"),
        ({"errors": [{"message": "Repository does not exist."}]}, "Repository does not exist."),
        ({"error": "state is invalid"}, "state is invalid"),
        (b"plain words\x1b[31m", "plain words\\x1b[31m"),
        (b"<html><body>404</body></html>", ""),
    ],
)
def test_the_forges_own_words_are_kept(world: World, body: Any, message: str) -> None:
    world.start()
    world.deploy(status(1))
    world.poster.only().reply(404, body)
    said = "HTTP 404 from github" + (f": {message}" if message else "")
    assert world.row()["outcome"] == said


def test_a_report_failing_for_24_hours_is_given_up(
    world: World, events: list[dict[str, Any]]
) -> None:
    world.deploy(status(1), status(2))
    world.clock.advance(GIVE_UP_AFTER - 2)
    world.start()
    world.poster.only().reply(503)
    assert world.row()["state"] == "pending"  # not yet a day old
    world.clock.advance(STEP[0])
    world.poster.only().reply(503)
    row = world.row()
    assert row["state"] == "failed"
    assert row["outcome"].startswith("still failing after 24 hours: HTTP 503")
    assert [e["log_level"] for e in outbox_events(events)] == [LogLevel.warn, LogLevel.error]
    assert world.poster.only().json == {"n": 2}  # the next goes at once


def test_a_deployments_id_fills_its_statuses_url(world: World) -> None:
    url = f"{API}/repos/me/app/deployments/{{deployment}}/statuses"
    world.start()
    world.deploy(
        Call(Kind.DEPLOYMENT, "forge", f"{API}/repos/me/app/deployments", {"ref": SHA}),
        Call(Kind.DEPLOYMENT_STATUS, "forge", url, {"state": "in_progress"}),
        Call(Kind.DEPLOYMENT_STATUS, "forge", url, {"state": "success"}),
    )
    world.poster.only().reply(201, {"id": 4242, "sha": SHA})
    for state in ("in_progress", "success"):
        request = world.poster.only()
        assert request.url == f"{API}/repos/me/app/deployments/4242/statuses"
        assert request.json == {"state": state}
        request.reply(201, {"id": 7})
    rows = world.rows()
    assert [r["state"] for r in rows] == ["sent"] * 3
    assert rows[0]["answer"] == "4242"
    assert "{deployment}" in rows[1]["url"]  # the journal keeps the template


def test_statuses_of_a_deployment_given_up_are_given_up(
    world: World, events: list[dict[str, Any]]
) -> None:
    url = f"{API}/repos/me/app/deployments/{{deployment}}/statuses"
    world.start()
    world.deploy(
        Call(Kind.DEPLOYMENT, "forge", f"{API}/repos/me/app/deployments", {"ref": SHA}),
        Call(Kind.DEPLOYMENT_STATUS, "forge", url, {"state": "in_progress"}),
        status(3),
    )
    world.poster.only().reply(422, {"message": "Validation Failed"})
    # the status of the deployment is never posted; the commit status is
    assert world.poster.only().json == {"n": 3}
    rows = world.rows()
    assert rows[1]["state"] == "failed"
    assert rows[1]["outcome"] == "the deploy's GitHub deployment was not created"
    assert len(outbox_events(events, LogLevel.error)) == 2


@pytest.mark.parametrize("how", ["removed", "no report"])
def test_an_apps_reports_are_given_up_once_it_stops_reporting(world: World, how: str) -> None:
    world.deploy(status(1))
    world.settings = DaemonSettings(
        apps=(app_settings("other"),) + ((app_settings(report=False),) if how != "removed" else ())
    )
    world.start()
    assert world.poster.requests == []
    row = world.row()
    assert (row["state"], row["outcome"]) == ("failed", "the app no longer reports to its forge")
    assert world.counter.counted == [("app", "status", "failed")]


def test_a_notification_no_longer_configured_is_given_up(world: World) -> None:
    world.deploy(Call(Kind.NOTIFY, "notify[3]", "", {"app": "app"}))
    world.start()
    assert world.poster.requests == []
    assert world.row()["state"] == "failed"
    assert world.row()["outcome"] == "notify[3] is no longer in the configuration"


def test_a_reload_applies_to_the_next_try(world: World) -> None:
    world.start()
    world.deploy(status(1))
    world.poster.only().reply(401, {"message": "Bad credentials"})
    world.settings = DaemonSettings(apps=(app_settings(token="new-token"),))
    world.deploy(status(2))
    assert world.poster.only().headers["Authorization"] == "Bearer new-token"


# --- Credentials -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("forge", "header", "value"),
    [
        ("github", "Authorization", f"Bearer {TOKEN}"),
        ("gitea", "Authorization", f"token {TOKEN}"),
        ("forgejo", "Authorization", f"token {TOKEN}"),
        ("gogs", "Authorization", f"token {TOKEN}"),
        ("gitlab", "PRIVATE-TOKEN", TOKEN),
        ("bitbucket", "Authorization", f"Bearer {TOKEN}"),
        ("bitbucket-server", "Authorization", f"Bearer {TOKEN}"),
    ],
)
def test_the_token_goes_in_the_forges_header_and_nowhere_else(
    world: World, events: list[dict[str, Any]], forge: str, header: str, value: str
) -> None:
    world.settings = DaemonSettings(apps=(app_settings(forge=forge),))
    world.start()
    world.deploy(status(1), status(2), status(3))
    request = world.poster.only()
    assert request.headers[header] == value
    assert [k for k, v in request.headers.items() if TOKEN in v] == [header]
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"].startswith("ghhook/")
    assert request.timeout == SEND_TIMEOUT
    if forge == "github":
        assert request.headers["Accept"] == "application/vnd.github+json"
        assert request.headers["X-GitHub-Api-Version"] == "2022-11-28"
    else:
        assert request.headers["Accept"] == "application/json"
        assert "X-GitHub-Api-Version" not in request.headers
    # each outcome: retried, given up, sent; none leaves the token behind
    request.reply(503, {"message": "down"})
    world.clock.advance(STEP[0])
    world.poster.only().reply(401, {"message": "Bad credentials"})
    world.poster.only().reply(201)
    world.poster.only().fail(ConnectionRefusedError())
    assert TOKEN not in repr(world.rows())
    with sqlite3.connect(world.journal.path) as db:
        dump = "\n".join(db.iterdump())
    assert "outbox" in dump
    assert TOKEN not in dump
    assert outbox_events(events)
    for event in events:
        assert TOKEN not in formatEvent(event)
        assert TOKEN not in repr(event)


# --- Stopping and waking -----------------------------------------------------------


def test_stopping_cancels_the_request_in_flight_and_keeps_the_report(
    world: World, events: list[dict[str, Any]]
) -> None:
    world.start()
    world.deploy(status(1), status(2))
    in_flight = world.poster.only()
    stopped = world.outbox.stopService()
    assert stopped.called
    assert in_flight.answer.called  # cancelled
    row = world.row()
    assert (row["state"], row["attempts"]) == ("pending", 0)
    assert world.clock.getDelayedCalls() == []
    assert outbox_events(events) == []
    assert world.counter.counted == []
    world.clock.advance(3600)
    world.deploy(status(3))  # no wake while stopped
    assert world.poster.waiting == []
    world.start()
    assert world.poster.only().json == {"n": 1}
    world.poster.only().reply(201)
    # the first waiting of each deploy, oldest first, then the next of each
    assert world.poster.only().json == {"n": 3}
    world.poster.only().reply(201)
    assert world.poster.only().json == {"n": 2}


def test_stopping_while_waiting_cancels_the_timer(world: World) -> None:
    world.start()
    world.deploy(status(1))
    world.poster.only().reply(503)
    assert len(world.clock.getDelayedCalls()) == 1
    world.outbox.stopService()
    assert world.clock.getDelayedCalls() == []
    world.start()  # the report is not due yet: it waits for its time
    assert world.poster.requests[1:] == []
    world.clock.advance(STEP[0])
    assert world.poster.only().json == {"n": 1}


def test_the_journal_wakes_the_outbox_once_it_commits(world: World) -> None:
    world.start()
    now = world.clock.seconds()
    deploy = world.journal.queue_deploy("push", None, SHA, now, app="app")
    with world.journal.transaction():
        world.journal.start_deploy(deploy, now, app="app", reports=[status(1)])
        assert world.poster.requests == []
    assert world.poster.only().json == {"n": 1}


def test_a_transaction_rolled_back_wakes_nothing(world: World) -> None:
    world.start()
    now = world.clock.seconds()
    deploy = world.journal.queue_deploy("push", None, SHA, now, app="app")
    with pytest.raises(RuntimeError), world.journal.transaction():
        world.journal.start_deploy(deploy, now, app="app", reports=[status(1)])
        raise RuntimeError("the deploy's write failed")
    assert world.poster.requests == []
    assert world.rows() == []


def test_a_wake_while_sending_is_not_lost(world: World) -> None:
    world.start()
    world.deploy(status(1))
    in_flight = world.poster.only()
    world.deploy(status(2, app="other"), app="other")  # wakes a busy outbox
    in_flight.reply(201)
    assert world.poster.only().json == {"n": 2}


def test_a_failing_journal_is_logged_once_and_retried(
    world: World, events: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    world.deploy(status(1))
    calls: list[float] = []

    def broken(now: float, limit: int = 20) -> list[dict[str, Any]]:
        calls.append(now)
        raise JournalError("the journal /x failed: disk I/O error")

    monkeypatch.setattr(world.journal, "due_reports", broken)
    world.start()
    for _ in range(3):
        world.clock.advance(BACKOFF_FIRST)
    assert len(calls) == 4
    assert world.poster.requests == []
    warned = outbox_events(events, LogLevel.warn)
    assert len(warned) == 1
    assert "disk I/O error" in warned[0]["error"]
    monkeypatch.undo()
    world.clock.advance(BACKOFF_FIRST)
    world.poster.only().reply(201)
    assert world.row()["state"] == "sent"


def test_a_report_held_behind_a_retry_wakes_nothing_now(world: World) -> None:
    world.start()
    world.deploy(status(1), status(2))
    world.poster.only().reply(503)
    assert [c.getTime() for c in world.clock.getDelayedCalls()] == [T0 + STEP[0]]
    world.clock.advance(STEP[0])  # spins on the journal as it is
    assert world.poster.only().json == {"n": 1}


def test_a_report_not_recorded_is_not_resent_at_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.start()

    def broken(*args: Any) -> None:
        raise JournalError("the journal /x failed: database or disk is full")

    monkeypatch.setattr(world.journal, "report_done", broken)
    world.deploy(status(1))
    world.poster.only().reply(201)
    assert world.poster.waiting == [], "sent again before any wait"


def test_a_journal_failing_while_filling_a_deployment_is_retried(
    world: World,
    monkeypatch: pytest.MonkeyPatch,
    reactor_left_clean: list[dict[str, Any]],
) -> None:
    url = f"{API}/repos/me/app/deployments/{{deployment}}/statuses"
    world.start()
    world.deploy(
        Call(Kind.DEPLOYMENT, "forge", f"{API}/repos/me/app/deployments", {"ref": SHA}),
        Call(Kind.DEPLOYMENT_STATUS, "forge", url, {"state": "in_progress"}),
    )
    real = world.journal.report_answer

    def broken(*args: Any) -> str | None:
        raise JournalError("the journal /x failed: disk I/O error")

    monkeypatch.setattr(world.journal, "report_answer", broken)
    try:
        world.poster.only().reply(201, {"id": 5})
        assert reactor_left_clean == [], "the outbox failed with a traceback"
        monkeypatch.setattr(world.journal, "report_answer", real)
        world.clock.advance(BACKOFF_FIRST)
        assert world.poster.only().url.endswith("/deployments/5/statuses")
    finally:
        reactor_left_clean.clear()  # asserted above; keep the teardown's check for others


def test_the_counter_is_told_every_outcome(world: World) -> None:
    world.start()
    world.deploy(status(1), status(2))
    world.poster.only().reply(503)
    world.clock.advance(STEP[0])
    world.poster.only().reply(201)
    world.poster.only().reply(404)
    assert world.counter.counted == [
        ("app", "status", "retried"),
        ("app", "status", "sent"),
        ("app", "status", "failed"),
    ]


# --- Notifications -----------------------------------------------------------------

NOTE = {"app": "app", "result": "failed", "summary": "build failed", "link": None, "error": None}


def with_notify(world: World, notify: NotifySettings) -> None:
    world.settings = DaemonSettings(apps=(app_settings(notify=(notify,)),), notify=(notify,))


def test_a_notification_is_signed_with_its_secret(world: World) -> None:
    secret = b"notify secret"
    with_notify(world, NotifySettings("notify[0]", url="https://hooks.example/n", secret=secret))
    world.start()
    world.deploy(Call(Kind.NOTIFY, "notify[0]", "", NOTE))
    request = world.poster.only()
    assert request.url == "https://hooks.example/n"
    assert request.json == NOTE
    expected = "sha256=" + hmac.new(secret, request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers[SIGNATURE_HEADER], expected)
    assert "Authorization" not in request.headers
    assert TOKEN not in repr(request.headers)
    request.reply(200, {"ok": True})
    assert world.row()["state"] == "sent"
    assert world.counter.counted == [("app", "notify", "sent")]


def test_a_notification_without_a_secret_is_not_signed(world: World) -> None:
    with_notify(world, NotifySettings("notify[0]", url="https://hooks.example/n"))
    world.start()
    world.deploy(Call(Kind.NOTIFY, "notify[0]", "", NOTE))
    request = world.poster.only()
    assert SIGNATURE_HEADER not in request.headers
    request.reply(500)
    assert world.row()["outcome"] == "HTTP 500 from the notification's receiver"
    world.clock.advance(STEP[0])
    world.poster.only().reply(403, {"message": "go away"})
    assert world.row()["state"] == "failed"


def test_a_notification_waits_behind_its_deploys_statuses(world: World) -> None:
    with_notify(world, NotifySettings("notify[0]", url="https://hooks.example/n"))
    world.start()
    world.deploy(status(1), Call(Kind.NOTIFY, "notify[0]", "", NOTE))
    world.poster.only().reply(503)
    assert world.poster.waiting == []
    world.clock.advance(STEP[0])
    world.poster.only().reply(201)
    assert world.poster.only().url == "https://hooks.example/n"


def test_apprise_is_told_in_a_thread(world: World) -> None:
    threaded: list[Callable[..., Any]] = []

    def in_thread(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        threaded.append(f)
        return maybeDeferred(f, *args)

    world.in_thread = in_thread
    with_notify(world, NotifySettings("notify[0]", apprise_url="tgram://bot/chat"))
    world.start()
    world.deploy(Call(Kind.NOTIFY, "notify[0]", "", {**NOTE, "link": "https://x/1"}))
    assert len(threaded) == 1
    assert world.apprised == [
        ("tgram://bot/chat", "ghhook: app failed", "build failed\nhttps://x/1")
    ]
    assert world.poster.requests == []
    row = world.row()
    assert (row["state"], row["outcome"]) == ("sent", "sent")
    assert world.counter.counted == [("app", "notify", "sent")]


@pytest.mark.parametrize(
    ("apprise", "outcome"),
    [
        (lambda *a: False, "Apprise could not send it"),
        (lambda *a: 1 / 0, "Apprise failed: ZeroDivisionError: division by zero"),
    ],
    ids=["not-sent", "raises"],
)
def test_apprise_failing_is_retried(
    world: World, apprise: Callable[[str, str, str], bool], outcome: str
) -> None:
    world.apprise = apprise
    with_notify(world, NotifySettings("notify[0]", apprise_url="tgram://bot/chat"))
    world.start()
    world.deploy(Call(Kind.NOTIFY, "notify[0]", "", NOTE))
    row = world.row()
    assert (row["state"], row["outcome"], row["due"]) == (
        "pending",
        outcome,
        world.clock.seconds() + STEP[0],
    )
    world.apprise = world._apprise
    world.clock.advance(STEP[0])
    assert world.row()["state"] == "sent"
    assert len(world.apprised) == 1


def test_apprise_that_hangs_times_out_and_stops_with_the_outbox(world: World) -> None:
    hanging: list[Deferred[Any]] = []

    def in_thread(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        hanging.append(Deferred())
        return hanging[-1]

    world.in_thread = in_thread
    with_notify(world, NotifySettings("notify[0]", apprise_url="tgram://bot/chat"))
    world.start()
    world.deploy(Call(Kind.NOTIFY, "notify[0]", "", NOTE))
    world.clock.advance(SEND_TIMEOUT)
    row = world.row()
    assert (row["state"], row["attempts"]) == ("pending", 1)
    assert row["outcome"].startswith("Apprise failed")
    world.clock.advance(STEP[0])
    assert len(hanging) == 2
    world.outbox.stopService()
    assert hanging[1].called  # cancelled
    assert world.row()["attempts"] == 1
    assert world.clock.getDelayedCalls() == []


def test_a_poster_failing_synchronously_is_a_retry(world: World) -> None:
    world.start()
    real = world.poster.post
    world.poster.post = lambda *a: fail(OSError("no route to host"))  # type: ignore[method-assign]
    world.deploy(status(1))
    assert world.row()["outcome"] == "OSError: no route to host"
    world.poster.post = real  # type: ignore[method-assign]
    world.clock.advance(STEP[0])
    world.poster.only().reply(201)
    assert world.row()["state"] == "sent"


@pytest.mark.parametrize(
    "headers",
    [
        {"Retry-After": "\u00b2"},
        {"Retry-After": "1 Jan 99999999999 00:00:00"},
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "\u0663"},
    ],
)
def test_an_odd_retry_after_is_a_plain_retry_not_a_stalled_outbox(
    world: World, headers: dict[str, str]
) -> None:
    """Found by a review: '²'.isdigit() is True, float('²') raises; a huge date overflows."""
    world.start()
    world.deploy(status(1))
    world.poster.only().reply(503, None, headers)
    (row,) = world.rows()
    assert row["state"] == "pending" and row["attempts"] == 1, "backed off, not crashed"


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_redirect_is_given_up_never_followed(world: World, code: int) -> None:
    """A token must not follow a redirect to another host, and a redirect is no report sent."""
    world.start()
    world.deploy(status(1))
    world.poster.only().reply(code, None, {"Location": "http://elsewhere.example/steal"})
    (row,) = world.rows()
    assert row["state"] == "failed"
    assert "redirect to http://elsewhere.example" in row["outcome"]
