"""Prometheus metrics: names, labels and values, each test with its own registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from ghhook.deployer import Listener
from ghhook.metrics import AppMetrics, Metrics
from ghhook.payloads import ping_payload, push_payload
from ghhook.results import FINAL_RESULTS, Result
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


def app_key(name: str, app: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """A sample's key: ``name`` with label ``app`` and ``labels``."""
    return (name, tuple(sorted({"app": app, **labels}.items())))


def of_app(found: Samples, app: str) -> Samples:
    """App ``app``'s samples, but the times its series were created."""
    return {
        key: value
        for key, value in found.items()
        if ("app", app) in key[1] and not key[0].endswith("_created")
    }


def test_metrics_and_its_app_views_implement_the_protocols() -> None:
    metrics = Metrics()
    counter: DeliveryCounter = metrics
    listener: Listener = metrics.for_app("blog")
    assert isinstance(listener, AppMetrics) and counter is metrics


def test_fresh_metrics_have_no_app_and_no_config_error() -> None:
    found = samples(Metrics())
    assert found[("ghhook_config_error", ())] == 0
    assert not [key for key in found if ("app", "blog") in key[1]]
    assert not [key for key in found if key[0] == "ghhook_deliveries_total"]


@pytest.mark.parametrize("app", ["blog", "api-staging"])
def test_an_app_starts_at_zero_for_every_result(app: str) -> None:
    metrics = Metrics()
    metrics.for_app(app)
    found = samples(metrics)
    assert found[app_key("ghhook_deploy_in_progress", app)] == 0
    assert found[app_key("ghhook_last_deploy_timestamp_seconds", app)] == 0
    assert found[app_key("ghhook_deploy_duration_seconds_count", app)] == 0
    for result in FINAL_RESULTS:
        assert found[app_key("ghhook_deploys_total", app, result=result)] == 0
    assert found[app_key("ghhook_deploys_total", app, result="cancelled")] == 0


def test_for_app_gives_the_same_view_twice() -> None:
    metrics = Metrics()
    assert metrics.for_app("blog") is metrics.for_app("blog")
    assert metrics.for_app("blog") is not metrics.for_app("api")


def test_deliveries_are_counted_by_event_and_outcome() -> None:
    metrics = Metrics()
    metrics.delivery("push", "accepted")
    metrics.delivery("push", "accepted")
    metrics.delivery("ping", "pong")
    found = samples(metrics)
    assert found[("ghhook_deliveries_total", (("event", "push"), ("outcome", "accepted")))] == 2
    assert found[("ghhook_deliveries_total", (("event", "ping"), ("outcome", "pong")))] == 1
    assert not [key for key in found if key[0] == "ghhook_deliveries_total" and "app" in key[1]]


def test_a_deploy_moves_every_metric_of_its_app_only() -> None:
    metrics = Metrics()
    blog = metrics.for_app("blog")
    metrics.for_app("api")
    blog.deploy_started()
    found = samples(metrics)
    assert found[app_key("ghhook_deploy_in_progress", "blog")] == 1
    assert found[app_key("ghhook_deploy_in_progress", "api")] == 0
    blog.step_finished(step("pull", 1.5))
    blog.step_finished(step("restart", 0.2))
    blog.step_finished(step("pull", 0.5))
    blog.deploy_finished(Result.DEPLOYED, 2.25, 1_700_000_000.0)
    found = samples(metrics)
    assert found[app_key("ghhook_deploy_in_progress", "blog")] == 0
    assert found[app_key("ghhook_last_deploy_timestamp_seconds", "blog")] == 1_700_000_000.0
    assert found[app_key("ghhook_deploys_total", "blog", result="deployed")] == 1
    assert found[app_key("ghhook_deploys_total", "blog", result="failed")] == 0
    assert found[app_key("ghhook_deploy_duration_seconds_count", "blog")] == 1
    assert found[app_key("ghhook_deploy_duration_seconds_sum", "blog")] == 2.25
    assert found[app_key("ghhook_deploy_duration_seconds_bucket", "blog", le="2.5")] == 1
    assert found[app_key("ghhook_deploy_duration_seconds_bucket", "blog", le="1.0")] == 0
    assert found[app_key("ghhook_step_duration_seconds_count", "blog", step="pull")] == 2
    assert found[app_key("ghhook_step_duration_seconds_sum", "blog", step="pull")] == 2.0
    assert found[app_key("ghhook_step_duration_seconds_count", "blog", step="restart")] == 1
    bucket = app_key("ghhook_step_duration_seconds_bucket", "blog", le="+Inf", step="restart")
    assert found[bucket] == 1
    untouched = of_app(found, "api")
    assert set(untouched.values()) == {0}, "api's series did not move"
    assert not [key for key in untouched if key[0].startswith("ghhook_step_duration")]


