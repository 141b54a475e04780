"""The HTML status page as a pure function of the /status document."""

from __future__ import annotations

import copy
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from ghhook.admin import status_document
from ghhook.statuspage import OUTPUT_LINES, REFRESH_SECONDS, render_status_page, state_of
from tests.test_admin import HOSTILE, fill
from tests.test_deployer import A, B, C, Engine

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
        "steps": [step()],
    }
    return {**base, **overrides}


def status(**overrides: Any) -> dict[str, Any]:
    base = {
        "repo": "/srv/app",
        "branch": "main",
        "remote": "origin",
        "head": B,
        "deployed": B,
        "busy": False,
        "running": None,
        "pending": None,
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

    def with_attr(self, name: str, value: str) -> list[dict[str, str | None]]:
        return [attrs for _, attrs in self.tags if attrs.get(name) == value]

    def all_text(self) -> str:
        return "".join(self.text)

    def badges(self) -> list[str | None]:
        return [a.get("class") for _, a in self.tags if "badge" in (a.get("class") or "")]


SAFE_TAGS = {
    "html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "a", "dl", "dt", "dd",
    "code", "span", "table", "thead", "tbody", "tr", "th", "td", "div", "strong", "pre",
    "details", "summary",
}  # fmt: skip


def hostile_status(attack: str) -> dict[str, Any]:
    """A document in which every string a pusher or the clone could set holds ``attack``."""
    failing = step(
        name=f"pull{attack}",
        argv=["git", "pull", attack],
        exit_code=1,
        output=f"CONFLICT\nerror: could not apply 1234567... {attack}",
    )
    return status(
        repo=f"/srv/{attack}",
        branch=attack,
        remote=attack,
        head=attack,
        deployed=attack,
        busy=True,
        running={"id": 3, "trigger": attack, "target": attack, "delivery": attack},
        pending={"id": 4, "trigger": "push", "target": attack, "delivery": attack},
        deploys=[
            deploy(
                2,
                "failed",
                trigger=attack,
                delivery=attack,
                sha=attack,
                before=attack,
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


def test_result_classes_come_from_a_fixed_set() -> None:
    result = 'x" onclick="alert(1)'
    parsed = Elements(render_status_page(status(deploys=[deploy(1, result)])))
    assert parsed.badges() == ["badge other"]
    [row] = parsed.with_attr("id", "deploy-1")
    assert row["data-result"] == result, "the quote stayed inside the attribute"
    assert "onclick" not in row


def test_each_result_has_its_colour() -> None:
    results = ["deployed", "unchanged", "failed", "timeout", "rolled_back", "running", "queued"]
    page = render_status_page(
        status(deploys=[deploy(i, result) for i, result in enumerate(results, 1)])
    )
    classes = Elements(page).badges()
    assert classes == [
        "badge ok",
        "badge same",
        "badge bad",
        "badge slow",
        "badge back",
        "badge busy",
        "badge wait",
    ]
    assert len(set(classes)) == len(results)
    css = page.split(b"<style>")[1].split(b"</style>")[0].decode()
    for cls in classes:
        assert f".badge.{str(cls).split()[1]} {{ background:" in css


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
        (True, None, "busy"),
        (True, {"id": 2, "target": C}, "busy"),
        (False, {"id": 2, "target": C}, "pending"),
    ],
)
def test_state(busy: bool, pending: dict[str, Any] | None, state: str) -> None:
    running = {"id": 1, "trigger": "push", "target": B, "delivery": "d-1"} if busy else None
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
    assert links == ["status"], "one relative link, to the JSON"
    assert b"http:" not in page and b"https:" not in page and b"//" not in page


def test_renders_the_document_admin_builds(tmp_path: Path) -> None:
    engine = Engine(tmp_path)
    ids = fill(engine.journal)
    document = status_document(engine.deployer, engine.journal)
    untouched = copy.deepcopy(document)
    parsed = Elements(render_status_page(document))
    assert document == untouched, "rendering does not change the document"
    rows = [
        attrs["id"] for _, attrs in parsed.tags if (attrs.get("class") or "").startswith("deploy")
    ]
    assert rows == [f"deploy-{ids[k]}" for k in ("queued", "timeout", "failed", "deployed")]
    assert HOSTILE in parsed.all_text()


def test_css_survives_the_flattener() -> None:
    """The flattener escapes <, > and & even in <style>; the CSS must hold none."""
    page = render_status_page(status())
    css = page.split(b"<style>")[1].split(b"</style>")[0]
    assert b"&" not in css
    assert b".badge.ok { background: #1a7f37; }" in css
