"""
What a deploy's start and end report, planned by :mod:`ghhook.reports`
as plain :class:`~ghhook.reports.Call` values: each forge's commit status
(URL, state words, context, description), GitHub Deployments, the links to
a deploy's page, notifications and their repeat rule, the generic body and
its signature, each forge's auth header, and that no call holds the token.

Pure functions, table-driven; no reactor.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import attrs
import pytest

from ghhook.reports import (
    LAST_RESULT,
    NOTIFIED,
    Call,
    Ending,
    Kind,
    NotifySettings,
    Reporting,
    ReportSettings,
    apprise_text,
    auth_header,
    finished,
    notification,
    sign,
    started,
    status_call,
)
from ghhook.results import Result

SHA = "abc1234" + "0" * 33
OTHER = "def5678" + "1" * 33
PREVIOUS = "9f8e7d6" + "2" * 33
TOKEN = "ghp_NEVER-IN-A-CALL-0123456789"
PUBLIC = "https://ghhook.example/"
LINK = "https://ghhook.example/apps/blog/deploys/7"
ENVIRONMENT_URL = "https://blog.example"

#: Each forge: its API, a repository in its shape, where a status goes, its
#: words for pending, success and failure, and the body's keys.
FORGES = {
    "github": (
        "https://api.github.com",
        "me/blog",
        f"https://api.github.com/repos/me/blog/statuses/{SHA}",
        ("pending", "success", "failure"),
    ),
    "gitea": (
        "https://gitea.com/api/v1/",
        "me/blog",
        f"https://gitea.com/api/v1/repos/me/blog/statuses/{SHA}",
        ("pending", "success", "failure"),
    ),
    "forgejo": (
        "https://codeberg.org/api/v1",
        "me/blog",
        f"https://codeberg.org/api/v1/repos/me/blog/statuses/{SHA}",
        ("pending", "success", "failure"),
    ),
    "gogs": (
        "https://git.example.com/api/v1",
        "me/blog",
        f"https://git.example.com/api/v1/repos/me/blog/statuses/{SHA}",
        ("pending", "success", "failure"),
    ),
    "gitlab": (
        "https://gitlab.com/api/v4",
        "group/sub/blog",
        f"https://gitlab.com/api/v4/projects/group%2Fsub%2Fblog/statuses/{SHA}",
        ("running", "success", "failed"),
    ),
    "bitbucket": (
        "https://api.bitbucket.org/2.0",
        "workspace/blog",
        f"https://api.bitbucket.org/2.0/repositories/workspace/blog/commit/{SHA}/statuses/build",
        ("INPROGRESS", "SUCCESSFUL", "FAILED"),
    ),
    "bitbucket-server": (
        "https://bitbucket.example.com/",
        "PROJ/blog",
        f"https://bitbucket.example.com/rest/api/latest/projects/PROJ/repos/blog/commits/{SHA}/builds",
        ("INPROGRESS", "SUCCESSFUL", "FAILED"),
    ),
}
PHASES = ("pending", "success", "failure")


def expected_body(forge: str, state: str, description: str, link: str | None) -> dict[str, Any]:
    """The status body each forge's API takes."""
    if forge.startswith("bitbucket"):
        return {
            "key": "ghhook-blog",
            "state": state,
            "name": "ghhook/blog",
            "description": description,
            "url": link or "",
        }
    if forge == "gitlab":
        body = {"state": state, "name": "ghhook/blog", "description": description}
    else:
        body = {"state": state, "description": description, "context": "ghhook/blog"}
    if link is not None:
        body["target_url"] = link
    return body


def reporting(
    forge: str = "github",
    *,
    notify: tuple[NotifySettings, ...] = (),
    repository: str | None = "me/blog",
    **report: Any,
) -> Reporting:
    """The app ``blog`` on ``forge``, reporting with ``report``'s settings."""
    api, shaped, _, _ = FORGES[forge]
    settings = ReportSettings(**{"token": TOKEN, "api_url": api, **report})
    return Reporting(
        "blog", forge, shaped if repository == "me/blog" else repository, settings, notify
    )


