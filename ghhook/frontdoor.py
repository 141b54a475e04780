"""
The hook port faces the internet. This module holds what decides, before
any HTTP is parsed, how much of the daemon one client may take: how many
connections (in all and from one address), how many bytes of unverified
body it may hold in memory, and how long a request may take to arrive.
It also raises the open-file limit at start, and counts what it refuses
into one summary line every ten seconds instead of a line per refusal,
which an attacker could turn into a flood of log lines.

:mod:`ghhook.site` applies these to each connection and request.
"""

from __future__ import annotations

import ipaddress
import re
import resource
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol, cast

import attrs
from twisted.internet import tcp
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IListeningPort,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.logger import ILogObserver, Logger, LogLevel, globalLogPublisher
from zope.interface import implementer

log = Logger(namespace="ghhook.web")

#: Seconds for the request line and headers, from the connection's start.
HEADER_TIMEOUT = 10.0
#: Seconds for the whole request (headers and body), from the same start.
BODY_TIMEOUT = 60.0
#: Connections one address may hold open at once.
MAX_PER_ADDRESS = 64
#: Bytes of request bodies held in memory, before their signature is checked.
MAX_INFLIGHT = 64 * 1024 * 1024
#: Descriptors kept out of the hook's connection cap: stdio, the log, the
#: reactor's own, the listening sockets, the journal and its WAL (two
#: connections), git's pipes, the health check, and the admin listener's
#: ``ADMIN_MAX_CONNECTIONS``.
RESERVED_DESCRIPTORS = 128
#: The admin listener is for the host itself (status page, metrics): it gets
#: the hook's deadlines and a small cap of its own, so a flood of the hook
#: never locks its operator out, and it cannot starve the hook either.
ADMIN_MAX_CONNECTIONS = 32
#: Bytes of bodies in flight on the admin listener (its bodies are tiny).
ADMIN_MAX_INFLIGHT = 2 * 1024 * 1024
#: A body in flight that has not advanced by STALL_BYTES for STALL_SECONDS
#: gives its share of the budget up when another body needs it (16 KB/s
#: keeps a body going; one that could finish 25 MB in time sends 420 KB/s).
STALL_SECONDS = 4.0
STALL_BYTES = 64 * 1024
#: Bodies up to this size may use the budget's last eighth, which larger
#: ones cannot: GitHub's deliveries are mostly a few KB to a few hundred.
SMALL_BODY = 1024 * 1024
#: Seconds between two summary lines of what was refused.
SUMMARY_INTERVAL = 10.0

_SIZE = re.compile(r"(\d+)\s*([kKmMgG]?)(?:i?[bB])?")
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str) -> int:
    """A positive number of bytes: ``65536``, ``512K``, ``64M``, ``1G`` (powers of 1024)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError("not a number of bytes (e.g. 67108864, 65536K or 64M)")
    number = int(match.group(1)) * _UNITS[match.group(2).lower()]
    if number < 1:
        raise ValueError("must be a positive number of bytes")
    return number


@attrs.frozen
class Limits:
    """
    What one listener's clients may take. ``max_connections`` of None means
    what the open-file limit allows once it is raised at start (see
    :func:`default_max_connections`).
    """

    header_timeout: float = HEADER_TIMEOUT
    body_timeout: float = BODY_TIMEOUT
    max_connections: int | None = None
    max_per_address: int = MAX_PER_ADDRESS
    max_inflight: int = MAX_INFLIGHT

    def for_admin(self) -> Limits:
        """The admin listener's: the same deadlines, small caps of its own."""
        return attrs.evolve(
            self,
            max_connections=ADMIN_MAX_CONNECTIONS,
            max_per_address=ADMIN_MAX_CONNECTIONS,
            max_inflight=ADMIN_MAX_INFLIGHT,
        )


