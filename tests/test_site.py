"""
The HTTP site's front door, in memory: channels on a StringTransport, time
on a Clock. Deadlines that bytes do not restart, connection caps, the
shared body budget, answers a client can read before the connection
closes; and one test over a real loopback socket for that last point.
"""

from __future__ import annotations

import select
import socket
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request
from zope.interface import implementer

from ghhook.frontdoor import STALL_SECONDS, Limits, Tally
from ghhook.site import (
    ABORT_GRACE,
    LINGER_BYTES,
    LINGER_SECONDS,
    FrontDoorChannel,
    FrontDoorSite,
    make_site,
)


@implementer(ITCPTransport)
class Transport(StringTransport):
    """A StringTransport that can shut down its writing side, as TCP can."""

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass


class Bodies(Resource):
    """Answers ``ok``; keeps each body it was given and what held it."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[type, bytes]] = []

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        self.seen.append((type(request.content), request.content.read()))
        return b"ok"

    def render_GET(self, request: Request) -> bytes:
        return b"ok"


class Conn:
    """One client connection to a site, in memory."""

    def __init__(self, channel: FrontDoorChannel, transport: Transport) -> None:
        self.channel = channel
        self.transport = transport

    def send(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    def out(self) -> bytes:
        return self.transport.value()

    @property
    def closing(self) -> bool:
        return bool(self.transport.disconnecting)

    def lost(self) -> None:
        self.channel.connectionLost(Failure(ConnectionDone()))


def serve(clock: Clock, max_body: int = 25 << 20, **limits: Any) -> FrontDoorSite:
    return make_site(
        Bodies(), max_body=max_body, limits=Limits(**limits), tally=Tally(clock), reactor=clock
    )


def connect(site: FrontDoorSite, host: str = "192.0.2.1") -> Conn | None:
    address = IPv4Address("TCP", host, 40000)
    channel = site.buildProtocol(address)
    if channel is None:
        return None
    transport = Transport(peerAddress=address)
    channel.makeConnection(transport)
    return Conn(channel, transport)


def opened(site: FrontDoorSite, host: str = "192.0.2.1") -> Conn:
    conn = connect(site, host)
    assert conn is not None, "refused"
    return conn


def post(length: int, *extra: bytes) -> bytes:
    headers = [b"POST /hook HTTP/1.1", b"Host: x", b"Content-Length: %d" % length, *extra]
    return b"\r\n".join(headers) + b"\r\n\r\n"


CHUNKED = b"POST /hook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def summaries(events: Any) -> list[dict[str, Any]]:
    return [e for e in events if "summary" in e]


@pytest.fixture
def clock() -> Clock:
    return Clock()


# Deadlines


def test_a_drip_is_closed_at_the_header_deadline_however_often_it_sends(clock: Clock) -> None:
    site = serve(clock, header_timeout=10)
    conn = opened(site)
    for byte in b"POST /hook HTTP/1.1\r\nX-Drip: ":
        conn.send(bytes([byte]))
        clock.advance(0.45)
        if clock.seconds() >= 10:
            break
        assert not conn.closing, f"open at {clock.seconds():.2f} s"
    clock.advance(10 - clock.seconds())
    assert conn.closing
    assert conn.out().startswith(b"HTTP/1.1 408 ")
    assert b"headers did not arrive within 10 s" in conn.out()
    conn.lost()
    assert site.door.open == 0


def test_a_slow_body_is_closed_at_the_body_deadline_counted_from_the_start(
    clock: Clock,
) -> None:
    site = serve(clock, header_timeout=10, body_timeout=60)
    conn = opened(site)
    clock.advance(9)
    conn.send(post(100))  # the headers, just in time
    while clock.seconds() < 59:
        conn.send(b"x")
        clock.advance(5)
    assert not conn.closing
    clock.advance(60 - clock.seconds())
    assert conn.closing
    assert conn.out().startswith(b"HTTP/1.1 408 ")
    assert b"did not arrive within 60 s" in conn.out()
    conn.lost()


def test_each_request_on_a_kept_alive_connection_gets_its_own_deadlines(clock: Clock) -> None:
    site = serve(clock, header_timeout=10)
    conn = opened(site)
    clock.advance(8)
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    clock.advance(8)  # 16 s after the connection's start, 8 after the answer
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert conn.out().count(b"HTTP/1.1 200 OK") == 2 and not conn.closing
    with capturedLogs() as events:
        clock.advance(10)
        assert conn.closing, "idle for the header deadline after its answer"
        assert conn.out().count(b"HTTP/1.1") == 2, "closed quietly, no 408"
        conn.lost()
        clock.advance(10)
    assert summaries(events) == [], "a kept-alive connection going idle is no refusal"


def test_a_connection_that_sends_nothing_is_closed_and_counted(clock: Clock) -> None:
    site = serve(clock, header_timeout=10)
    conn = opened(site)
    with capturedLogs() as events:
        clock.advance(10)
        assert conn.closing and conn.out() == b""
        conn.lost()
        clock.advance(10)
    assert summaries(events)[0]["refused"] == {"sent nothing before the header deadline": 1}


def test_an_answer_the_client_does_not_read_cannot_hold_the_connection(clock: Clock) -> None:
    site = serve(clock, header_timeout=10)
    timed_out = opened(site)
    clock.advance(10)  # a 408 nobody reads
    assert timed_out.closing and not timed_out.transport.disconnected
    clock.advance(ABORT_GRACE)
    assert timed_out.transport.disconnected, "aborted"
    timed_out.lost()
    closing = opened(site)
    closing.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert closing.closing and b"200 OK" in closing.out()
    clock.advance(10)
    assert closing.transport.disconnected
    closing.lost()
    assert clock.getDelayedCalls() == []


# Connection caps


def test_connections_past_the_caps_are_refused_at_once_and_summarised(clock: Clock) -> None:
    site = serve(clock, max_connections=3, max_per_address=2)
    with capturedLogs() as events:
        a1, a2 = opened(site, "192.0.2.1"), opened(site, "192.0.2.1")
        assert connect(site, "192.0.2.1") is None
        b = opened(site, "192.0.2.2")
        for _ in range(1000):
            assert connect(site, "192.0.2.3") is None
        a1.lost()
        c = opened(site, "192.0.2.3")
        assert summaries(events) == [], "no line per refused connection"
        for conn in (a2, b, c):
            conn.lost()
        assert site.door.open == 0
        clock.advance(10)
    (line,) = summaries(events)
    assert line["refused"] == {"too many open": 1000, "too many from one address": 1}
    assert line["summary"].startswith("refused 1,001 connections in the last 10 s: ")


# Bodies: in memory, within the budget


def test_a_large_body_is_held_in_memory_not_spooled_to_disk(clock: Clock) -> None:
    site = serve(clock)
    conn = opened(site)
    body = b"x" * 300_000
    conn.send(post(len(body)) + body)
    assert b"200 OK" in conn.out()
    resource = site.resource
    assert isinstance(resource, Bodies)
    held, seen = resource.seen[0]
    assert seen == body and held.__module__ == "_io" and held.__name__ == "BytesIO"
    assert site.budget.held == 0, "given back once answered"
    conn.lost()


def test_a_declared_body_past_the_budget_gets_503_before_any_of_it_is_read(
    clock: Clock,
) -> None:
    site = serve(clock, max_inflight=1000, body_timeout=60)
    first = opened(site, "192.0.2.1")
    first.send(post(600) + b"y" * 100)
    assert site.budget.held == 600
    second = opened(site, "192.0.2.2")
    second.send(post(600, b"Expect: 100-continue"))
    answer = second.out()
    assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"\r\nRetry-After: 60\r\n" in answer
    assert b"100 Continue" not in answer
    assert site.budget.held == 600
    first.send(b"y" * 500)
    assert b"200 OK" in first.out() and site.budget.held == 0
    third = opened(site, "192.0.2.3")
    third.send(post(600) + b"z" * 600)
    assert b"200 OK" in third.out()
    for conn in (first, second, third):
        conn.lost()


def test_a_chunked_body_is_counted_as_it_arrives_and_refused_past_the_budget(
    clock: Clock,
) -> None:
    site = serve(clock, max_inflight=1000)
    holder = opened(site, "192.0.2.1")
    holder.send(CHUNKED + chunk(b"a" * 700))
    assert site.budget.held == 700
    late = opened(site, "192.0.2.2")
    late.send(CHUNKED + chunk(b"b" * 200))
    assert site.budget.held == 900 and late.out() == b""
    late.send(chunk(b"b" * 200))
    assert late.out().startswith(b"HTTP/1.1 503 ")
    assert site.budget.held == 700, "the refused body's share is given back at once"
    holder.send(chunk(b"a" * 100) + b"0\r\n\r\n")
    assert b"200 OK" in holder.out() and site.budget.held == 0
    holder.lost()
    late.lost()


def test_a_trickling_body_gives_its_share_to_a_delivery_sent_at_full_speed(
    clock: Clock,
) -> None:
    site = serve(clock, max_inflight=1000_000)
    trickle = opened(site, "192.0.2.1")
    trickle.send(CHUNKED + chunk(b"t" * 900_000))
    clock.advance(STALL_SECONDS / 2)
    trickle.send(chunk(b"t"))  # a byte now and then
    early = opened(site, "192.0.2.2")
    early.send(post(200_000))
    assert early.out().startswith(b"HTTP/1.1 503 "), "the trickle has not stalled yet"
    clock.advance(STALL_SECONDS / 2)
    delivery = opened(site, "192.0.2.3")
    delivery.send(post(200_000) + b"d" * 200_000)
    assert b"200 OK" in delivery.out()
    assert trickle.out().startswith(b"HTTP/1.1 408 ")
    assert b"stalled while others waited" in trickle.out()
    assert site.budget.held == 0
    for conn in (trickle, early, delivery):
        conn.lost()


def test_a_body_cut_off_by_a_lost_connection_gives_its_share_back(clock: Clock) -> None:
    site = serve(clock, max_inflight=1000)
    declared, chunked = opened(site, "192.0.2.1"), opened(site, "192.0.2.2")
    declared.send(post(500) + b"x" * 10)
    chunked.send(CHUNKED + chunk(b"x" * 300))
    assert site.budget.held == 800
    declared.lost()
    chunked.lost()
    assert site.budget.held == 0


# Refusals the client can read


def test_a_refused_body_gets_no_100_continue_and_the_rest_is_read(clock: Clock) -> None:
    site = serve(clock, max_body=1000)
    conn = opened(site)
    conn.send(post(5000, b"Expect: 100-continue"))
    answer = conn.out()
    assert answer.startswith(b"HTTP/1.1 413 Request Entity Too Large\r\n")
    assert b"100 Continue" not in answer
    assert b"limit of 1000 bytes" in answer
    assert conn.transport.write_closed and not conn.closing, "answered, still reading"
    conn.send(b"x" * 5000)
    assert not conn.closing
    conn.send(b"x" * LINGER_BYTES)
    assert conn.closing, "a bounded amount is read"
    assert conn.out() == answer, "and nothing more is written"
    conn.lost()


def test_reading_after_a_refusal_ends_after_a_while(clock: Clock) -> None:
    site = serve(clock, max_body=1000)
    conn = opened(site)
    conn.send(post(5000))
    clock.advance(LINGER_SECONDS - 0.1)
    assert not conn.closing
    clock.advance(0.1)
    assert conn.closing
    clock.advance(ABORT_GRACE)
    assert conn.transport.disconnected
    conn.lost()
    clock.advance(10)  # the summary line
    assert clock.getDelayedCalls() == []


def test_rejected_requests_are_summarised_not_logged_each(clock: Clock) -> None:
    site = serve(clock, max_body=1000)
    with capturedLogs() as events:
        for n in range(50):
            conn = opened(site, f"192.0.2.{n}")
            conn.send(post(5000))
            conn.lost()
        assert list(events) == []
        clock.advance(10)
    (line,) = summaries(events)
    assert line["rejected"] == {"over the body size limit": 50}
    assert line["summary"] == ("rejected 50 requests in the last 10 s: over the body size limit")


def test_stopping_the_site_closes_its_connections_and_logs_what_is_left(clock: Clock) -> None:
    site = serve(clock, max_body=1000)
    drips = [opened(site, f"192.0.2.{n}") for n in range(3)]
    refused = opened(site)
    refused.send(CHUNKED + chunk(b"x" * 100))
    refused.send(chunk(b"x" * 1000))
    assert refused.out().startswith(b"HTTP/1.1 413 ")
    with capturedLogs() as events:
        site.doStart()
        site.doStop()
    assert all(conn.closing for conn in [*drips, refused])
    assert clock.getDelayedCalls() == [], "no deadline, no lingering, no summary left"
    (line,) = summaries(events)
    assert line["rejected"] == {"over the body size limit": 1}


# Over a real loopback socket


@pytest_twisted.ensureDeferred
async def test_a_client_streaming_past_the_cap_reads_the_413() -> None:
    """Closing on unread data resets the connection before the client reads."""
    from twisted.internet import reactor
    from twisted.internet.threads import deferToThread

    port = reactor.listenTCP(0, make_site(Bodies(), max_body=1000), interface="127.0.0.1")

    def client() -> bytes:
        with socket.create_connection(("127.0.0.1", port.getHost().port), timeout=10) as s:
            s.sendall(post(1_000_000) + b"x" * 16384)
            # The answer has come while the client still sends: it sends the
            # whole body before it reads, as most clients do.
            assert select.select([s], [], [], 10)[0] == [s]
            for _ in range(60):
                s.sendall(b"x" * 16384)
            answer = b""
            while data := s.recv(65536):
                answer += data
            return answer

    try:
        answer = await deferToThread(client).addTimeout(30, reactor)
    finally:
        await port.stopListening()
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert answer.endswith(b'limit of 1000 bytes"}\n')
