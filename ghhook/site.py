"""
The HTTP site both listeners serve their resources with. Each connection
is admitted by the listener's :class:`~ghhook.frontdoor.Door`, has a
deadline for its headers and one for its body (counted from its start, not
restarted by each byte), and its body is held in memory within a budget
shared by the listener; refusals are answered so the client can read the
answer, and counted into a summary line, never a line each. No access log.
"""

from __future__ import annotations

import json
from io import BytesIO
from typing import Any, cast

from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime, ITCPTransport
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from ghhook.frontdoor import Budget, Door, Limits, Tally, address_key

#: GitHub caps payloads at 25 MB; so do we, before reading more.
MAX_BODY = 25 * 1024 * 1024
#: After a refusal (413, 503), bytes and seconds of the rest of the request
#: read and dropped before closing: closing on unread data makes the kernel
#: send a reset, and the client loses the answer it has not read yet.
LINGER_BYTES = 2 * 1024 * 1024
LINGER_SECONDS = 5.0
#: Seconds a closing connection may take to flush its last answer before
#: it is aborted: a client that reads nothing must not hold it.
ABORT_GRACE = 2.0


def _answer(status: bytes, message: str, headers: dict[bytes, bytes] | None = None) -> bytes:
    """A whole JSON error response that closes the connection."""
    body = json.dumps({"error": message}).encode("utf-8") + b"\n"
    lines = [b"HTTP/1.1 " + status, b"Content-Type: application/json", b"Connection: close"]
    lines += [name + b": " + value for name, value in (headers or {}).items()]
    lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class FrontDoorChannel(http.HTTPChannel):
    """
    An HTTP/1.1 channel with deadlines instead of Twisted's idle timer (which
    restarts on every byte, so one byte every few seconds holds it for
    ever): the request line and headers must arrive within
    ``header_timeout`` and the whole request within ``body_timeout`` of the
    connection's start, or of the end of the previous response on a kept-alive
    connection.
    """

    site: FrontDoorSite
    _key: str | None = None
    _admitted = False
    _deadline: IDelayedCall | None = None
    _abort: IDelayedCall | None = None
    _start = 0.0
    _phase: str | None = None  # "headers", "body", or None while answering
    _begun = False  # a byte of the awaited request has arrived
    _answered = 0  # requests answered on this connection
    _refused = False
    _drained = 0

    # The deadlines

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.channels.add(self)
        self._await_request()

    def _clock(self) -> IReactorTime:
        return self.site.reactor

    def _await_request(self) -> None:
        self._start = self._clock().seconds()
        self._phase = "headers"
        self._begun = False
        self._set_deadline(self.site.limits.header_timeout)

    def _set_deadline(self, delay: float) -> None:
        self._cancel_deadline()
        self._deadline = self._clock().callLater(max(0.0, delay), self._expired)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        limits, tally = self.site.limits, self.site.tally
        if self._phase == "body":
            tally.rejected("past the body deadline")
            self._close(
                _answer(
                    b"408 Request Timeout",
                    f"the request did not arrive within {limits.body_timeout:g} s",
                )
            )
        elif self._begun:
            tally.rejected("past the header deadline")
            self._close(
                _answer(
                    b"408 Request Timeout",
                    f"the request's headers did not arrive within {limits.header_timeout:g} s",
                )
            )
        else:
            # An idle kept-alive connection closes quietly; one that never
            # sent anything is worth counting.
            if not self._answered:
                tally.refused("sent nothing before the header deadline")
            self._close(b"")

    def _close(self, last: bytes) -> None:
        """Write ``last``, close, and abort if it cannot be flushed soon."""
        self._cancel_deadline()
        self._phase = None
        assert self.transport is not None
        if last:
            self.transport.write(last)
        self.loseConnection()
        if self._abort is None:
            self._abort = self._clock().callLater(ABORT_GRACE, self._force_close)

    def _force_close(self) -> None:
        self._abort = None
        # TCP and UNIX transports can abort (ITCPTransport names it).
        cast(ITCPTransport, self.transport).abortConnection()

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            self._drop(data)
            return
        if data and self._phase == "headers":
            self._begun = True
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        if self._phase == "headers":
            self._phase = "body"
            limits = self.site.limits
            elapsed = self._clock().seconds() - self._start
            self._set_deadline(limits.body_timeout - elapsed)
        super().allHeadersReceived()

    def allContentReceived(self) -> None:
        if self._refused:
            return
        self._cancel_deadline()
        self._phase = None
        super().allContentReceived()

    def requestDone(self, request: http.Request) -> None:
        self._answered += 1
        if self.persistent:
            # The next request, maybe already buffered, gets deadlines of its own.
            self._await_request()
            super().requestDone(request)
            return
        super().requestDone(request)  # closes once the answer is flushed...
        if self._abort is None:  # ...by a client that reads it, in time
            timeout = self.site.limits.header_timeout
            self._abort = self._clock().callLater(timeout, self._force_close)

    def shut(self) -> None:
        """Close now, scheduling nothing: the listener is stopping."""
        self._cancel_deadline()
        if self._abort is not None and self._abort.active():
            self._abort.cancel()
        self._abort = None
        self.loseConnection()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self._cancel_deadline()
        if self._abort is not None and self._abort.active():
            self._abort.cancel()
        self._abort = None
        self.site.channels.discard(self)
        if self._admitted:
            self._admitted = False
            self.site.door.leave(self._key)
        super().connectionLost(reason)

    # Refusals: answered, then the rest of the request read and dropped

    def refuse(self, answer: bytes, reason: str) -> None:
        """
        Answer ``answer`` and close once the client had a chance to read it:
        shut down our side, then read and drop up to LINGER_BYTES for up to
        LINGER_SECONDS (the client may still be sending the body).
        """
        if self._refused:
            return
        self._refused = True
        self.site.tally.rejected(reason)
        self._cancel_deadline()
        self._phase = None
        assert self.transport is not None
        self.transport.write(answer)
        if ITCPTransport.providedBy(self.transport):
            cast(ITCPTransport, self.transport).loseWriteConnection()
        self._deadline = self._clock().callLater(LINGER_SECONDS, self._close, b"")
        # Whatever LineReceiver still buffers goes to rawDataReceived: dropped.
        self.setRawMode()

    def _drop(self, data: bytes) -> None:
        self._drained += len(data)
        if self._drained > LINGER_BYTES and self._abort is None:
            self._close(b"")

    def lineReceived(self, line: bytes) -> None:
        if self._refused:
            self._drop(line)
            return
        super().lineReceived(line)

    def rawDataReceived(self, data: bytes) -> None:
        if self._refused:
            self._drop(data)
            return
        super().rawDataReceived(data)

    def _send100Continue(self) -> None:
        # Twisted sends it right after gotLength, even when that refused the
        # body: a stray 100 after the final answer confuses clients.
        if not self._refused:
            super()._send100Continue()


