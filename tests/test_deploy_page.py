"""
One deploy's page, ``/apps/<name>/deploys/<id>``: the page as a pure function
of its document, then the URL's answers in memory (JSON, HTML, 404s, the Host
check) over real engines and a real journal, as tests/test_admin.py does.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from ghhook.admin import RECENT_DEPLOYS, deploy_id, find_deploy
from ghhook.escape import CONTROLS, printable
from ghhook.journal import JournalError
from ghhook.runner import StepResult
from ghhook.statuspage import (
    _RESULT_CLASSES,
    OUTPUT_LINES,
    REFRESH_SECONDS,
    render_deploy_not_found,
    render_deploy_page,
    render_deploy_unreadable,
    render_not_found,
)
from tests.test_admin import BROWSER, HOSTILE, T0, A, B, C, Client, Host, fill
from tests.test_admin_host import ask
from tests.test_statuspage import ATTACKS, SAFE_TAGS, Elements, between, deploy, step

#: The deploy page's elements: the app page's, and a heading per step.
DEPLOY_TAGS = SAFE_TAGS | {"h3"}


def failed(**overrides: Any) -> dict[str, Any]:
    """A deploy that failed at its second step, after a first that succeeded."""
    fields: dict[str, Any] = {
        "failed_step": "build",
        "error": "build exited with 2",
        "steps": [
            step(),
            step(name="build", argv=["make", "all", "NAME=a b"], exit_code=2, output="boom"),
        ],
    }
    return deploy(7, "failed", **{**fields, **overrides})


# The page, from its document


def test_the_page_shows_the_deploy_and_each_step() -> None:
    page = render_deploy_page("blog", failed(deliveries=3))
    parsed = Elements(page)
    text = parsed.all_text()
    [summary] = parsed.with_attr("id", "deploy")
    assert summary["data-result"] == "failed"
    assert parsed.badges() == ["badge bad", "badge bad"], "in the heading and the summary"
    assert "ghhook: blog: deploy 7 " in text
    for shown in (
        "push (3 pushes)",
        B,
        A,
        "Add the thing",
        "Ada Lovelace",
        "build exited with 2",
        "d-7",
        "2024-05-01 12:00:00",
        "2024-05-01 12:00:03",
        "2.50 s",
    ):
        assert shown in text, shown
    assert [a["id"] for a in parsed.with_attr("class", "step")] == ["step-1"]
    [failing] = parsed.with_attr("class", "step failure")
    assert failing["id"] == "step-2"
    step_two = Elements(between(page, b'id="step-2"', b"</pre>")).all_text()
    assert "make all 'NAME=a b'" in step_two, "argv quoted as a shell reads it"
    assert "exit 2" in step_two and "boom" in step_two
    step_one = Elements(between(page, b'id="step-1"', b'id="step-2"')).all_text()
    assert "git pull --rebase origin main" in step_one and "Fast-forward" in step_one
    assert "exit 0" in step_one and "1.25 s" in step_one


def test_each_steps_whole_kept_output_is_shown() -> None:
    output = "\n".join(f"line {i}" for i in range(40))
    text = Elements(render_deploy_page("blog", failed(steps=[step(output=output)]))).all_text()
    assert "line 0\nline 1\n" in text and "line 39" in text, f"not only {OUTPUT_LINES} lines"


@pytest.mark.parametrize(
    ("overrides", "ended"),
    [
        ({"exit_code": None, "signal": 15, "timed_out": True}, "timed out"),
        ({"exit_code": None, "signal": 9}, "signal 9"),
        ({"exit_code": None}, "not started"),
    ],
)
def test_how_a_step_ended(overrides: dict[str, Any], ended: str) -> None:
    parsed = Elements(render_deploy_page("blog", deploy(3, "timeout", steps=[step(**overrides)])))
    assert ended in parsed.all_text()


def test_a_step_without_output_and_a_deploy_without_steps() -> None:
    quiet = Elements(render_deploy_page("blog", deploy(1, "deployed", steps=[step(output="")])))
    assert "No output." in quiet.all_text() and not quiet.with_attr("class", "output")
    queued = deploy(2, "queued", started=None, finished=None, duration=None, steps=[])
    parsed = Elements(render_deploy_page("blog", queued))
    assert parsed.with_attr("id", "no-steps")
    assert "No step has run yet." in parsed.all_text()


def test_a_catch_up_not_yet_run_names_its_target() -> None:
    catch_up = deploy(2, "running", trigger="catch-up", sha=None, delivery=None, finished=None)
    text = Elements(render_deploy_page("blog", catch_up)).all_text()
    assert "Target" in text and "a catch-up" in text


@pytest.mark.parametrize("result", ["running", "queued"])
def test_reloads_only_while_the_deploy_is_unfinished(result: str) -> None:
    running = Elements(render_deploy_page("blog", deploy(1, result)))
    assert running.with_attr("http-equiv", "refresh") == [
        {"content": str(REFRESH_SECONDS), "http-equiv": "refresh"}
    ]
    done = Elements(render_deploy_page("blog", deploy(1, "deployed")))
    assert done.with_attr("http-equiv", "refresh") == []
    assert "reloads" not in done.all_text()


def test_links_are_relative_and_load_nothing() -> None:
    page = render_deploy_page("blog", failed())
    parsed = Elements(page)
    assert set(parsed.hrefs()) == {"../../blog", "../../blog/deploys/7/log"}, (
        "the app's page and the deploy's log, from /apps/blog/deploys/7"
    )
    assert "link" not in parsed.names() and "script" not in parsed.names()
    assert not [attrs for _, attrs in parsed.tags if "src" in attrs]
    assert b"http:" not in page and b"https:" not in page and b"//" not in page


@pytest.mark.parametrize(
    "result", ["deployed", "unchanged", "failed", "timeout", "rolled_back", "interrupted"]
)
def test_the_result_is_coloured_as_on_the_app_page(result: str) -> None:
    parsed = Elements(render_deploy_page("blog", deploy(1, result)))
    assert set(parsed.badges()) == {f"badge {_RESULT_CLASSES[result]}"}


def test_an_interrupted_step_is_marked_as_such() -> None:
    stopped = failed(steps=[step(name="build", exit_code=None, signal=15)])
    stopped["result"] = "interrupted"
    parsed = Elements(render_deploy_page("blog", stopped))
    assert parsed.with_attr("class", "step interrupted")
    assert "Stopped during" in parsed.all_text()


def hostile_deploy(attack: str) -> dict[str, Any]:
    """A deploy whose every string a pusher or the clone could set holds ``attack``."""
    return deploy(
        9,
        "failed",
        trigger=attack,
        delivery=attack,
        sha=attack,
        before=attack,
        subject=attack,
        author=attack,
        failed_step=f"pull{attack}",
        error=f"pull exited with 1: {attack}",
        steps=[
            step(
                name=f"pull{attack}",
                argv=["git", "pull", attack],
                exit_code=1,
                output=f"CONFLICT\nerror: could not apply 1234567... {attack}",
            )
        ],
    )


@pytest.mark.parametrize("attack", ATTACKS)
def test_every_field_is_escaped(attack: str) -> None:
    page = render_deploy_page(attack, hostile_deploy(attack), f"database is locked: {attack}")
    for markup in ("<script", "<img", "<svg", "<iframe", "<b>", "<style>body"):
        assert markup.encode() not in page
    parsed = Elements(page)
    assert parsed.names() <= DEPLOY_TAGS, "only the page's own elements"
    assert not [
        (tag, name) for tag, attrs in parsed.tags for name in attrs if name.startswith("on")
    ], "no event handler attributes"
    assert attack in parsed.all_text(), "shown to the reader as text"
    for href in parsed.hrefs():
        assert href is not None and href.startswith("../../"), href
        app, _, rest = href[6:].partition("/")
        assert not set(app) & set(":/\"'<> \\"), "one quoted path segment"
        assert rest in ("", f"deploys/{hostile_deploy(attack)['id']}/log"), href


@pytest.mark.parametrize("attack", ATTACKS)
def test_the_not_found_pages_escape_what_the_url_names(attack: str) -> None:
    for page in (
        render_deploy_not_found(attack, attack),
        render_deploy_unreadable(attack, attack, attack),
        render_not_found(attack, overview="../../../"),
    ):
        parsed = Elements(page)
        assert parsed.names() <= SAFE_TAGS
        assert attack in parsed.all_text()
        [href] = parsed.hrefs()
        assert href is not None and href.startswith("../../")


def test_control_characters_are_shown_escaped() -> None:
    attack = "red\x1b[31m\x1b]0;pwned\x07\x9b2J\x7f\x00\r<b>x</b>\tend"
    page = render_deploy_page("blog", hostile_deploy(attack)).decode("utf-8")
    assert not CONTROLS.search(page), "no control character reaches the page raw"
    assert printable(attack) in Elements(page.encode()).all_text()
    output = between(page.encode(), b'class="output"', b"</pre>").decode()
    assert output.count("<code>") == 1 and '<span class="ctl">' in output, "one flex item"


# The URL, in memory


@pytest.fixture
def client(tmp_path: Path) -> Client:
    return Client(Host(tmp_path))


def url(name: str, deploy: int | str) -> str:
    return f"/apps/{name}/deploys/{deploy}"


def test_json_is_the_deploy_as_the_app_lists_it(client: Client) -> None:
    ids = fill(client.host.app_journal("blog"))
    listed = {d["id"]: d for d in client.app("blog")["deploys"]}
    for kind, number in ids.items():
        code, headers, body = client.json("GET", url("blog", number))
        assert code == 200, kind
        assert headers.getRawHeaders("Vary") == ["Accept"]
        assert headers.getRawHeaders("Cache-Control") == ["no-store"]
        assert body == {**listed[number], "reports": []}, kind
    code, _, body = client.json("GET", url("blog", ids["deployed"]), "application/json")
    assert body["result"] == "deployed" and body["sha"] == B and body["before"] == A
    assert [(s["name"], s["argv"], s["exit_code"], s["output"]) for s in body["steps"]] == [
        ("pull", ["git", "pull"], 0, "Fast-forward"),
        ("restart", ["/bin/restart-app"], 0, ""),
    ]


def test_the_page_shows_the_steps_and_their_escaped_output(client: Client) -> None:
    ids = fill(client.host.app_journal("blog"))
    code, headers, page = client.page(url("blog", ids["failed"]))
    assert code == 200
    assert headers.getRawHeaders("Vary") == ["Accept"]
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;" in page
    parsed = Elements(page.encode())
    text = parsed.all_text()
    assert f"error: could not apply 1234567... {HOSTILE}\nCONFLICT (content): app.txt" in text
    assert f"pull exited with 1: {HOSTILE}" in text
    assert "git pull --rebase" in text and "exit 1" in text
    assert C in text and B in text, "the commit and the one before, in full"
    [failing] = parsed.with_attr("class", "step failure")
    assert failing["id"] == "step-1"
    assert "<title>ghhook: blog: deploy " in page
    assert '<a href="../../blog" id="back">' in page


def test_an_old_deploy_is_found_past_the_app_pages_window(client: Client) -> None:
    blog, api = client.host.app_journal("blog"), client.host.app_journal("api")
    ids = []
    for i in range(RECENT_DEPLOYS * 5):
        journal = blog if i % 3 else api
        deploy = journal.queue_deploy("push", f"d-{i}", B, T0 + i)
        journal.finish_deploy(deploy, "unchanged", B, T0 + i)
        ids.append((journal.app, deploy))
    oldest_blog = next(number for app, number in ids if app == "blog")
    oldest_api = next(number for app, number in ids if app == "api")
    assert client.json("GET", url("blog", oldest_blog))[2]["delivery"] == "d-1"
    assert find_deploy(client.host.engine("blog").journal, oldest_api) is None
    assert find_deploy(client.host.engine("blog").journal, ids[-1][1] + 1) is None


@pytest.mark.parametrize(
    "deploy",
    ["0", "-1", "01", "1.0", "+1", "1e3", "abc", "%EF%BC%91", "%20" + "1", "9" * 19, "%3Cb%3E"],
)
def test_what_is_no_deploy_id_is_404(client: Client, deploy: str) -> None:
    fill(client.host.app_journal("blog"))
    code, _, body = client.json("GET", url("blog", deploy))
    assert (code, body) == (404, {"error": "deploy ids are positive integers"})
    code, _, page = client.page(url("blog", deploy))
    assert code == 404 and "No such deploy" in page and "<b>" not in page


@pytest.mark.parametrize(("text", "number"), [("1", 1), ("42", 42), ("9" * 18, int("9" * 18))])
def test_deploy_ids(text: str, number: int) -> None:
    assert deploy_id(text) == number


def test_an_unknown_deploy_is_404(client: Client) -> None:
    ids = fill(client.host.app_journal("blog"))
    missing = max(ids.values()) + 1
    code, _, body = client.json("GET", url("blog", missing))
    assert (code, body) == (404, {"error": "this app has no deploy of this id in the journal"})
    code, _, page = client.page(url("blog", missing))
    assert code == 404 and "No such deploy" in page
    assert '<a href="../../blog" id="back">' in page


def test_another_apps_deploy_is_never_shown_under_this_app(client: Client) -> None:
    host = client.host
    fill(host.app_journal("blog"))
    theirs = fill(host.app_journal("api"))
    for number in theirs.values():
        code, _, body = client.json("GET", url("blog", number))
        assert (code, body) == (404, {"error": "this app has no deploy of this id in the journal"})
        code, _, page = client.page(url("blog", number))
        assert code == 404 and "CONFLICT" not in page and "d-1" not in page
        assert client.json("GET", url("api", number))[0] == 200, "under its own app's URL"


@pytest.mark.parametrize("name", ["nothing", "Blog", "%3Cscript%3E"])
def test_an_unknown_app_is_404(client: Client, name: str) -> None:
    ids = fill(client.host.app_journal("blog"))
    code, _, body = client.json("GET", url(name, ids["deployed"]))
    assert (code, body) == (404, {"error": "no app of this name is configured"})
    code, _, page = client.page(url(name, ids["deployed"]))
    assert code == 404 and "No such app" in page and "<script" not in page
    assert '<a href="../../../" id="back">' in page, "the overview, from three levels down"


def test_the_app_page_links_each_deploy_to_its_page(client: Client) -> None:
    ids = fill(client.host.app_journal("blog"))
    page = client.page("/apps/blog")[2]
    for number in ids.values():
        assert f'<a href="blog/deploys/{number}" class="deploy-link">{number}</a>' in page
        # Resolved against /apps/blog, the link is the deploy's URL.
        linked = "/apps/" + re.findall(rf'href="(blog/deploys/{number})"', page)[0]
        assert linked == url("blog", number)
        assert client.page(linked)[0] == 200


def test_a_journal_that_cannot_be_read_is_503(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = fill(client.host.app_journal("blog"))

    def locked(*args: object, **kwargs: object) -> list[dict[str, Any]]:
        raise JournalError("database is locked")

    monkeypatch.setattr(client.host.journal, "deploy", locked)
    code, _, body = client.json("GET", url("blog", ids["failed"]))
    assert (code, body) == (503, {"error": "the journal cannot be read: database is locked"})
    code, _, page = client.page(url("blog", ids["failed"]))
    assert code == 503 and 'id="journal-error"' in page and "database is locked" in page


def test_head_sends_no_body(client: Client) -> None:
    ids = fill(client.host.app_journal("blog"))
    for path in (url("blog", ids["failed"]), url("blog", 999), url("nothing", 1)):
        code, _, body = client.request("HEAD", path, BROWSER)
        assert code in (200, 404) and body == b"", path


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_other_methods_are_405(client: Client, method: str) -> None:
    ids = fill(client.host.app_journal("blog"))
    code, headers, _ = client.json(method, url("blog", ids["failed"]))
    assert code == 405 and headers.getRawHeaders("Allow") == ["GET, HEAD"]


def test_another_host_is_421_and_another_origin_403(client: Client) -> None:
    ids = fill(client.host.app_journal("blog"))
    path = url("blog", ids["failed"])
    code, _, body = ask(client, path, Host="evil.example:9000")
    assert code == 421 and "--admin-host" in json.loads(body)["error"]
    assert b"CONFLICT" not in body and b"pull" not in body
    assert ask(client, path, Origin="http://evil.example")[::2] == (403, b"")
    assert ask(client, path, Host="localhost:9000")[0] == 200


def test_secrets_and_the_environment_are_never_shown(client: Client) -> None:
    ids = fill(client.host.app_journal("blog"))
    for accept in (None, BROWSER):
        body = client.request("GET", url("blog", ids["failed"]), accept)[2]
        assert b"never-shown" not in body and b"s3cret" not in body


def test_a_step_recorded_while_running_is_shown(client: Client) -> None:
    blog = client.host.app_journal("blog")
    number = blog.queue_deploy("push", "d-9", C, T0)
    blog.start_deploy(number, T0 + 1)
    blog.add_step(number, 1, StepResult("pull", ("git", "pull"), 0, None, False, T0 + 1, 2.0, "ok"))
    body = client.json("GET", url("blog", number))[2]
    assert (body["result"], body["sha"], body["finished"]) == ("running", C, None)
    assert [s["output"] for s in body["steps"]] == ["ok"]
    page = client.page(url("blog", number))[2]
    assert 'http-equiv="refresh"' in page and "Target" in page
