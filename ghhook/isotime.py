"""Timestamps as people and log tools read them: ISO 8601 in UTC, with a ``Z``."""

from __future__ import annotations

from datetime import datetime, timezone


def iso_time(timestamp: float | None, timespec: str = "milliseconds") -> str | None:
    """A Unix time as e.g. ``2024-05-01T12:00:00.250Z``; None stays None."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")
