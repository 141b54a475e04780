"""
One HTTP exchange with a deadline on the whole of it, and a quiet pool.

treq's ``timeout=`` ends when the headers come, so a server that sends its
headers and then stalls would hold a health check or ``ghhook send`` for as
long as it likes; :func:`whole_answer` bounds connect, headers and body
together, and says how far the answer got.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn, TypeVar

from twisted.internet import error as internet_error
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool, ResponseDone, _HTTP11ClientFactory
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse

#: Bytes of an answer's body kept; a health URL or a hook answers in a few.
MAX_BODY = 64 * 1024

_Response = TypeVar("_Response", bound=IResponse)


class NoWholeAnswer(Exception):
    """The exchange did not finish in time; the message says how far it got."""


class BodyReader(Protocol):
    """
    Read a response's body into :attr:`done` (its first ``limit`` bytes:
    the rest is counted, not kept); cancelling :attr:`done` hangs up.

    treq's ``content()`` cannot be cancelled, and Twisted's ``readBody``
    cancels through ``abortConnection``, which the client hands the body
    no transport for: with either, a body that stalls keeps its socket
    and its waiter for as long as the server likes.
    """

    def __init__(self, response: IResponse, limit: int = MAX_BODY) -> None:
        self.code: int = response.code
        self.length: object = response.length  # an int or UNKNOWN_LENGTH
        self.received = 0
        self._limit = limit
        self._kept = 0
        self._chunks: list[bytes] = []
        self.done: Deferred[bytes] = Deferred(self._hang_up)
        response.deliverBody(self)

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self._kept < self._limit:
            data = data[: self._limit - self._kept]
            self._chunks.append(data)
            self._kept += len(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:  # cancelled: the hang-up's own loss is expected
            return
        # PotentialDataLoss: a body without a length, ended by closing (as treq takes it).
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self._chunks))
        else:
            self.done.errback(reason)

    def _hang_up(self, done: Deferred[bytes]) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def stalled(self) -> str:
        """How far the body came, for the message of a timeout."""
        of = f" of {self.length}" if isinstance(self.length, int) else ""
        return (
            f"the headers came (HTTP {self.code}) but the body stalled"
            f" after {self.received}{of} bytes"
        )


async def whole_answer(
    request: Deferred[_Response], timeout: float, clock: IReactorTime
) -> tuple[_Response, bytes]:
    """
    Await ``request``'s response and its whole body, all within ``timeout``
    seconds, or hang up and raise :class:`NoWholeAnswer`. treq's own
    ``timeout=`` ends at the headers, so a stalled body would wait forever.
    """
    reader: BodyReader | None = None

    async def exchange() -> tuple[_Response, bytes]:
        nonlocal reader
        response = await request
        reader = BodyReader(response)
        return response, await reader.done

    def expired(result: object, after: float) -> NoReturn:
        # Whatever the cancelled request failed with, the cause is the deadline.
        if reader is None:
            raise NoWholeAnswer(f"no answer within {after:g} s")
        raise NoWholeAnswer(f"no whole answer within {after:g} s: {reader.stalled()}")

    answer = Deferred.fromCoroutine(exchange())
    answer.addTimeout(timeout, clock, onTimeoutCancel=expired)
    return await answer


class _QuietClientFactory(_HTTP11ClientFactory):
    noisy = False


class QuietPool(HTTPConnectionPool):
    """
    A pool whose connections log nothing: each probe opens one, and
    Twisted logs "Starting factory"/"Stopping factory" for every one of
    them, two lines every 0.5 s of a deploy.
    """

    _factory = _QuietClientFactory


def describe_failure(e: BaseException) -> str:
    """One sentence for an error raised while connecting or reading an answer."""
    if isinstance(e, internet_error.ConnectionRefusedError):
        return "connection refused (is ghhook listening there?)"
    if isinstance(e, internet_error.DNSLookupError):
        return "the host name does not resolve"
    if isinstance(e, CancelledError):
        return "cancelled"
    # The HTTP client wraps what went wrong in a list of failures.
    reasons: Sequence[Failure] = getattr(e, "reasons", None) or ()
    for reason in reasons:
        inner = reason.value
        if inner is not None and not reason.check(CancelledError):
            detail = describe_failure(inner) if inner is not e else str(inner)
            return f"the connection failed before a whole answer came: {detail}"
    text = " ".join(str(e).split())
    if type(e).__module__.startswith("OpenSSL"):
        # pyOpenSSL's errors hold a list of (library, function, reason).
        queue = e.args[0] if e.args and isinstance(e.args[0], list) else []
        details = [str(entry[-1]) for entry in queue if isinstance(entry, tuple) and entry]
        return "TLS failed: " + ("; ".join(d for d in details if d) or text)
    if type(e).__module__ == internet_error.__name__ and text:
        return text  # Twisted's own sentences say enough
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
