"""
The admin listener's HTML page: the ``/status`` document, readable at a glance.

A pure function of that document, so it is tested without a server. Commit
subjects, branch names and git's output come from whoever can push: the page
is built from :mod:`twisted.web.template` tags, which escape every string they
are given, and nothing is written into it as markup. It refreshes itself
every few seconds, uses inline CSS only, and loads nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.python.failure import Failure
from twisted.web.template import Tag, flatten, tags

#: Seconds between the page's automatic reloads.
REFRESH_SECONDS = 5
#: Lines of a failed step's output shown on the page (the journal keeps ~40).
OUTPUT_LINES = 20

# Colours per result; anything else (a result added later) gets "other".
_RESULT_CLASSES = {
    "deployed": "ok",
    "unchanged": "same",
    "failed": "bad",
    "timeout": "slow",
    "rolled_back": "back",
    "running": "busy",
    "queued": "wait",
}

# The flattener escapes <, > and & in a <style> too; the CSS avoids them.
_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1f2328; background: #fff; }
h1 { font-size: 1.3em; margin: 0 0 .6em; }
h2 { font-size: 1.1em; margin: 1.4em 0 .5em; }
code, pre, .sha { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 13px; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; margin: 0; }
dl.summary dt { color: #59636e; }
dl.summary dd { margin: 0; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35em .6em; border-bottom: 1px solid #d1d9e0; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
td { white-space: nowrap; }
td.details, td.details td { white-space: normal; }
td.details { width: 100%; }
.badge { display: inline-block; padding: .05em .55em; border-radius: 1em; font-weight: 600;
         color: #fff; background: #59636e; }
.badge.ok { background: #1a7f37; }
.badge.same { background: #0969da; }
.badge.bad { background: #cf222e; }
.badge.slow { background: #bc4c00; }
.badge.back { background: #8250df; }
.badge.busy { background: #9a6700; }
.badge.wait { background: #818b98; }
.state.idle { color: #1a7f37; font-weight: 600; }
.state.busy, .state.pending { color: #9a6700; font-weight: 600; }
tr.failure td { background: #ffebe9; }
pre.output { margin: .4em 0 0; padding: .6em; background: #1f2328; color: #f0f3f6;
             white-space: pre-wrap; word-break: break-all; max-height: 24em; overflow: auto; }
details summary { cursor: pointer; color: #59636e; }
.muted { color: #59636e; }
.error { color: #cf222e; }
"""


def render_status_page(status: Mapping[str, Any]) -> bytes:
    """The HTML page for a document as :func:`ghhook.admin.status_document` returns it."""
    title = f"ghhook: {status['repo']} ({status['branch']})"
    page = tags.html(lang="en")(
        tags.head(
            tags.meta(charset="utf-8"),
            tags.meta(content=str(REFRESH_SECONDS), **{"http-equiv": "refresh"}),
            tags.meta(name="viewport", content="width=device-width, initial-scale=1"),
            tags.meta(name="referrer", content="no-referrer"),
            tags.title(title),
            tags.style(_CSS),
        ),
        tags.body(
            tags.h1("ghhook"),
            _summary(status),
            tags.h2("Recent deploys"),
            _deploys(status["deploys"]),
            tags.p(
                class_="muted",
                id="footer",
            )(
                f"Times are UTC. This page reloads every {REFRESH_SECONDS} s; ",
                tags.a(href="status")("/status"),
                " has the same in JSON.",
            ),
        ),
    )
    return b"<!DOCTYPE html>\n" + _flatten_now(page) + b"\n"


def state_of(status: Mapping[str, Any]) -> str:
    """``idle``, ``busy`` (a deploy runs) or ``pending`` (one waits to start)."""
    if status["busy"]:
        return "busy"
    if status["pending"] is not None:
        return "pending"
    return "idle"


def _summary(status: Mapping[str, Any]) -> Tag:
    state = state_of(status)
    described: list[Any] = [tags.span(class_=f"state {state}", id="state")(state)]
    running, pending = status.get("running"), status["pending"]
    if running is not None:
        described.append(f": deploy {running['id']} of ")
        described.append(_sha(running["target"]))
    if pending is not None:
        described.append(
            f"; deploy {pending['id']} of " if running else f": deploy {pending['id']} of "
        )
        described.append(_sha(pending["target"]))
        described.append(" waits")
    rows: list[tuple[str, Any]] = [
        ("Repository", tags.code(status["repo"])),
        ("Branch", tags.code(f"{status['remote']}/{status['branch']}")),
        ("Head", tags.span(id="head")(_sha(status["head"], full=True))),
    ]
    if "deployed" in status:
        rows.append(("Last restarted on", _sha(status["deployed"], full=True)))
    rows.append(("State", described))
    return tags.dl(class_="summary")([(tags.dt(label), tags.dd(value)) for label, value in rows])