# --- Commit statuses, per forge -----------------------------------------------------


@pytest.mark.parametrize("forge", FORGES)
@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("link", [LINK, None], ids=["link", "no-link"])
def test_a_status_per_forge(forge: str, phase: str, link: str | None) -> None:
    api, repository, url, words = FORGES[forge]
    call = status_call(forge, api, repository, SHA, phase, "deploying abc1234", "ghhook/blog", link)
    state = words[PHASES.index(phase)]
    assert call == Call(
        Kind.STATUS, "forge", url, expected_body(forge, state, "deploying abc1234", link)
    )
    assert call.method == "POST"


@pytest.mark.parametrize("forge", FORGES)
@pytest.mark.parametrize(
    ("description", "sent"),
    [
        pytest.param("x" * 140, "x" * 140, id="140-kept"),
        pytest.param("x" * 141, "x" * 139 + "\N{HORIZONTAL ELLIPSIS}", id="141-cut"),
        pytest.param("y" * 500, "y" * 139 + "\N{HORIZONTAL ELLIPSIS}", id="500-cut"),
    ],
)
def test_a_status_description_is_cut_to_140_characters(
    forge: str, description: str, sent: str
) -> None:
    api, repository, _, _ = FORGES[forge]
    call = status_call(forge, api, repository, SHA, "failure", description, "ghhook/blog", LINK)
    assert call.body["description"] == sent and len(sent) == 140


def test_a_gitlab_project_in_a_subgroup_is_one_url_encoded_id() -> None:
    call = status_call(
        "gitlab",
        "https://git.example.com/api/v4/",
        "a.b/c-d/e_f",
        SHA,
        "success",
        "deployed",
        "ghhook/blog",
        None,
    )
    assert call.url == f"https://git.example.com/api/v4/projects/a.b%2Fc-d%2Fe_f/statuses/{SHA}"


# --- A deploy's start ---------------------------------------------------------------


def test_a_start_sets_pending_on_the_pushed_commit_with_a_link() -> None:
    assert started(reporting(public_url=PUBLIC), 7, SHA) == [
        Call(
            Kind.STATUS,
            "forge",
            f"https://api.github.com/repos/me/blog/statuses/{SHA}",
            expected_body("github", "pending", "deploying abc1234", LINK),
        )
    ]


@pytest.mark.parametrize("forge", FORGES)
def test_a_start_on_each_forge_is_one_pending_status(forge: str) -> None:
    _, _, url, words = FORGES[forge]
    # deployments is GitHub's: on another forge it adds nothing.
    calls = started(reporting(forge, public_url=PUBLIC, deployments=True), 7, SHA)
    statuses = [call for call in calls if call.kind is Kind.STATUS]
    assert statuses == [
        Call(Kind.STATUS, "forge", url, expected_body(forge, words[0], "deploying abc1234", LINK))
    ]
    assert len(calls) == (3 if forge == "github" else 1)


def test_a_start_with_deployments_creates_a_github_deployment_in_progress() -> None:
    report = reporting(
        public_url=PUBLIC,
        deployments=True,
        environment="production",
        environment_url=ENVIRONMENT_URL,
    )
    status, deployment, deployment_status = started(report, 7, SHA)
    assert status.kind is Kind.STATUS and status.body["state"] == "pending"
    assert deployment == Call(
        Kind.DEPLOYMENT,
        "forge",
        "https://api.github.com/repos/me/blog/deployments",
        {
            "ref": SHA,
            "environment": "production",
            "description": "ghhook deploy 7 of abc1234",
            "auto_merge": False,
            "required_contexts": [],
            "transient_environment": False,
            "production_environment": False,
        },
    )
    assert deployment_status == Call(
        Kind.DEPLOYMENT_STATUS,
        "forge",
        "https://api.github.com/repos/me/blog/deployments/{deployment}/statuses",
        {
            "state": "in_progress",
            "description": "deploying",
            "log_url": LINK,
            "environment_url": ENVIRONMENT_URL,
        },
    )


