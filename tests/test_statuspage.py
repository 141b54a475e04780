"""The HTML pages as pure functions of the documents: one app's page, and the overview."""

from __future__ import annotations

import copy
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from ghhook.admin import app_document, status_document
from ghhook.escape import CONTROLS, printable
from ghhook.results import Result
from ghhook.statuspage import (
    OUTPUT_LINES,
    REFRESH_SECONDS,
    RESULT_MEANINGS,
    last_finished,
    render_not_found,
    render_overview,
    render_status_page,
    state_of,
)
from tests.test_admin import APPS, HOSTILE, A, B, C, Host, fill

#: Markup that would run or load something if it reached the page unescaped.
ATTACKS = (
    "<script>document.title='pwned'</script>",
    '"><img src=x onerror=alert(1)>',
    "'><svg onload=alert(1)>",
    "</pre></td></tr></table><iframe src=//evil.example>",
    "<style>body{display:none}</style>",
    "&lt;already-escaped&gt; & <b>bold</b>",
)


def step(**overrides: Any) -> dict[str, Any]:
    base = {
        "name": "pull",
        "argv": ["git", "pull", "--rebase", "origin", "main"],
        "exit_code": 0,
        "signal": None,
        "timed_out": False,
        "started": "2024-05-01T12:00:01.000Z",
        "duration": 1.25,
        "output": "Fast-forward",
    }
    return {**base, **overrides}


def deploy(id: int, result: str, **overrides: Any) -> dict[str, Any]:
    base = {
        "id": id,
        "trigger": "push",
        "delivery": f"d-{id}",
        "deliveries": 1,
        "sha": B,
        "before": A,
        "result": result,
        "queued": "2024-05-01T12:00:00.000Z",
        "started": "2024-05-01T12:00:01.000Z",
        "finished": "2024-05-01T12:00:03.500Z",
        "duration": 2.5,
        "failed_step": None,
        "error": None,
        "subject": "Add the thing",
        "author": "Ada Lovelace",
        "steps": [step()],
    }
    return {**base, **overrides}


def status(**overrides: Any) -> dict[str, Any]:
    """One app's document, as ``app_document`` gives it."""
    base = {
        "name": "app",
        "github_repo": "me/app",
        "repo": "/srv/app",
        "branch": "main",
        "remote": "origin",
        "head": B,
        "deployed": B,
        "busy": False,
        "running": None,
        "pending": None,
        "journal_error": None,
        "deploys": [deploy(1, "deployed")],
    }
    return {**base, **overrides}


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text, as a browser's parser sees them."""

    def __init__(self, page: bytes) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(page.decode("utf-8"))
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def names(self) -> set[str]:
        return {tag for tag, _ in self.tags}

    def hrefs(self) -> list[str | None]:
        return [attrs["href"] for _, attrs in self.tags if "href" in attrs]

    def with_attr(self, name: str, value: str) -> list[dict[str, str | None]]:
        return [attrs for _, attrs in self.tags if attrs.get(name) == value]

    def all_text(self) -> str:
        return "".join(self.text)

    def badges(self) -> list[str | None]:
        return [a.get("class") for _, a in self.tags if "badge" in (a.get("class") or "")]


SAFE_TAGS = {
    "html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "a", "dl", "dt", "dd",
    "code", "span", "table", "thead", "tbody", "tr", "th", "td", "div", "strong", "pre",
    "details", "summary", "br",
}  # fmt: skip


def job(id: int, target: str | None, pushes: int, **overrides: Any) -> dict[str, Any]:
    """A running or pending deploy as ``job_document`` gives it."""
    base = {
        "id": id,
        "trigger": "push",
        "target": target,
        "delivery": f"d-{id}",
        "pushes": pushes,
        "forced": False,
    }
    return {**base, **overrides}


