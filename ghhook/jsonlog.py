"""
One JSON object per log event and line, on stdout, for journald and containers.

Use it with ``twistd --logger ghhook.jsonlog.observer ...``: twistd calls
:func:`observer` with no arguments and logs every event through the observer
it returns. Each line holds ``time`` (ISO 8601, UTC), ``level``,
``namespace``, ``text`` (the formatted message), ``traceback`` when the event
carries a failure, and every structured field whose value JSON can hold, so
that ``jq 'select(.sha == "...")'`` finds what the text only mentions.

Lines are ASCII: every control character (an ANSI escape in a commit
message, DEL, a C1 control) and everything else outside ASCII is a JSON
escape, so a line cannot act on the terminal that shows it, and ``jq``
gives back the text as it was. twistd's default text log has no such
escaping: fields that quote git or a step are escaped where they are logged
(:func:`ghhook.escape.printable`).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, TextIO

from twisted.logger import ILogObserver, formatEvent
from twisted.python.failure import Failure
from zope.interface import implementer

from ghhook.isotime import iso_time

#: Keys every line has; an event field of the same name is left out.
FIXED_KEYS = ("time", "level", "namespace", "text", "traceback")
#: Keys of old-style (twisted.python.log) events that repeat what the fixed
#: keys already say.
_LEGACY_KEYS = frozenset(
    {"message", "time", "system", "isError", "format", "why", "failure", "printed", "logLevel"}
)


def _json_value(value: object) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


def _is_legacy(event: Mapping[str, Any]) -> bool:
    # twisted.python.log.msg always sets both; twisted.logger never does.
    return "isError" in event and "message" in event


def event_record(event: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON object for one event: the fixed keys, then its fields."""
    legacy = _is_legacy(event)
    level = event.get("log_level")
    failure = event.get("log_failure")
    if failure is None and legacy:
        failure = event.get("failure")
    if legacy and isinstance(failure, Failure):
        # The old system puts the whole traceback in the text; keep it apart.
        text = str(event.get("why") or "Unhandled Error")
    else:
        text = formatEvent(dict(event))
    when = event.get("log_time")
    record: dict[str, Any] = {
        "time": iso_time(time.time() if when is None else when, "microseconds"),
        "level": getattr(level, "name", None) or "info",
        "namespace": event.get("log_namespace") or "-",
        "text": text,
    }
    if isinstance(failure, Failure):
        record["traceback"] = failure.getTraceback()
    for key, value in event.items():
        if key.startswith("log_") or key in FIXED_KEYS:
            continue
        if legacy and key in _LEGACY_KEYS:
            continue
        if _json_value(value):
            record[key] = value
    return record


@implementer(ILogObserver)
class JSONLineObserver:
    """Write each event as one JSON line to ``stream`` and flush it."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        # Threads (deferToThread, the thread pool) log too; keep lines whole.
        self._lock = threading.Lock()

    def __call__(self, event: Mapping[str, Any]) -> None:
        # ensure_ascii=False would let DEL and the C1 controls (U+009B, CSI) through raw.
        line = json.dumps(event_record(event), ensure_ascii=True) + "\n"
        with self._lock:
            self._stream.write(line)
            self._stream.flush()


def observer() -> JSONLineObserver:
    """
    The factory for ``twistd --logger ghhook.jsonlog.observer``.

    It holds on to the stdout of the moment: twistd redirects ``sys.stdout``
    into the log right after, and writing there would loop.
    """
    return JSONLineObserver(sys.stdout)


__all__ = ["FIXED_KEYS", "JSONLineObserver", "event_record", "observer"]
