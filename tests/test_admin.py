"""
The admin listener's HTTP contract for a daemon of several apps, driven in
memory through StubTreq: real engines over a real journal, fake runners and
a fake clock.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.python.failure import Failure

import ghhook
from ghhook.admin import (
    RECENT_DEPLOYS,
    Admin,
    app_document,
    status_document,
    wants_html,
)
from ghhook.config import AppSettings, DaemonSettings
from ghhook.deployer import Deployer, Submission
from ghhook.engines import Engines, Slots
from ghhook.journal import AppJournal, Journal, JournalError
from ghhook.metrics import Metrics
from ghhook.runner import StepResult
from tests.fakes import FakeRunner, fill_disk

A, B, C, D = ("a" * 40, "b" * 40, "c" * 40, "d" * 40)
#: The admin listener answers only Host names it knows: loopback ones by default.
URL = "http://127.0.0.1:9000"
#: What a pusher controls ends up in git's output and so in the journal.
HOSTILE = '<script>document.title="pwned"</script><img src=x onerror="document.title=1">'
T0 = 1_700_000_000.0
#: What a browser sends for a page (Firefox's header).
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
APPS = ("blog", "api", "api-staging")
CONFIG = "/etc/ghhook/ghhook.toml"


def fill(journal: AppJournal) -> dict[str, int]:
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
        ids["deployed"],
        "deployed",
        B,
        T0 + 3,
        subject="Fix the <b>login</b>",
        author="Ann",
        state={"deployed": B},
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


def app_settings(tmp_path: Path, name: str, **overrides: Any) -> AppSettings:
    """An app whose clone is only what the engine reads itself (.git/HEAD on main)."""
    git_dir = tmp_path / name / ".git"
    git_dir.mkdir(parents=True, exist_ok=True)
    (git_dir / "HEAD").write_text("ref: refs/heads/main\n")
    fields: dict[str, Any] = {
        "repo": str(tmp_path / name),
        "git_dir": str(git_dir),
        "remote": "origin",
        "branch": "main",
        "git": "/usr/bin/git",
        "name": name,
        "repository": f"me/{name}",
        "secrets": (b"s3cret-never-shown",),
        "restart": None,
        "timeout": 30.0,
        "env": {"PATH": "/usr/bin", "TOKEN": "env-never-shown"},
    }
    return AppSettings(**{**fields, **overrides})


class Host:
    """Several apps in one daemon: an engine each over one journal, a fake runner each."""

    def __init__(
        self,
        tmp_path: Path,
        names: Sequence[str] = APPS,
        source: str | None = None,
        metrics: Metrics | None = None,
        **overrides: Any,
    ) -> None:
        self.tmp_path = tmp_path
        self.clock = Clock()
        self.journal = Journal(tmp_path / "j.sqlite3").open()
        self.metrics = metrics
        self.runners: dict[str, FakeRunner] = {}
        apps = tuple(app_settings(tmp_path, name, **overrides) for name in names)
        self.settings = DaemonSettings(apps=apps, source=source)
        self.engines = Engines(self.settings, self.make)

    def make(self, app: AppSettings, slots: Slots) -> Deployer:
        runner = self.runners[app.name] = FakeRunner(head=A)
        listeners = [self.metrics.for_app(app.name)] if self.metrics is not None else []
        return Deployer(
            app,
            runner,
            self.journal,
            self.clock,
            wall_clock=self.clock.seconds,
            listeners=listeners,
            slots=slots,
        )

    def engine(self, name: str) -> Deployer:
        engine = self.engines.get(name)
        assert engine is not None, name
        return engine

    def app_journal(self, name: str) -> AppJournal:
        return self.journal.for_app(name)

    def turn(self) -> None:
        """Let the reactor take its next turn (queued cycles start on it)."""
        self.clock.advance(0)

    def submit(self, name: str, sha: str, delivery: str) -> Submission:
        sub = self.engine(name).submit(sha, delivery)
        assert isinstance(sub, Submission), sub
        return sub


class Client:
    """An admin resource over a host's engines, and an in-memory client."""

    def __init__(
        self,
        host: Host,
        admin: Admin | None = None,
        config_error: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.host = host
        self.metrics = host.metrics if host.metrics is not None else Metrics()
        self.admin = admin or Admin(
            host.engines, host.journal, self.metrics, config_error=config_error
        )
        self.stub = StubTreq(self.admin.resource())

    def request(self, method: str, path: str, accept: str | None = None) -> tuple[int, Any, bytes]:
        answers: list[Any] = []
        headers = {"Accept": [accept]} if accept is not None else None
        d = self.stub.request(method, URL + path, headers=headers)
        d.addCallback(lambda r: answers.append(r) or self.stub.content(r))
        d.addBoth(answers.append)
        self.stub.flush()
        assert len(answers) == 2, f"{method} {path} got no answer"
        if isinstance(answers[1], Failure):
            answers[1].raiseException()
        return answers[0].code, answers[0].headers, answers[1]

    def json(
        self, method: str, path: str, accept: str | None = None
    ) -> tuple[int, Any, dict[str, Any]]:
        code, headers, body = self.request(method, path, accept)
        assert headers.getRawHeaders("Content-Type") == ["application/json"]
        return code, headers, json.loads(body)

    def page(self, path: str, accept: str | None = BROWSER) -> tuple[int, Any, str]:
        code, headers, body = self.request("GET", path, accept)
        assert headers.getRawHeaders("Content-Type") == ["text/html; charset=utf-8"]
        assert headers.getRawHeaders("Cache-Control") == ["no-store"]
        policy = headers.getRawHeaders("Content-Security-Policy")[0]
        assert "default-src 'none'" in policy and "script-src" not in policy
        assert "frame-ancestors 'none'" in policy
        assert headers.getRawHeaders("X-Content-Type-Options") == ["nosniff"]
        assert headers.getRawHeaders("Referrer-Policy") == ["no-referrer"]
        return code, headers, body.decode("utf-8")

    def status(self) -> dict[str, Any]:
        code, headers, body = self.json("GET", "/status")
        assert code == 200
        assert headers.getRawHeaders("Cache-Control") == ["no-store"]
        return body

    def app(self, name: str, accept: str | None = None) -> dict[str, Any]:
        code, headers, body = self.json("GET", f"/apps/{name}", accept)
        assert code == 200
        assert headers.getRawHeaders("Cache-Control") == ["no-store"]
        assert headers.getRawHeaders("Vary") == ["Accept"]
        return body


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


@pytest.fixture
def client(host: Host) -> Client:
    return Client(host)


def summary(host: Host, name: str, **overrides: Any) -> dict[str, Any]:
    """An app as /status lists it while nothing has happened to it."""
    base = {
        "name": name,
        "repo": str(host.tmp_path / name),
        "branch": "main",
        "forge": "github",
        "repository": f"me/{name}",
        "github_repo": f"me/{name}",
        "head": None,
        "deployed": None,
        "busy": False,
        "running": None,
        "pending": None,
        "paused": None,
        "held": None,
        "last": None,
        "reports": {"pending": 0, "failed": 0},
    }
    return {**base, **overrides}


def test_status_of_a_fresh_daemon_lists_every_app_in_config_order(client: Client) -> None:
    host = client.host
    assert client.status() == {
        "version": ghhook.__version__,
        "config": None,
        "config_error": None,
        "journal_error": None,
        "apps": [summary(host, name) for name in APPS],
    }


def test_status_names_the_config_file_and_why_the_last_reload_failed(tmp_path: Path) -> None:
    errors: list[str | None] = [None]
    client = Client(Host(tmp_path, source=CONFIG), config_error=lambda: errors[-1])
    assert (client.status()["config"], client.status()["config_error"]) == (CONFIG, None)
    errors.append("ghhook.toml: apps.api.restart_pidfile: no such file")
    status = client.status()
    assert status["config_error"] == "ghhook.toml: apps.api.restart_pidfile: no such file"
    assert [app["name"] for app in status["apps"]] == list(APPS), "the old apps still serve"
    errors.append(None)
    assert client.status()["config_error"] is None


def test_secrets_and_the_environment_are_never_shown(client: Client) -> None:
    fill(client.host.app_journal("blog"))
    for path in ("/status", "/apps/blog", "/"):
        for accept in (None, BROWSER):
            body = client.request("GET", path, accept)[2]
            assert b"never-shown" not in body and b"s3cret" not in body, (path, accept)


def test_last_is_each_apps_newest_finished_deploy(client: Client) -> None:
    host = client.host
    ids = fill(host.app_journal("blog"))
    api = host.app_journal("api")
    unchanged = api.queue_deploy("catch-up", None, None, T0 + 5)
    api.finish_deploy(unchanged, "unchanged", A, T0 + 6)
    apps = {app["name"]: app for app in client.status()["apps"]}
    blog_last = apps["blog"]["last"]
    assert blog_last["id"] == ids["timeout"], "the queued one is newer but not finished"
    assert blog_last["result"] == "timeout"
    assert blog_last["finished"] == "2023-11-14T22:23:40.000Z"
    assert blog_last["steps"][0]["timed_out"] is True
    assert (apps["api"]["last"]["id"], apps["api"]["last"]["result"]) == (unchanged, "unchanged")
    assert apps["api-staging"]["last"] is None, "another app's deploys are not its own"


def test_status_shows_what_each_engine_runs_and_what_waits_its_turn(client: Client) -> None:
    """Three catch-ups, two slots: two apps deploy, the third waits for a slot."""
    host = client.host
    host.engines.start()
    host.turn()
    apps = {app["name"]: app for app in client.status()["apps"]}
    catch_up = {
        "trigger": "catch-up",
        "target": None,
        "delivery": None,
        "pushes": 0,
        "forced": False,
        "force": False,
        "requested_by": None,
    }
    assert apps["blog"]["busy"] and apps["api"]["busy"]
    assert apps["blog"]["running"] == {"id": 1, **catch_up}
    assert apps["api"]["running"] == {"id": 2, **catch_up}
    assert apps["api-staging"]["busy"] is False and apps["api-staging"]["running"] is None
    assert apps["api-staging"]["pending"] == {"id": 3, **catch_up}
    assert apps["blog"]["head"] == A

    sub = host.submit("blog", B, "d-1")
    blog = client.app("blog")
    assert blog["pending"] == {
        "id": sub.deploy,
        "trigger": "push",
        "target": B,
        "delivery": "d-1",
        "pushes": 1,
        "forced": False,
        "force": False,
        "requested_by": None,
    }
    assert [(d["id"], d["result"]) for d in blog["deploys"]] == [
        (sub.deploy, "queued"),
        (1, "running"),
    ]

    host.runners["blog"].pull_to(A)  # blog's catch-up: nothing new; its slot goes to api-staging
    apps = {app["name"]: app for app in client.status()["apps"]}
    assert apps["api-staging"]["busy"] is True
    assert apps["blog"]["last"]["result"] == "unchanged"
    assert apps["blog"]["pending"]["id"] == sub.deploy, "blog now waits its turn"
    host.runners["api"].pull_to(A)
    host.turn()
    host.runners["blog"].pull_to(B)
    apps = {app["name"]: app for app in client.status()["apps"]}
    assert (apps["blog"]["busy"], apps["blog"]["running"], apps["blog"]["pending"]) == (
        False,
        None,
        None,
    )
    assert (apps["blog"]["head"], apps["blog"]["deployed"]) == (B, B)
    assert (apps["blog"]["last"]["id"], apps["blog"]["last"]["result"]) == (
        sub.deploy,
        "deployed",
    )
    assert apps["api"]["deployed"] == A


def test_an_app_document_in_json(client: Client) -> None:
    host = client.host
    ids = fill(host.app_journal("blog"))
    fill(host.app_journal("api"))
    host.engine("blog").head = B
    blog = client.app("blog")
    deploys = blog.pop("deploys")
    assert blog == {
        "name": "blog",
        "repo": str(host.tmp_path / "blog"),
        "branch": "main",
        "remote": "origin",
        "forge": "github",
        "repository": "me/blog",
        "github_repo": "me/blog",
        "head": B,
        "deployed": B,
        "busy": False,
        "running": None,
        "pending": None,
        "paused": None,
        "held": None,
        "reports": {"pending": 0, "failed": 0},
        "journal_error": None,
    }
    assert [d["id"] for d in deploys] == [
        ids["queued"],
        ids["timeout"],
        ids["failed"],
        ids["deployed"],
    ], "newest first, the app's own only"
    assert [d["result"] for d in deploys] == ["queued", "timeout", "failed", "deployed"]
    assert deploys[3] == {
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
        "requested_by": None,
        "changed": None,
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
    timeout = deploys[1]
    assert timeout["sha"] is None and timeout["trigger"] == "catch-up"
    assert timeout["duration"] == 600.0
    queued = deploys[0]
    assert queued["sha"] == C, "a deploy not yet finished shows the sha it targets"
    assert (queued["started"], queued["finished"], queued["duration"]) == (None, None, None)
    assert client.app("api-staging")["deploys"] == []


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (None, False),
        ("", False),
        ("*/*", False),
        ("application/json", False),
        ("application/json, text/html", False),
        ("text/html", True),
        ("text/html, application/json", True),
        (BROWSER, True),
        # Chromium's header.
        (
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
            "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7",
            True,
        ),
        ("application/xhtml+xml", True),
        ("TEXT/HTML; charset=utf-8", True),
        ("text/html;q=0.5, application/json", False),
        ("application/json;q=0.5, text/html", True),
        ("text/html;q=0, application/json;q=0.1", False),
        ("text/html;q=nan", False),
        ("text/html;q=x, application/json", False),
        ("text/plain", False),
    ],
)
def test_wants_html(accept: str | None, html: bool) -> None:
    assert wants_html(None if accept is None else accept.encode("latin-1")) is html