def between(page: bytes, start: bytes, end: bytes) -> bytes:
    """The markup from the tag that holds ``start`` to just before ``end`` (or its tag)."""
    first = page.rindex(b"<", 0, page.index(start))
    stop = page.index(end, first + 1)
    if not end.startswith(b"<"):
        stop = page.rindex(b"<", 0, stop)
    return page[first:stop]


def hostile_status(attack: str) -> dict[str, Any]:
    """A document in which every string a pusher or the clone could set holds ``attack``."""
    failing = step(
        name=f"pull{attack}",
        argv=["git", "pull", attack],
        exit_code=1,
        output=f"CONFLICT\nerror: could not apply 1234567... {attack}",
    )
    return status(
        name=attack,
        github_repo=attack,
        repo=f"/srv/{attack}",
        branch=attack,
        remote=attack,
        head=attack,
        deployed=attack,
        busy=True,
        running=job(3, attack, 2, trigger=attack, delivery=attack),
        pending=job(4, attack, 5, delivery=attack),
        journal_error=f"database is locked: {attack}",
        deploys=[
            deploy(
                6,
                "interrupted",
                sha=attack,
                subject=attack,
                author=attack,
                failed_step=f"pull{attack}",
                error=attack,
                steps=[failing],
            ),
            deploy(
                5,
                "rolled_back",
                subject=attack,
                author=attack,
                failed_step=f"pull{attack}",
                error=attack,
                steps=[failing],
            ),
            deploy(
                2,
                "failed",
                trigger=attack,
                delivery=attack,
                sha=attack,
                before=attack,
                subject=attack,
                author=attack,
                failed_step=f"pull{attack}",
                error=f"pull exited with 1: {attack}",
                steps=[failing],
            ),
            deploy(1, attack, trigger=attack),
        ],
    )


@pytest.mark.parametrize("attack", ATTACKS)
def test_every_field_is_escaped(attack: str) -> None:
    page = render_status_page(hostile_status(attack))
    for markup in ("<script", "<img", "<svg", "<iframe", "<b>", "<style>body"):
        assert markup.encode() not in page
    parsed = Elements(page)
    assert parsed.names() <= SAFE_TAGS, "only the page's own elements"
    assert not [
        (tag, name) for tag, attrs in parsed.tags for name in attrs if name.startswith("on")
    ], "no event handler attributes"
    assert attack in parsed.all_text(), "shown to the reader as text"


#: What a commit message or a build's output can hold: ANSI escapes (colour,
#: the terminal's title), CSI as one C1 character, DEL, NUL, a carriage
#: return, and markup next to them; a tab, which stays.
CONTROL_ATTACK = "red\x1b[31m\x1b]0;pwned\x07\x9b2J\x7f\x00\r<b>x</b>\tend"


def test_control_characters_are_shown_escaped_everywhere() -> None:
    page = render_status_page(hostile_status(CONTROL_ATTACK))
    text = page.decode("utf-8")
    assert not CONTROLS.search(text), "no control character reaches the page raw"
    assert "<b>" not in text, "markup is escaped as before"
    parsed = Elements(page)
    assert printable(CONTROL_ATTACK) in parsed.all_text(), "shown to the reader as \\x1b"
    assert "\t" in parsed.all_text()
    styled = re.findall(r'<span class="ctl">([^<]*)</span>', text)
    assert set(styled) == {"\\x1b", "\\x07", "\\x9b", "\\x7f", "\\x00", "\\x0d"}
    title = text.split("<title>")[1].split("</title>")[0]
    assert "\\x1b[31m" in title and "span" not in title, "a title holds text only"
    output = between(page, b'class="output"', b"</pre>").decode()
    assert output.count("<code>") == 1 and '<span class="ctl">' in output, "one flex item"


def test_result_classes_come_from_a_fixed_set() -> None:
    result = 'x" onclick="alert(1)'
    parsed = Elements(render_status_page(status(deploys=[deploy(1, result)])))
    assert parsed.badges() == ["badge other", "badge other"], "in the header and the row"
    [row] = parsed.with_attr("id", "deploy-1")
    assert row["data-result"] == result, "the quote stayed inside the attribute"
    assert "onclick" not in row