class CappedRequest(Request):
    """
    A request whose body is held in memory, within the listener's shared
    :class:`~ghhook.frontdoor.Budget`, and never over ``max_body``. A
    declared length is checked before any byte of the body is read; a
    chunked body as it arrives. Over the cap: 413; over the budget: 503
    with Retry-After; a body that stalls while others need the budget: 408.
    """

    channel: FrontDoorChannel
    _budget: Budget | None = None
    _declared = False
    _received = 0
    _refused = False

    def gotLength(self, length: int | None) -> None:
        super().gotLength(length)  # the site's getContentFile: in memory
        site = self.channel.site
        self._budget = site.budget
        if length is None or length == 0:
            return
        self._declared = True
        if length > site.max_body:
            self._refuse_too_large()
        elif not site.budget.take(self, length, self._now()):
            self._refuse_busy()

    def _now(self) -> float:
        return self.channel.site.reactor.seconds()

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        site = self.channel.site
        self._received += len(data)
        if self._received > site.max_body:
            self._refuse_too_large()
            return
        if self._declared:
            site.budget.advance(self, len(data), self._now())
        elif not site.budget.take(self, len(data), self._now()):
            self._refuse_busy()
            return
        super().handleContentChunk(data)

    def give_way(self) -> None:
        """The budget needs this stalled body's share for another."""
        self._refuse(
            _answer(
                b"408 Request Timeout",
                "the body stalled while others waited for room; send it again",
            ),
            "stalled while the body budget was short",
        )

    def _refuse_too_large(self) -> None:
        limit = self.channel.site.max_body
        self._refuse(
            _answer(
                b"413 Request Entity Too Large", f"the body exceeds the limit of {limit} bytes"
            ),
            "over the body size limit",
        )

    def _refuse_busy(self) -> None:
        site = self.channel.site
        retry = b"%d" % max(1, round(site.limits.body_timeout))
        self._refuse(
            _answer(
                b"503 Service Unavailable",
                "too many request bodies are in flight; try again later",
                {b"Retry-After": retry},
            ),
            "over the in-flight body budget",
        )

    def _refuse(self, answer: bytes, reason: str) -> None:
        self._refused = True
        self._release()
        if self.content is not None:
            self.content.seek(0)
            self.content.truncate()
        self.channel.refuse(answer, reason)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            return
        if self._budget is not None:
            self._budget.whole(self)  # it is being answered: no 408 now
        super().requestReceived(command, path, version)

    def _release(self) -> None:
        if self._budget is not None:
            self._budget.give(self)

    def finish(self) -> Any:
        self._release()
        return super().finish()

    def connectionLost(self, reason: Failure) -> None:
        self._release()
        super().connectionLost(reason)