@pytest.mark.parametrize(
    ("results", "counted"),
    [
        (["failed", "timeout", "failed"], {"failed": 2, "timeout": 1}),
        ([Result.CANCELLED], {"cancelled": 1}),
        ([Result.ROLLED_BACK, Result.INTERRUPTED], {"rolled_back": 1, "interrupted": 1}),
    ],
)
def test_results_are_counted_by_app_and_result(results: list[str], counted: dict[str, int]) -> None:
    metrics = Metrics()
    api = metrics.for_app("api")
    metrics.for_app("blog")
    for result in results:
        api.deploy_started()
        api.deploy_finished(result, 1.0, 10.0)
    found = samples(metrics)
    for result in FINAL_RESULTS:
        assert found[app_key("ghhook_deploys_total", "api", result=result)] == counted.get(
            result, 0
        )
        assert found[app_key("ghhook_deploys_total", "blog", result=result)] == 0


def test_a_negative_duration_counts_as_zero() -> None:
    """The wall clock can step back during a deploy; a histogram takes no negative value."""
    metrics = Metrics()
    metrics.for_app("blog").deploy_finished(Result.DEPLOYED, -3.0, 5.0)
    found = samples(metrics)
    assert found[app_key("ghhook_deploy_duration_seconds_sum", "blog")] == 0
    assert found[app_key("ghhook_deploy_duration_seconds_bucket", "blog", le="0.5")] == 1


def test_forget_app_removes_every_series_of_that_app() -> None:
    metrics = Metrics()
    blog, api = metrics.for_app("blog"), metrics.for_app("api")
    for app in (blog, api):
        app.deploy_started()
        app.step_finished(step("pull", 0.5))
        app.step_finished(step("build", 3.0))
        app.deploy_finished(Result.FAILED, 3.5, 20.0)
    before = of_app(samples(metrics), "api")
    metrics.forget_app("blog")
    found = samples(metrics)
    assert of_app(found, "blog") == {}
    assert of_app(found, "api") == before, "the other apps keep theirs"


def test_a_forgotten_app_stays_forgotten_until_added_again() -> None:
    """A removed app's engine may still finish its running deploy after the reload."""
    metrics = Metrics()
    old = metrics.for_app("blog")
    old.deploy_started()
    metrics.forget_app("blog")
    old.step_finished(step("pull", 0.5))
    old.deploy_finished(Result.DEPLOYED, 1.0, 30.0)
    assert of_app(samples(metrics), "blog") == {}
    again = metrics.for_app("blog")
    assert again is not old
    found = samples(metrics)
    assert found[app_key("ghhook_deploys_total", "blog", result="deployed")] == 0
    assert found[app_key("ghhook_deploy_in_progress", "blog")] == 0


def test_forgetting_an_unknown_app_does_nothing() -> None:
    metrics = Metrics()
    metrics.for_app("api")
    before = samples(metrics)
    metrics.forget_app("blog")
    assert samples(metrics) == before


def test_config_error_is_one_while_the_last_reload_failed() -> None:
    metrics = Metrics()
    states = []
    for failed in (True, True, False):
        metrics.config_failed(failed)
        states.append(samples(metrics)[("ghhook_config_error", ())])
    assert states == [1, 1, 0]


def test_each_instance_has_its_own_registry() -> None:
    one, two = Metrics(), Metrics()
    one.delivery("push", "accepted")
    one.for_app("blog").deploy_started()
    assert one.registry is not two.registry
    assert of_app(samples(two), "blog") == {}
    assert not [key for key in samples(two) if key[0] == "ghhook_deliveries_total"]
    assert REGISTRY.get_sample_value("ghhook_deploy_in_progress", {"app": "blog"}) is None


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


def test_a_cancelled_deploy_is_counted_and_leaves_a_running_one_in_progress() -> None:
    metrics = Metrics()
    app = metrics.for_app("api")
    app.deploy_started()
    app.deploy_finished(Result.CANCELLED, 0.0, 1234.0)
    sample = metrics.registry.get_sample_value
    assert sample("ghhook_deploys_total", {"app": "api", "result": "cancelled"}) == 1
    assert sample("ghhook_deploy_in_progress", {"app": "api"}) == 1, "the running one goes on"
    assert sample("ghhook_last_deploy_timestamp_seconds", {"app": "api"}) == 0
