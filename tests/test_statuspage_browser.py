"""
The pages (the overview and an app's page) in a real headless chromium: rows
shown, injected markup inert, nothing wider than a phone's screen.

Skipped, saying why, where chromium is not installed (CI installs it in
``.ci/run``). chromium runs in a worker thread so that the reactor can serve
it the page, with a timeout that kills its whole process group.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from html import escape, unescape
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from ghhook.admin import Admin, app_document, status_document
from ghhook.metrics import Metrics
from ghhook.site import make_site
from ghhook.statuspage import render_overview, render_status_page
from tests.test_admin import APPS, HOSTILE, Host, fill
from tests.test_statuspage import long_overview, long_status

CHROMIUM = shutil.which("chromium")
#: Seconds chromium may take to load one local page and print its DOM.
CHROMIUM_TIMEOUT = 60.0

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (apt-get install chromium); .ci/run installs it",
)


def dump_dom(url: str, profile: Path, *options: str) -> str:
    """The DOM chromium holds once ``url`` has loaded (its scripts, if any, have run)."""
    assert CHROMIUM is not None
    argv = [
        CHROMIUM,
        *options,
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


def app_rows(dom: str) -> list[str]:
    return re.findall(r'<tr class="app[^"]*" id="app-([^"]+)"', dom)


def test_a_script_in_the_page_would_be_caught(tmp_path: Path) -> None:
    """The check below can see a script run: unescaped, this one does."""
    page = tmp_path / "raw.html"
    page.write_text(f"<!DOCTYPE html><title>ghhook</title><p>{HOSTILE}</p>")
    dom = dump_dom(page.as_uri(), tmp_path / "profile")
    assert title_of(dom) != "ghhook"


def test_page_from_a_file_shows_rows_and_runs_nothing(tmp_path: Path) -> None:
    """No Content-Security-Policy here: the escaping alone keeps the markup inert."""
    host = Host(tmp_path)
    ids = fill(host.app_journal("blog"))
    document = app_document(host.engine("blog"))
    page = tmp_path / "status.html"
    page.write_bytes(render_status_page(document))

    dom = dump_dom(page.as_uri(), tmp_path / "profile")

    assert title_of(dom) == f"ghhook: blog: {tmp_path / 'blog'} (main)"
    assert row_ids(dom) == [f"deploy-{ids[k]}" for k in ("queued", "timeout", "failed", "deployed")]
    assert "<script" not in dom and "<img" not in dom
    assert "could not apply 1234567... &lt;script&gt;" in dom, "shown as text"
    assert 'data-result="failed"' in dom and "failed at <strong" in dom


def test_overview_from_a_file_shows_rows_and_runs_nothing(tmp_path: Path) -> None:
    host = Host(tmp_path)
    fill(host.app_journal("blog"))
    document = status_document(host.engines, host.journal, f"ghhook.toml: apps.x: {HOSTILE}")
    page = tmp_path / "overview.html"
    page.write_bytes(render_overview(document))

    dom = dump_dom(page.as_uri(), tmp_path / "profile")

    assert title_of(dom) == "ghhook: 3 apps"
    assert app_rows(dom) == list(APPS)
    assert "<script" not in dom and "<img" not in dom
    assert "ghhook.toml: apps.x: &lt;script&gt;" in dom, "shown as text"


async def serve_and_dump(admin: Admin, path: str, tmp_path: Path) -> str:
    """The DOM chromium builds from ``path`` served by ``admin`` on a loopback port."""
    from twisted.internet import reactor
    from twisted.internet.threads import deferToThread

    port = reactor.listenTCP(0, make_site(admin.resource()), interface="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{port.getHost().port}{path}"
        waiting = deferToThread(dump_dom, url, tmp_path / f"profile{path.replace('/', '-')}")
        dom: str = await waiting.addTimeout(CHROMIUM_TIMEOUT + 10, reactor)
    finally:
        await port.stopListening()
    return dom


@pytest_twisted.ensureDeferred
async def test_pages_served_by_the_admin_listener(tmp_path: Path) -> None:
    """A browser asks for HTML: the overview at /, and at /apps/blog the app's page, not JSON."""
    host = Host(tmp_path)
    ids = fill(host.app_journal("blog"))
    host.engine("blog").head = "f" * 40
    admin = Admin(host.engines, host.journal, Metrics())

    dom = await serve_and_dump(admin, "/", tmp_path)
    assert title_of(dom) == "ghhook: 3 apps"
    assert app_rows(dom) == list(APPS)
    assert '<a href="apps/blog">blog</a>' in dom
    assert 'http-equiv="refresh" content="5"' in dom or 'content="5" http-equiv="refresh"' in dom

    dom = await serve_and_dump(admin, "/apps/blog", tmp_path)
    assert title_of(dom) == f"ghhook: blog: {tmp_path / 'blog'} (main)"
    assert row_ids(dom) == [f"deploy-{ids[k]}" for k in ("queued", "timeout", "failed", "deployed")]
    assert "f" * 40 in dom
    assert "<script" not in dom and "<img" not in dom
    assert '<a href="../" id="back">' in dom