RESULTS = [
    "deployed",
    "unchanged",
    "failed",
    "timeout",
    "rolled_back",
    "interrupted",
    "cancelled",
    "running",
    "queued",
]


def test_each_result_has_its_colour() -> None:
    page = render_status_page(
        status(deploys=[deploy(i, result) for i, result in enumerate(RESULTS, 1)])
    )
    classes = Elements(between(page, b'id="deploys"', b'id="legend"')).badges()
    assert classes == [
        "badge ok",
        "badge same",
        "badge bad",
        "badge slow",
        "badge back",
        "badge stopped",
        "badge gone",
        "badge busy",
        "badge wait",
    ]
    assert len(set(classes)) == len(RESULTS)
    css = page.split(b"<style>")[1].split(b"</style>")[0].decode()
    for cls in classes:
        assert f".badge.{str(cls).split()[1]} {{ background:" in css


@pytest.mark.parametrize("result", list(Result))
def test_every_final_result_has_its_colour_and_meaning(result: Result) -> None:
    parsed = Elements(render_status_page(status(deploys=[deploy(1, result.value)])))
    assert "badge other" not in parsed.badges()
    assert result.value in RESULT_MEANINGS


def test_a_failure_shows_its_step_error_and_output_tail() -> None:
    output = "\n".join(f"line {i}" for i in range(40))
    failed = deploy(
        7,
        "failed",
        failed_step="pull",
        error="pull exited with 1: line 39",
        steps=[
            step(name="pull", exit_code=1, output=output),
            step(name="reset", argv=["git", "reset", "--keep", A], output=""),
        ],
    )
    parsed = Elements(render_status_page(status(deploys=[failed])))
    [row] = parsed.with_attr("id", "deploy-7")
    assert row["class"] == "deploy failure"
    text = parsed.all_text()
    assert "failed at pull" in text
    assert "pull exited with 1: line 39" in text
    assert f"line {40 - OUTPUT_LINES}\n" in text
    assert f"line {39 - OUTPUT_LINES}\n" not in text, "only the tail"
    assert "2 steps" in text


def test_a_timeout_shows_the_step_that_overran() -> None:
    overran = deploy(
        8,
        "timeout",
        failed_step="pull",
        error="pull timed out after 600.0 s",
        duration=601.0,
        steps=[step(exit_code=None, signal=15, timed_out=True, output="Receiving objects: 12%")],
    )
    text = Elements(render_status_page(status(deploys=[overran]))).all_text()
    assert "Receiving objects: 12%" in text
    assert "timed out" in text
    assert "10 min 1 s" in text


def test_a_success_shows_no_output() -> None:
    page = render_status_page(status(deploys=[deploy(1, "deployed", steps=[step(output="noisy")])]))
    assert b'class="output"' not in page


@pytest.mark.parametrize(
    ("busy", "pending", "state"),
    [
        (False, None, "idle"),
        (True, None, "deploying"),
        (True, job(2, C, 1), "deploying"),
        (False, job(2, C, 1), "pending"),
    ],
)
def test_state(busy: bool, pending: dict[str, Any] | None, state: str) -> None:
    running = job(1, B, 1) if busy else None
    document = status(busy=busy, pending=pending, running=running)
    assert state_of(document) == state
    parsed = Elements(render_status_page(document))
    [span] = parsed.with_attr("id", "state")
    assert span["class"] == f"state {state}"
    text = parsed.all_text()
    if pending is not None:
        assert "deploy 2 of" in text and "waits" in text


def test_head_is_shown_in_full() -> None:
    text = Elements(render_status_page(status(head=C))).all_text()
    assert C in text


def test_no_deploys_yet() -> None:
    parsed = Elements(render_status_page(status(deploys=[], head=None, deployed=None)))
    assert parsed.with_attr("id", "no-deploys")
    assert not parsed.with_attr("id", "deploys")


