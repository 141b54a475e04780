"""Timestamps for the status document and the JSON log."""

from __future__ import annotations

from ghhook.isotime import iso_time


def test_iso_time_is_utc_with_milliseconds_by_default() -> None:
    assert iso_time(0.25) == "1970-01-01T00:00:00.250Z"


def test_iso_time_to_the_microsecond_for_logs() -> None:
    assert iso_time(1_700_000_000.5, "microseconds") == "2023-11-14T22:13:20.500000Z"


def test_no_time_stays_none() -> None:
    assert iso_time(None) is None