def test_an_app_page_for_a_browser(client: Client) -> None:
    host = client.host
    ids = fill(host.app_journal("blog"))
    host.engine("blog").head = B
    code, headers, page = client.page("/apps/blog")
    assert code == 200
    assert headers.getRawHeaders("Vary") == ["Accept"]
    assert page.startswith("<!DOCTYPE html>")
    assert f'id="deploy-{ids["failed"]}"' in page
    assert "<title>ghhook: blog: " in page
    assert '<a href="../" id="back">' in page, "a link back to the overview"
    assert B in page
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;" in page


def test_the_same_url_answers_json_to_a_script(client: Client) -> None:
    fill(client.host.app_journal("blog"))
    for accept in (None, "*/*", "application/json"):
        assert client.app("blog", accept)["name"] == "blog"


@pytest.mark.parametrize("name", ["nothing", "Blog", "blog2", "%3Cscript%3E"])
def test_an_unknown_app_is_404(client: Client, name: str) -> None:
    code, _, body = client.json("GET", f"/apps/{name}")
    assert (code, body) == (404, {"error": "no app of this name is configured"})
    code, _, page = client.page(f"/apps/{name}")
    assert code == 404
    assert "No such app" in page and '<a href="../" id="back">' in page
    assert "<script" not in page


def test_a_removed_app_is_404_and_leaves_the_overview(client: Client) -> None:
    host = client.host
    fill(host.app_journal("api"))
    kept = tuple(app for app in host.settings.apps if app.name != "api")
    host.engines.apply(attrs.evolve(host.settings, apps=kept))
    assert client.json("GET", "/apps/api")[0] == 404
    assert client.page("/apps/api")[0] == 404
    assert [app["name"] for app in client.status()["apps"]] == ["blog", "api-staging"]
    assert 'id="app-api"' not in client.page("/")[2]


