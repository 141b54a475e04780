"""
A running deploy's output, held in memory for whoever follows it live.

Each deploy that runs gets a :class:`LiveOutput`: the lines its steps log
(:meth:`ghhook.runner.ProcessRunner.run`'s ``on_line``), a ``$ argv`` line
as each step starts and a ``[build exited with 0 in 1.2 s]`` line as it
ends, each with an id counting from 1 (an SSE event id). Only the newest
lines are held (:data:`MAX_LINES`, :data:`MAX_CHARS`); ids go on counting,
so a reader that resumes after a dropped line is told how many it missed.

A follower is a :class:`Subscription`: a cursor into those lines, which
delivers to its :class:`Follower` only while not paused. A follower whose
connection is slow pauses it (its request's push producer) and catches up
from the held lines when resumed, so a slow reader costs a cursor, never a
queue of its own: memory stays bounded by the deploy's held lines.

:class:`LiveDeploys` is the registry per app and deploy id: running deploys,
and the last :data:`KEEP_FINISHED` finished ones (a ``logs -f`` arriving just
after the end still gets all of it), plus the count of open followers.
"""

from __future__ import annotations

import collections
import shlex
from collections.abc import Sequence
from typing import Protocol

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ghhook.escape import printable
from ghhook.runner import StepResult

log = Logger(namespace="ghhook.live")

#: Lines held per deploy; older ones are dropped (their ids stay counted).
MAX_LINES = 5_000
#: Characters held per deploy, lines counted with their newline.
MAX_CHARS = 1024 * 1024
#: A line longer than this is cut: the runner's lines reach 64 KiB raw,
#: four times that once escaped.
MAX_LINE_CHARS = 16 * 1024
#: Lines delivered to a follower in one call: one write to its connection.
BATCH_LINES = 256
#: Finished deploys whose output stays held, newest kept.
KEEP_FINISHED = 20
#: Followers streaming at once over every deploy; more are refused (503).
MAX_FOLLOWERS = 64
#: Seconds one stream may last; it then ends with a line saying so.
MAX_STREAM = 3600.0


def one_line(text: str) -> str:
    """``text`` as one printable line: controls and newlines escaped, long ones cut."""
    text = printable(text).replace("\n", "\\x0a")
    if len(text) > MAX_LINE_CHARS:
        cut = len(text) - MAX_LINE_CHARS
        text = f"{text[:MAX_LINE_CHARS]} ... [{cut:,} more characters cut]"
    return text


def start_line(argv: Sequence[str]) -> str:
    """The line that opens a step: its argv as a shell would read it."""
    return one_line("$ " + shlex.join(argv))


def end_line(
    name: str, exit_code: int | None, signal: int | None, timed_out: bool, duration: float
) -> str:
    """The line that closes a step: ``[build exited with 0 in 1.2 s]``."""
    if timed_out:
        what = f"{name} timed out after {duration:.1f} s"
    elif signal is not None:
        what = f"{name} was killed by signal {signal} after {duration:.1f} s"
    elif exit_code is None:
        what = f"{name} could not be started"
    else:
        what = f"{name} exited with {exit_code} in {duration:.1f} s"
    return one_line(f"[{what}]")


def deploy_end_line(deploy: int, result: str) -> str:
    """The last line of a deploy's log: ``[deploy 12 deployed]``."""
    return one_line(f"[deploy {deploy} {result}]")


def missed_line(count: int) -> str:
    """What a reader is told in place of lines no longer held."""
    return f"[... {count:,} earlier lines are no longer held]"


@attrs.frozen
class Line:
    """One line of a deploy's live output; ``id`` counts from 1."""

    id: int
    text: str


class Follower(Protocol):
    """Who a :class:`Subscription` delivers to (a stream, in :mod:`ghhook.logstream`)."""

    def lines(self, missed: int, lines: Sequence[Line]) -> None:
        """
        The next lines, in order; ``missed`` lines before them were dropped
        before this follower could read them (usually 0).
        """

    def ended(self, result: str) -> None:
        """The deploy ended with ``result`` and every line was delivered."""


class Subscription:
    """
    One follower's cursor into a :class:`LiveOutput`. Made by
    :meth:`LiveOutput.subscribe`; it delivers nothing until :meth:`start`.
    """

    def __init__(self, output: LiveOutput, after: int, follower: Follower) -> None:
        self.output = output
        #: The id of the last line delivered (or skipped).
        self.cursor = after
        self.paused = False
        self.closed = False
        self._follower = follower
        self._pumping = False

    def start(self) -> None:
        """Deliver the held lines after the cursor, then each new line."""
        self._pump()

    def pause(self) -> None:
        """Deliver nothing until :meth:`resume`: lines wait in the output."""
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self._pump()

    def close(self) -> None:
        """Deliver nothing more; idempotent."""
        self.closed = True
        self.output._subscriptions.discard(self)

    def _pump(self) -> None:
        # A follower's write may pause it, or resume it from inside a
        # delivery: the loop below then goes on, without a second one.
        if self._pumping:
            return
        self._pumping = True
        try:
            while not self.closed and not self.paused:
                missed, lines = self.output.lines_after(self.cursor, BATCH_LINES)
                if not lines and not missed:
                    if self.output.result is not None:
                        self.close()
                        self._follower.ended(self.output.result)
                    return
                self.cursor = lines[-1].id if lines else self.cursor + missed
                self._follower.lines(missed, lines)
        except Exception:  # noqa: BLE001 - logged; the other followers go on
            self.close()
            log.failure("a follower of deploy {deploy} failed", deploy=self.output.deploy)
        finally:
            self._pumping = False