def test_a_deployments_environment_defaults_to_the_apps_name() -> None:
    calls = started(reporting(deployments=True), 7, SHA)
    assert [call.kind for call in calls] == [
        Kind.STATUS,
        Kind.DEPLOYMENT,
        Kind.DEPLOYMENT_STATUS,
    ]
    assert calls[1].body["environment"] == "blog"
    assert calls[2].body == {"state": "in_progress", "description": "deploying"}, "no links"


def test_a_start_without_statuses_makes_only_the_deployment() -> None:
    calls = started(reporting(statuses=False, deployments=True), 7, SHA)
    assert [call.kind for call in calls] == [Kind.DEPLOYMENT, Kind.DEPLOYMENT_STATUS]
    assert started(reporting(statuses=False), 7, SHA) == []


@pytest.mark.parametrize(
    ("subject", "sha"),
    [
        pytest.param(Reporting("blog", "github", "me/blog", None), SHA, id="no-report-settings"),
        pytest.param(reporting(repository=None, deployments=True), SHA, id="no-repository"),
        pytest.param(reporting(deployments=True), None, id="catch-up"),
    ],
)
def test_a_start_reports_nothing(subject: Reporting, sha: str | None) -> None:
    assert started(subject, 7, sha) == []


# --- A deploy's end -----------------------------------------------------------------


def ending(result: Result, **kw: Any) -> Ending:
    values: dict[str, Any] = {
        "deploy": 7,
        "result": result,
        "sha": SHA,
        "previous": PREVIOUS,
        "duration": 41.2,
    }
    values.update(kw)
    return Ending(**values)


ENDINGS = [
    pytest.param(ending(Result.DEPLOYED), "success", "deployed abc1234 in 41 s", id="deployed"),
    pytest.param(
        ending(Result.FAILED, failed_step="build", error="make: *** [all] Error 2"),
        "failure",
        "build failed; 9f8e7d6 still runs",
        id="failed",
    ),
    pytest.param(
        ending(Result.FAILED, failed_step="pull"),
        "failure",
        "git pull failed; 9f8e7d6 still runs",
        id="failed-pull",
    ),
    pytest.param(
        ending(Result.TIMEOUT, failed_step="restart"),
        "failure",
        "restart timed out; 9f8e7d6 still runs",
        id="timeout",
    ),
    pytest.param(
        ending(Result.ROLLED_BACK, failed_step="health"),
        "failure",
        "health check failed; rolled back to 9f8e7d6",
        id="rolled-back",
    ),
    pytest.param(
        ending(Result.INTERRUPTED),
        "failure",
        "interrupted: ghhook stopped during the deploy; it catches up at its next start",
        id="interrupted",
    ),
]


@pytest.mark.parametrize("forge", FORGES)
@pytest.mark.parametrize(("end", "phase", "words"), ENDINGS)
def test_an_end_sets_the_final_status_in_each_forges_words(
    forge: str, end: Ending, phase: str, words: str
) -> None:
    _, _, url, states = FORGES[forge]
    calls, written = finished(reporting(forge, public_url=PUBLIC), end, SHA, {}, 1000.0)
    state = states[PHASES.index(phase)]
    assert calls == [Call(Kind.STATUS, "forge", url, expected_body(forge, state, words, LINK))]
    assert written == {LAST_RESULT: end.result.value}


@pytest.mark.parametrize(("end", "phase", "words"), ENDINGS)
def test_an_end_finishes_the_github_deployment(end: Ending, phase: str, words: str) -> None:
    report = reporting(public_url=PUBLIC, deployments=True, environment_url=ENVIRONMENT_URL)
    calls, _ = finished(report, end, SHA, {}, 1000.0)
    assert [call.kind for call in calls] == [Kind.STATUS, Kind.DEPLOYMENT_STATUS]
    assert calls[1] == Call(
        Kind.DEPLOYMENT_STATUS,
        "forge",
        "https://api.github.com/repos/me/blog/deployments/{deployment}/statuses",
        {
            "state": phase,
            "description": words,
            "log_url": LINK,
            "environment_url": ENVIRONMENT_URL,
        },
    )