def test_the_overview_has_a_row_per_app_linking_to_its_page(client: Client) -> None:
    host = client.host
    host.engines.start()
    host.turn()  # blog and api run their catch-ups, api-staging waits for a slot
    ids = fill(host.app_journal("blog"))
    code, _, page = client.page("/", accept=None)
    assert code == 200
    assert page.startswith("<!DOCTYPE html>")
    rows = [page.index(f'id="app-{name}"') for name in APPS]
    assert rows == sorted(rows), "in the order of the config"
    for name in APPS:
        assert f'<a href="apps/{name}">{name}</a>' in page
    blog = page[page.rindex("<tr", 0, rows[0]) : rows[1]]
    assert blog.startswith('<tr class="app failure"'), "the last result is a timeout: tinted"
    assert 'data-state="deploying"' in blog
    assert "badge slow" in blog and f"deploy {ids['timeout']}" in blog
    assert "2023-11-14 22:23:40" in blog
    api = page[page.rindex("<tr", 0, rows[1]) : rows[2]]
    assert api.startswith('<tr class="app"') and "-</td>" in api, "no result yet"
    staging = page[rows[2] :]
    assert 'data-state="pending"' in staging
    assert 'id="config-error"' not in page


def test_the_overview_escapes_what_apps_and_pushers_set(tmp_path: Path) -> None:
    """App names are checked by the config; branches and what git says are not."""
    host = Host(tmp_path, names=("blog",), branch=HOSTILE, repository=HOSTILE)
    blog = host.app_journal("blog")
    deploy = blog.queue_deploy("push", "d-1", B, T0)
    blog.finish_deploy(deploy, "failed", HOSTILE, T0 + 1, HOSTILE, HOSTILE, subject=HOSTILE)
    client = Client(host, config_error=lambda: f"ghhook.toml: apps.blog.build: {HOSTILE}")
    for path in ("/", "/apps/blog"):
        page = client.page(path)[2]
        assert "<script" not in page and "<img" not in page, path
        assert "&lt;script&gt;" in page, path


