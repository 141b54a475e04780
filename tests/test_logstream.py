"""
A deploy's log over real HTTP: a small Klein app on a loopback port mounts
``render_log``; the test drives the deploy's output and reads the stream as
it comes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
import treq
from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool, ResponseDone
from twisted.web.iweb import IRequest, IResponse
from twisted.web.server import Site

from ghhook.live import LiveDeploys, LiveOutput
from ghhook.logstream import kept_lines, render_log

WAIT = 10.0


def reactor() -> Any:
    from twisted.internet import reactor as r

    return r


class LogApp:
    """The admin's route, reduced to what ``render_log`` needs."""

    def __init__(self, live: LiveDeploys) -> None:
        self.live = live
        #: Journal rows by (app, deploy).
        self.rows: dict[tuple[str, int], dict[str, Any]] = {}
        #: Each request's notifyFinish, asked for after render_log's own.
        self.finished: list[Deferred[None]] = []
        self.app = Klein()
        self.app.route("/apps/<name>/deploys/<deploy>/log", methods=["GET"])(self.log)

    def log(self, request: IRequest, name: str, deploy: str) -> Any:
        number = int(deploy)
        follow = request.args.get(b"follow", [b"1"])[0] != b"0"
        answer = render_log(request, self.live, name, number, self.rows.get((name, number)), follow)
        self.finished.append(request.notifyFinish())
        return answer