@pytest.mark.parametrize(
    ("settings", "link"),
    [
        pytest.param({"public_url": PUBLIC}, LINK, id="public-url"),
        pytest.param(
            {"public_url": "https://ghhook.example/admin", "environment_url": ENVIRONMENT_URL},
            "https://ghhook.example/admin/apps/blog/deploys/7",
            id="public-url-wins",
        ),
        pytest.param({"environment_url": ENVIRONMENT_URL}, ENVIRONMENT_URL, id="environment-url"),
        pytest.param({}, None, id="none"),
    ],
)
def test_the_link_is_the_deploys_page_else_the_environment(
    settings: dict[str, Any], link: str | None
) -> None:
    end = ending(Result.DEPLOYED)
    (status,), _ = finished(reporting(**settings), end, SHA, {}, 1000.0)
    assert status.body.get("target_url") == link
    assert ("target_url" in status.body) == (link is not None)
    (bitbucket,), _ = finished(reporting("bitbucket", **settings), end, SHA, {}, 1000.0)
    assert bitbucket.body["url"] == (link or "")


def test_a_deploy_that_ends_on_another_commit_marks_both() -> None:
    calls, _ = finished(reporting(), ending(Result.DEPLOYED, sha=OTHER), SHA, {}, 1000.0)
    assert [(call.url.rsplit("/", 1)[1], call.body["state"]) for call in calls] == [
        (SHA, "success"),
        (OTHER, "success"),
    ]
    calls, _ = finished(reporting(), ending(Result.FAILED, sha=OTHER), SHA, {}, 1000.0)
    assert [call.url.rsplit("/", 1)[1] for call in calls] == [SHA], "only the one marked pending"


@pytest.mark.parametrize(
    "subject",
    [
        pytest.param(Reporting("blog", "github", "me/blog", None), id="no-report-settings"),
        pytest.param(reporting(repository=None, deployments=True), id="no-repository"),
    ],
)
@pytest.mark.parametrize("pending", [SHA, None], ids=["pending", "catch-up"])
def test_an_end_reports_nothing_to_the_forge(subject: Reporting, pending: str | None) -> None:
    assert finished(subject, ending(Result.FAILED), pending, {}, 1000.0) == (
        [],
        {LAST_RESULT: "failed"},
    )


def test_an_end_without_a_pending_commit_sets_no_status() -> None:
    calls, _ = finished(reporting(deployments=True), ending(Result.DEPLOYED), None, {}, 1000.0)
    assert calls == []


# --- Notifications ------------------------------------------------------------------


HOOK = NotifySettings(name="notify[0]", url="https://hooks.example/T0K3N-in-url", secret=b"k")


def notifies(
    result: Result,
    notify: NotifySettings = HOOK,
    known: dict[str, str] | None = None,
    now: float = 1000.0,
) -> tuple[list[Call], dict[str, str]]:
    calls, written = finished(
        Reporting("blog", "github", "me/blog", None, (notify,)),
        ending(result, failed_step="build"),
        SHA,
        known or {},
        now,
    )
    return [call for call in calls if call.kind is Kind.NOTIFY], written


@pytest.mark.parametrize(
    ("on", "told"),
    [
        pytest.param(None, {"failed", "timeout", "rolled_back"}, id="default"),
        pytest.param(("deployed",), {"deployed"}, id="deployed-only"),
        pytest.param(
            ("deployed", "failed", "timeout", "rolled_back", "interrupted"),
            {"deployed", "failed", "timeout", "rolled_back", "interrupted"},
            id="all",
        ),
        pytest.param((), set(), id="none"),
    ],
)
def test_a_notification_is_sent_only_for_the_results_it_is_on(
    on: tuple[str, ...] | None, told: set[str]
) -> None:
    notify = HOOK if on is None else attrs.evolve(HOOK, on=on)
    sent = set()
    for result in Result:
        calls, written = notifies(result, notify)
        assert written[LAST_RESULT] == result.value
        if calls:
            (call,) = calls
            assert (call.kind, call.target, call.url, call.method) == (
                Kind.NOTIFY,
                "notify[0]",
                "",
                "POST",
            )
            assert written == {LAST_RESULT: result.value, NOTIFIED + "notify[0]": "1000.0"}
            sent.add(result.value)
        else:
            assert written == {LAST_RESULT: result.value}
    assert sent == told