def test_refreshes_itself_and_loads_nothing() -> None:
    page = render_status_page(status())
    parsed = Elements(page)
    assert parsed.with_attr("http-equiv", "refresh") == [
        {"content": str(REFRESH_SECONDS), "http-equiv": "refresh"}
    ]
    assert "link" not in parsed.names() and "script" not in parsed.names()
    assert not [attrs for _, attrs in parsed.tags if "src" in attrs]
    links = [attrs["href"] for _, attrs in parsed.tags if "href" in attrs]
    assert links == ["../", "app/deploys/1", "../status"], (
        "relative links: the overview, each deploy's page and every app's JSON"
    )
    assert b"http:" not in page and b"https:" not in page and b"//" not in page


def test_renders_the_document_admin_builds(tmp_path: Path) -> None:
    host = Host(tmp_path)
    ids = fill(host.app_journal("blog"))
    document = app_document(host.engine("blog"))
    untouched = copy.deepcopy(document)
    parsed = Elements(render_status_page(document))
    assert document == untouched, "rendering does not change the document"
    rows = [attrs["id"] for tag, attrs in parsed.tags if tag == "tr" and "data-result" in attrs]
    assert rows == [f"deploy-{ids[k]}" for k in ("queued", "timeout", "failed", "deployed")]
    assert HOSTILE in parsed.all_text()


def test_css_survives_the_flattener() -> None:
    """The flattener escapes <, > and & even in <style>; the CSS must hold none."""
    page = render_status_page(status())
    css = page.split(b"<style>")[1].split(b"</style>")[0]
    assert b"&" not in css
    assert b".badge.ok { background: #1a7f37; }" in css


@pytest.mark.parametrize("result", ["failed", "timeout", "rolled_back"])
def test_every_failure_shows_the_failed_steps_output(result: str) -> None:
    """A rollback runs more steps after the failed one: the failed one's output is shown."""
    failed = deploy(
        7,
        result,
        failed_step="health",
        error="health exited with 1",
        steps=[
            step(name="pull"),
            step(name="restart", argv=["systemctl", "restart", "app"], output="restarted"),
            step(name="health", argv=["curl", "-f", "localhost"], exit_code=1, output="502 Bad"),
            step(name="rollback-reset", argv=["git", "reset", "--hard", A], output="HEAD is now"),
            step(name="rollback-restart", argv=["systemctl", "restart", "app"], output="again"),
        ],
    )
    page = render_status_page(status(deploys=[failed]))
    parsed = Elements(page)
    [row] = parsed.with_attr("id", "deploy-7")
    assert row["class"] == "deploy failure"
    assert "failed at health" in parsed.all_text()
    [output] = between(page, b'class="output"', b"</pre>").split(b">", 1)[1:]
    assert output == b"<code>502 Bad</code>", "one child: the box is a column-reverse flex box"


def test_interrupted_looks_unlike_a_failure_and_says_what_it_means() -> None:
    stopped = deploy(
        9,
        "interrupted",
        failed_step="pull",
        error="ghhook stopped during this deploy; the next start catches up",
        steps=[step(exit_code=None, signal=15, output="Receiving objects: 40%")],
    )
    page = render_status_page(status(deploys=[stopped, deploy(8, "failed")]))
    parsed = Elements(page)
    [row] = parsed.with_attr("id", "deploy-9")
    assert row["class"] == "deploy interrupted"
    badges = [a for _, a in parsed.tags if a.get("class") == "badge stopped"]
    assert len(badges) == 3, "in the header, the row and the legend"
    meaning = RESULT_MEANINGS["interrupted"]
    assert "stopped or killed" in meaning and "next start" in meaning
    assert all(badge["title"] == meaning for badge in badges)
    text = parsed.all_text()
    assert "stopped during pull" in text and "failed at pull" not in text
    assert "Receiving objects: 40%" in text, "the step it was stopped in"
    css = page.split(b"<style>")[1].split(b"</style>")[0].decode()
    [rule] = [line for line in css.splitlines() if line.startswith(".badge.stopped")]
    assert "#cf222e" not in rule and "#fff8c5" in rule, "amber, not the red of failed"
    legend_text = Elements(between(page, b'id="legend"', b"</dl>")).all_text()
    assert "interrupted" + meaning in legend_text and "failed" in legend_text
    assert "deployed" not in legend_text, "only the results on the page"