class LiveOutput:
    """
    One deploy's output as it is produced: bounded, numbered, followed.

    :param deploy: the deploy's id, for the lines that name it.
    """

    def __init__(self, deploy: int, max_lines: int = MAX_LINES, max_chars: int = MAX_CHARS) -> None:
        self.deploy = deploy
        #: The deploy's result once it ended, else None.
        self.result: str | None = None
        #: The id of the newest line; 0 before the first.
        self.last_id = 0
        self._max_lines = max_lines
        self._max_chars = max_chars
        self._lines: collections.deque[Line] = collections.deque()
        self._chars = 0
        self._subscriptions: set[Subscription] = set()

    @property
    def first_id(self) -> int:
        """The id of the oldest line held (``last_id + 1`` when none is)."""
        return self._lines[0].id if self._lines else self.last_id + 1

    @property
    def followers(self) -> int:
        return len(self._subscriptions)

    def add(self, text: str) -> None:
        """
        Add one line (made printable, cut if long) and deliver it; the
        runner's ``on_line``. Lines after the end are ignored.
        """
        if self.result is not None:
            return
        self.last_id += 1
        line = Line(self.last_id, one_line(text))
        self._lines.append(line)
        self._chars += len(line.text) + 1
        # The newest line always stays, whatever its size.
        while len(self._lines) > 1 and (
            len(self._lines) > self._max_lines or self._chars > self._max_chars
        ):
            self._chars -= len(self._lines.popleft().text) + 1
        self._deliver()

    def step_started(self, argv: Sequence[str]) -> None:
        """A step starts: its ``$ argv`` line."""
        self.add(start_line(argv))

    def step_ended(self, result: StepResult) -> None:
        """A step ended: why it could not start, if so, then its exit line."""
        if result.exit_code is None and result.signal is None and not result.timed_out:
            for text in result.output.splitlines():
                self.add(text)
        self.add(
            end_line(
                result.name, result.exit_code, result.signal, result.timed_out, result.duration
            )
        )

    def finish(self, result: str) -> None:
        """
        The deploy ended: every subscription hears ``result`` once it has
        its lines (a paused one when it resumes). Only the first call counts.
        """
        if self.result is not None:
            return
        self.result = str(result)
        self._deliver()

    def lines_after(self, after: int, limit: int | None = None) -> tuple[int, list[Line]]:
        """
        The held lines after id ``after`` (at most ``limit``), and how many
        lines after it are no longer held.
        """
        after = max(0, min(after, self.last_id))
        first = self.first_id
        missed = max(0, first - 1 - after)
        start = max(after + 1, first) - first
        stop = len(self._lines) if limit is None else min(len(self._lines), start + limit)
        # Indexing a deque is O(1) near its ends, where readers are.
        return missed, [self._lines[i] for i in range(start, stop)]

    def subscribe(self, after: int, follower: Follower) -> Subscription:
        """
        Follow the lines after id ``after`` (0: all of them): call
        :meth:`Subscription.start` to have the backlog and then each new line
        delivered to ``follower``, then the end.
        """
        subscription = Subscription(self, max(0, min(after, self.last_id)), follower)
        self._subscriptions.add(subscription)
        return subscription

    def _deliver(self) -> None:
        for subscription in list(self._subscriptions):
            subscription._pump()


class LiveDeploys:
    """
    The live outputs of running deploys and of the last ``keep_finished``
    finished ones, per app and deploy id; and the count of open streams.

    :param clock: times the streams (:data:`MAX_STREAM`).
    """

    def __init__(
        self,
        clock: IReactorTime,
        keep_finished: int = KEEP_FINISHED,
        max_followers: int = MAX_FOLLOWERS,
        max_stream: float = MAX_STREAM,
    ) -> None:
        self.clock = clock
        self.max_followers = max_followers
        self.max_stream = max_stream
        #: Streams open now, over every deploy (:mod:`ghhook.logstream` counts).
        self.streams = 0
        self._keep_finished = keep_finished
        self._running: dict[tuple[str, int], LiveOutput] = {}
        self._finished: collections.OrderedDict[tuple[str, int], LiveOutput] = (
            collections.OrderedDict()
        )

    def start(self, app: str, deploy: int) -> LiveOutput:
        """
        The output of ``app``'s deploy ``deploy``, made now (or the one made
        already, if it has not finished). An app runs one deploy at a time:
        an unfinished output of another of its deploys is ended ``unknown``,
        so an end that was never told cannot keep it forever.
        """
        key = (app, deploy)
        output = self._running.get(key)
        if output is not None:
            return output
        for other_app, other in list(self._running):
            if other_app == app:
                self.finish(other_app, other, "unknown")
        output = self._running[key] = LiveOutput(deploy)
        return output

    def finish(self, app: str, deploy: int, result: str) -> None:
        """``app``'s deploy ``deploy`` ended: end its followers, keep its output a while."""
        key = (app, deploy)
        output = self._running.pop(key, None)
        if output is None:
            return
        output.finish(result)
        self._finished[key] = output
        while len(self._finished) > self._keep_finished:
            self._finished.popitem(last=False)

    def get(self, app: str, deploy: int) -> LiveOutput | None:
        """The output held for ``app``'s deploy ``deploy``, running or finished, if any."""
        key = (app, deploy)
        return self._running.get(key) or self._finished.get(key)

    def forget_app(self, app: str) -> None:
        """Drop the finished outputs of an app removed from the config."""
        for key in [key for key in self._finished if key[0] == app]:
            del self._finished[key]


__all__ = [
    "KEEP_FINISHED",
    "MAX_CHARS",
    "MAX_FOLLOWERS",
    "MAX_LINES",
    "MAX_STREAM",
    "Follower",
    "Line",
    "LiveDeploys",
    "LiveOutput",
    "Subscription",
    "deploy_end_line",
    "end_line",
    "missed_line",
    "one_line",
    "start_line",
]
