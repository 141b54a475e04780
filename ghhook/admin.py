"""
The admin listener: what a person or Prometheus asks about the daemon.

``/status`` (JSON) and ``/`` (HTML, :func:`ghhook.statuspage.render_overview`)
are two views of one document built by :func:`status_document`: every app of
the config, in its order, with its engine's live state and its newest
finished deploy. ``/apps/<name>`` is one app's document
(:func:`app_document`) with its recent deploys, in JSON or, to a browser, as
a page. ``/apps/<name>/deploys/<id>`` is one deploy of that app
(:func:`deploy_document`) with each step's output, in JSON or as a page:
commit statuses link to it, so its URL stays. Deploys come from the
journal, so they survive restarts.
``/metrics`` serves the :class:`~ghhook.metrics.Metrics` registry,
``/healthz`` says the reactor answers. Serve it on a private address: it
shows repository paths, commands and git output, and accepts no writes.

A private address is not enough: a page on a domain that resolves to
127.0.0.1 (DNS rebinding) makes a browser on the host send it requests, and
read the answers as the page's own. So the listener answers only requests
that name it, by :func:`allowed_host`: a loopback name or address, a name
given with ``--admin-host``, or any request over a unix socket; others get
421. A request whose ``Origin`` names another site is answered 403 with no
body.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from klein import Klein
from twisted.internet.address import UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

import ghhook
from ghhook.control import Control
from ghhook.deployer import DEPLOYED, Deployer, Job, Pause
from ghhook.engines import Engines
from ghhook.isotime import iso_time
from ghhook.journal import AppJournal, Journal, JournalError
from ghhook.live import LiveDeploys
from ghhook.logstream import render_log
from ghhook.metrics import CONTENT_TYPE, Metrics
from ghhook.statuspage import (
    render_deploy_not_found,
    render_deploy_page,
    render_deploy_unreadable,
    render_not_found,
    render_overview,
    render_status_page,
)
from ghhook.web import RefuseUndecodableUrls, healthz, json_body, json_errors

#: Deploys shown on ``/apps/<name>`` and on its page, newest first.
RECENT_DEPLOYS = 50

# The pages show what whoever can push wrote (commit subjects in git's
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
        "force": job.force,
        "requested_by": job.requested_by,
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
        "requested_by": row.get("requested_by"),
        "changed": json.loads(row["changed"]) if row.get("changed") else None,
        "steps": [step_document(step) for step in row.get("steps", ())],
    }


def report_document(row: Mapping[str, Any]) -> dict[str, Any]:
    """One report of a deploy, as its page shows it: no credential is in it."""
    return {
        "kind": row["kind"],
        "to": "forge" if row["target"] == "forge" else row["target"],
        "url": row["url"] if row["target"] == "forge" else None,
        "state": row["state"],
        "outcome": row["outcome"],
        "attempts": row["attempts"],
        "created": iso_time(row["created"]),
        "due": iso_time(row["due"]) if row["state"] == "pending" else None,
    }


def app_summary(deployer: Deployer) -> dict[str, Any]:
    """
    One app as ``/status`` lists it: its settings, its engine's state and
    its newest finished deploy (``last``). While the journal fails, what the
    engine holds in memory; ``deployed`` and ``last`` are then None.
    """
    try:
        deployed = deployer.journal.get(DEPLOYED)
        row = deployer.journal.last_finished()
        reports: dict[str, int] | None = deployer.journal.reports()
    except JournalError:
        deployed, row, reports = None, None, None
    return {
        **_engine_state(deployer),
        "deployed": deployed,
        "last": deploy_document(row) if row is not None else None,
        "reports": reports,
    }


def _engine_state(deployer: Deployer) -> dict[str, Any]:
    """What an app's engine holds in memory: its settings' names, head and jobs."""
    settings = deployer.settings
    return {
        "name": settings.name,
        "repo": settings.repo,
        "branch": settings.branch,
        "forge": settings.forge,
        "repository": settings.repository,
        # The name of "repository" before other forges came; kept for scripts.
        "github_repo": settings.repository,
        "head": deployer.head,
        "busy": deployer.busy,
        "running": job_document(deployer.running),
        "pending": job_document(deployer.pending),
        "paused": pause_document(deployer.paused),
        "held": job_document(deployer.held),
    }


def pause_document(pause: Pause | None) -> dict[str, Any] | None:
    """Why an app is paused, since when, by whom; None when it is not."""
    if pause is None:
        return None
    return {"reason": pause.reason, "since": iso_time(pause.since), "by": pause.by}


def status_document(
    engines: Engines, journal: Journal, config_error: str | None = None
) -> dict[str, Any]:
    """
    Everything ``/status`` answers and ``/`` shows, as plain JSON values:
    the daemon (its version, config file, why the last reload failed, why
    the journal fails) and its apps in the order of the config.
    """
    return {
        "version": ghhook.__version__,
        "config": engines.settings.source,
        "config_error": config_error,
        "journal_error": journal.health(),
        "apps": [app_summary(deployer) for deployer in engines],
    }


def app_document(deployer: Deployer, limit: int = RECENT_DEPLOYS) -> dict[str, Any]:
    """
    Everything ``/apps/<name>`` answers and its page shows: the app's
    settings and state, and its ``limit`` newest deploys; when the journal
    fails, what the engine holds in memory and why.
    """
    journal = deployer.journal
    try:
        deployed = journal.get(DEPLOYED)
        deploys = [deploy_document(row) for row in journal.recent_deploys(limit)]
        reports: dict[str, int] | None = journal.reports()
    except JournalError:
        deployed, deploys, reports = None, [], None
    return {
        **_engine_state(deployer),
        "remote": deployer.settings.remote,
        "deployed": deployed,
        "reports": reports,
        "journal_error": journal.health(),
        "deploys": deploys,
    }


#: A deploy id as its URL gives it: a positive integer in ASCII digits, no
#: leading zero (one URL per deploy), and small enough for SQLite's integers.
_DEPLOY_ID = re.compile(r"[1-9][0-9]{0,17}")


def deploy_id(text: str) -> int | None:
    """The deploy id a URL's last segment names, or None if it names none."""
    return int(text) if _DEPLOY_ID.fullmatch(text) else None


