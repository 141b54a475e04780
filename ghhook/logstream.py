"""
``GET /apps/<name>/deploys/<id>/log``: a deploy's output, live or kept.

While the deploy runs (its :class:`~ghhook.live.LiveOutput` is held and not
finished), the answer streams: ``text/plain`` in chunks as lines come, or,
to ``Accept: text/event-stream``, Server-Sent Events (``id: <n>``, resumable
with ``Last-Event-ID``), ending with the deploy: ``[deploy 12 deployed]``,
or ``event: end`` with the result as data. ``?follow=0`` answers what is
there now. A deploy whose live output is no longer held answers the output
the journal kept with each step (its last lines), the same way.

The stream is the request's push producer: when the client reads slowly,
its subscription pauses and catches up from the deploy's held lines, so it
costs no memory of its own. Streams are bounded in number
(:attr:`LiveDeploys.max_followers`, then 503) and in time
(:attr:`LiveDeploys.max_stream`). This module only moves lines from
:mod:`ghhook.live` (or a journal row) to a request; it is meant for a Klein
route, which finishes the request when the returned Deferred fires.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.web.iweb import IRequest
from zope.interface import implementer

from ghhook.live import (
    Line,
    LiveDeploys,
    LiveOutput,
    Subscription,
    deploy_end_line,
    end_line,
    missed_line,
    one_line,
    start_line,
)
from ghhook.web import json_body

_EVENT_ID = re.compile(rb"[0-9]{1,18}")
#: Deploy results that are no results yet (the journal's own words).
_UNFINISHED = ("queued", "running")


def wants_events(request: IRequest) -> bool:
    """Whether the request's ``Accept`` names ``text/event-stream`` (with q above 0)."""
    for header in request.requestHeaders.getRawHeaders(b"accept") or []:
        for item in header.decode("latin-1").split(","):
            media, *params = (part.strip() for part in item.split(";"))
            if media.lower() != "text/event-stream":
                continue
            quality = "1"
            for param in params:
                key, _, value = param.partition("=")
                if key.strip().lower() == "q":
                    quality = value.strip()
            try:
                if float(quality) > 0:
                    return True
            except ValueError:
                continue
    return False


def last_event_id(request: IRequest) -> int:
    """The ``Last-Event-ID`` an EventSource resumes from; 0 (from the start) if none or not ours."""
    value = request.getHeader(b"last-event-id")
    if value is None:
        return 0
    raw = value.encode("latin-1") if isinstance(value, str) else value
    return int(raw) if _EVENT_ID.fullmatch(raw.strip()) else 0


def render_log(
    request: IRequest,
    live: LiveDeploys,
    app: str,
    deploy: int,
    deploy_row: Mapping[str, Any] | None,
    follow: bool,
) -> bytes | Deferred[None]:
    """
    Answer ``app``'s deploy ``deploy``'s log (module docstring); the Klein
    route has checked that the app exists and parsed the id.

    :param deploy_row: the deploy as the journal has it (with its steps),
        None when the journal has no such deploy (or cannot be read).
    :param follow: stream a running deploy to its end; False: what there is now.
    :return: the whole answer, or a Deferred that fires once the stream ended.
    """
    events = wants_events(request)
    request.setHeader(b"Cache-Control", b"no-store")
    request.setHeader(b"Vary", b"Accept")
    output = live.get(app, deploy)
    if output is None and deploy_row is None:
        return json_body(
            request, 404, {"error": "this app has no deploy of this id in the journal"}
        )
    after = last_event_id(request) if events else 0
    # A HEAD's body is never sent: it gets the headers of what is there now.
    streams = follow and output is not None and output.result is None
    if streams and request.method != b"HEAD" and live.streams >= live.max_followers:
        return json_body(
            request,
            503,
            {
                "error": f"{live.streams} clients already follow deploys live, the most"
                " ghhook serves at once; try again later, or ask with ?follow=0"
            },
        )
    _content_headers(request, events)
    if output is None:
        assert deploy_row is not None
        return _kept(deploy, deploy_row, events, after)
    if not streams or request.method == b"HEAD":
        return _snapshot(output, events, after)
    return _Stream(request, live, output, events, after).start()


def _content_headers(request: IRequest, events: bool) -> None:
    request.setResponseCode(200)
    if events:
        request.setHeader(b"Content-Type", b"text/event-stream")
    else:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    # nginx would otherwise hold the stream until its buffer fills.
    request.setHeader(b"X-Accel-Buffering", b"no")


def _encode(lines: Iterable[Line], events: bool) -> bytes:
    if events:
        return "".join(f"id: {line.id}\ndata: {line.text}\n\n" for line in lines).encode()
    return "".join(line.text + "\n" for line in lines).encode()


def _missed(count: int, cursor: int, events: bool) -> bytes:
    """The note for ``count`` dropped lines; an event's id is the last one dropped."""
    if not count:
        return b""
    return _encode([Line(cursor, missed_line(count))], events)


def _ending(deploy: int, result: str, events: bool) -> bytes:
    if events:
        return f"event: end\ndata: {one_line(result)}\n\n".encode()
    return (deploy_end_line(deploy, result) + "\n").encode()