def open_file_limit() -> tuple[int, int]:
    """The soft and hard limits on open descriptors."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def default_max_connections(soft_limit: int) -> int:
    """Connections the hook may hold so that its descriptors never run out."""
    return max(1, soft_limit - RESERVED_DESCRIPTORS)


def raise_open_file_limit(
    getrlimit: Callable[[int], tuple[int, int]] = resource.getrlimit,
    setrlimit: Callable[[int, tuple[int, int]], None] = resource.setrlimit,
) -> tuple[int, int]:
    """
    Raise the soft limit on open descriptors to the hard one: the soft
    default (1,024 under systemd) is too few for a port on the internet,
    and any process may raise it up to the hard limit. Returns the soft
    limit before and after; a limit that cannot be raised stays as it was.
    """
    soft, hard = getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            return soft, soft
        return soft, target
    return soft, soft


def address_key(address: IAddress) -> str | None:
    """
    Whom a connection counts against for the per-address cap: its IPv4
    address, or the /64 an IPv6 address is in (one host usually holds a
    whole /64). None (no per-address cap) for UNIX sockets and the like.
    """
    if isinstance(address, IPv6Address):
        try:
            ip = ipaddress.IPv6Address(address.host.split("%", 1)[0])
        except ValueError:
            return address.host
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    if isinstance(address, IPv4Address):
        return address.host
    return None


class Door:
    """
    Counts open connections, in all and per address, and says why a new
    one must be closed at once: without a cap, slow clients take every
    descriptor and the listener stops accepting anyone.
    """

    TOO_MANY = "too many open"
    TOO_MANY_FROM_ONE = "too many from one address"

    def __init__(self, max_connections: int | None, max_per_address: int) -> None:
        self._max = max_connections
        self.max_per_address = max_per_address
        self.open = 0
        self._by_address: Counter[str] = Counter()

    @property
    def max_connections(self) -> int:
        """The cap; the default is read from the open-file limit when first needed."""
        if self._max is None:
            self._max = default_max_connections(open_file_limit()[0])
        return self._max

    def settle(self) -> int:
        """Fix the cap now (the default one from the current open-file limit)."""
        return self.max_connections

    def admit(self, key: str | None) -> str | None:
        """Count a new connection in, or say why it is refused."""
        if self.open >= self.max_connections:
            return self.TOO_MANY
        if key is not None:
            if self._by_address[key] >= self.max_per_address:
                return self.TOO_MANY_FROM_ONE
            self._by_address[key] += 1
        self.open += 1
        return None

    def leave(self, key: str | None) -> None:
        """Count a connection out."""
        self.open -= 1
        if key is not None:
            self._by_address[key] -= 1
            if self._by_address[key] <= 0:
                del self._by_address[key]

    def from_address(self, key: str) -> int:
        return self._by_address[key]


class Holder(Protocol):
    """A request holding part of a :class:`Budget`."""

    def give_way(self) -> None:
        """Refuse the rest of the body and give the share back (``Budget.give``)."""


@attrs.define
class _Share:
    held: int
    advanced: float  # when the body last advanced by STALL_BYTES (or began)
    since: int = 0  # bytes since then
    whole: bool = False  # all arrived: being answered, never given way


class Budget:
    """
    The bytes of request bodies held in memory before anything could check
    their signature, shared by every connection of a listener: one bound on
    what unsigned clients can make the daemon hold.

    Two rules keep room for GitHub's deliveries, which are small and sent
    at full speed, while large unsigned bodies fill the budget: the last
    eighth of it is for bodies under ``SMALL_BODY`` only; and a body that
    has not advanced by ``STALL_BYTES`` for ``STALL_SECONDS`` gives way
    when another needs room, so a byte every few seconds cannot hold a
    share until the body deadline.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.reserve = limit // 8
        self.held = 0
        self._shares: dict[Holder, _Share] = {}

    def take(self, holder: Holder, size: int, now: float) -> bool:
        """Hold ``size`` more bytes for ``holder``, if that fits, making room if it can."""
        small = self.holds(holder) + size <= SMALL_BODY
        cap = self.limit if small else self.limit - self.reserve
        if self.held + size > cap:
            self._make_room(self.held + size - cap, now, holder)
            if self.held + size > cap:
                return False
        share = self._shares.get(holder)
        if share is None:
            share = self._shares[holder] = _Share(0, now)
        share.held += size
        self.held += size
        self.advance(holder, size, now)
        return True

    def advance(self, holder: Holder, size: int, now: float) -> None:
        """``size`` bytes of ``holder``'s body arrived."""
        share = self._shares.get(holder)
        if share is None:
            return
        share.since += size
        if share.since >= STALL_BYTES:
            share.advanced, share.since = now, 0

    def whole(self, holder: Holder) -> None:
        """``holder``'s body is all there: it keeps its share until it is answered."""
        share = self._shares.get(holder)
        if share is not None:
            share.whole = True

    def give(self, holder: Holder) -> None:
        """Give back all ``holder`` holds."""
        share = self._shares.pop(holder, None)
        if share is not None:
            self.held -= share.held

    def holds(self, holder: Holder) -> int:
        share = self._shares.get(holder)
        return share.held if share is not None else 0

    def _make_room(self, needed: int, now: float, asking: Holder) -> None:
        stalled = sorted(
            (share.advanced, id(holder), holder)
            for holder, share in self._shares.items()
            if holder is not asking and not share.whole and now - share.advanced >= STALL_SECONDS
        )
        room = sum(self._shares[holder].held for _, _, holder in stalled)
        if room < needed:
            return  # evicting would not make room: refuse the newcomer instead
        for _, _, holder in stalled:
            if needed <= 0:
                break
            needed -= self._shares[holder].held
            holder.give_way()
            self.give(holder)