@pytest.mark.parametrize(
    ("apps", "sent"),
    [
        pytest.param(None, True, id="every-app"),
        pytest.param(("blog",), True, id="listed"),
        pytest.param(("api", "blog"), True, id="one-of-listed"),
        pytest.param(("api",), False, id="not-listed"),
    ],
)
def test_a_notification_is_sent_only_for_the_apps_it_lists(
    apps: tuple[str, ...] | None, sent: bool
) -> None:
    calls, _ = notifies(Result.FAILED, attrs.evolve(HOOK, apps=apps))
    assert bool(calls) is sent


@pytest.mark.parametrize(
    ("known", "now", "sent"),
    [
        pytest.param({}, 1000.0, True, id="first"),
        pytest.param(
            {LAST_RESULT: "failed", "notified:notify[0]": "1000.0"},
            1000.0 + 3599.0,
            False,
            id="same-result-within-repeat-after",
        ),
        pytest.param(
            {LAST_RESULT: "failed", "notified:notify[0]": "1000.0"},
            1000.0 + 3600.0,
            True,
            id="same-result-at-repeat-after",
        ),
        pytest.param(
            {LAST_RESULT: "failed", "notified:notify[0]": "1000.0"},
            1000.0 + 7200.0,
            True,
            id="same-result-after-repeat-after",
        ),
        pytest.param(
            {LAST_RESULT: "deployed", "notified:notify[0]": "1000.0"},
            1001.0,
            True,
            id="another-result-in-between",
        ),
        pytest.param(
            {LAST_RESULT: "timeout", "notified:notify[0]": "1000.0"},
            1001.0,
            True,
            id="another-bad-result-in-between",
        ),
        pytest.param(
            {LAST_RESULT: "failed", "notified:notify[1]": "1000.0"},
            1001.0,
            True,
            id="another-notification-told",
        ),
        pytest.param(
            {LAST_RESULT: "failed", "notified:notify[0]": "garbage"},
            1001.0,
            True,
            id="unreadable-time",
        ),
    ],
)
def test_the_same_result_again_is_told_only_after_repeat_after(
    known: dict[str, str], now: float, sent: bool
) -> None:
    calls, written = notifies(Result.FAILED, known=known, now=now)
    assert bool(calls) is sent
    expected = {LAST_RESULT: "failed"}
    if sent:
        expected[NOTIFIED + "notify[0]"] = repr(now)
    assert written == expected


def test_the_repeat_rule_over_a_run_of_deploys() -> None:
    """The state keys written by one end are what the next end knows."""
    fast = attrs.evolve(HOOK, name="notify[1]", repeat_after=60.0)
    subject = Reporting("blog", "github", "me/blog", None, (HOOK, fast))
    known: dict[str, str] = {}
    told = []
    for now, result in [
        (0.0, Result.FAILED),  # both tell
        (30.0, Result.FAILED),  # neither: the same, too soon
        (90.0, Result.FAILED),  # the fast one: its 60 s are up
        (100.0, Result.DEPLOYED),  # neither is on deployed
        (110.0, Result.FAILED),  # both: another result came in between
        (3600.0, Result.FAILED),  # the fast one: the slow one's hour is not up
        (3710.0, Result.FAILED),  # both
    ]:
        calls, written = finished(subject, ending(result), SHA, known, now)
        known.update(written)
        told.append((now, [call.target for call in calls if call.kind is Kind.NOTIFY]))
    assert told == [
        (0.0, ["notify[0]", "notify[1]"]),
        (30.0, []),
        (90.0, ["notify[1]"]),
        (100.0, []),
        (110.0, ["notify[0]", "notify[1]"]),
        (3600.0, ["notify[1]"]),
        (3710.0, ["notify[0]", "notify[1]"]),
    ]
    assert known == {
        LAST_RESULT: "failed",
        "notified:notify[0]": "3710.0",
        "notified:notify[1]": "3710.0",
    }