def _snapshot(output: LiveOutput, events: bool, after: int) -> bytes:
    """The held lines after ``after`` and, once ended, the end; a running deploy says so."""
    missed, lines = output.lines_after(after)
    body = _missed(missed, (lines[0].id - 1) if lines else output.last_id, events)
    body += _encode(lines, events)
    if output.result is not None:
        return body + _ending(output.deploy, output.result, events)
    if not events:
        body += f"[deploy {output.deploy} is still running]\n".encode()
    return body


def kept_lines(deploy_row: Mapping[str, Any]) -> list[str]:
    """
    A deploy's log from its journal row: per step its ``$ argv`` line, the
    output kept with it, and its exit line.
    """
    lines: list[str] = []
    for step in deploy_row.get("steps") or ():
        lines.append(start_line(step["argv"]))
        lines.extend(one_line(text) for text in str(step["output"] or "").splitlines())
        lines.append(
            end_line(
                step["name"],
                step["exit_code"],
                step["signal"],
                bool(step["timed_out"]),
                float(step["duration"] or 0.0),
            )
        )
    return lines


def _kept(deploy: int, deploy_row: Mapping[str, Any], events: bool, after: int) -> bytes:
    """The journal's kept output; the end if the deploy ended, else what it waits for."""
    texts = kept_lines(deploy_row)
    lines = [Line(n, text) for n, text in enumerate(texts, 1) if n > after]
    body = _encode(lines, events)
    result = deploy_row.get("result")
    if result is not None and str(result) not in _UNFINISHED:
        return body + _ending(deploy, str(result), events)
    if not events:
        if result == "queued":
            note = f"[deploy {deploy} is queued; follow it once it has started]"
        else:
            note = f"[deploy {deploy} has not finished, but its live output is not held here]"
        body += (note + "\n").encode()
    return body


@implementer(IPushProducer)
class _Stream:
    """
    One follower of a running deploy: the request's push producer and its
    subscription's :class:`~ghhook.live.Follower`.
    """

    def __init__(
        self, request: IRequest, live: LiveDeploys, output: LiveOutput, events: bool, after: int
    ) -> None:
        # Twisted's Request is a consumer; IRequest does not say so.
        self._request: Any = request
        self._live = live
        self._output = output
        self._events = events
        self._after = after
        self._subscription: Subscription | None = None
        self._timer: IDelayedCall | None = None
        self._closed = False
        self.done: Deferred[None] = Deferred(self._cancelled)

    def start(self) -> Deferred[None]:
        self._live.streams += 1
        request = self._request
        request.registerProducer(self, True)
        request.notifyFinish().addErrback(self._gone)
        self._timer = self._live.clock.callLater(self._live.max_stream, self._expire)
        # The headers now: a client waits for them with a timeout.
        request.write(b": following deploy %d\n\n" % self._output.deploy if self._events else b"")
        self._subscription = self._output.subscribe(self._after, self)
        self._subscription.start()
        return self.done

    # Follower

    def lines(self, missed: int, lines: Sequence[Line]) -> None:
        cursor = lines[0].id - 1 if lines else self._output.first_id - 1
        self._request.write(_missed(missed, cursor, self._events) + _encode(lines, self._events))

    def ended(self, result: str) -> None:
        self._request.write(_ending(self._output.deploy, result, self._events))
        self._close()

    # IPushProducer: the connection's buffer is full, has room again, is gone.

    def pauseProducing(self) -> None:
        if self._subscription is not None:
            self._subscription.pause()

    def resumeProducing(self) -> None:
        if self._subscription is not None and not self._closed:
            self._subscription.resume()

    def stopProducing(self) -> None:
        # The connection is going: Klein hears it and cancels the Deferred.
        self._close(fire=False)

    # Ends

    def _expire(self) -> None:
        self._timer = None
        paused = self._subscription is not None and self._subscription.paused
        if paused:
            # It reads nothing: a last line would only wait in its buffer.
            self._close()
            transport = getattr(self._request, "transport", None)
            if transport is not None:
                transport.abortConnection()
            return
        after = f"{self._live.max_stream:g} s"
        if self._events:
            self._request.write(f": this stream ends after {after}; resume to go on\n\n".encode())
        else:
            note = f"[this stream ends after {after}; the deploy goes on: ask again to follow it]"
            self._request.write(f"{note}\n".encode())
        self._close()

    def _gone(self, reason: object) -> None:
        """The client went away: unsubscribe; nothing is written any more."""
        self._close()

    def _cancelled(self, done: Deferred[None]) -> None:
        # Klein cancels the route's Deferred when the connection is lost.
        self._close(fire=False)

    def _close(self, fire: bool = True) -> None:
        if self._closed:
            return
        self._closed = True
        self._live.streams -= 1
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._subscription is not None:
            self._subscription.close()
        if getattr(self._request, "channel", None) is not None:  # None once it is lost
            self._request.unregisterProducer()
        if fire and not self.done.called:
            # Klein finishes the request, unless it is gone.
            self.done.callback(None)


__all__ = ["kept_lines", "last_event_id", "render_log", "wants_events"]