class QuietSite(Site):
    """
    A site without the per-request access log line: every delivery already
    gets a structured event saying what was done with it, and a flood of
    bad requests must not become a flood of log lines.
    """

    def log(self, request: http.Request) -> None:
        pass


class FrontDoorSite(QuietSite):
    """
    A site that closes at once the connections its door refuses (the
    listener then accepts and drops them, holding no descriptor), and gives
    its channels deadlines and its requests a shared in-memory budget.
    """

    # HTTP/1.1 only: Twisted's default wraps the channel for HTTP/2 over TLS,
    # which ghhook does not serve (GitHub speaks HTTP/1.1).
    protocol = FrontDoorChannel  # type: ignore[assignment]

    def __init__(
        self,
        resource: IResource,
        limits: Limits,
        tally: Tally,
        max_body: int,
        reactor: IReactorTime,
    ) -> None:
        # timeout=None: the channels' deadlines replace Twisted's idle timer.
        super().__init__(
            resource,
            requestFactory=CappedRequest,
            timeout=None,
            parsePOSTFormSubmission=False,
            reactor=reactor,
        )
        self.displayTracebacks = False
        self.limits = limits
        self.tally = tally
        self.max_body = max_body
        self.door = Door(limits.max_connections, limits.max_per_address)
        self.budget = Budget(limits.max_inflight)
        self.channels: set[FrontDoorChannel] = set()

    def buildProtocol(self, addr: IAddress) -> FrontDoorChannel | None:  # type: ignore[override]
        key = address_key(addr)
        why = self.door.admit(key)
        if why is not None:
            self.tally.refused(why)
            return None
        channel = cast(FrontDoorChannel, super().buildProtocol(addr))
        channel._key = key
        channel._admitted = True
        return channel

    def getContentFile(self, length: int | None) -> BytesIO:
        """
        Bodies stay in memory, within the budget: Twisted would spool each
        over 100 KB to a temporary file, so unsigned clients could fill the disk.
        """
        return BytesIO()

    def startFactory(self) -> None:
        super().startFactory()
        self.door.settle()  # a default cap is read now, after the limit was raised

    def stopFactory(self) -> None:
        """Close the connections still open, and log the last summary."""
        for channel in list(self.channels):
            channel.shut()
        self.tally.stop()
        super().stopFactory()


def make_site(
    resource: IResource,
    max_body: int = MAX_BODY,
    limits: Limits | None = None,
    tally: Tally | None = None,
    reactor: IReactorTime | None = None,
) -> FrontDoorSite:
    """
    A site for ``resource`` with the front door's limits (the defaults when
    none are given), counting its refusals in ``tally``.
    """
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = cast(IReactorTime, default_reactor)
    return FrontDoorSite(
        resource,
        limits if limits is not None else Limits(),
        tally if tally is not None else Tally(reactor),
        max_body,
        reactor,
    )