def find_deploy(journal: AppJournal, deploy: int) -> dict[str, Any] | None:
    """
    ``journal``'s app's deploy ``deploy`` as a row of
    :meth:`~ghhook.journal.AppJournal.recent_deploys`, or None when the app
    has none of that id (another app's, one pruned, one never queued).

    :raises JournalError: when the journal cannot be read.
    """
    return journal.deploy(deploy)


#: Media types a browser asks for its pages by.
_HTML_TYPES = ("text/html", "application/xhtml+xml")


def wants_html(accept: bytes | None) -> bool:
    """
    Whether an ``Accept`` header prefers a page to JSON: it ranks text/html
    (or XHTML) above application/json, by ``q`` and then by order, or names
    no JSON at all. Browsers send such headers; curl's ``*/*``, scripts and
    no header at all get JSON.
    """
    if not accept:
        return False
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate(accept.decode("latin-1").split(",")):
        media, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if 0.0 < quality <= 1.0:  # NaN fails this too
            ranked.append((-quality, position, media.lower()))
    for _, _, media in sorted(ranked):
        if media in _HTML_TYPES:
            return True
        if media == "application/json":
            return False
    return False


# A host name as compared: lower-case labels of letters, digits, "-" and "_".
_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
_PORT = re.compile(r"[0-9]{1,5}")


def _host_key(host: str) -> str | None:
    """
    ``host`` (no port, no brackets) as compared: an address in its canonical
    form, a name in lower case without its final dot; None if it is neither.
    """
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        name = host.lower().removesuffix(".")
        return name if _NAME.fullmatch(name) else None


def _authority_key(authority: str) -> str | None:
    """The host of ``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` as compared."""
    if authority.startswith("["):
        host, bracket, rest = authority[1:].partition("]")
        if not bracket:
            return None
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
        colon, port = rest[:1], rest[1:]
        if rest and colon != ":":
            return None
    else:
        host, colon, port = authority.partition(":")
    if colon and not _PORT.fullmatch(port):
        return None
    return _host_key(host)


def _loopback(key: str) -> bool:
    """127.0.0.0/8, ::1 (also as ::ffff:127.x.y.z), ``localhost`` and ``*.localhost``."""
    try:
        address = ipaddress.ip_address(key)
    except ValueError:
        # RFC 6761: browsers resolve these to loopback themselves; no one can register them.
        return key == "localhost" or key.endswith(".localhost")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def admin_host(value: str) -> str:
    """
    An ``--admin-host`` value (a name or address, IPv6 with or without
    brackets) as Host headers are compared with it.

    :raises ValueError: with a sentence, when ``value`` is neither.
    """
    bare = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    key = _host_key(bare)
    if key is None:
        raise ValueError(
            f"{value!r} is not a host name or address (give it without scheme or port;"
            " a name in ASCII, xn-- for others)"
        )
    return key


