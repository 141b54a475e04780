"""
Wire the parts of one daemon from its :class:`~ghhook.config.DaemonSettings`:
the journal, an engine per app, the hook and admin sites, the listeners,
and the top service that starts, reloads and stops them.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

from twisted.application import strports
from twisted.application.service import IService
from twisted.internet.defer import Deferred, gatherResults
from twisted.web.server import Site

from ghhook.admin import Admin
from ghhook.checks import explain_git_refusal
from ghhook.config import AppSettings, DaemonSettings
from ghhook.deployer import Deployer
from ghhook.engines import Engines, Slots
from ghhook.frontdoor import QuietAccept, Tally
from ghhook.health import HealthCheck
from ghhook.journal import Journal, JournalError
from ghhook.live import LiveDeploys
from ghhook.metrics import Metrics
from ghhook.outbox import Outbox
from ghhook.runner import ProcessRunner, StepResult
from ghhook.service import GhhookService
from ghhook.site import make_site
from ghhook.web import Hook

#: Bytes an admin request body may hold: it takes no bodies worth more.
ADMIN_MAX_BODY = 64 * 1024
#: Seconds git may take to say whether it works in a clone added by a reload.
GIT_CHECK_TIMEOUT = 30.0


def build_service(
    settings: DaemonSettings,
    reactor: Any,
    twistd: MutableMapping[str, Any] | None = None,
    load: Callable[[], DaemonSettings] | None = None,
) -> GhhookService:
    """
    The daemon's top service, listeners included.

    :param load: reads the config file again for a reload (SIGHUP); None
        when the settings came from the single-repo options.
    """
    journal = Journal(settings.state, keep_deploys=settings.keep_deploys)
    metrics = Metrics()
    runner = ProcessRunner(reactor)
    health = HealthCheck(reactor)
    live = LiveDeploys(reactor)

    def make(app: AppSettings, slots: Slots) -> Deployer:
        return Deployer(
            app,
            runner,
            journal,
            reactor,
            listeners=[metrics.for_app(app.name)],
            health=health,
            slots=slots,
            live=live,
        )

    engines = Engines(settings, make)
    outbox = Outbox(journal, lambda: engines.settings, reactor, counter=metrics)
    journal.reported = outbox.wake

    def pending_reports() -> float:
        try:
            return float(sum(c["pending"] for c in journal.report_counts().values()))
        except JournalError:
            return float("nan")

    metrics.watch_outbox(pending_reports)

    def reloaded(old: DaemonSettings, new: DaemonSettings | None) -> None:
        # A removed app's series stay, with their last counts (its cancelled
        # deploys included), until the daemon restarts.
        metrics.config_failed(new is None)
        if new is not None:
            journal.keep_deploys = new.keep_deploys

    def check_clones(apps: list[AppSettings]) -> Deferred[list[str]]:
        """At a reload, ask git as ghhook's user about new clones, as the start did."""
        source = settings.source or "the config file"

        def verdict(result: StepResult, app: AppSettings) -> list[str]:
            if result.ok:
                return []
            why = explain_git_refusal(result.exit_code, result.output, Path(app.repo), app.env)
            return [f"{source}: apps.{app.name}.repo: {why}"]

        asked = [
            runner.run(
                "git-check",
                [app.git, "-C", app.repo, "rev-parse", "--git-dir"],
                cwd="/",
                env=app.env,
                timeout=GIT_CHECK_TIMEOUT,
                fields={"app": app.name},
            ).addCallback(verdict, app)
            for app in apps
        ]
        found = gatherResults(asked, consumeErrors=True)
        return found.addCallback(lambda lists: [line for lines in lists for line in lines])

    top = GhhookService(
        journal,
        engines,
        reactor,
        twistd=twistd,
        load=load,
        on_reload=reloaded,
        check_clones=check_clones,
    )
    outbox.setServiceParent(top)
    # One summary line of refusals for both listeners, every 10 s at most.
    tally = Tally(reactor)
    hook = Hook(engines, journal, counter=metrics)
    site = make_site(hook.resource(), limits=settings.limits, tally=tally, reactor=reactor)
    for endpoint in settings.listen:
        top.listen("--listen", endpoint, _listener(endpoint, site, tally, reactor))
    admin = Admin(
        engines,
        journal,
        metrics,
        hosts=settings.admin_hosts,
        config_error=lambda: top.config_error,
        live=live,
    )
    admin_site = make_site(
        admin.resource(),
        max_body=ADMIN_MAX_BODY,
        limits=settings.limits.for_admin(),
        tally=tally,
        reactor=reactor,
    )
    for endpoint in settings.admin_listen:
        top.listen("--admin-listen", endpoint, _listener(endpoint, admin_site, tally, reactor))
    return top


def _listener(description: str, site: Site, tally: Tally, reactor: Any) -> IService:
    """A listening service whose accept() errors are counted, not logged one each."""
    service = strports.service(description, site, reactor=reactor)
    service.endpoint = QuietAccept(service.endpoint, tally)
    return service