def _count(number: int) -> str:
    return f"{number:,}"


def _part(verb: str, noun: str, reasons: Counter[str], interval: float) -> str:
    total = sum(reasons.values())
    what = f"{verb} {_count(total)} {noun}{'' if total == 1 else 's'} in the last {interval:g} s: "
    if len(reasons) == 1:
        return what + next(iter(reasons))
    return what + ", ".join(f"{_count(n)} {reason}" for reason, n in reasons.most_common())


class Tally:
    """
    Counts refused connections and rejected requests, and logs them as one
    line at most every ``interval`` seconds: a client can cause a refusal
    per packet, and a log line per refusal would fill the journal.
    """

    def __init__(self, clock: IReactorTime, interval: float = SUMMARY_INTERVAL) -> None:
        self._clock = clock
        self.interval = interval
        self.connections: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self._flush: IDelayedCall | None = None

    def refused(self, reason: str) -> None:
        """A connection was closed at once, for ``reason``."""
        self.connections[reason] += 1
        self._later()

    def rejected(self, reason: str) -> None:
        """A request was answered with an error and its connection closed."""
        self.requests[reason] += 1
        self._later()

    def _later(self) -> None:
        if self._flush is None:
            self._flush = self._clock.callLater(self.interval, self.flush)

    def flush(self) -> None:
        """Log what was counted since the last line, if anything."""
        if self._flush is not None and self._flush.active():
            self._flush.cancel()
        self._flush = None
        parts = []
        if self.connections:
            parts.append(_part("refused", "connection", self.connections, self.interval))
        if self.requests:
            parts.append(_part("rejected", "request", self.requests, self.interval))
        if not parts:
            return
        log.warn(
            "{summary}",
            summary="; ".join(parts),
            refused=dict(self.connections),
            rejected=dict(self.requests),
        )
        self.connections = Counter()
        self.requests = Counter()

    def stop(self) -> None:
        """Log what is left now; nothing stays scheduled."""
        self.flush()


#: Twisted's accept loop logs one line per connection it closes for want of
#: a descriptor (EMFILE); these formats are counted instead.
_ACCEPT_FORMATS = {
    "EMFILE recovery: Closed socket from {address}": "no descriptor left (EMFILE)",
    "Could not accept new connection ({acceptError})": "accept() failed",
}
_ACCEPT_NOISE = (
    "EMFILE encountered; releasing reserved file descriptor.",
    "Re-reserving EMFILE recovery file descriptor.",
)


@implementer(IStreamServerEndpoint)
class QuietAccept:
    """
    An endpoint whose TCP (and UNIX) ports count the errors of accept() in
    a :class:`Tally` instead of logging a line for each. The connection cap
    keeps the daemon below its open-file limit so these should not happen;
    if the limit is reached anyway (a descriptor leak, another listener),
    one client per packet must still not mean a log line per packet.
    """

    def __init__(self, endpoint: IStreamServerEndpoint, tally: Tally) -> None:
        self.endpoint = endpoint
        self._tally = tally

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        return self.endpoint.listen(protocolFactory).addCallback(self._quiet)

    def _quiet(self, port: IListeningPort) -> IListeningPort:
        # tcp.Port reports accept() errors to its _logger (a class attribute,
        # read on every accept round): an instance attribute replaces it.
        if isinstance(port, tcp.Port) and isinstance(getattr(port, "_logger", None), Logger):
            namespace = port._logger.namespace
            observer = cast(ILogObserver, self._observe)
            port._logger = Logger(namespace=namespace, observer=observer)
        return port

    def _observe(self, event: dict[str, Any]) -> None:
        form = event.get("log_format")
        if form in _ACCEPT_FORMATS:
            reason = _ACCEPT_FORMATS[form]
            if "acceptError" in event:
                reason = f"{reason}: {event['acceptError']}"
            self._tally.refused(reason)
        elif form in _ACCEPT_NOISE and event.get("log_level") == LogLevel.info:
            pass
        else:
            globalLogPublisher(event)
