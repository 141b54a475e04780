"""
The status page in a real headless chromium: rows shown, injected markup inert.

Skipped, saying why, where chromium is not installed (CI installs it in
``.ci/run``). chromium runs in a worker thread so that the reactor can serve
it the page, with a timeout that kills its whole process group.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from html import unescape
from pathlib import Path

import pytest
import pytest_twisted

from ghhook.admin import Admin, status_document
from ghhook.metrics import Metrics
from ghhook.statuspage import render_status_page
from ghhook.web import make_site
from tests.test_admin import HOSTILE, fill
from tests.test_deployer import Engine

CHROMIUM = shutil.which("chromium")
#: Seconds chromium may take to load one local page and print its DOM.
CHROMIUM_TIMEOUT = 60.0

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (apt-get install chromium); .ci/run installs it",
)


def dump_dom(url: str, profile: Path) -> str:
    """The DOM chromium holds once ``url`` has loaded (its scripts, if any, have run)."""
    assert CHROMIUM is not None
    argv = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--dump-dom",
        url,
    ]
    env = {**os.environ, "HOME": str(profile)}
    child = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = child.communicate(timeout=CHROMIUM_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        raise AssertionError(f"chromium took over {CHROMIUM_TIMEOUT} s to load {url}") from None
    finally:
        # chromium's helpers share its process group; none may outlive the test.
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert child.returncode == 0, f"chromium exited with {child.returncode}: {err[-2000:]!r}"
    return out.decode("utf-8")


def title_of(dom: str) -> str:
    match = re.search(r"<title>(.*?)</title>", dom, re.S)
    assert match is not None, "the page has a title"
    return unescape(match.group(1))


def row_ids(dom: str) -> list[str]:
    return re.findall(r'<tr class="deploy[^"]*" id="(deploy-\d+)"', dom)


def test_a_script_in_the_page_would_be_caught(tmp_path: Path) -> None:
    """The check below can see a script run: unescaped, this one does."""
    page = tmp_path / "raw.html"
    page.write_text(f"<!DOCTYPE html><title>ghhook</title><p>{HOSTILE}</p>")
    dom = dump_dom(page.as_uri(), tmp_path / "profile")
    assert title_of(dom) != "ghhook"


def test_page_from_a_file_shows_rows_and_runs_nothing(tmp_path: Path) -> None:
    """No Content-Security-Policy here: the escaping alone keeps the markup inert."""
    engine = Engine(tmp_path)
    ids = fill(engine.journal)
    document = status_document(engine.deployer, engine.journal)
    page = tmp_path / "status.html"
    page.write_bytes(render_status_page(document))

    dom = dump_dom(page.as_uri(), tmp_path / "profile")

    assert title_of(dom) == f"ghhook: {engine.settings.repo} (main)"
    assert row_ids(dom) == [f"deploy-{ids[k]}" for k in ("queued", "timeout", "failed", "deployed")]
    assert "<script" not in dom and "<img" not in dom
    assert "could not apply 1234567... &lt;script&gt;" in dom, "shown as text"
    assert 'data-result="failed"' in dom and "failed at <strong" in dom


@pytest_twisted.ensureDeferred
async def test_page_served_by_the_admin_listener(tmp_path: Path) -> None:
    from twisted.internet import reactor
    from twisted.internet.threads import deferToThread

    engine = Engine(tmp_path)
    ids = fill(engine.journal)
    engine.deployer.head = "f" * 40
    admin = Admin(engine.deployer, engine.journal, Metrics())
    port = reactor.listenTCP(0, make_site(admin.resource()), interface="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{port.getHost().port}/"
        waiting = deferToThread(dump_dom, url, tmp_path / "profile")
        dom = await waiting.addTimeout(CHROMIUM_TIMEOUT + 10, reactor)
    finally:
        await port.stopListening()

    assert title_of(dom) == f"ghhook: {engine.settings.repo} (main)"
    assert row_ids(dom) == [f"deploy-{ids[k]}" for k in ("queued", "timeout", "failed", "deployed")]
    assert "f" * 40 in dom
    assert "<script" not in dom and "<img" not in dom
    assert 'http-equiv="refresh" content="5"' in dom or 'content="5" http-equiv="refresh"' in dom