def test_a_notifications_body_tells_the_whole_deploy() -> None:
    end = ending(
        Result.ROLLED_BACK,
        failed_step="health",
        error="GET /health: 503",
        duration=12.34567,
    )
    subject = reporting(public_url=PUBLIC, notify=(HOOK,))
    calls, _ = finished(subject, end, SHA, {}, 1000.0)
    (call,) = [call for call in calls if call.kind is Kind.NOTIFY]
    assert call.body == {
        "app": "blog",
        "deploy": 7,
        "result": "rolled_back",
        "sha": SHA,
        "previous_sha": PREVIOUS,
        "branch": None,
        "repository": "me/blog",
        "failed_step": "health",
        "error": "GET /health: 503",
        "duration": 12.346,
        "link": LINK,
        "summary": "health check failed; rolled back to 9f8e7d6",
    }
    json.dumps(call.body)  # it is sent as JSON


def test_a_notification_without_report_settings_has_no_link() -> None:
    subject = Reporting("blog", "github", None, None, (HOOK,))
    body = notification(subject, ending(Result.FAILED), "words")
    assert (body["link"], body["repository"], body["summary"]) == (None, None, "words")


def test_an_apprise_notification_has_a_title_and_lines() -> None:
    subject = reporting(public_url=PUBLIC)
    body = notification(subject, ending(Result.ROLLED_BACK, error="boom"), "summary")
    assert apprise_text(body) == ("ghhook: blog rolled back", f"summary\nboom\n{LINK}")


@pytest.mark.parametrize("secret", [b"k", b"a longer secret\x00\xff"])
@pytest.mark.parametrize(
    "body", [b"", b'{"app": "blog"}', "caf\N{LATIN SMALL LETTER E WITH ACUTE}".encode()]
)
def test_sign_is_hmac_sha256_of_the_body(body: bytes, secret: bytes) -> None:
    digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
    assert sign(body, secret) == "sha256=" + digest


# --- Credentials ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("forge", "header"),
    [
        ("github", ("Authorization", f"Bearer {TOKEN}")),
        ("gitea", ("Authorization", f"token {TOKEN}")),
        ("forgejo", ("Authorization", f"token {TOKEN}")),
        ("gogs", ("Authorization", f"token {TOKEN}")),
        ("gitlab", ("PRIVATE-TOKEN", TOKEN)),
        ("bitbucket", ("Authorization", f"Bearer {TOKEN}")),
        ("bitbucket-server", ("Authorization", f"Bearer {TOKEN}")),
    ],
)
def test_the_auth_header_per_forge(forge: str, header: tuple[str, str]) -> None:
    assert auth_header(forge, TOKEN) == header


@pytest.mark.parametrize("forge", FORGES)
def test_no_call_holds_the_token(forge: str) -> None:
    subject = reporting(
        forge,
        public_url=PUBLIC,
        deployments=True,
        environment_url=ENVIRONMENT_URL,
        notify=(attrs.evolve(HOOK, on=("deployed", "failed")),),
    )
    calls = started(subject, 7, SHA)
    for end in (ending(Result.DEPLOYED, sha=OTHER), ending(Result.FAILED, error="boom")):
        calls += finished(subject, end, SHA, {}, 1000.0)[0]
    assert {call.kind for call in calls} >= {Kind.STATUS, Kind.NOTIFY}
    for call in calls:
        assert TOKEN not in repr(call)
        assert TOKEN not in json.dumps(call.body)
        assert "T0K3N" not in repr(call), "nor the notification's URL"
    assert TOKEN not in repr(subject)
    assert "T0K3N" not in repr(HOOK) and "b'k'" not in repr(HOOK)