def test_each_deploy_shows_its_commits_subject_and_author() -> None:
    page = render_status_page(
        status(
            deploys=[
                deploy(2, "deployed", subject="Fix the login form", author="Grace Hopper"),
                deploy(1, "unchanged", subject=None, author=None),
            ]
        )
    )
    parsed = Elements(between(page, b'id="deploy-2"', b'id="deploy-1"'))
    assert [a["class"] for _, a in parsed.tags if a.get("class") in ("subject", "author muted")]
    text = parsed.all_text()
    assert "Fix the login form" in text and "by Grace Hopper" in text
    older = Elements(between(page, b'id="deploy-1"', b"</table>"))
    assert not [a for _, a in older.tags if a.get("class") in ("subject", "author muted")]


def test_the_header_shows_what_runs_what_waits_and_how_many_pushes() -> None:
    parsed = Elements(
        render_status_page(status(busy=True, running=job(3, B, 1), pending=job(4, C, 5)))
    )
    assert parsed.with_attr("id", "running") and parsed.with_attr("id", "pending")
    text = parsed.all_text()
    assert f"deploy 3 of {B[:10]} runs (1 push)" in text
    assert f"deploy 4 of {C[:10]} waits (5 pushes)" in text


def test_a_catch_up_is_named_so() -> None:
    text = Elements(render_status_page(status(pending=job(4, None, 0, trigger="catch-up"))))
    assert "deploy 4, a catch-up with the remote, waits" in text.all_text()
    assert "pushes)" not in text.all_text()


def test_the_header_says_when_the_last_deploy_was_interrupted() -> None:
    document = status(
        busy=True,
        running=job(5, C, 1),
        deploys=[deploy(5, "running"), deploy(4, "interrupted"), deploy(3, "deployed")],
    )
    page = render_status_page(document)
    last = Elements(between(page, b'id="last-result"', b"</dd>"))
    assert last.badges() == ["badge stopped"]
    assert last.all_text().startswith(f"interrupted deploy 4 of {B[:10]}: ")
    assert RESULT_MEANINGS["interrupted"] in last.all_text()
    assert last_finished(document["deploys"]) == document["deploys"][1]


def test_a_journal_error_is_a_banner_at_the_top() -> None:
    page = render_status_page(
        status(journal_error="database or disk is full", deploys=[], head=None)
    )
    parsed = Elements(page)
    first_in_body = parsed.tags[[tag for tag, _ in parsed.tags].index("body") + 1]
    assert first_in_body == ("div", {"class": "banner", "id": "journal-error", "role": "alert"})
    text = parsed.all_text()
    assert "The journal cannot be read or written: database or disk is full" in text
    assert "cannot be read while the journal fails" in text
    assert "No deploys recorded yet" not in text
    assert b"journal-error" not in render_status_page(status())


