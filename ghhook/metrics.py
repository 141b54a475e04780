"""
Prometheus metrics for ghhook, in a registry of their own.

:class:`Metrics` is told about deliveries (it is the hook's
:class:`~ghhook.web.DeliveryCounter`), and each app's engine tells the
:class:`AppMetrics` that :meth:`Metrics.for_app` gives it about deploys (it is
a :class:`~ghhook.deployer.Listener`): every metric about deploys and steps
carries an ``app`` label, deliveries stay daemon-wide (one delivery on the
shared path may reach several apps). :meth:`Metrics.render` gives the text
format for the admin listener's ``/metrics``. Owning its
:class:`CollectorRegistry` instead of using the process-global one lets tests
build as many as they like without "Duplicated timeseries" errors.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from ghhook.results import FINAL_RESULTS, Result
from ghhook.runner import StepResult

__all__ = ["CONTENT_TYPE", "AppMetrics", "Metrics"]

#: The content type of :meth:`Metrics.render`'s output.
CONTENT_TYPE = CONTENT_TYPE_LATEST

#: A deploy is a pull and a restart: from a second up to the step timeout.
DEPLOY_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
#: Steps include quick git questions (rev-parse, merge-base) as well as pulls.
STEP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0)


class Metrics:
    """
    The daemon's counters, histograms and gauges.

    :param registry: where the metrics are registered; a new, empty one by
        default (never the global ``REGISTRY``).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.deliveries = Counter(
            "ghhook_deliveries",
            "Webhook deliveries received, by event and by what ghhook did with them.",
            ["event", "outcome"],
            registry=self.registry,
        )
        self.deploys = Counter(
            "ghhook_deploys",
            "Deploys finished, by app and result.",
            ["app", "result"],
            registry=self.registry,
        )
        self.deploy_duration = Histogram(
            "ghhook_deploy_duration_seconds",
            "Wall-clock seconds from a deploy's start to its end, whatever its result.",
            ["app"],
            buckets=DEPLOY_BUCKETS,
            registry=self.registry,
        )
        self.step_duration = Histogram(
            "ghhook_step_duration_seconds",
            "Seconds each process a deploy ran took, by app and step name.",
            ["app", "step"],
            buckets=STEP_BUCKETS,
            registry=self.registry,
        )
        self.in_progress = Gauge(
            "ghhook_deploy_in_progress",
            "1 while a deploy of the app runs, else 0.",
            ["app"],
            registry=self.registry,
        )
        self.last_deploy = Gauge(
            "ghhook_last_deploy_timestamp_seconds",
            "Unix time the app's last deploy finished (any result); 0 before the first.",
            ["app"],
            registry=self.registry,
        )
        self.paused = Gauge(
            "ghhook_paused",
            "1 while the app's automatic deploys are paused, else 0.",
            ["app"],
            registry=self.registry,
        )
        self.reports = Counter(
            "ghhook_reports",
            "Reports to forges and notifications, by app, kind (status, deployment,"
            " deployment_status, notify) and outcome (sent, retried, failed).",
            ["app", "kind", "outcome"],
            registry=self.registry,
        )
        self.outbox_pending = Gauge(
            "ghhook_outbox_pending",
            "Reports in the outbox waiting to be sent.",
            registry=self.registry,
        )
        self.config_error = Gauge(
            "ghhook_config_error",
            "1 while the last reload of the config file failed (the previous one is in use).",
            registry=self.registry,
        )
        self._apps: dict[str, AppMetrics] = {}

    # DeliveryCounter (ghhook.web)

    def delivery(self, event: str, outcome: str) -> None:
        """Count one delivery; the hook passes bounded labels only."""
        self.deliveries.labels(event=event, outcome=outcome).inc()

    # ReportCounter (ghhook.outbox)

    def report(self, app: str, kind: str, outcome: str) -> None:
        self.reports.labels(app=app, kind=kind, outcome=outcome).inc()

    def watch_outbox(self, pending: Callable[[], float]) -> None:
        """Read the outbox's waiting reports at each scrape (NaN while the journal fails)."""
        self.outbox_pending.set_function(pending)

    # Apps

    def for_app(self, name: str) -> AppMetrics:
        """
        The listener of app ``name``'s engine. Its series exist from now on,
        at 0, so ``rate()`` and alerts see an app's first deploy and failure.
        """
        app = self._apps.get(name)
        if app is None:
            app = self._apps[name] = AppMetrics(self, name)
        return app

    def forget_app(self, name: str) -> None:
        """
        Remove app ``name``'s series: a reload removed the app. Its listener
        goes quiet, so a deploy it still finishes does not bring them back;
        an app added again under that name gets a new one.
        """
        app = self._apps.pop(name, None)
        if app is not None:
            app.forget()

    def config_failed(self, failed: bool) -> None:
        """Whether the last reload of the config file failed."""
        self.config_error.set(1 if failed else 0)

    # Exposition

    def render(self) -> bytes:
        """The registry in the text format named by :data:`CONTENT_TYPE`."""
        return generate_latest(self.registry)


class AppMetrics:
    """
    One app's view of :class:`Metrics`: a :class:`~ghhook.deployer.Listener`
    that labels everything it is told with the app's name.
    """

    def __init__(self, metrics: Metrics, name: str) -> None:
        self._metrics = metrics
        self.name = name
        #: Step names and results seen, so that :meth:`forget` finds every series.
        self._steps: set[str] = set()
        self._results: set[str] = set(FINAL_RESULTS)
        self._forgotten = False
        for result in FINAL_RESULTS:
            metrics.deploys.labels(app=name, result=result)
        metrics.deploy_duration.labels(app=name)
        metrics.in_progress.labels(app=name).set(0)
        metrics.last_deploy.labels(app=name).set(0)
        metrics.paused.labels(app=name).set(0)

    # Listener (ghhook.deployer)

    def paused(self, paused: bool) -> None:
        if self._forgotten:
            return
        self._metrics.paused.labels(app=self.name).set(1 if paused else 0)

    def deploy_started(self) -> None:
        if self._forgotten:
            return
        self._metrics.in_progress.labels(app=self.name).set(1)

    def step_finished(self, step: StepResult) -> None:
        if self._forgotten:
            return
        self._steps.add(step.name)
        self._metrics.step_duration.labels(app=self.name, step=step.name).observe(step.duration)

    def deploy_finished(self, result: Result | str, duration: float, finished: float) -> None:
        if self._forgotten:
            return
        metrics = self._metrics
        self._results.add(str(result))
        metrics.deploys.labels(app=self.name, result=str(result)).inc()
        if result == Result.CANCELLED:
            return  # it never ran: no duration, and a deploy of the app may still run
        metrics.in_progress.labels(app=self.name).set(0)
        metrics.deploy_duration.labels(app=self.name).observe(max(duration, 0.0))
        metrics.last_deploy.labels(app=self.name).set(finished)

    def forget(self) -> None:
        """Remove every series of this app and ignore what it is told from now on."""
        self._forgotten = True
        metrics = self._metrics
        for result in self._results:
            metrics.deploys.remove(self.name, result)
        for step in self._steps:
            metrics.step_duration.remove(self.name, step)
        for metric in (
            metrics.deploy_duration,
            metrics.in_progress,
            metrics.last_deploy,
            metrics.paused,
        ):
            metric.remove(self.name)