#: Measures a page laid out in a frame: the test wraps the page (which has no
#: script of its own and, served, a CSP that forbids them) in a document of
#: its own that holds this probe. Once the frame has loaded, the probe opens
#: every <details>, lists each element that reaches past the frame's right or
#: left edge, unless it sits in a box that scrolls sideways (its overflow is
#: then that box's own), and writes the widths and the list into a <pre>
#: that --dump-dom prints.
LAYOUT_PROBE = """
function probe(frame) {
  const page = frame.contentDocument;
  const view = frame.contentWindow;
  for (const details of page.querySelectorAll("details")) details.open = true;
  const root = page.documentElement;
  const width = root.clientWidth;
  const inScroller = (element) => {
    for (let box = element.parentElement; box; box = box.parentElement) {
      const overflow = view.getComputedStyle(box).overflowX;
      if (overflow === "auto" || overflow === "scroll") return true;
    }
    return false;
  };
  const wide = [];
  for (const element of page.body.querySelectorAll("*")) {
    const box = element.getBoundingClientRect();
    if ((box.right > width + 0.5 || box.left < -0.5) && !inScroller(element)) {
      const name = element.id ? "#" + element.id : "." + element.classList.value;
      wide.push(element.tagName.toLowerCase() + name + " right=" + Math.round(box.right));
    }
  }
  const report = document.createElement("pre");
  report.id = "layout-probe";
  report.textContent = JSON.stringify({
    innerWidth: view.innerWidth,
    clientWidth: width,
    scrollWidth: root.scrollWidth,
    wide: wide,
  });
  document.body.append(report);
}
"""


def layout(page: bytes, width: int, tmp_path: Path) -> dict[str, Any]:
    """
    What :data:`LAYOUT_PROBE` measures on ``page`` shown in a frame ``width``
    px wide. A frame, because headless chromium lays a top-level page out no
    narrower than 500 px whatever ``--window-size`` says (its screenshots are
    resized afterwards); a frame is a viewport of exactly the width asked,
    and the page's media queries answer to it. The frame's ``srcdoc`` shares
    the wrapper's origin, so the probe can read it.
    """
    wrapper = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<script>{LAYOUT_PROBE}</script></head><body style='margin: 0'>"
        f"<iframe style='width: {width}px; height: 900px; border: 0' onload='probe(this)'"
        f' srcdoc="{escape(page.decode("utf-8"), quote=True)}"></iframe></body></html>'
    )
    probed = tmp_path / f"probed-{width}.html"
    probed.write_text(wrapper, encoding="utf-8")
    dom = dump_dom(probed.as_uri(), tmp_path / f"profile-{width}", "--hide-scrollbars")
    match = re.search(r'<pre id="layout-probe">(.*?)</pre>', dom, re.S)
    assert match is not None, "the probe ran once the frame had loaded"
    report: dict[str, Any] = json.loads(unescape(match.group(1)))
    assert report["innerWidth"] == width, "the page was laid out at the width asked"
    return report


def test_a_page_wider_than_the_window_would_be_caught(tmp_path: Path) -> None:
    """The check below sees overflow: a long unbreakable line in a plain <td> is caught."""
    page = f"<!DOCTYPE html><body><table><tr><td>{'x' * 200}</td></tr></table></body>"
    report = layout(page.encode(), 420, tmp_path)
    assert report["scrollWidth"] > report["clientWidth"]
    assert any(element.startswith("td. right=") for element in report["wide"])


@pytest.mark.parametrize("width", [420, 800, 1280])
@pytest.mark.parametrize("which", ["app", "overview"])
def test_nothing_is_wider_than_the_window(width: int, which: str, tmp_path: Path) -> None:
    """
    At 420 px (a phone) and wider, no part of the page is off-screen to the
    side: long shas, paths, commands, subjects, authors and output lines wrap,
    or scroll inside their own box, and never widen the page.

    The page is measured in a frame by :func:`layout`: the probe lives in
    the test's wrapper document, opened as a file with no CSP, while the page
    itself still holds no script. Measuring the DOM rather than reading
    screenshot pixels names the element that overflows, and does not depend
    on colours, fonts or what happens to be painted at the right edge.
    """
    if which == "app":
        page = render_status_page(long_status())
    else:
        page = render_overview(long_overview())
    report = layout(page, width, tmp_path)
    assert report["wide"] == [], f"elements past the edge at {width} px"
    assert report["scrollWidth"] <= report["clientWidth"], report