def allowed_host(host: bytes | None, extra: Sequence[str], via_unix: bool) -> bool:
    """
    Whether the admin listener answers a request with this ``Host`` header:
    one that came over a unix socket (only local users reach it), or one
    naming a loopback name or address or one of ``extra`` (the
    ``--admin-host`` names), with any port. A browser sends the name of the
    site it thinks it talks to: a DNS-rebinding page's own domain is none of
    these. No Host at all is refused too.
    """
    if via_unix:
        return True
    if host is None:
        return False
    try:
        key = _authority_key(host.decode("ascii"))
    except UnicodeDecodeError:
        return False
    if key is None:
        return False
    if _loopback(key):
        return True
    names = set()
    for name in extra:
        try:
            names.add(admin_host(name))
        except ValueError:
            continue
    return key in names


def allowed_origin(origin: bytes | None, extra: Sequence[str]) -> bool:
    """
    Whether a request with this ``Origin`` header may have an answer body:
    none (browsers send it with cross-site requests) or a page at a loopback
    name or address or one of ``extra``. ``null`` (a sandboxed frame, a
    file) and other schemes are refused.
    """
    if origin is None:
        return True
    try:
        text = origin.decode("ascii")
    except UnicodeDecodeError:
        return False
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or text != f"{parts.scheme}://{parts.netloc}":
        return False
    return allowed_host(parts.netloc.encode("ascii"), extra, via_unix=False)


class _HostGuard(Resource):
    """
    Answers 421 or 403 before any route runs, so a refused request costs no
    journal read and learns nothing, not even whether a path exists.
    """

    isLeaf = True

    def __init__(self, inner: IResource, hosts: Sequence[str]) -> None:
        super().__init__()
        self._inner = inner
        self._hosts = tuple(hosts)

    def render(self, request: IRequest) -> bytes | int:
        # A header sent twice is refused: a proxy in front might read the other one.
        hosts = request.requestHeaders.getRawHeaders(b"host") or []
        origins = request.requestHeaders.getRawHeaders(b"origin")
        via_unix = isinstance(request.getHost(), UNIXAddress)
        host_ok = allowed_host(hosts[0] if len(hosts) == 1 else None, self._hosts, via_unix)
        origin_ok = origins is None or (
            len(origins) == 1 and allowed_origin(origins[0], self._hosts)
        )
        if host_ok and origin_ok:
            result: bytes | int = self._inner.render(request)
            return result
        _no_store(request)
        if not origin_ok:
            # Not the route's own status without its body: a page tells 2xx
            # from 4xx (an <img> or <script> fires onload or onerror), so
            # /healthz would still say whether the journal works.
            request.setResponseCode(421 if not host_ok else 403)
            return b""
        return json_body(
            request,
            421,
            {
                "error": "this listener answers only for loopback names and addresses,"
                " its unix socket and the names given with --admin-host;"
                " the Host header names none of them"
            },
        )


