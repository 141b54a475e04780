"""
The health check's deadline covers the whole exchange (connect, headers,
body): shown on a ``MemoryReactorClock`` to the tick, and against a real
loopback server that stalls after its headers to end and hang up. Its HTTP
client logs nothing per probe.
"""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from ghhook.health import REQUEST_TIMEOUT, HealthCheck
from ghhook.runner import StepResult
from tests.stallserver import GUARD, StallServer, accept, stalled, whole

URL = "http://127.0.0.1:8080/health"
STALLED = stalled(200, sent=b"partial", length=1000).data


def reactor() -> Any:
    from twisted.internet import reactor as r

    return r


def hang_up(protocol: Any, transport: StringTransport) -> None:
    """What the kernel does once the client closed: tell its protocol."""
    assert transport.disconnecting, "the client did not hang up"
    protocol.connectionLost(Failure(ConnectionDone()))


# -- the deadline, to the tick -------------------------------------------------------


def test_a_body_that_stalls_ends_the_check_at_its_timeout() -> None:
    clock = MemoryReactorClock()
    results: list[StepResult] = []
    HealthCheck(clock).check("health", URL, 3.0).addCallback(results.append)
    protocol, transport = accept(clock)
    assert transport.value().startswith(b"GET /health HTTP/1.1\r\n")
    protocol.dataReceived(STALLED)

    clock.advance(2.5)
    assert results == [], "the check ended before its timeout"
    clock.advance(0.5)
    [result] = results
    assert not result.ok and result.timed_out
    assert result.duration == 3.0
    assert result.output == (
        "1 attempt(s); last answer: no whole answer within 3 s:"
        " the headers came (HTTP 200) but the body stalled after 7 of 1000 bytes"
    )
    hang_up(protocol, transport)


def test_headers_that_never_come_end_the_check_at_its_timeout() -> None:
    clock = MemoryReactorClock()
    results: list[StepResult] = []
    HealthCheck(clock).check("health", URL, 2.0).addCallback(results.append)
    protocol, transport = accept(clock)
    clock.advance(1.5)
    assert results == []
    clock.advance(0.5)
    [result] = results
    assert result.timed_out and result.duration == 2.0
    assert result.output == "1 attempt(s); last answer: no answer within 2 s"
    hang_up(protocol, transport)


def test_each_probe_gets_the_request_timeout_or_what_is_left() -> None:
    clock = MemoryReactorClock()
    results: list[StepResult] = []
    HealthCheck(clock, interval=0.5).check("health", URL, 12.0).addCallback(results.append)
    for _ in range(2):  # 0-5 and 5.5-10.5: cut off at REQUEST_TIMEOUT
        protocol, transport = accept(clock)
        protocol.dataReceived(STALLED)
        clock.advance(REQUEST_TIMEOUT)
        hang_up(protocol, transport)
        clock.advance(0.5)
    protocol, transport = accept(clock)  # 11-12: only what is left of the 12 s
    protocol.dataReceived(STALLED)
    clock.advance(0.5)
    assert results == []
    clock.advance(0.5)
    [result] = results
    assert result.timed_out and result.duration == 12.0
    assert result.output.startswith("3 attempt(s); last answer: no whole answer within 1 s:")
    assert len(clock.tcpClients) == 3
    hang_up(protocol, transport)


# -- a real server that stalls ---------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_service_that_stalls_after_its_headers_fails_and_is_hung_up_on(
    events: list[dict[str, Any]],
) -> None:
    server = StallServer(reactor(), stalled())
    try:
        check = HealthCheck(reactor(), interval=0.1).check("health", server.url, 1.0)
        result = await check.addTimeout(GUARD, reactor())
        assert not result.ok and result.timed_out
        assert "the headers came (HTTP 200) but the body stalled after 7 of 1000 bytes" in (
            result.output
        )
        await server.all_closed()
    finally:
        await server.stop()
    [logged] = [e for e in events if e.get("log_namespace", "").startswith("ghhook")]
    assert logged["log_format"].startswith("health check failed")
    assert "body stalled" in logged["last"]


@pytest_twisted.ensureDeferred
async def test_a_check_of_several_probes_logs_only_its_outcome(
    events: list[dict[str, Any]],
) -> None:
    starting = whole(503, b"starting")
    server = StallServer(reactor(), starting, starting, starting, whole(200, b"ok"))
    try:
        events.clear()
        check = HealthCheck(reactor(), interval=0.05).check("health", server.url, 10.0)
        result = await check.addTimeout(GUARD, reactor())
        logged = list(events)
    finally:
        await server.stop()
    assert result.ok and result.output == "4 attempt(s); last answer: HTTP 200 ok"
    assert len(server.connections) == 4
    assert [(e["log_namespace"], e["log_format"], e.get("code")) for e in logged] == [
        ("ghhook.health", "health check passed: {url} answered {code}", 200)
    ]