def test_the_overview_says_when_the_last_reload_failed(tmp_path: Path) -> None:
    problems = "ghhook.toml: apps.api.restart_pidfile: no such file\nghhook.toml: apps.x: bad"
    client = Client(Host(tmp_path, source=CONFIG), config_error=lambda: problems)
    page = client.page("/")[2]
    banner = page[page.index('id="config-error"') : page.index("</div></div>")]
    assert f"<code>{CONFIG}</code>" in banner
    assert "still in use" in banner
    assert '<div class="problem">ghhook.toml: apps.api.restart_pidfile: no such file' in banner
    assert '<div class="problem">ghhook.toml: apps.x: bad' in banner


def test_status_keeps_control_characters_as_they_were(client: Client) -> None:
    """The page shows them escaped; the JSON is faithful, and JSON escapes them itself."""
    journal = client.host.app_journal("blog")
    deploy = journal.queue_deploy("push", "d-1", B, T0)
    output = "\x1b[31merror\x1b[0m: \x9b2J\x7f"
    journal.add_step(deploy, 1, StepResult("build", ("make",), 2, None, False, T0, 1.0, output))
    journal.finish_deploy(
        deploy, "failed", B, T0 + 1, "build", f"build exited with 2: {output}", subject=output
    )
    code, _, body = client.request("GET", "/apps/blog")
    assert code == 200
    assert b"\x1b" not in body and b"\\u001b[31m" in body
    [shown] = json.loads(body)["deploys"]
    assert shown["steps"][0]["output"] == output
    assert (shown["subject"], shown["error"]) == (output, f"build exited with 2: {output}")
    assert client.status()["apps"][0]["last"]["subject"] == output
    page = client.page("/apps/blog")[2]
    assert "\x1b" not in page and '<span class="ctl">\\x1b</span>[31merror' in page


