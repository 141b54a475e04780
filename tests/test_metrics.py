"""Prometheus metrics: names, labels and values, each test with its own registry."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from ghhook.deployer import Listener
from ghhook.journal import FINAL_RESULTS
from ghhook.metrics import Metrics
from ghhook.payloads import ping_payload, push_payload
from ghhook.runner import StepResult
from ghhook.web import DeliveryCounter
from tests.test_deployer import A, B
from tests.test_web import Client

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(metrics: Metrics) -> Samples:
    """Every sample of the rendered text, keyed by name and sorted labels."""
    found: Samples = {}
    for family in text_string_to_metric_families(metrics.render().decode("utf-8")):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def step(name: str, duration: float) -> StepResult:
    return StepResult(name, ("git", name), 0, None, False, 0.0, duration, "")


def test_metrics_implements_both_protocols() -> None:
    metrics = Metrics()
    listener: Listener = metrics
    counter: DeliveryCounter = metrics
    assert listener is counter


def test_fresh_metrics_are_zero() -> None:
    found = samples(Metrics())
    assert found[("ghhook_deploy_in_progress", ())] == 0
    assert found[("ghhook_last_deploy_timestamp_seconds", ())] == 0
    assert found[("ghhook_deploy_duration_seconds_count", ())] == 0
    for result in FINAL_RESULTS:
        assert found[("ghhook_deploys_total", (("result", result),))] == 0
    assert not [key for key in found if key[0] == "ghhook_deliveries_total"]


def test_deliveries_are_counted_by_event_and_outcome() -> None:
    metrics = Metrics()
    metrics.delivery("push", "accepted")
    metrics.delivery("push", "accepted")
    metrics.delivery("ping", "pong")
    found = samples(metrics)
    assert found[("ghhook_deliveries_total", (("event", "push"), ("outcome", "accepted")))] == 2
    assert found[("ghhook_deliveries_total", (("event", "ping"), ("outcome", "pong")))] == 1


def test_a_deploy_moves_every_deploy_metric() -> None:
    metrics = Metrics()
    metrics.deploy_started()
    assert samples(metrics)[("ghhook_deploy_in_progress", ())] == 1
    metrics.step_finished(step("pull", 1.5))
    metrics.step_finished(step("restart", 0.2))
    metrics.step_finished(step("pull", 0.5))
    metrics.deploy_finished("deployed", 2.25, 1_700_000_000.0)
    found = samples(metrics)
    assert found[("ghhook_deploy_in_progress", ())] == 0
    assert found[("ghhook_last_deploy_timestamp_seconds", ())] == 1_700_000_000.0
    assert found[("ghhook_deploys_total", (("result", "deployed"),))] == 1
    assert found[("ghhook_deploys_total", (("result", "failed"),))] == 0
    assert found[("ghhook_deploy_duration_seconds_count", ())] == 1
    assert found[("ghhook_deploy_duration_seconds_sum", ())] == 2.25
    assert found[("ghhook_deploy_duration_seconds_bucket", (("le", "2.5"),))] == 1
    assert found[("ghhook_deploy_duration_seconds_bucket", (("le", "1.0"),))] == 0
    assert found[("ghhook_step_duration_seconds_count", (("step", "pull"),))] == 2
    assert found[("ghhook_step_duration_seconds_sum", (("step", "pull"),))] == 2.0
    assert found[("ghhook_step_duration_seconds_count", (("step", "restart"),))] == 1
    bucket = ("ghhook_step_duration_seconds_bucket", (("le", "+Inf"), ("step", "restart")))
    assert found[bucket] == 1


def test_failures_are_counted_by_result() -> None:
    metrics = Metrics()
    for result in ("failed", "timeout", "failed"):
        metrics.deploy_started()
        metrics.deploy_finished(result, 1.0, 10.0)
    found = samples(metrics)
    assert found[("ghhook_deploys_total", (("result", "failed"),))] == 2
    assert found[("ghhook_deploys_total", (("result", "timeout"),))] == 1


def test_each_instance_has_its_own_registry() -> None:
    one, two = Metrics(), Metrics()
    one.delivery("push", "accepted")
    one.deploy_started()
    assert one.registry is not two.registry
    assert samples(two)[("ghhook_deploy_in_progress", ())] == 0
    assert not [key for key in samples(two) if key[0] == "ghhook_deliveries_total"]
    assert REGISTRY.get_sample_value("ghhook_deploy_in_progress") is None


def test_the_hook_counts_its_deliveries(tmp_path: Path) -> None:
    metrics = Metrics()
    client = Client(tmp_path, counter=metrics)
    assert client.deliver("ping", ping_payload())[0] == 200
    assert client.deliver("push", push_payload(B, before=A), delivery="d-1")[0] == 202
    assert client.deliver("push", push_payload(B, before=A), delivery="d-1")[0] == 200
    code, _, _ = client.request("POST", body=b"{}", headers={"X-GitHub-Event": "push"})
    assert code == 401
    found = samples(metrics)
    delivered = {
        labels: value
        for (name, labels), value in found.items()
        if name == "ghhook_deliveries_total"
    }
    assert delivered == {
        (("event", "ping"), ("outcome", "pong")): 1,
        (("event", "push"), ("outcome", "accepted")): 1,
        (("event", "push"), ("outcome", "duplicate")): 1,
        (("event", "push"), ("outcome", "unsigned")): 1,
    }
