"""
Prometheus metrics for ghhook, in a registry of their own.

:class:`Metrics` is told about deliveries (it is the hook's
:class:`~ghhook.web.DeliveryCounter`) and about deploys (it is a
:class:`~ghhook.deployer.Listener`), and renders the text format for the admin
listener's ``/metrics``. Owning its :class:`CollectorRegistry` instead of using
the process-global one lets tests (and a daemon serving several clones) build
as many as they like without "Duplicated timeseries" errors.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from ghhook.journal import FINAL_RESULTS
from ghhook.runner import StepResult

__all__ = ["CONTENT_TYPE", "Metrics"]

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
            "Webhook deliveries received, by GitHub event and by what ghhook did with them.",
            ["event", "outcome"],
            registry=self.registry,
        )
        self.deploys = Counter(
            "ghhook_deploys",
            "Deploys finished, by result.",
            ["result"],
            registry=self.registry,
        )
        self.deploy_duration = Histogram(
            "ghhook_deploy_duration_seconds",
            "Wall-clock seconds from a deploy's start to its end, whatever its result.",
            buckets=DEPLOY_BUCKETS,
            registry=self.registry,
        )
        self.step_duration = Histogram(
            "ghhook_step_duration_seconds",
            "Seconds each process a deploy ran took, by step name.",
            ["step"],
            buckets=STEP_BUCKETS,
            registry=self.registry,
        )
        self.in_progress = Gauge(
            "ghhook_deploy_in_progress",
            "1 while a deploy runs, else 0.",
            registry=self.registry,
        )
        self.last_deploy = Gauge(
            "ghhook_last_deploy_timestamp_seconds",
            "Unix time the last deploy finished (any result); 0 before the first.",
            registry=self.registry,
        )
        # Known results start at 0, so rate() and alerts see the first one.
        for result in FINAL_RESULTS:
            self.deploys.labels(result=result)

    # DeliveryCounter (ghhook.web)

    def delivery(self, event: str, outcome: str) -> None:
        """Count one delivery; the hook passes bounded labels only."""
        self.deliveries.labels(event=event, outcome=outcome).inc()

    # Listener (ghhook.deployer)

    def deploy_started(self) -> None:
        self.in_progress.set(1)

    def step_finished(self, step: StepResult) -> None:
        self.step_duration.labels(step=step.name).observe(step.duration)

    def deploy_finished(self, result: str, duration: float, finished: float) -> None:
        self.in_progress.set(0)
        self.deploys.labels(result=result).inc()
        self.deploy_duration.observe(max(duration, 0.0))
        self.last_deploy.set(finished)

    # Exposition

    def render(self) -> bytes:
        """The registry in the text format named by :data:`CONTENT_TYPE`."""
        return generate_latest(self.registry)
