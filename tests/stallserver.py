"""
HTTP servers that stall after their headers, for the timeouts of the
health check and of ``ghhook send``.

:class:`StallServer` is a real loopback server in the test's reactor: each
connection gets the next scripted answer, whole (then it hangs up) or a
status line, headers with a Content-Length larger than what follows, and
then nothing. :func:`accept` is the in-memory variant for a
``MemoryReactorClock``: it connects the client's last connection attempt
to a ``StringTransport`` so a test can feed it bytes and advance the clock.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

#: Seconds a test waits on the real reactor before it gives up (never reached when it passes).
GUARD = 20.0


@attrs.frozen
class Answer:
    """Raw bytes for one connection; ``whole`` answers are followed by a hang-up."""

    data: bytes
    whole: bool


def whole(code: int, body: bytes = b"") -> Answer:
    return Answer(
        b"HTTP/1.1 %d Whatever\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
        % (code, len(body), body),
        whole=True,
    )


def stalled(code: int = 200, sent: bytes = b"partial", length: int = 1000) -> Answer:
    """Headers announcing ``length`` bytes, then ``sent`` and nothing more."""
    return Answer(
        b"HTTP/1.1 %d Whatever\r\nContent-Length: %d\r\n\r\n%s" % (code, length, sent), False
    )


class _Scripted(Protocol):
    factory: StallServer

    def connectionMade(self) -> None:
        self.request = b""
        self.answered = False
        self.closed: Deferred[None] = Deferred()
        self.factory.connections.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.request += data
        head, end, body = self.request.partition(b"\r\n\r\n")
        if self.answered or not end:
            return
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(body) < length:
            return
        self.answered = True
        assert self.transport is not None
        answer = self.factory.next_answer()
        self.transport.write(answer.data)
        if answer.whole:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed.callback(None)


class StallServer(Factory[_Scripted]):
    """A scripted loopback HTTP server; the last answer repeats."""

    noisy = False  # the tests that count log events count only the client's

    def __init__(self, reactor: Any, *answers: Answer) -> None:
        self.reactor = reactor
        self.answers = list(answers)
        self.connections: list[_Scripted] = []
        self.port = reactor.listenTCP(0, self, interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}/health"

    def buildProtocol(self, addr: Any) -> _Scripted:
        protocol = _Scripted()
        protocol.factory = self
        return protocol

    def next_answer(self) -> Answer:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    async def all_closed(self) -> None:
        """Wait until the client has hung up every connection (bounded by GUARD)."""
        done: Deferred[Any] = DeferredList([c.closed for c in self.connections])
        await done.addTimeout(GUARD, self.reactor)

    async def stop(self) -> None:
        """Drop what is still open and stop listening, so nothing outlives the test."""
        for connection in self.connections:
            if not connection.closed.called:
                transport: Any = connection.transport
                transport.abortConnection()
        await DeferredList([c.closed for c in self.connections])
        await self.port.stopListening()


def accept(clock: MemoryReactorClock) -> tuple[Any, StringTransport]:
    """Connect the client's latest connection attempt on ``clock`` to memory."""
    host, port, factory, _timeout, _bind = clock.tcpClients[-1]
    protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
    assert protocol is not None
    transport = StringTransport(peerAddress=IPv4Address("TCP", host, port))
    protocol.makeConnection(transport)
    return protocol, transport
