"""
The admin listener's HTML pages: the overview of every app (``/``, from the
``/status`` document), one app's page (``/apps/<name>``, from its
document) and one deploy's page (``/apps/<name>/deploys/<id>``, from its
document, with every step's output), readable at a glance.

Pure functions of those documents, so they are tested without a server. Commit
subjects and authors, branch names and git's output come from whoever can
push: the page is built from :mod:`twisted.web.template` tags, which escape
every string they are given, and nothing is written into it as markup. It
refreshes itself every few seconds, uses inline CSS only, runs no script and
loads nothing else.

Control characters (an ANSI escape in a commit subject or a build's output)
are shown escaped, ``\\x1b`` set apart in its own style, never written raw:
copied from the page into a terminal, they would act there.

They read on a phone: below ``NARROW_PX`` each app and each deploy is a card
instead of a table row, and anything long (shas, paths, commands, subjects,
git's output) wraps inside its own box, so a page is never wider than the screen.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from twisted.python.failure import Failure
from twisted.web.template import Tag, flatten, tags

from ghhook.escape import CONTROLS, printable, segments

#: Seconds between the page's automatic reloads.
REFRESH_SECONDS = 5
#: Lines of a failed step's output shown on the page (the journal keeps ~40).
OUTPUT_LINES = 20
#: Widths (CSS px) below which deploys are shown as cards, not table rows.
NARROW_PX = 900

# Colours per result; anything else (a result added later) gets "other".
_RESULT_CLASSES = {
    "deployed": "ok",
    "unchanged": "same",
    "failed": "bad",
    "timeout": "slow",
    "rolled_back": "back",
    "interrupted": "stopped",
    "cancelled": "gone",
    "skipped": "same",
    "running": "busy",
    "queued": "wait",
}

#: What each result means: the badges' titles and the legend under the table.
RESULT_MEANINGS = {
    "deployed": "the service was restarted on this commit",
    "unchanged": "nothing new to run; the service was not restarted",
    "failed": "a step failed and the deploy stopped there",
    "timeout": "a step ran past its time limit and was stopped",
    "rolled_back": "a release step failed and the previous commit runs again",
    "interrupted": "ghhook was stopped or killed during this deploy; the next start catches up",
    "cancelled": "the app was removed from the configuration before this deploy ran",
    "skipped": "none of the app's watched paths changed: HEAD moved, nothing was released",
    "running": "running now",
    "queued": "waiting to start",
}

# Results whose row is tinted as a failure and shows the failed step's output.
_FAILURES = ("failed", "timeout", "rolled_back")
# Results still in progress: the newest finished deploy is the "last" one.
_UNFINISHED = ("running", "queued")

# The flattener escapes <, > and & in a <style> too; the CSS avoids them.
_CSS = f"""
*, *::before, *::after {{ box-sizing: border-box; }}
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1f2328; background: #fff; }}
h1 {{ font-size: 1.3em; margin: 0 0 .6em; }}
h2 {{ font-size: 1.1em; margin: 1.4em 0 .5em; }}
code, pre, .sha {{ font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 13px; }}
code, .sha, .subject, .author, .error, dd {{ overflow-wrap: anywhere; }}
.banner {{ margin: 0 0 1em; padding: .6em .8em; border: 2px solid #cf222e; border-radius: 6px;
           background: #ffebe9; color: #82071e; overflow-wrap: anywhere; }}
.banner .problem {{ font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 13px;
                    white-space: pre-wrap; margin-top: .3em; }}
p.back {{ margin: 0 0 .6em; }}
td.app {{ white-space: normal; min-width: 10em; }}
td.app a {{ font-weight: 600; overflow-wrap: anywhere; }}
td.app .where {{ overflow-wrap: anywhere; }}
table.apps td.state, table.apps td.last {{ white-space: normal; overflow-wrap: anywhere; }}
table.apps td.state {{ min-width: 12em; }}
tr.app.failure td {{ background: #ffebe9; }}
tr.app.interrupted td {{ background: #fff8c5; }}
dl.summary, dl.legend {{ display: grid; grid-template-columns: max-content minmax(0, 1fr);
                         gap: .2em 1em; margin: 0; }}
dl.summary dt {{ color: #59636e; }}
dl.summary dd, dl.legend dd {{ margin: 0; min-width: 0; }}
dl.legend {{ margin-top: 1em; align-items: baseline; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; padding: .35em .6em; border-bottom: 1px solid #d1d9e0;
          vertical-align: top; }}
th {{ background: #f6f8fa; font-weight: 600; }}
td {{ white-space: nowrap; }}
td.commit, td.delivery, td.details, td.details td {{ white-space: normal; }}
td.commit {{ width: 30%; min-width: 12em; }}
td.details {{ width: 70%; min-width: 16em; }}
.subject {{ font-weight: 600; }}
.badge {{ display: inline-block; padding: .05em .55em; border-radius: 1em; font-weight: 600;
          color: #fff; background: #59636e; border: 1px solid transparent; white-space: nowrap; }}
.badge.ok {{ background: #1a7f37; }}
.badge.same {{ background: #0969da; }}
.badge.bad {{ background: #cf222e; }}
.badge.slow {{ background: #bc4c00; }}
.badge.back {{ background: #8250df; }}
.badge.stopped {{ background: #fff8c5; color: #7d4e00; border-color: #d4a72c; }}
.badge.gone {{ background: #f6f8fa; color: #59636e; border-color: #d1d9e0; }}
.badge.busy {{ background: #9a6700; }}
.badge.wait {{ background: #818b98; }}
.state.idle {{ color: #1a7f37; font-weight: 600; }}
.state.deploying, .state.pending {{ color: #9a6700; font-weight: 600; }}
.state.paused {{ color: #8250df; font-weight: 600; }}
tr.failure td {{ background: #ffebe9; }}
tr.interrupted td {{ background: #fff8c5; }}
/* column-reverse starts the scroll box at its end: the last lines, which say why, show. */
pre.output {{ margin: .4em 0 0; padding: .6em; background: #1f2328; color: #f0f3f6;
              white-space: pre-wrap; overflow-wrap: anywhere; max-height: 24em; overflow: auto;
              display: flex; flex-direction: column-reverse; }}
details summary {{ cursor: pointer; color: #59636e; }}
table.steps td {{ background: transparent; }}
h3 {{ font-size: 1em; margin: 0 0 .4em; overflow-wrap: anywhere; }}
div.step {{ margin: 0 0 1em; padding: .5em .7em; border: 1px solid #d1d9e0; border-radius: 6px; }}
div.step.failure {{ background: #ffebe9; border-color: #ff8182; }}
div.step.interrupted {{ background: #fff8c5; border-color: #d4a72c; }}
.muted {{ color: #59636e; }}
.ctl {{ color: #cf222e; background: #ffebe9; border-radius: 3px; font-family: ui-monospace,
        SFMono-Regular, Menlo, monospace; }}
pre.output .ctl {{ color: #ff8182; background: #5d0f12; }}
.error {{ color: #cf222e; }}
tr.interrupted .error {{ color: #7d4e00; }}
@media (max-width: {NARROW_PX}px) {{
  body {{ margin: .8em; }}
  /* Each row of either table becomes a card. */
  table.cards, table.cards tbody, table.cards tr, table.cards td {{ display: block; }}
  table.cards thead {{ display: none; }}
  table.cards tr.deploy, table.cards tr.app {{ margin: 0 0 .8em; padding: .5em .7em;
                                              border: 1px solid #d1d9e0; border-radius: 6px; }}
  table.cards tr.failure {{ background: #ffebe9; border-color: #ff8182; }}
  table.cards tr.interrupted {{ background: #fff8c5; border-color: #d4a72c; }}
  table.cards td {{ width: auto; min-width: 0; padding: .1em 0; border: 0; white-space: normal;
                    background: transparent; }}
  table.cards td.fact::before {{ content: attr(data-label) " "; color: #59636e; }}
  table.deploys td.id, table.deploys td.result, table.deploys td.fact {{
    display: inline-block; margin-right: .8em; }}
  table.deploys td.id::before {{ content: "#"; }}
  table.deploys td.id {{ font-weight: 600; }}
  table.apps td.fact {{ display: inline-block; max-width: 100%; margin-right: .8em; }}
  table.steps tr {{ display: block; padding: .3em 0; border-top: 1px solid #d1d9e0; }}
  table.steps td {{ display: inline-block; margin-right: .8em; }}
  table.steps td.argv {{ display: block; margin: 0; }}
}}
"""


def _head(title: str, refresh: bool = True) -> Tag:
    return tags.head(
        tags.meta(charset="utf-8"),
        tags.meta(content=str(REFRESH_SECONDS), **{"http-equiv": "refresh"}) if refresh else "",
        tags.meta(name="viewport", content="width=device-width, initial-scale=1"),
        tags.meta(name="referrer", content="no-referrer"),
        tags.title(title),
        tags.style(_CSS),
    )


def _finish(page: Tag) -> bytes:
    return b"<!DOCTYPE html>\n" + _flatten_now(_show_controls(page)) + b"\n"


def render_status_page(status: Mapping[str, Any]) -> bytes:
    """
    One app's page, for a document as :func:`ghhook.admin.app_document`
    returns it. Served at ``/apps/<name>``: its links are relative to that.
    """
    name = status.get("name")
    where = f"{status['repo']} ({status['branch']})"
    title = f"ghhook: {name}: {where}" if name else f"ghhook: {where}"
    journal_error = status.get("journal_error")
    page = tags.html(lang="en")(
        _head(title),
        tags.body(
            _journal_banner(journal_error) if journal_error is not None else "",
            tags.p(class_="back")(tags.a(href="../", id="back")("\N{LEFTWARDS ARROW} all apps")),
            tags.h1(f"ghhook: {name}" if name else "ghhook"),
            _summary(status),
            tags.h2("Recent deploys"),
            _deploys(status["deploys"], journal_error, name),
            tags.p(
                class_="muted",
                id="footer",
            )(
                f"Times are UTC. This page reloads every {REFRESH_SECONDS} s. This URL"
                " answers the same in JSON to a client that does not ask for HTML; ",
                tags.a(href="../status")("/status"),
                " has every app.",
            ),
        ),
    )
    return _finish(page)


def render_overview(status: Mapping[str, Any]) -> bytes:
    """
    The page at ``/``, for a document as :func:`ghhook.admin.status_document`
    returns it: one row per app, linking to its page.
    """
    apps = status["apps"]
    config_error = status.get("config_error")
    journal_error = status.get("journal_error")
    config = status.get("config")
    facts: list[tuple[str, Any]] = [
        ("Version", status.get("version") or "-"),
        ("Configuration", tags.code(config) if config else "the command-line options"),
    ]
    deploying = sum(1 for app in apps if app["busy"])
    facts.append(("Apps", f"{len(apps)}, {deploying} deploying" if deploying else str(len(apps))))
    page = tags.html(lang="en")(
        _head(f"ghhook: {_plural(len(apps), 'app', 'apps')}"),
        tags.body(
            _config_banner(config, config_error) if config_error is not None else "",
            _journal_banner(journal_error, "the results below")
            if journal_error is not None
            else "",
            tags.h1("ghhook"),
            tags.dl(class_="summary", id="daemon")(
                [(tags.dt(label), tags.dd(value)) for label, value in facts]
            ),
            tags.h2("Apps"),
            _apps(apps, journal_error),
            tags.p(class_="muted", id="footer")(
                f"Times are UTC. This page reloads every {REFRESH_SECONDS} s; ",
                tags.a(href="status")("/status"),
                " has the same in JSON.",
            ),
        ),
    )
    return _finish(page)


def render_not_found(name: str, overview: str = "../") -> bytes:
    """
    The page a browser gets for ``/apps/<name>`` (or a page under it) when
    no app has that name.

    :param overview: the overview's URL relative to the page's.
    """
    return _message_page(
        "ghhook: no such app",
        (overview, "all apps"),
        "No such app",
        ["No app called ", tags.code(name), " is configured (any more)."],
    )


def render_deploy_not_found(name: str, deploy: str) -> bytes:
    """
    The page a browser gets for ``/apps/<name>/deploys/<deploy>`` when the
    app has no such deploy: none of that id, another app's, one pruned from
    the journal, or an id that is not a positive integer. Which of these is
    not said: an app's page never tells about another app's deploys.
    """
    return _message_page(
        "ghhook: no such deploy",
        (_app_link(name), name),
        "No such deploy",
        [
            "The app ",
            tags.code(name),
            " has no deploy ",
            tags.code(deploy),
            " in the journal: deploy ids are positive integers, each deploy is one"
            " app's, and the journal keeps each app's newest deploys only.",
        ],
    )


def render_deploy_unreadable(name: str, deploy: str, why: str) -> bytes:
    """The page for ``/apps/<name>/deploys/<deploy>`` while the journal cannot be read."""
    return _message_page(
        "ghhook: the journal fails",
        (_app_link(name), name),
        f"Deploy {deploy} of {name}",
        ["The deploy cannot be read while the journal fails."],
        banner=_journal_banner(why, "this deploy"),
    )


def _app_link(name: str) -> str:
    """An app's page, from a page under ``/apps/<name>/deploys/``."""
    return "../../" + quote(name, safe="")


def _message_page(
    title: str, back: tuple[str, str], heading: str, message: list[Any], banner: Any = ""
) -> bytes:
    """A page that says one thing, with a link back: not refreshed, nothing else on it."""
    href, label = back
    page = tags.html(lang="en")(
        _head(title, refresh=False),
        tags.body(
            banner,
            tags.p(class_="back")(tags.a(href=href, id="back")(f"\N{LEFTWARDS ARROW} {label}")),
            tags.h1(heading),
            tags.p(id="not-found")(message),
        ),
    )
    return _finish(page)


def render_deploy_page(
    name: str, deploy: Mapping[str, Any], journal_error: str | None = None
) -> bytes:
    """
    One deploy's page, for a deploy document as
    :func:`ghhook.admin.deploy_document` returns it: what it deployed, how it
    ended, and each step with its whole kept output. Served at
    ``/apps/<name>/deploys/<id>``, the URL commit statuses link to: its
    links are relative to that. It reloads itself only while the deploy is
    queued or running; a finished one no longer changes, and a reload would
    scroll its output away from whoever reads it.
    """
    result = str(deploy["result"])
    unfinished = result in _UNFINISHED
    title = f"ghhook: {name}: deploy {deploy['id']} ({result})"
    reloads = f"This page reloads every {REFRESH_SECONDS} s until the deploy ends. "
    page = tags.html(lang="en")(
        _head(title, refresh=unfinished),
        tags.body(
            _journal_banner(journal_error, "this deploy") if journal_error is not None else "",
            tags.p(class_="back")(
                tags.a(href=_app_link(name), id="back")(f"\N{LEFTWARDS ARROW} {name}")
            ),
            tags.h1(f"ghhook: {name}: deploy {deploy['id']} ", _badge(result)),
            _deploy_summary(name, deploy),
            tags.h2("Steps"),
            tags.p(class_="muted", id="log-link")(
                tags.a(href=f"{_app_link(name)}/deploys/{deploy['id']}/log", id="log")(
                    "The whole output as text"
                ),
                ", streamed live while the deploy runs (ghhook logs -f).",
            ),
            _deploy_steps(deploy),
            _deploy_reports(deploy.get("reports")),
            tags.p(class_="muted", id="footer")(
                "Times are UTC. ",
                reloads if unfinished else "",
                "This URL answers the same in JSON to a client that does not ask for HTML; ",
                tags.a(href=_app_link(name))(name),
                " has the app's recent deploys.",
            ),
        ),
    )
    return _finish(page)


def _deploy_summary(name: str, deploy: Mapping[str, Any]) -> Tag:
    result = str(deploy["result"])
    interrupted = result == "interrupted"
    trigger = str(deploy["trigger"])
    if deploy.get("deliveries", 0) > 1:
        trigger += f" ({deploy['deliveries']} pushes)"
    meaning = RESULT_MEANINGS.get(result)
    rows: list[tuple[str, Any]] = [
        ("App", tags.a(href=_app_link(name), id="app")(name)),
        ("Deploy", tags.span(id="deploy-id")(str(deploy["id"]))),
        ("Result", [_badge(result), tags.span(class_="muted")(f" {meaning}") if meaning else ""]),
        ("Trigger", trigger),
    ]
    sha = deploy["sha"]
    if sha:
        commit: Any = tags.span(id="sha")(_sha(sha, full=True))
    elif deploy["trigger"] == "catch-up":
        commit = "the remote branch's head (a catch-up)"
    else:
        commit = "-"
    rows.append(("Target" if result in _UNFINISHED else "Commit", commit))
    if deploy.get("subject"):
        rows.append(("Subject", tags.span(class_="subject")(deploy["subject"])))
    if deploy.get("author"):
        rows.append(("Author", tags.span(class_="author")(deploy["author"])))
    rows.append(("Before", tags.span(id="before")(_sha(deploy["before"], full=True))))
    if deploy["failed_step"]:
        rows.append(
            (
                "Stopped during" if interrupted else "Failed at",
                tags.strong(class_="failed-step")(deploy["failed_step"]),
            )
        )
    if deploy["error"]:
        rows.append(("Error", tags.span(class_="error", id="error")(deploy["error"])))
    delivery = deploy["delivery"]
    rows += [
        ("Delivery", tags.code(id="delivery")(delivery) if delivery else "-"),
        ("Queued", _time(deploy["queued"])),
        ("Started", _time(deploy["started"])),
        ("Finished", _time(deploy["finished"])),
        ("Took", _duration(deploy["duration"])),
    ]
    return tags.dl(class_="summary", id="deploy", **{"data-result": result})(
        [(tags.dt(label), tags.dd(value)) for label, value in rows]
    )


def _deploy_reports(reports: Any) -> Any:
    """What the deploy told its forge and the team: each report and how it went."""
    if not reports:
        return ""
    rows = [
        tags.tr(class_=f"report {report['state']}")(
            tags.td(str(report["kind"]).replace("_", " ")),
            tags.td(tags.code(report["url"]) if report["url"] else str(report["to"])),
            tags.td(str(report["state"])),
            tags.td(str(report["outcome"] or "-")),
            tags.td(str(report["attempts"])),
        )
        for report in reports
    ]
    return [
        tags.h2("Reports"),
        tags.table(class_="reports", id="reports")(
            tags.tr(
                tags.th("what"),
                tags.th("to"),
                tags.th("state"),
                tags.th("last answer"),
                tags.th("tries"),
            ),
            rows,
        ),
    ]


def _deploy_steps(deploy: Mapping[str, Any]) -> Any:
    steps = deploy["steps"]
    if not steps:
        said = "No step has run yet." if deploy["result"] in _UNFINISHED else "No step ran."
        return tags.p(class_="muted", id="no-steps")(said)
    failing = _failing_step(deploy)
    marked = "step interrupted" if deploy["result"] == "interrupted" else "step failure"
    return [
        _deploy_step(number, step, marked if step is failing else "step")
        for number, step in enumerate(steps, 1)
    ]


def _deploy_step(number: int, step: Mapping[str, Any], cls: str) -> Tag:
    """One step: its command, how it ended, and all the output the journal kept."""
    facts: list[tuple[str, Any]] = [
        # Quoted as a shell would read it: an argument with a space stays one.
        ("Command", tags.code(class_="argv")(shlex.join(step["argv"]))),
        ("Ended", tags.span(class_="ended")(_ended(step))),
        ("Started", _time(step["started"])),
        ("Took", _duration(step["duration"])),
    ]
    output = step["output"]
    return tags.div(class_=cls, id=f"step-{number}")(
        tags.h3(f"{number}. ", tags.span(class_="name")(step["name"])),
        tags.dl(class_="summary")([(tags.dt(label), tags.dd(value)) for label, value in facts]),
        # One child: in a flex box each text run and span would be a row of its own.
        tags.pre(class_="output")(tags.code(output))
        if output
        else tags.p(class_="muted no-output")("No output."),
    )


#: The overview's columns; on a narrow screen the cards label their facts instead.
_APP_COLUMNS = ("App", "State", "Deployed", "Last result", "When")


def _apps(apps: list[Mapping[str, Any]], journal_error: str | None) -> Any:
    if not apps:
        return tags.p(class_="muted", id="no-apps")("No apps are configured.")
    head = tags.tr([tags.th(label) for label in _APP_COLUMNS])
    table = tags.table(class_="apps cards", id="apps")(
        tags.thead(head), tags.tbody([_app_row(app) for app in apps])
    )
    present = {str(app["last"]["result"]) for app in apps if app.get("last") is not None}
    parts: list[Any] = [table]
    if present:
        parts.append(_legend(present))
    if journal_error is not None:
        parts.append(
            tags.p(class_="muted", id="no-results")(
                "What was deployed and the last results cannot be read while the journal fails."
            )
        )
    return parts


def _app_row(app: Mapping[str, Any]) -> Tag:
    name = str(app["name"])
    state = state_of(app)
    last = app.get("last")
    result = str(last["result"]) if last is not None else None
    if result in _FAILURES:
        row_class = "app failure"
    elif result == "interrupted":
        row_class = "app interrupted"
    else:
        row_class = "app"
    where = str(app["branch"])
    repository = app.get("repository", app.get("github_repo"))
    if repository:
        where = f"{repository} \N{MIDDLE DOT} {where}"
    state_cell: list[Any] = [tags.span(class_=f"state {state}")(state)]
    if app.get("paused"):
        state_cell.append(tags.div(class_="muted")(_paused(app["paused"], app.get("held"))))
    job = app.get("running") if state == "deploying" else app.get("pending")
    if job is not None:
        state_cell.append(
            tags.div(class_="muted")(_job(job, "runs" if state == "deploying" else "waits"))
        )
    if last is None:
        last_cell: list[Any] | str = "-"
        when = "-"
    else:
        last_cell = [_badge(str(result)), f" deploy {last['id']}"]
        if last.get("failed_step"):
            said = "stopped during" if result == "interrupted" else "at"
            last_cell.append(tags.span(class_="muted")(f" {said} {last['failed_step']}"))
        when = _time(last["finished"])
    return tags.tr(class_=row_class, id=f"app-{name}", **{"data-state": state})(
        tags.td(class_="app")(
            # Names are [a-z0-9_-] by the config; quoted anyway, the link stays a path.
            tags.a(href="apps/" + quote(name, safe=""))(name),
            tags.div(class_="where muted")(where),
        ),
        _fact("State", state_cell, "state"),
        _fact("Deployed", _sha(app.get("deployed")), "deployed"),
        _fact("Last result", last_cell, "last"),
        _fact("When", when, "when"),
    )


def _legend(present: set[str]) -> Tag:
    """The results on the page, what each means, in a fixed order."""
    return tags.dl(class_="legend", id="legend")(
        [
            (tags.dt(_badge(result)), tags.dd(class_="muted")(meaning))
            for result, meaning in RESULT_MEANINGS.items()
            if result in present
        ]
    )


def state_of(status: Mapping[str, Any]) -> str:
    """
    ``idle``, ``deploying`` (a deploy runs), ``pending`` (one waits to
    start) or ``paused`` (automatic deploys are held).
    """
    if status["busy"]:
        return "deploying"
    if status["pending"] is not None:
        return "pending"
    if status.get("paused"):
        return "paused"
    return "idle"


def _paused(paused: Mapping[str, Any], held: Mapping[str, Any] | None) -> str:
    """Why and since when an app is paused, by whom, and what waits for the resume."""
    said = "paused"
    if paused.get("reason"):
        said += f": {paused['reason']}"
    if paused.get("by"):
        said += f" (by {paused['by']})"
    if paused.get("since"):
        said += f", since {paused['since']}"
    if held is not None:
        said += f"; deploy {held['id']} of {str(held.get('target') or 'the remote')[:7]} waits for the resume"
    return said


def last_finished(deploys: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The newest deploy that has a result, not one still running or queued."""
    for deploy in deploys:
        if deploy["result"] not in _UNFINISHED:
            return deploy
    return None


def _journal_banner(why: str, shown: str = "the deploys below") -> Tag:
    return tags.div(class_="banner", id="journal-error", role="alert")(
        tags.strong("The journal cannot be read or written: "),
        why,
        tags.br(),
        f"Deliveries are answered 503 and not queued, and {shown} may be"
        " missing, until it works again.",
    )


def _config_banner(config: str | None, why: str) -> Tag:
    """The last reload failed: say so, that nothing changed, and every problem."""
    source = tags.code(config) if config else "the configuration"
    return tags.div(class_="banner", id="config-error", role="alert")(
        tags.strong("The last reload of ", source, " failed; "),
        "the configuration read before it is still in use, unchanged, until a reload succeeds.",
        [tags.div(class_="problem")(line) for line in why.splitlines() or [why]],
    )


def _summary(status: Mapping[str, Any]) -> Tag:
    state = state_of(status)
    repository = status.get("repository", status.get("github_repo"))
    rows: list[tuple[str, Any]] = [
        ("Repository", tags.code(status["repo"])),
        ("Branch", tags.code(f"{status['remote']}/{status['branch']}")),
        ("Head", tags.span(id="head")(_sha(status["head"], full=True))),
    ]
    if "repository" in status or "github_repo" in status:
        forge = f" ({status['forge']})" if status.get("forge") else ""
        pushes_from = tags.code(repository) if repository else "any repository"
        rows.insert(1, ("Pushes from", [pushes_from, forge]))
    if "deployed" in status:
        rows.append(("Last restarted on", _sha(status["deployed"], full=True)))
    reports = status.get("reports")
    if reports and (reports.get("pending") or reports.get("failed")):
        rows.append(
            (
                "Reports",
                tags.span(id="reports")(
                    f"{reports.get('pending', 0)} waiting to be sent,"
                    f" {reports.get('failed', 0)} given up (see the log)"
                ),
            )
        )
    rows.append(("State", tags.span(class_=f"state {state}", id="state")(state)))
    if status.get("paused"):
        rows.append(
            ("Paused", tags.span(id="paused")(_paused(status["paused"], status.get("held"))))
        )
    running, pending = status.get("running"), status["pending"]
    if running is not None:
        rows.append(("Running", tags.span(id="running")(_job(running, "runs"))))
    if pending is not None:
        rows.append(("Pending", tags.span(id="pending")(_job(pending, "waits"))))
    last = last_finished(status["deploys"])
    if last is not None:
        rows.append(("Last result", tags.span(id="last-result")(_last(last))))
    return tags.dl(class_="summary")([(tags.dt(label), tags.dd(value)) for label, value in rows])


def _job(job: Mapping[str, Any], verb: str) -> list[Any]:
    """``deploy 4 of abc… waits (3 pushes)``: a job document in words."""
    if job["target"] is None:
        described: list[Any] = [f"deploy {job['id']}, a catch-up with the remote, {verb}"]
    else:
        described = [f"deploy {job['id']} of ", _sha(job["target"]), f" {verb}"]
    pushes = job.get("pushes")
    if pushes:
        described.append(f" ({_plural(pushes, 'push', 'pushes')})")
    return described


def _last(deploy: Mapping[str, Any]) -> list[Any]:
    result = str(deploy["result"])
    described: list[Any] = [_badge(result), f" deploy {deploy['id']} of ", _sha(deploy["sha"])]
    if result not in ("deployed", "unchanged") and result in RESULT_MEANINGS:
        described.append(tags.span(class_="muted")(f": {RESULT_MEANINGS[result]}"))
    return described


#: The table's columns; on a narrow screen the cards label their facts instead.
_COLUMNS = (
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


def _deploys(
    deploys: list[Mapping[str, Any]], journal_error: str | None, name: str | None = None
) -> Any:
    if not deploys:
        if journal_error is not None:
            return tags.p(class_="muted", id="no-deploys")(
                "The deploys cannot be read while the journal fails."
            )
        return tags.p(class_="muted", id="no-deploys")("No deploys recorded yet.")
    head = tags.tr([tags.th(label) for label in _COLUMNS])
    # The legend explains the results on the page, in a fixed order.
    legend = _legend({str(deploy["result"]) for deploy in deploys})
    table = tags.table(class_="deploys cards", id="deploys")(
        tags.thead(head), tags.tbody([_row(d, name) for d in deploys])
    )
    return [table, legend]


def _row(deploy: Mapping[str, Any], name: str | None = None) -> Tag:
    result = str(deploy["result"])
    if result in _FAILURES:
        row_class = "deploy failure"
    elif result == "interrupted":
        row_class = "deploy interrupted"
    else:
        row_class = "deploy"
    trigger = str(deploy["trigger"])
    if deploy.get("deliveries", 0) > 1:
        trigger += f" ({deploy['deliveries']} pushes)"
    return tags.tr(class_=row_class, id=f"deploy-{deploy['id']}", **{"data-result": result})(
        tags.td(class_="id")(_deploy_id(deploy, name)),
        tags.td(class_="result")(_badge(result)),
        tags.td(class_="commit")(_commit(deploy)),
        _fact("From", _sha(deploy["before"])),
        _fact("Trigger", trigger),
        _fact("Delivery", tags.code(deploy["delivery"]) if deploy["delivery"] else "-", "delivery"),
        _fact("Started", _time(deploy["started"])),
        _fact("Took", _duration(deploy["duration"])),
        tags.td(class_="details")(_details(deploy)),
    )


def _deploy_id(deploy: Mapping[str, Any], name: str | None) -> Tag | str:
    """The deploy's id, linking to its page (relative to ``/apps/<name>``) when the app is named."""
    text = str(deploy["id"])
    if not name:
        return text
    href = f"{quote(name, safe='')}/deploys/{quote(text, safe='')}"
    return tags.a(href=href, class_="deploy-link")(text)


def _fact(label: str, value: Any, extra: str = "") -> Tag:
    """A short cell; on a narrow screen it reads ``label value`` inline."""
    return tags.td(class_=f"fact {extra}".strip(), **{"data-label": label})(value)


def _badge(result: str) -> Tag:
    cls = _RESULT_CLASSES.get(result, "other")
    meaning = RESULT_MEANINGS.get(result)
    badge = tags.span(class_=f"badge {cls}")(result)
    if meaning is not None:
        badge(title=meaning)
    return badge


def _commit(deploy: Mapping[str, Any]) -> list[Any]:
    """The sha, then the commit's subject and author as the clone has them."""
    parts: list[Any] = [_sha(deploy["sha"])]
    subject, author = deploy.get("subject"), deploy.get("author")
    if subject:
        parts.append(tags.div(class_="subject")(subject))
    if author:
        parts.append(tags.div(class_="author muted")(f"by {author}"))
    return parts


def _details(deploy: Mapping[str, Any]) -> list[Any]:
    """The failure (its step, why, the step's output tail), then every step."""
    parts: list[Any] = []
    if deploy["failed_step"]:
        said = "stopped during " if deploy["result"] == "interrupted" else "failed at "
        parts.append(tags.div(said, tags.strong(class_="failed-step")(deploy["failed_step"])))
    if deploy["error"]:
        parts.append(tags.div(class_="error")(deploy["error"]))
    failing = _failing_step(deploy)
    if failing is not None and failing["output"]:
        # One child: in a flex box each text run and span would be a row of its own.
        parts.append(tags.pre(class_="output")(tags.code(_tail(failing["output"]))))
    steps = deploy["steps"]
    if steps:
        parts.append(
            tags.details(
                tags.summary(_plural(len(steps), "step", "steps")),
                tags.table(class_="steps")([_step(step) for step in steps]),
            )
        )
    return parts or ["-"]


def _failing_step(deploy: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """
    The step a failure (or a rollback) names, else the last one that did not
    succeed; for an interrupted deploy, the step it was stopped in.
    """
    result = deploy["result"]
    if result not in _FAILURES and result != "interrupted":
        return None
    steps = deploy["steps"]
    for step in reversed(steps):
        if step["name"] == deploy["failed_step"]:
            return step
    if result == "interrupted":
        return None
    for step in reversed(steps):
        if step["exit_code"] != 0 or step.get("timed_out"):
            return step
    return None


def _ended(step: Mapping[str, Any]) -> str:
    """``exit 0``, ``signal 15``, ``timed out`` or ``not started``."""
    if step.get("timed_out"):
        return "timed out"
    if step.get("signal") is not None:
        return f"signal {step['signal']}"
    if step["exit_code"] is None:
        return "not started"
    return f"exit {step['exit_code']}"


def _step(step: Mapping[str, Any]) -> Tag:
    return tags.tr(
        tags.td(class_="name")(step["name"]),
        tags.td(class_="argv")(tags.code(" ".join(step["argv"]))),
        tags.td(class_="ended")(_ended(step)),
        tags.td(class_="took")(_duration(step["duration"])),
    )


def _sha(sha: str | None, full: bool = False) -> Tag | str:
    if not sha:
        return "-"
    return tags.span(class_="sha", title=sha)(sha if full else sha[:10])


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


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


# Elements whose content is text only: a <span> there would show as markup.
_TEXT_ONLY = ("title", "style")


def _show_controls(node: Any, parent: str = "") -> Any:
    """
    ``node`` with every control character in its text and attributes shown
    escaped, in a ``<span class="ctl">`` where markup can go. One pass over
    the finished tree, so no field can be missed, the ones added later too.
    """
    if isinstance(node, str):
        if not CONTROLS.search(node):
            return node
        if parent in _TEXT_ONLY:
            return printable(node)
        return [tags.span(class_="ctl")(text) if ctl else text for text, ctl in segments(node)]
    if isinstance(node, Tag):
        node.attributes = {
            name: printable(value) if isinstance(value, str) else value
            for name, value in node.attributes.items()
        }
        name = node.tagName.decode("ascii") if isinstance(node.tagName, bytes) else node.tagName
        node.children = [_show_controls(child, name) for child in node.children]
        return node
    if isinstance(node, (list, tuple)):
        return [_show_controls(child, parent) for child in node]
    return node


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