def _deploys(deploys: list[Mapping[str, Any]]) -> Tag:
    if not deploys:
        return tags.p(class_="muted", id="no-deploys")("No deploys recorded yet.")
    head = tags.tr(
        [
            tags.th(label)
            for label in (
                "#",
                "Result",
                "Commit",
                "From",
                "Trigger",
                "Delivery",
                "Started",
                "Duration",
                "Details",
            )
        ]
    )
    return tags.table(id="deploys")(tags.thead(head), tags.tbody([_row(d) for d in deploys]))


def _row(deploy: Mapping[str, Any]) -> Tag:
    result = str(deploy["result"])
    failed = result in ("failed", "timeout")
    trigger = str(deploy["trigger"])
    if deploy.get("deliveries", 0) > 1:
        trigger += f" ({deploy['deliveries']} pushes)"
    return tags.tr(
        class_="deploy failure" if failed else "deploy",
        id=f"deploy-{deploy['id']}",
        **{"data-result": result},
    )(
        tags.td(str(deploy["id"])),
        tags.td(tags.span(class_=f"badge {_RESULT_CLASSES.get(result, 'other')}")(result)),
        tags.td(_sha(deploy["sha"])),
        tags.td(_sha(deploy["before"])),
        tags.td(trigger),
        tags.td(tags.code(deploy["delivery"]) if deploy["delivery"] else "-"),
        tags.td(_time(deploy["started"])),
        tags.td(_duration(deploy["duration"])),
        tags.td(class_="details")(_details(deploy)),
    )


def _details(deploy: Mapping[str, Any]) -> list[Any]:
    """The failure (its step, why, the step's output tail), then every step."""
    parts: list[Any] = []
    if deploy["failed_step"]:
        parts.append(
            tags.div("failed at ", tags.strong(class_="failed-step")(deploy["failed_step"]))
        )
    if deploy["error"]:
        parts.append(tags.div(class_="error")(deploy["error"]))
    failing = _failing_step(deploy)
    if failing is not None and failing["output"]:
        parts.append(tags.pre(class_="output")(_tail(failing["output"])))
    steps = deploy["steps"]
    if steps:
        parts.append(
            tags.details(
                tags.summary(f"{len(steps)} step{'s' if len(steps) != 1 else ''}"),
                tags.table([_step(step) for step in steps]),
            )
        )
    return parts or ["-"]


def _failing_step(deploy: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The step a failure names, else the last one that did not succeed."""
    if deploy["result"] not in ("failed", "timeout"):
        return None
    steps = deploy["steps"]
    for step in reversed(steps):
        if step["name"] == deploy["failed_step"]:
            return step
    for step in reversed(steps):
        if step["exit_code"] != 0 or step.get("timed_out"):
            return step
    return None


def _step(step: Mapping[str, Any]) -> Tag:
    if step.get("timed_out"):
        ended = "timed out"
    elif step.get("signal") is not None:
        ended = f"signal {step['signal']}"
    elif step["exit_code"] is None:
        ended = "not started"
    else:
        ended = f"exit {step['exit_code']}"
    return tags.tr(
        tags.td(step["name"]),
        tags.td(tags.code(" ".join(step["argv"]))),
        tags.td(ended),
        tags.td(_duration(step["duration"])),
    )


def _sha(sha: str | None, full: bool = False) -> Tag | str:
    if not sha:
        return "-"
    return tags.span(class_="sha", title=sha)(sha if full else sha[:10])


def _time(iso: str | None) -> str:
    # "2024-05-01T12:00:00.250Z" reads as "2024-05-01 12:00:00".
    return "-" if iso is None else iso.replace("T", " ")[:19]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{int(seconds) // 60} min {int(seconds) % 60} s"


def _tail(output: str) -> str:
    return "\n".join(output.splitlines()[-OUTPUT_LINES:])


def _flatten_now(root: Tag) -> bytes:
    """Flatten tags that hold no Deferreds, which finishes before returning."""
    chunks: list[bytes] = []
    outcome: list[object] = []
    flatten(None, root, chunks.append).addBoth(outcome.append)
    if not outcome:
        raise RuntimeError("the status page waited on something; it must not")
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return b"".join(chunks)