@pytest.mark.parametrize("path", ["/", "/apps/blog", "/apps/nothing"])
def test_head_sends_no_body(client: Client, path: str) -> None:
    code, _, body = client.request("HEAD", path, BROWSER)
    assert code in (200, 404)
    assert body == b""


def test_deploys_survive_reopening_the_journal(tmp_path: Path, client: Client) -> None:
    host = client.host
    fill(host.app_journal("blog"))
    before = client.status()
    deploys = client.app("blog")["deploys"]
    host.journal.close()
    again = Client(Host(tmp_path))
    assert again.status() == before
    assert again.app("blog")["deploys"] == deploys
    again.host.journal.close()


def test_an_app_shows_its_last_fifty_deploys(client: Client) -> None:
    journal = client.host.app_journal("blog")
    for i in range(RECENT_DEPLOYS + 10):
        deploy = journal.queue_deploy("push", f"d-{i}", B, T0 + i)
        journal.finish_deploy(deploy, "unchanged", B, T0 + i)
    ids = [d["id"] for d in client.app("blog")["deploys"]]
    assert ids == list(range(RECENT_DEPLOYS + 10, 10, -1))


def test_the_documents_are_plain_json(client: Client) -> None:
    host = client.host
    fill(host.app_journal("blog"))
    host.engines.start()
    host.turn()
    document = status_document(host.engines, host.journal, "why")
    assert json.loads(json.dumps(document)) == document
    one = app_document(host.engine("blog"))
    assert json.loads(json.dumps(one)) == one