class Body(Protocol):
    """A response body read as it comes; :meth:`until` waits for some of it."""

    def __init__(self, response: IResponse) -> None:
        self.response = response
        self.data = b""
        self.done: Deferred[None] = Deferred()
        self.reason: Failure | None = None
        self._waits: list[tuple[Callable[[bytes], bool], Deferred[bytes]]] = []
        response.deliverBody(self)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        for wait in list(self._waits):
            check, d = wait
            if check(self.data):
                self._waits.remove(wait)
                d.callback(self.data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        for _, d in self._waits:
            d.errback(AssertionError(f"the body ended first: {self.data!r}"))
        self._waits = []
        self.reason = reason
        self.done.callback(None)

    def until(self, needle: bytes) -> Deferred[bytes]:
        """Fire once the body holds ``needle``, within WAIT seconds."""
        d: Deferred[bytes] = Deferred()
        if needle in self.data:
            d.callback(self.data)
        else:
            self._waits.append((lambda data: needle in data, d))
        return d.addTimeout(WAIT, reactor())

    async def end(self, whole: bool = True) -> bytes:
        """The body once it ended (``whole``: as a complete chunked answer)."""
        await self.done.addTimeout(WAIT, reactor())
        if whole:
            assert self.reason is not None and self.reason.check(ResponseDone), self.reason
        return self.data


class Server:
    def __init__(self, live: LiveDeploys | None = None) -> None:
        self.live = live if live is not None else LiveDeploys(reactor())
        self.log = LogApp(self.live)
        self.port = reactor().listenTCP(0, Site(self.log.app.resource()), interface="127.0.0.1")
        self.pool = HTTPConnectionPool(reactor(), persistent=False)

    def url(self, app: str = "api", deploy: int = 1, query: str = "") -> str:
        return f"http://127.0.0.1:{self.port.getHost().port}/apps/{app}/deploys/{deploy}/log{query}"

    async def get(self, query: str = "", deploy: int = 1, **headers: str) -> IResponse:
        names = {key.replace("_", "-"): [value] for key, value in headers.items()}
        response: IResponse = await treq.get(
            self.url(deploy=deploy, query=query), headers=names, pool=self.pool
        ).addTimeout(WAIT, reactor())
        return response

    async def stop(self) -> None:
        # A test that failed midway leaves streams open: end their deploys.
        for app, deploy in list(self.live._running):
            self.live.finish(app, deploy, "interrupted")
        await self.pool.closeCachedConnections()
        await self.port.stopListening()


def events_of(data: bytes) -> list[dict[str, str]]:
    """SSE events as dicts of their fields; comments left out."""
    parsed = []
    for block in data.decode().split("\n\n"):
        fields = {}
        for line in block.split("\n"):
            if line and not line.startswith(":"):
                key, _, value = line.partition(": ")
                fields[key] = value
        if fields:
            parsed.append(fields)
    return parsed


def header(response: IResponse, name: str) -> str | None:
    values = response.headers.getRawHeaders(name.encode())
    return values[0].decode() if values else None


def running(server: Server, *lines: str) -> LiveOutput:
    output = server.live.start("api", 1)
    for line in lines:
        output.add(line)
    return output


@pytest_twisted.ensureDeferred
async def test_lines_arrive_as_they_are_produced_and_the_stream_ends_with_the_deploy() -> None:
    server = Server()
    try:
        output = running(server)
        output.step_started(["make", "all"])
        output.add("compiling")
        response = await server.get()
        assert response.code == 200
        assert header(response, "Content-Type") == "text/plain; charset=utf-8"
        assert header(response, "Cache-Control") == "no-store"
        assert header(response, "X-Accel-Buffering") == "no"
        body = Body(response)
        await body.until(b"compiling\n")
        # The deploy goes on: the test produces its next line now.
        output.add("linking")
        await body.until(b"linking\n")
        assert not body.done.called and output.result is None
        assert server.live.streams == 1 and output.followers == 1
        server.live.finish("api", 1, "deployed")
        assert await body.end() == b"$ make all\ncompiling\nlinking\n[deploy 1 deployed]\n"
        assert server.live.streams == 0 and output.followers == 0
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_the_headers_come_before_any_line() -> None:
    server = Server()
    try:
        output = running(server)
        response = await server.get()
        assert response.code == 200
        body = Body(response)
        output.add("first")
        await body.until(b"first\n")
        output.finish("failed")
        assert (await body.end()).endswith(b"[deploy 1 failed]\n")
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_events_resume_after_the_last_event_id() -> None:
    server = Server()
    try:
        output = running(server, "one", "two", "three", "four", "five")
        response = await server.get(accept="text/event-stream", last_event_id="3")
        assert header(response, "Content-Type") == "text/event-stream"
        assert header(response, "Cache-Control") == "no-store"
        assert header(response, "X-Accel-Buffering") == "no"
        body = Body(response)
        await body.until(b"data: five\n\n")
        output.add("six")
        await body.until(b"data: six\n\n")
        server.live.finish("api", 1, "rolled_back")
        assert events_of(await body.end()) == [
            {"id": "4", "data": "four"},
            {"id": "5", "data": "five"},
            {"id": "6", "data": "six"},
            {"event": "end", "data": "rolled_back"},
        ]
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_events_resuming_after_dropped_lines_are_told_so() -> None:
    server = Server()
    try:
        output = server.live.start("api", 1)
        output._max_lines = 3
        for n in range(1, 11):
            output.add(f"line {n}")
        output.finish("deployed")
        response = await server.get(accept="text/event-stream", last_event_id="2")
        assert events_of(await Body(response).end()) == [
            {"id": "7", "data": "[... 5 earlier lines are no longer held]"},
            {"id": "8", "data": "line 8"},
            {"id": "9", "data": "line 9"},
            {"id": "10", "data": "line 10"},
            {"event": "end", "data": "deployed"},
        ]
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_follow_0_answers_what_there_is_and_ends() -> None:
    server = Server()
    try:
        output = running(server, "so far")
        response = await server.get("?follow=0")
        assert await Body(response).end() == b"so far\n[deploy 1 is still running]\n"
        response = await server.get("?follow=0", accept="text/event-stream")
        assert events_of(await Body(response).end()) == [{"id": "1", "data": "so far"}]
        assert server.live.streams == 0 and output.followers == 0
        assert output.result is None
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_a_deploy_finished_a_moment_ago_answers_its_whole_live_output() -> None:
    server = Server()
    try:
        running(server, *(f"line {n}" for n in range(300)))
        server.live.finish("api", 1, "deployed")
        response = await server.get()
        data = await Body(response).end()
        assert data.decode().splitlines() == [
            *(f"line {n}" for n in range(300)),
            "[deploy 1 deployed]",
        ]
    finally:
        await server.stop()


def journal_row(result: str = "failed") -> dict[str, Any]:
    step = {
        "name": "pull",
        "argv": ["git", "pull"],
        "exit_code": 0,
        "signal": None,
        "timed_out": False,
        "started": 1000.0,
        "duration": 0.4,
        "output": "Updating 1..2\nFast-forward",
    }
    failed = {
        **step,
        "name": "restart",
        "argv": ["systemctl", "restart", "app"],
        "exit_code": 1,
        "output": "\x1b[31mJob failed\x1b[0m",
    }
    return {"id": 1, "result": result, "steps": [step, failed]}


KEPT = [
    "$ git pull",
    "Updating 1..2",
    "Fast-forward",
    "[pull exited with 0 in 0.4 s]",
    "$ systemctl restart app",
    "\\x1b[31mJob failed\\x1b[0m",
    "[restart exited with 1 in 0.4 s]",
]


def test_kept_lines_of_a_journal_row() -> None:
    assert kept_lines(journal_row()) == KEPT


@pytest_twisted.ensureDeferred
async def test_a_finished_deploy_answers_the_output_kept_in_the_journal() -> None:
    server = Server()
    server.log.rows[("api", 1)] = journal_row()
    try:
        response = await server.get()
        assert response.code == 200
        assert (await Body(response).end()).decode().splitlines() == [*KEPT, "[deploy 1 failed]"]
        response = await server.get(accept="text/event-stream", last_event_id="5")
        assert events_of(await Body(response).end()) == [
            {"id": "6", "data": KEPT[5]},
            {"id": "7", "data": KEPT[6]},
            {"event": "end", "data": "failed"},
        ]
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_a_queued_deploy_not_yet_live_says_so() -> None:
    server = Server()
    server.log.rows[("api", 1)] = {"id": 1, "result": "queued", "steps": []}
    try:
        response = await server.get()
        assert await Body(response).end() == (
            b"[deploy 1 is queued; follow it once it has started]\n"
        )
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_a_deploy_neither_live_nor_in_the_journal_is_404() -> None:
    server = Server()
    try:
        response = await server.get(deploy=9)
        assert response.code == 404
        assert (await treq.json_content(response))["error"].startswith("this app has no deploy")
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_a_client_that_goes_away_is_unsubscribed() -> None:
    server = Server()
    try:
        output = running(server, "hello")
        response = await server.get()
        body = Body(response)
        await body.until(b"hello\n")
        assert output.followers == 1 and server.live.streams == 1
        assert body.transport is not None
        body.transport.loseConnection()
        with pytest.raises((ConnectionDone, ConnectionLost)):
            await server.log.finished[-1].addTimeout(WAIT, reactor())
        assert output.followers == 0 and server.live.streams == 0
        output.add("nobody hears this")
        server.live.finish("api", 1, "deployed")
        await body.end(whole=False)
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_followers_past_the_cap_get_503_with_a_sentence() -> None:
    server = Server(LiveDeploys(reactor(), max_followers=1))
    try:
        output = running(server, "one")
        first = Body(await server.get())
        await first.until(b"one\n")
        response = await server.get()
        assert response.code == 503
        error = (await treq.json_content(response))["error"]
        assert "already follow deploys live" in error and "?follow=0" in error
        response = await server.get("?follow=0")
        assert response.code == 200, "a look at what there is now is not a follower"
        await Body(response).end()
        output.finish("deployed")
        await first.end()
        assert server.live.streams == 0
        again = Body(await server.get())
        assert (await again.end()).endswith(b"[deploy 1 deployed]\n")
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_a_slow_reader_pauses_its_subscription_and_catches_up() -> None:
    server = Server()
    try:
        output = running(server, "start")
        response = await server.get()
        body = Body(response)
        await body.until(b"start\n")
        assert body.transport is not None
        body.transport.pauseProducing()  # the client stops reading
        for n in range(3000):  # 3 MB, three times what the output holds
            output.add(f"{n:04d}" + "x" * 996)
        (subscription,) = output._subscriptions
        assert subscription.paused, "the connection's full buffer paused it"
        assert subscription.cursor < 200, "it took no more than about its buffer's worth"
        output.finish("deployed")
        body.transport.resumeProducing()
        data = await body.end()
        lines = data.decode().splitlines()
        assert lines[-1] == "[deploy 1 deployed]"
        assert lines[-2] == "2999" + "x" * 996
        assert any(line.startswith("[... ") and "no longer held" in line for line in lines)
        assert len(data) < 1.2 * 1024 * 1024
        assert server.live.streams == 0
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_a_stream_ends_after_its_time() -> None:
    from twisted.internet.task import Clock

    clock = Clock()
    server = Server(LiveDeploys(clock, max_stream=60.0))
    try:
        output = running(server, "long deploy")
        body = Body(await server.get())
        await body.until(b"long deploy\n")
        clock.advance(60)
        data = await body.end()
        assert data.endswith(
            b"[this stream ends after 60 s; the deploy goes on: ask again to follow it]\n"
        )
        assert output.followers == 0 and server.live.streams == 0 and not clock.getDelayedCalls()
    finally:
        await server.stop()


@pytest.mark.parametrize(
    ("accept", "events"),
    [
        ("text/event-stream", True),
        ("text/plain, text/event-stream;q=0.5", True),
        ("text/event-stream;q=0", False),
        ("*/*", False),
        ("text/plain", False),
    ],
)
def test_which_requests_get_events(accept: str, events: bool) -> None:
    from twisted.web.test.requesthelper import DummyRequest

    from ghhook.logstream import wants_events

    request = DummyRequest([b""])
    request.requestHeaders.setRawHeaders(b"accept", [accept.encode()])
    assert wants_events(request) is events
