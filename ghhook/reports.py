"""
What ghhook tells the forge and the team about a deploy, planned as plain
values.

Pure functions: an app's settings and a deploy's start or end in, the
:class:`Call` values the outbox sends out (commit statuses on each forge,
GitHub Deployments, notifications). Nothing here holds a token or a secret:
a call names whose credential it needs (``target``), and the outbox adds it
when it sends, so no credential is ever written to the journal.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import attrs

from ghhook.results import Result

#: The forges' public APIs; a self-hosted forge needs ``api_url``.
DEFAULT_API_URLS = {
    "github": "https://api.github.com",
    "gitea": "https://gitea.com/api/v1",
    "forgejo": "https://codeberg.org/api/v1",
    "gitlab": "https://gitlab.com/api/v4",
    "bitbucket": "https://api.bitbucket.org/2.0",
}
#: Where each forge's token is sent, and how.
_AUTH = {
    "github": ("Authorization", "Bearer {}"),
    "gitea": ("Authorization", "token {}"),
    "forgejo": ("Authorization", "token {}"),
    "gogs": ("Authorization", "token {}"),
    "gitlab": ("PRIVATE-TOKEN", "{}"),
    "bitbucket": ("Authorization", "Bearer {}"),
    "bitbucket-server": ("Authorization", "Bearer {}"),
}
#: The results a notification may be sent for, and the default ones.
NOTIFY_RESULTS = ("deployed", "failed", "timeout", "rolled_back", "interrupted")
NOTIFY_DEFAULT = ("failed", "timeout", "rolled_back")
#: Seconds before a failure that repeats is told again.
REPEAT_AFTER = 3600.0
#: The header a generic notification is signed in, as GitHub signs its own.
SIGNATURE_HEADER = "X-Ghhook-Signature-256"
#: GitHub cuts a status's description at 140 characters.
_DESCRIPTION = 140


class Kind(str, enum.Enum):
    """What a call is: the label of its metrics and of its row in the outbox."""

    STATUS = "status"
    DEPLOYMENT = "deployment"
    DEPLOYMENT_STATUS = "deployment_status"
    NOTIFY = "notify"

    def __str__(self) -> str:
        return self.value


@attrs.frozen
class ReportSettings:
    """``[apps.<name>.report]``: how one app reports to its forge."""

    #: The API token; kept out of ``repr``, logs and the journal.
    token: str = attrs.field(repr=False)
    api_url: str
    statuses: bool = True
    deployments: bool = False
    environment: str | None = None
    environment_url: str | None = None
    #: Where the admin pages are reachable, for links to a deploy's page.
    public_url: str | None = None


@attrs.frozen
class NotifySettings:
    """One ``[[notify]]`` table: a generic JSON POST, or an Apprise URL."""

    #: Stable within one configuration: ``notify[0]``, ``notify[1]``...
    name: str
    #: The generic receiver; kept out of ``repr`` (a webhook URL may hold a token).
    url: str | None = attrs.field(default=None, repr=False)
    secret: bytes | None = attrs.field(default=None, repr=False)
    apprise_url: str | None = attrs.field(default=None, repr=False)
    on: tuple[str, ...] = NOTIFY_DEFAULT
    #: The apps it is for; None: every app.
    apps: tuple[str, ...] | None = None
    repeat_after: float = REPEAT_AFTER

    def wants(self, app: str, result: str) -> bool:
        return result in self.on and (self.apps is None or app in self.apps)


@attrs.frozen
class Call:
    """
    One call the outbox makes, as written in the journal: no credential.

    ``target`` is ``forge`` (the app's report token and API) or a
    notification's name. A deployment status's ``url`` holds
    ``{deployment}``, filled in with the id the forge gave the deployment
    this deploy created.
    """

    kind: Kind
    target: str
    url: str
    body: dict[str, Any]
    method: str = "POST"


@attrs.frozen
class Ending:
    """How a deploy ended, as far as a report tells it."""

    deploy: int
    result: Result
    #: The commit the deploy was about (the one a pending status was set on).
    sha: str | None
    #: The commit running before the deploy, or after its rollback.
    previous: str | None
    duration: float
    failed_step: str | None = None
    error: str | None = None


def auth_header(forge: str, token: str) -> tuple[str, str]:
    """The header that carries ``token`` to ``forge``'s API."""
    name, form = _AUTH[forge]
    return name, form.format(token)


def deploy_link(report: ReportSettings, app: str, deploy: int) -> str | None:
    """
    The link a report carries: the deploy's admin page on ``public_url``,
    else ``environment_url``, else none.
    """
    if report.public_url is None:
        return report.environment_url
    return f"{report.public_url.rstrip('/')}/apps/{quote(app)}/deploys/{deploy}"


def short(sha: str | None) -> str:
    return sha[:7] if sha else "nothing"


def outcome_words(ending: Ending) -> str:
    """One line for a person: what the deploy did, and why when it failed."""
    sha = short(ending.sha)
    step = ending.failed_step or "a step"
    what = {
        "pull": "git pull",
        "health": "health check",
        "build": "build",
        "restart": "restart",
    }.get(step, step)
    if ending.result is Result.DEPLOYED:
        return f"deployed {sha} in {ending.duration:.0f} s"
    if ending.result is Result.UNCHANGED:
        return f"{sha} is deployed already"
    if ending.result is Result.SKIPPED:
        return f"{sha}: no watched path changed; nothing to release"
    if ending.result is Result.ROLLED_BACK:
        return f"{what} failed; rolled back to {short(ending.previous)}"
    if ending.result is Result.TIMEOUT:
        return f"{what} timed out; {short(ending.previous)} still runs"
    if ending.result is Result.INTERRUPTED:
        return "interrupted: ghhook stopped during the deploy; it catches up at its next start"
    if ending.result is Result.CANCELLED:
        return "cancelled: the app was removed from the configuration"
    return f"{what} failed; {short(ending.previous)} still runs"


# --- Commit statuses, per forge ---------------------------------------------------

_STATES = {
    # forge family: (pending, success, failure)
    "github": ("pending", "success", "failure"),
    "gitea": ("pending", "success", "failure"),
    "gitlab": ("running", "success", "failed"),
    "bitbucket": ("INPROGRESS", "SUCCESSFUL", "FAILED"),
}
_FAMILY = {
    "github": "github",
    "gitea": "gitea",
    "forgejo": "gitea",
    "gogs": "gitea",
    "gitlab": "gitlab",
    "bitbucket": "bitbucket",
    "bitbucket-server": "bitbucket",
}


def status_call(
    forge: str,
    api_url: str,
    repository: str,
    sha: str,
    phase: str,
    description: str,
    context: str,
    link: str | None,
) -> Call:
    """
    A commit status on ``forge``; ``phase`` is ``pending``, ``success`` or
    ``failure``, each forge's word for it is used.
    """
    family = _FAMILY[forge]
    state = _STATES[family][("pending", "success", "failure").index(phase)]
    api = api_url.rstrip("/")
    description = _cut(description)
    if family in ("github", "gitea"):
        body: dict[str, Any] = {"state": state, "description": description, "context": context}
        if link is not None:
            body["target_url"] = link
        url = f"{api}/repos/{_path(repository)}/statuses/{sha}"
    elif family == "gitlab":
        body = {"state": state, "name": context, "description": description}
        if link is not None:
            body["target_url"] = link
        url = f"{api}/projects/{quote(repository, safe='')}/statuses/{sha}"
    else:
        # Both Bitbucket APIs require a link; the config makes sure there is one.
        body = {
            "key": context.replace("/", "-"),
            "state": state,
            "name": context,
            "description": description,
            "url": link or "",
        }
        if forge == "bitbucket":
            url = f"{api}/repositories/{_path(repository)}/commit/{sha}/statuses/build"
        else:
            key, _, slug = repository.partition("/")
            url = f"{api}/rest/api/latest/projects/{quote(key)}/repos/{quote(slug)}/commits/{sha}/builds"
    return Call(Kind.STATUS, "forge", url, body)


def _path(repository: str) -> str:
    return "/".join(quote(part, safe="") for part in repository.split("/"))


def _cut(text: str) -> str:
    return (
        text if len(text) <= _DESCRIPTION else text[: _DESCRIPTION - 1] + "\N{HORIZONTAL ELLIPSIS}"
    )


# --- What a deploy's start and end report -----------------------------------------


@attrs.frozen
class Reporting:
    """One app's reporting: what :func:`started` and :func:`finished` read."""

    app: str
    forge: str
    repository: str | None
    report: ReportSettings | None
    notify: tuple[NotifySettings, ...] = ()
    branch: str | None = None

    @property
    def context(self) -> str:
        return f"ghhook/{self.app}"

    @property
    def environment(self) -> str:
        if self.report is not None and self.report.environment:
            return self.report.environment
        return self.app


def started(reporting: Reporting, deploy: int, sha: str | None) -> list[Call]:
    """The calls a deploy's start makes: ``pending`` on the pushed commit, a GitHub deployment."""
    report = reporting.report
    if report is None or sha is None or reporting.repository is None:
        return []
    link = deploy_link(report, reporting.app, deploy)
    calls = []
    if report.statuses:
        calls.append(
            status_call(
                reporting.forge,
                report.api_url,
                reporting.repository,
                sha,
                "pending",
                f"deploying {short(sha)}",
                reporting.context,
                link,
            )
        )
    if report.deployments and reporting.forge == "github":
        api = report.api_url.rstrip("/")
        repo = _path(reporting.repository)
        calls.append(
            Call(
                Kind.DEPLOYMENT,
                "forge",
                f"{api}/repos/{repo}/deployments",
                {
                    "ref": sha,
                    "environment": reporting.environment,
                    "description": f"ghhook deploy {deploy} of {short(sha)}",
                    "auto_merge": False,
                    "required_contexts": [],
                    "transient_environment": False,
                    "production_environment": False,
                },
            )
        )
        calls.append(_deployment_status(reporting, report, deploy, "in_progress", "deploying"))
    return calls


def _deployment_status(
    reporting: Reporting, report: ReportSettings, deploy: int, state: str, description: str
) -> Call:
    api = report.api_url.rstrip("/")
    body: dict[str, Any] = {"state": state, "description": _cut(description)}
    link = deploy_link(report, reporting.app, deploy)
    if link is not None:
        body["log_url"] = link
    if report.environment_url is not None:
        body["environment_url"] = report.environment_url
    url = f"{api}/repos/{_path(reporting.repository or '')}/deployments/{{deployment}}/statuses"
    return Call(Kind.DEPLOYMENT_STATUS, "forge", url, body)


#: The journal's state key of an app's last result, and of when each
#: notification last told of one (``notified:<name>``).
LAST_RESULT = "last_result"
NOTIFIED = "notified:"


def finished(
    reporting: Reporting,
    ending: Ending,
    pending: str | None,
    known: Mapping[str, str],
    now: float,
) -> tuple[list[Call], dict[str, str]]:
    """
    The calls a deploy's end makes: the final status of the commit it
    marked pending (and of the one it ended on, when that is another), the
    GitHub deployment's final status, and the notifications that want it;
    and the state keys to write with them.

    :param pending: the commit :func:`started` marked pending, or None.
    :param known: the app's state keys: its last result (:data:`LAST_RESULT`)
        and when each notification last told of one. A result that repeats
        is told again only after the notification's ``repeat_after``.
    """
    calls: list[Call] = []
    report = reporting.report
    words = outcome_words(ending)
    good = ending.result in (Result.DEPLOYED, Result.UNCHANGED, Result.SKIPPED)
    if report is not None and reporting.repository is not None and pending is not None:
        link = deploy_link(report, reporting.app, ending.deploy)
        shas = [pending] + ([ending.sha] if ending.sha and ending.sha != pending and good else [])
        if report.statuses:
            for sha in shas:
                calls.append(
                    status_call(
                        reporting.forge,
                        report.api_url,
                        reporting.repository,
                        sha,
                        "success" if good else "failure",
                        words,
                        reporting.context,
                        link,
                    )
                )
        if report.deployments and reporting.forge == "github":
            state = "success" if good else "failure"
            calls.append(_deployment_status(reporting, report, ending.deploy, state, words))
    result = ending.result.value
    written = {LAST_RESULT: result}
    repeated = known.get(LAST_RESULT) == result
    for notify in reporting.notify:
        if not notify.wants(reporting.app, result):
            continue
        key = NOTIFIED + notify.name
        try:
            last = float(known.get(key, "-inf"))
        except ValueError:
            last = float("-inf")
        if repeated and now - last < notify.repeat_after:
            continue
        calls.append(Call(Kind.NOTIFY, notify.name, "", notification(reporting, ending, words)))
        written[key] = repr(now)
    return calls, written


def notification(reporting: Reporting, ending: Ending, words: str) -> dict[str, Any]:
    """The generic notification's body (Apprise gets its title and words)."""
    link = None
    if reporting.report is not None:
        link = deploy_link(reporting.report, reporting.app, ending.deploy)
    return {
        "app": reporting.app,
        "deploy": ending.deploy,
        "result": ending.result.value,
        "sha": ending.sha,
        "previous_sha": ending.previous,
        "branch": reporting.branch,
        "repository": reporting.repository,
        "failed_step": ending.failed_step,
        "error": ending.error,
        "duration": round(ending.duration, 3),
        "link": link,
        "summary": words,
    }


def sign(body: bytes, secret: bytes) -> str:
    """The value of :data:`SIGNATURE_HEADER` for ``body``: ``sha256=<hex>``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def apprise_text(body: Mapping[str, Any]) -> tuple[str, str]:
    """A notification as an Apprise title and body."""
    title = f"ghhook: {body['app']} {str(body['result']).replace('_', ' ')}"
    lines = [str(body["summary"])]
    if body.get("error"):
        lines.append(str(body["error"])[:1000])
    if body.get("link"):
        lines.append(str(body["link"]))
    return title, "\n".join(lines)


__all__ = [
    "DEFAULT_API_URLS",
    "LAST_RESULT",
    "NOTIFIED",
    "NOTIFY_DEFAULT",
    "NOTIFY_RESULTS",
    "SIGNATURE_HEADER",
    "Call",
    "Ending",
    "Kind",
    "NotifySettings",
    "ReportSettings",
    "Reporting",
    "apprise_text",
    "auth_header",
    "deploy_link",
    "finished",
    "notification",
    "outcome_words",
    "sign",
    "started",
    "status_call",
]