def test_metrics_are_prometheus_text(client: Client) -> None:
    client.metrics.delivery("push", "accepted")
    client.metrics.for_app("blog")
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
        "ghhook_config_error",
    ):
        assert f"# TYPE {name}" in text or f"# TYPE {name.removesuffix('_total')}" in text


def metric_samples(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = client.request("GET", "/metrics")[2].decode("utf-8")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_follow_each_engine(tmp_path: Path) -> None:
    client = Client(Host(tmp_path, metrics=Metrics()))
    host = client.host
    host.engines.start()
    host.turn()
    found = metric_samples(client)
    running = {name: found[("ghhook_deploy_in_progress", (("app", name),))] for name in APPS}
    assert running == {"blog": 1, "api": 1, "api-staging": 0}, "two slots"
    host.runners["blog"].pull_to(A)
    found = metric_samples(client)
    assert found[("ghhook_deploy_in_progress", (("app", "blog"),))] == 0
    assert found[("ghhook_deploy_in_progress", (("app", "api-staging"),))] == 1
    assert found[("ghhook_deploys_total", (("app", "blog"), ("result", "unchanged")))] == 1
    assert found[("ghhook_deploys_total", (("app", "api"), ("result", "unchanged")))] == 0
    assert found[("ghhook_step_duration_seconds_count", (("app", "blog"), ("step", "pull")))] == 1
    assert ("ghhook_step_duration_seconds_count", (("app", "api"), ("step", "pull"))) not in found


def test_healthz(client: Client) -> None:
    assert client.json("GET", "/healthz")[::2] == (200, {"ok": True})


def test_healthz_status_and_pages_say_why_while_the_journal_fails(client: Client) -> None:
    host = client.host
    fill(host.app_journal("blog"))
    host.engine("blog").head = B
    disk = fill_disk(host.journal)
    disk.full = True
    with pytest.raises(JournalError):
        host.journal.put("deployed", A, app="blog")
    code, _, answer = client.json("GET", "/healthz")
    assert code == 503 and "disk is full" in answer["error"]
    status = client.status()
    assert "disk is full" in status["journal_error"]
    assert [app["head"] for app in status["apps"]] == [B, None, None], "memory is still shown"
    assert "disk is full" in client.app("blog")["journal_error"]
    page = client.page("/")[2]
    assert 'id="journal-error"' in page and "disk is full" in page
    disk.full = False
    host.journal._last_probe = -1e18  # the next probe is due
    assert client.json("GET", "/healthz")[::2] == (200, {"ok": True})
    assert client.status()["journal_error"] is None


@pytest.mark.parametrize(
    "path", ["/nothing", "/status/", "/github", "/metrics/x", "/apps", "/apps/blog/x"]
)
def test_unknown_paths_are_404_json(client: Client, path: str) -> None:
    code, _, body = client.json("GET", path)
    assert (code, body) == (404, {"error": "nothing is served at this path"})


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
@pytest.mark.parametrize("path", ["/", "/status", "/apps/blog", "/metrics", "/healthz"])
def test_other_methods_are_405_json(client: Client, method: str, path: str) -> None:
    code, headers, body = client.json(method, path)
    assert code == 405
    assert body == {"error": f"method {method} is not allowed here; use GET"}
    assert headers.getRawHeaders("Allow") == ["GET, HEAD"]
    assert client.host.journal.recent_deploys() == [], "nothing was started"