class Admin:
    """
    The admin resource: one instance per daemon, dependencies as fields.

    :param engines: the apps' engines; a reload changes which apps they hold.
    :param journal: the daemon's journal (its health is the daemon's).
    :param hosts: the names and addresses given with ``--admin-host``,
        answered besides loopback ones (:func:`allowed_host`).
    :param config_error: why the last reload of the config file failed, or
        None while the config in use is the last one read.
    :raises ValueError: when one of ``hosts`` is neither.
    """

    def __init__(
        self,
        engines: Engines,
        journal: Journal,
        metrics: Metrics,
        hosts: Sequence[str] = (),
        config_error: Callable[[], str | None] = lambda: None,
        live: LiveDeploys | None = None,
    ) -> None:
        self.engines = engines
        #: The running deploys' output; without one (tests), only the journal's.
        self.live = live if live is not None else LiveDeploys(Clock())
        self.journal = journal
        self.metrics = metrics
        self.hosts = tuple(admin_host(host) for host in hosts)
        self.config_error = config_error
        self.app = Klein()
        for path, method in (
            ("/", self.overview),
            ("/status", self.status),
            ("/apps/<name>", self.app_status),
            ("/apps/<name>/deploys/<deploy>", self.deploy_status),
            ("/apps/<name>/deploys/<deploy>/log", self.deploy_log),
            ("/metrics", self.prometheus),
            ("/healthz", self.healthz),
        ):
            self.app.route(path, methods=["GET"])(method)
        Control(engines, journal).route(self.app)
        json_errors(self.app, allow=("GET", "HEAD"))

    def resource(self) -> IResource:
        """The routes, behind the Host and Origin checks and the URL's decoding."""
        return _HostGuard(RefuseUndecodableUrls(self.app.resource()), self.hosts)

    def document(self) -> dict[str, Any]:
        """The ``/status`` document as of now."""
        return status_document(self.engines, self.journal, self.config_error())

    def status(self, request: IRequest) -> bytes:
        _no_store(request)
        return json_body(request, 200, self.document())

    def overview(self, request: IRequest) -> bytes:
        _no_store(request)
        return _page(request, 200, render_overview(self.document()))

    def app_status(self, request: IRequest, name: str) -> bytes:
        """One app's document, as a page to a browser; 404 for an app not configured."""
        html = _negotiate(request)
        deployer = self.engines.get(name)
        if deployer is None:
            if html:
                return _page(request, 404, render_not_found(name))
            return json_body(request, 404, {"error": _NO_APP})
        document = app_document(deployer)
        if html:
            return _page(request, 200, render_status_page(document))
        return json_body(request, 200, document)

    def deploy_status(self, request: IRequest, name: str, deploy: str) -> bytes:
        """
        One deploy of one app (:func:`deploy_document`), as a page to a
        browser. 404 for an app not configured and for a deploy the app does
        not have, whoever else's it is: an app's URL shows its own deploys
        only. 503 while the journal cannot be read.
        """
        html = _negotiate(request)
        deployer = self.engines.get(name)
        if deployer is None:
            if html:
                return _page(request, 404, render_not_found(name, overview="../../../"))
            return json_body(request, 404, {"error": _NO_APP})
        number = deploy_id(deploy)
        try:
            row = None if number is None else find_deploy(deployer.journal, number)
        except JournalError as e:
            if html:
                return _page(request, 503, render_deploy_unreadable(name, deploy, str(e)))
            return json_body(request, 503, {"error": f"the journal cannot be read: {e}"})
        if row is None:
            if html:
                return _page(request, 404, render_deploy_not_found(name, deploy))
            error = _NO_DEPLOY if number is not None else "deploy ids are positive integers"
            return json_body(request, 404, {"error": error})
        document = deploy_document(row)
        try:
            document["reports"] = [
                report_document(report)
                for report in deployer.journal.journal.reports_of(name, int(row["id"]))
            ]
        except JournalError:
            document["reports"] = None
        if html:
            page = render_deploy_page(name, document, deployer.journal.health())
            return _page(request, 200, page)
        return json_body(request, 200, document)

    def deploy_log(self, request: IRequest, name: str, deploy: str) -> bytes | Deferred[None]:
        """
        A deploy's output: streamed while it runs (text, or Server-Sent
        Events by Accept), the journal's kept output once it has ended.
        """
        _no_store(request)
        deployer = self.engines.get(name)
        if deployer is None:
            return json_body(request, 404, {"error": _NO_APP})
        number = deploy_id(deploy)
        if number is None:
            return json_body(request, 404, {"error": "deploy ids are positive integers"})
        try:
            row = find_deploy(deployer.journal, number)
        except JournalError as e:
            if self.live.get(name, number) is None:
                return json_body(request, 503, {"error": f"the journal cannot be read: {e}"})
            row = None
        if row is None and self.live.get(name, number) is None:
            return json_body(request, 404, {"error": _NO_DEPLOY})
        follow = request.args.get(b"follow", [b"1"])[-1] != b"0"
        return render_log(request, self.live, name, number, row, follow)

    def prometheus(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE.encode("ascii"))
        return self.metrics.render()

    def healthz(self, request: IRequest) -> bytes:
        return healthz(request, self.journal)


_NO_APP = "no app of this name is configured"
_NO_DEPLOY = "this app has no deploy of this id in the journal"


def _negotiate(request: IRequest) -> bool:
    """
    Set the headers every answer of a page URL has; whether to answer the
    page (else JSON).
    """
    _no_store(request)
    # One URL, two representations: a cache must key on Accept.
    request.setHeader(b"Vary", b"Accept")
    accept = request.requestHeaders.getRawHeaders(b"accept")
    return wants_html(b",".join(accept) if accept else None)


def _page(request: IRequest, code: int, page: bytes) -> bytes:
    """Answer ``page`` (HTML) with the headers that keep what it shows inert."""
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
    request.setHeader(b"Content-Security-Policy", _PAGE_POLICY)
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Referrer-Policy", b"no-referrer")
    return page


def _no_store(request: IRequest) -> None:
    # Status changes with every deploy; a cached copy would mislead.
    request.setHeader(b"Cache-Control", b"no-store")
