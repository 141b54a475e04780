"""
The admin listener: what a person or Prometheus asks about the daemon.

``/status`` (JSON) and ``/`` (HTML, :mod:`ghhook.statuspage`) are two views of
one document built by :func:`status_document` from the deployer's live state
and the journal, so deploys shown survive restarts. ``/metrics`` serves the
:class:`~ghhook.metrics.Metrics` registry, ``/healthz`` says the reactor
answers. Serve it on a private address: it shows repository paths, commands
and git output, and accepts no writes.
"""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from ghhook.deployer import DEPLOYED, Deployer, Job
from ghhook.isotime import iso_time
from ghhook.journal import Journal, JournalError
from ghhook.metrics import CONTENT_TYPE, Metrics
from ghhook.statuspage import render_status_page
from ghhook.web import healthz, json_body, json_errors

#: Deploys shown on ``/status`` and on the page, newest first.
RECENT_DEPLOYS = 50

# The page shows what whoever can push wrote (commit subjects in git's
# output): even if escaping failed, the browser would run no script, load
# nothing and let no other site frame it.
_PAGE_POLICY = (
    b"default-src 'none'; style-src 'unsafe-inline'; img-src data:;"
    b" base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def job_document(job: Job | None) -> dict[str, Any] | None:
    """A queued or running deploy as the deployer holds it in memory."""
    if job is None:
        return None
    return {
        "id": job.id,
        "trigger": job.trigger,
        "target": job.target,
        "delivery": job.delivery,
        "pushes": job.pushes,
        "forced": job.forced,
    }


def step_document(step: dict[str, Any]) -> dict[str, Any]:
    """One journal step row, times as ISO strings."""
    return {
        "name": step["name"],
        "argv": list(step["argv"]),
        "exit_code": step["exit_code"],
        "signal": step["signal"],
        "timed_out": bool(step["timed_out"]),
        "started": iso_time(step["started"]),
        "duration": step["duration"],
        "output": step["output"],
    }


def deploy_document(row: dict[str, Any]) -> dict[str, Any]:
    """
    One journal deploy row. ``sha`` is the commit deployed or attempted: the
    journal fills it when the deploy ends; until then it is the target.
    """
    started, finished = row["started"], row["finished"]
    duration = finished - started if started is not None and finished is not None else None
    return {
        "id": row["id"],
        "trigger": row["trigger"],
        "delivery": row["delivery"],
        "deliveries": row["deliveries"],
        "sha": row["sha"] if row["sha"] is not None else row["target"],
        "before": row["before"],
        "result": row["result"],
        "queued": iso_time(row["queued"]),
        "started": iso_time(started),
        "finished": iso_time(finished),
        "duration": duration,
        "failed_step": row["failed_step"],
        "error": row["error"],
        "subject": row.get("subject"),
        "author": row.get("author"),
        "steps": [step_document(step) for step in row["steps"]],
    }


def status_document(
    deployer: Deployer, journal: Journal, limit: int = RECENT_DEPLOYS
) -> dict[str, Any]:
    """
    Everything ``/status`` answers and the page shows, as plain JSON values;
    when the journal fails, what the engine holds in memory and why.
    """
    settings = deployer.settings
    try:
        deployed = journal.get(DEPLOYED)
        deploys = [deploy_document(row) for row in journal.recent_deploys(limit)]
    except JournalError:
        deployed, deploys = None, []
    return {
        "repo": settings.repo,
        "branch": settings.branch,
        "remote": settings.remote,
        "head": deployer.head,
        "deployed": deployed,
        "busy": deployer.busy,
        "running": job_document(deployer.running),
        "pending": job_document(deployer.pending),
        "journal_error": journal.health(),
        "deploys": deploys,
    }


class Admin:
    """The admin resource: one instance per daemon, dependencies as fields."""

    def __init__(self, deployer: Deployer, journal: Journal, metrics: Metrics) -> None:
        self.deployer = deployer
        self.journal = journal
        self.metrics = metrics
        self.app = Klein()
        for path, method in (
            ("/", self.page),
            ("/status", self.status),
            ("/metrics", self.prometheus),
            ("/healthz", self.healthz),
        ):
            self.app.route(path, methods=["GET"])(method)
        json_errors(self.app, allow=("GET", "HEAD"))

    def resource(self) -> IResource:
        return self.app.resource()

    def status(self, request: IRequest) -> bytes:
        _no_store(request)
        return json_body(request, 200, status_document(self.deployer, self.journal))

    def page(self, request: IRequest) -> bytes:
        _no_store(request)
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Content-Security-Policy", _PAGE_POLICY)
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"Referrer-Policy", b"no-referrer")
        return render_status_page(status_document(self.deployer, self.journal))

    def prometheus(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE.encode("ascii"))
        return self.metrics.render()

    def healthz(self, request: IRequest) -> bytes:
        return healthz(request, self.journal)


def _no_store(request: IRequest) -> None:
    # Status changes with every deploy; a cached copy would mislead.
    request.setHeader(b"Cache-Control", b"no-store")
