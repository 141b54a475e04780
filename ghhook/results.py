"""
How a deploy ends, as one enum the engine, journal, metrics and pages share.

A ``str`` enum, so a member is stored in SQLite and written to JSON as its
value, and compares equal to it.
"""

from __future__ import annotations

import enum


class Result(str, enum.Enum):
    """A deploy's final result; ``queued`` and ``running`` are not results."""

    DEPLOYED = "deployed"
    UNCHANGED = "unchanged"
    FAILED = "failed"
    TIMEOUT = "timeout"
    ROLLED_BACK = "rolled_back"
    INTERRUPTED = "interrupted"
    #: The app was removed from the configuration before the deploy ran.
    CANCELLED = "cancelled"
    #: HEAD moved, but none of the app's watched paths changed: no release.
    SKIPPED = "skipped"

    def __str__(self) -> str:
        return self.value

    @property
    def bad(self) -> bool:
        """Whether the deploy failed to release what was pushed."""
        return self in (Result.FAILED, Result.TIMEOUT, Result.ROLLED_BACK)


#: Every final result's value, in a stable order (metrics start each at 0).
FINAL_RESULTS = tuple(result.value for result in Result)