def long_status() -> dict[str, Any]:
    """A document whose every free-form string is long, much of it without a space to break at."""
    output = "\n".join(
        [f"line {i}" for i in range(30)]
        + ["Receiving objects: " + "x" * 300, "error: " + "/a/very/long/path" * 30]
    )
    long_argv = ["/usr/local/bin/check-" + "x" * 120, "--url", "http://localhost:8080/" + "y" * 90]
    return status(
        repo="/srv/" + "a-very-long-directory-name/" * 8 + "app",
        branch="feature/" + "a-long-branch-name-" * 8,
        head=C,
        deployed=B,
        busy=True,
        running=job(9, C, 3),
        pending=job(10, A, 12),
        journal_error="database disk image is malformed: /var/lib/ghhook/" + "state/" * 30,
        deploys=[
            deploy(
                8,
                "interrupted",
                subject="Fix the thing " * 14,
                author="Ada Lovelace",
                failed_step="pull",
                error="ghhook stopped during this deploy; the next start catches up",
                steps=[step(exit_code=None, signal=15, output="Receiving objects: 40%")],
            ),
            deploy(
                7,
                "rolled_back",
                subject="S" * 200,
                author="A" * 100,
                delivery="0" * 36,
                failed_step="health",
                error="health exited with 1: " + "e" * 300,
                steps=[
                    step(),
                    step(name="health", argv=long_argv, exit_code=1, output=output),
                    step(name="rollback-reset", argv=["git", "reset", "--hard", A], output=""),
                ],
            ),
            deploy(6, "failed", failed_step="pull", steps=[step(exit_code=1, output=output)]),
            deploy(5, "timeout", failed_step="pull", steps=[step(timed_out=True, output=output)]),
            deploy(4, "deployed", deliveries=12, trigger="push"),
            deploy(3, "unchanged", subject=None, author=None),
        ],
    )


def test_the_long_document_is_shown_in_full() -> None:
    """Long strings are wrapped by the CSS, never cut: the browser test checks the width."""
    document = long_status()
    text = Elements(render_status_page(document)).all_text()
    for value in (document["repo"], document["journal_error"], "S" * 200, "A" * 100, C):
        assert value in text


# The overview: one row per app, from the /status document.


