"""
The front door's policy in memory: sizes, address keys, the connection
caps, the body budget, the summary line on a Clock, the open-file limit
with a fake getrlimit, and the quieting of accept() errors.
"""

from __future__ import annotations

import resource
from typing import Any

import pytest
from twisted.internet import tcp
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.logger import capturedLogs

from ghhook.frontdoor import (
    RESERVED_DESCRIPTORS,
    SMALL_BODY,
    STALL_BYTES,
    STALL_SECONDS,
    Budget,
    Door,
    Limits,
    QuietAccept,
    Tally,
    address_key,
    default_max_connections,
    parse_size,
    raise_open_file_limit,
)


def summaries(events: Any) -> list[dict[str, Any]]:
    return [e for e in events if e.get("log_namespace") == "ghhook.web" and "summary" in e]


@pytest.mark.parametrize(
    ("text", "size"),
    [("65536", 65536), ("512K", 512 * 1024), ("64M", 64 << 20), ("64m", 64 << 20), ("1G", 1 << 30)],
)
def test_sizes_take_a_binary_suffix(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "0M", "-1", "64 MB of it", "1.5M", "64T"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_an_address_counts_by_host_and_ipv6_by_its_64() -> None:
    assert address_key(IPv4Address("TCP", "192.0.2.7", 1234)) == "192.0.2.7"
    one = address_key(IPv6Address("TCP", "2001:db8:1:2::1", 1))
    other = address_key(IPv6Address("TCP", "2001:db8:1:2:ffff::9", 2))
    assert one == other == "2001:db8:1:2::/64"
    assert address_key(IPv6Address("TCP", "2001:db8:1:3::1", 1)) != one
    assert address_key(IPv6Address("TCP", "::ffff:192.0.2.7", 1)) == "192.0.2.7"
    assert address_key(UNIXAddress(b"/run/ghhook.sock")) is None


def test_the_door_caps_connections_in_all_and_per_address() -> None:
    door = Door(max_connections=3, max_per_address=2)
    assert door.admit("a") is None and door.admit("a") is None
    assert door.admit("a") == Door.TOO_MANY_FROM_ONE
    assert door.admit("b") is None
    assert door.admit("c") == Door.TOO_MANY
    assert door.admit(None) == Door.TOO_MANY, "a UNIX socket still counts in all"
    door.leave("a")
    assert door.open == 2 and door.from_address("a") == 1
    assert door.admit("c") is None
    for key in ("a", "b", "c"):
        door.leave(key)
    assert door.open == 0 and door.from_address("a") == 0


def test_the_default_cap_leaves_room_below_the_open_file_limit() -> None:
    assert default_max_connections(65536) == 65536 - RESERVED_DESCRIPTORS
    assert default_max_connections(1024) == 1024 - RESERVED_DESCRIPTORS
    assert Door(None, 64).settle() == default_max_connections(
        resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    )


def test_the_admin_listener_keeps_the_deadlines_with_small_caps() -> None:
    hook = Limits(header_timeout=3, body_timeout=7, max_connections=5000)
    admin = hook.for_admin()
    assert (admin.header_timeout, admin.body_timeout) == (3, 7)
    assert admin.max_connections is not None and admin.max_connections < 100
    assert admin.max_inflight < hook.max_inflight


class Body:
    """A request holding part of a budget."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.gave_way = False

    def give_way(self) -> None:
        self.gave_way = True


def test_the_budget_holds_what_fits() -> None:
    budget = Budget(100)
    a, b, c = Body(budget), Body(budget), Body(budget)
    assert budget.take(a, 60, 0) and not budget.take(b, 41, 0) and budget.take(b, 40, 0)
    assert budget.held == 100 and budget.holds(a) == 60
    budget.give(a)
    assert budget.held == 40 and budget.take(c, 60, 0)
    budget.give(a)
    assert budget.held == 100, "given back once"


def test_the_last_eighth_of_the_budget_is_for_small_bodies() -> None:
    budget = Budget(16 * SMALL_BODY)
    large = [Body(budget) for _ in range(8)]
    taken = [budget.take(body, 2 * SMALL_BODY, now=0) for body in large]
    assert taken == [True] * 7 + [False], "large bodies fill seven eighths"
    grows = Body(budget)
    assert budget.take(grows, SMALL_BODY, now=0), "a small one fits"
    assert not budget.take(grows, 1, now=0), "and may not grow large in the reserve"
    assert budget.take(Body(budget), SMALL_BODY // 2, now=0)


def test_a_stalled_body_gives_way_to_one_that_needs_room() -> None:
    budget = Budget(3 * STALL_BYTES)
    trickle, steady, newcomer = Body(budget), Body(budget), Body(budget)
    assert budget.take(trickle, STALL_BYTES, now=0)
    assert budget.take(steady, STALL_BYTES, now=0)
    budget.advance(trickle, 1, now=1)  # a byte now and then is no progress
    budget.advance(steady, STALL_BYTES, now=1)
    assert budget.take(newcomer, STALL_BYTES, now=2)
    assert not budget.take(newcomer, 1, now=STALL_SECONDS - 0.1), "nothing stalled yet"
    assert budget.take(newcomer, STALL_BYTES, now=STALL_SECONDS)
    assert trickle.gave_way and not steady.gave_way
    assert budget.holds(trickle) == 0 and budget.held == 3 * STALL_BYTES


def test_a_whole_body_being_answered_never_gives_way() -> None:
    budget = Budget(2 * STALL_BYTES)
    answering, newcomer = Body(budget), Body(budget)
    assert budget.take(answering, 2 * STALL_BYTES, now=0)
    budget.whole(answering)
    assert not budget.take(newcomer, 1, now=100)
    assert not answering.gave_way


def test_no_body_gives_way_when_that_would_not_make_room() -> None:
    budget = Budget(3 * STALL_BYTES)
    stalled, steady, big = Body(budget), Body(budget), Body(budget)
    assert budget.take(stalled, STALL_BYTES, now=0)
    assert budget.take(steady, STALL_BYTES, now=99)
    assert not budget.take(big, 3 * STALL_BYTES, now=100)
    assert not stalled.gave_way and budget.holds(stalled) == STALL_BYTES


class Limit:
    """getrlimit and setrlimit over one pair of numbers."""

    def __init__(self, soft: int, hard: int, refuse: bool = False) -> None:
        self.soft, self.hard, self.refuse = soft, hard, refuse

    def get(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.soft, self.hard

    def set(self, which: int, limits: tuple[int, int]) -> None:
        if self.refuse:
            raise ValueError("not allowed")
        self.soft, self.hard = limits


def test_the_soft_open_file_limit_is_raised_to_the_hard_one() -> None:
    limit = Limit(1024, 65536)
    assert raise_open_file_limit(limit.get, limit.set) == (1024, 65536)
    assert (limit.soft, limit.hard) == (65536, 65536)
    assert raise_open_file_limit(limit.get, limit.set) == (65536, 65536)


def test_a_limit_that_cannot_be_raised_stays() -> None:
    limit = Limit(1024, 65536, refuse=True)
    assert raise_open_file_limit(limit.get, limit.set) == (1024, 1024)


class Endpoint:
    def __init__(self, port: object) -> None:
        self.port = port

    def listen(self, factory: object) -> Deferred[object]:
        return succeed(self.port)


def test_accept_errors_are_counted_not_logged_one_each() -> None:
    clock = Clock()
    tally = Tally(clock)
    port = tcp.Port(0, Factory(), reactor=MemoryReactor())
    listened: list[object] = []
    QuietAccept(Endpoint(port), tally).listen(Factory()).addCallback(listened.append)
    assert listened == [port]
    with capturedLogs() as events:
        logger = port._logger
        logger.info("EMFILE encountered; releasing reserved file descriptor.")
        for n in range(500):
            logger.info("EMFILE recovery: Closed socket from {address}", address=("10.0.0.1", n))
        logger.info("Re-reserving EMFILE recovery file descriptor.")
        logger.info("Could not accept new connection ({acceptError})", acceptError="ENOBUFS")
        logger.info("something else the port says")
        assert [e["log_format"] for e in events] == ["something else the port says"]
        clock.advance(10)
    assert summaries(events)[0]["refused"] == {
        "no descriptor left (EMFILE)": 500,
        "accept() failed: ENOBUFS": 1,
    }