def app(name: str, last: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """One app as ``status_document`` lists it."""
    base = {
        "name": name,
        "repo": f"/srv/{name}",
        "branch": "main",
        "github_repo": f"me/{name}",
        "head": B,
        "deployed": B,
        "busy": False,
        "running": None,
        "pending": None,
        "last": last,
    }
    return {**base, **overrides}


def overview(**overrides: Any) -> dict[str, Any]:
    base = {
        "version": "1.2.3",
        "config": "/etc/ghhook/ghhook.toml",
        "config_error": None,
        "journal_error": None,
        "apps": [
            app("blog", deploy(7, "deployed")),
            app("api", deploy(3, "failed", failed_step="build"), busy=True, running=job(4, C, 1)),
            app("api-staging", None, pending=job(5, None, 0, trigger="catch-up"), deployed=None),
        ],
    }
    return {**base, **overrides}


def app_row(page: bytes, name: str) -> Elements:
    """The overview's row of app ``name``."""
    start = page.rindex(b"<tr", 0, page.index(f'id="app-{name}"'.encode()))
    return Elements(page[start : page.index(b"</tr>", start)])


def test_the_overview_has_a_row_per_app_in_order() -> None:
    page = render_overview(overview())
    parsed = Elements(page)
    rows = [attrs["id"] for tag, attrs in parsed.tags if tag == "tr" and "data-state" in attrs]
    assert rows == ["app-blog", "app-api", "app-api-staging"]
    assert parsed.hrefs() == ["apps/blog", "apps/api", "apps/api-staging", "status"]


@pytest.mark.parametrize(
    ("name", "state", "row_class", "badge", "facts"),
    [
        ("blog", "idle", "app", "badge ok", [B[:10], "deployed deploy 7", "2024-05-01 12:00:03"]),
        (
            "api",
            "deploying",
            "app failure",
            "badge bad",
            [f"deploy 4 of {C[:10]} runs", "failed deploy 3 at build"],
        ),
        ("api-staging", "pending", "app", None, ["a catch-up with the remote, waits"]),
    ],
)
def test_each_row_says_state_commit_result_and_when(
    name: str, state: str, row_class: str, badge: str | None, facts: list[str]
) -> None:
    row = app_row(render_overview(overview()), name)
    [tr] = row.with_attr("id", f"app-{name}")
    assert (tr["class"], tr["data-state"]) == (row_class, state)
    [span] = [attrs for _, attrs in row.tags if (attrs.get("class") or "").startswith("state ")]
    assert span["class"] == f"state {state}"
    assert row.badges() == ([badge] if badge else [])
    text = row.all_text()
    assert f"me/{name}" in text
    for fact in facts:
        assert fact in text, fact


def test_an_app_with_no_finished_deploy_shows_dashes() -> None:
    row = app_row(render_overview(overview()), "api-staging")
    cells = [
        attrs["data-label"] for tag, attrs in row.tags if tag == "td" and "data-label" in attrs
    ]
    assert cells == ["State", "Deployed", "Last result", "When"]
    assert row.all_text().count("-") >= 3


def test_the_overview_shows_the_daemon() -> None:
    text = Elements(render_overview(overview())).all_text()
    assert "1.2.3" in text and "/etc/ghhook/ghhook.toml" in text and "3, 1 deploying" in text
    single = Elements(render_overview(overview(config=None))).all_text()
    assert "the command-line options" in single


def overview_attack(attack: str) -> dict[str, Any]:
    """An overview in which every string (app names too, though the config checks them) is ``attack``."""
    hostile_deploy = deploy(
        6, attack, sha=attack, subject=attack, failed_step=attack, finished=attack
    )
    return overview(
        version=attack,
        config=attack,
        config_error=f"{attack}\nghhook.toml: apps.{attack}: {attack}",
        journal_error=attack,
        apps=[
            app(
                attack,
                hostile_deploy,
                repo=attack,
                branch=attack,
                github_repo=attack,
                deployed=attack,
                busy=True,
                running=job(3, attack, 2, trigger=attack),
            ),
            app(f"{attack}2", deploy(2, "failed", failed_step=attack), pending=job(4, attack, 1)),
        ],
    )


@pytest.mark.parametrize("attack", ATTACKS)
def test_every_overview_field_is_escaped(attack: str) -> None:
    page = render_overview(overview_attack(attack))
    for markup in ("<script", "<img", "<svg", "<iframe", "<b>", "<style>body"):
        assert markup.encode() not in page
    parsed = Elements(page)
    assert parsed.names() <= SAFE_TAGS, "only the page's own elements"
    assert not [
        (tag, name) for tag, attrs in parsed.tags for name in attrs if name.startswith("on")
    ], "no event handler attributes"
    assert attack in parsed.all_text(), "shown to the reader as text"
    for href in parsed.hrefs():
        assert href is not None and (href == "status" or href.startswith("apps/")), href
        assert href.count("/") <= 1 and not set(href) & set(":\"'<> \\"), "a plain relative path"


def test_control_characters_in_the_overview_are_shown_escaped() -> None:
    page = render_overview(overview_attack(CONTROL_ATTACK))
    text = page.decode("utf-8")
    assert not CONTROLS.search(text), "no control character reaches the page raw"
    assert printable(CONTROL_ATTACK) in Elements(page).all_text()


def test_the_config_error_is_a_banner_at_the_top() -> None:
    problems = "ghhook.toml: apps.api.restart_pidfile: no such file\nghhook.toml: apps.x: bad"
    page = render_overview(overview(config_error=problems, journal_error="disk is full"))
    parsed = Elements(page)
    body = [tag for tag, _ in parsed.tags].index("body")
    assert parsed.tags[body + 1] == (
        "div",
        {"class": "banner", "id": "config-error", "role": "alert"},
    ), "first: nothing of a reload applies until it is fixed"
    banner = Elements(between(page, b'id="config-error"', b'id="journal-error"'))
    text = banner.all_text()
    assert "The last reload of /etc/ghhook/ghhook.toml failed" in text
    assert "still in use" in text
    problem_lines = [a for _, a in banner.tags if a.get("class") == "problem"]
    assert len(problem_lines) == 2, "one line per problem"
    assert "ghhook.toml: apps.x: bad" in text
    assert parsed.with_attr("id", "journal-error"), "the journal's banner as on an app's page"
    assert b"config-error" not in render_overview(overview())
    assert b"journal-error" not in render_overview(overview())


def test_the_overview_with_no_apps() -> None:
    parsed = Elements(render_overview(overview(apps=[])))
    assert parsed.with_attr("id", "no-apps") and not parsed.with_attr("id", "apps")


def test_the_overview_refreshes_itself_and_loads_nothing() -> None:
    page = render_overview(overview())
    parsed = Elements(page)
    assert parsed.with_attr("http-equiv", "refresh") == [
        {"content": str(REFRESH_SECONDS), "http-equiv": "refresh"}
    ]
    assert "link" not in parsed.names() and "script" not in parsed.names()
    assert not [attrs for _, attrs in parsed.tags if "src" in attrs]
    assert b"http:" not in page and b"https:" not in page and b"//" not in page


def test_the_overview_legend_names_the_results_shown() -> None:
    page = render_overview(overview())
    legend = Elements(between(page, b'id="legend"', b"</dl>")).all_text()
    assert "deployed" in legend and "failed" in legend and "timeout" not in legend


def test_renders_the_overview_admin_builds(tmp_path: Path) -> None:
    host = Host(tmp_path)
    fill(host.app_journal("api"))
    document = status_document(host.engines, host.journal, None)
    untouched = copy.deepcopy(document)
    page = render_overview(document)
    assert document == untouched, "rendering does not change the document"
    parsed = Elements(page)
    rows = [attrs["id"] for tag, attrs in parsed.tags if tag == "tr" and "data-state" in attrs]
    assert rows == [f"app-{name}" for name in APPS]
    assert app_row(page, "api").badges() == ["badge slow"], "api's last finished deploy"


@pytest.mark.parametrize("attack", ATTACKS)
def test_the_not_found_page_escapes_the_name(attack: str) -> None:
    page = render_not_found(attack)
    parsed = Elements(page)
    assert parsed.names() <= SAFE_TAGS
    assert attack in parsed.all_text()
    assert parsed.hrefs() == ["../"]


def long_overview() -> dict[str, Any]:
    """An overview whose every free-form string is long, much of it without a space."""
    return overview(
        config="/etc/" + "a-very-long-directory-name/" * 8 + "ghhook.toml",
        config_error="\n".join(
            ["ghhook.toml: apps.api.restart_pidfile: " + "/run/" + "x" * 200] * 3
        ),
        journal_error="database disk image is malformed: /var/lib/ghhook/" + "state/" * 30,
        apps=[
            app(
                "a-very-long-app-name-" + "x" * 80,
                deploy(8, "rolled_back", failed_step="health-" + "h" * 60),
                branch="feature/" + "a-long-branch-name-" * 8,
                github_repo="some-organisation/" + "r" * 80,
                busy=True,
                running=job(9, C, 3),
            ),
            app("blog", deploy(7, "interrupted"), pending=job(10, A, 12)),
            app("api", None, deployed=None, head=None),
        ],
    )


def test_each_deploy_id_links_to_its_page() -> None:
    """Relative to ``/apps/<name>``: ``<name>/deploys/<id>``, the URL commit statuses link to."""
    parsed = Elements(render_status_page(status(deploys=[deploy(12, "failed"), deploy(3, "ok")])))
    links = parsed.with_attr("class", "deploy-link")
    assert [link["href"] for link in links] == ["app/deploys/12", "app/deploys/3"]


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_deploy_link_stays_one_relative_path(attack: str) -> None:
    parsed = Elements(render_status_page(status(name=attack)))
    [link] = parsed.with_attr("class", "deploy-link")
    href = link["href"]
    assert href is not None and href.endswith("/deploys/1")
    assert not set(href.removesuffix("/deploys/1")) & set(":/\"'<> \\"), "one quoted segment"


def test_a_document_without_a_name_has_no_deploy_links() -> None:
    document = status()
    del document["name"]
    parsed = Elements(render_status_page(document))
    assert not parsed.with_attr("class", "deploy-link")
    assert "1" in parsed.all_text()
