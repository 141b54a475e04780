"""
Control characters made visible: ``\\x1b`` instead of an ESC byte.

Commit messages, branch names and step output come from whoever can push. An
ANSI escape sequence in them, written raw to a log, moves the cursor,
recolours or retitles the terminal of whoever reads the log or copies a line
from the status page. Where such text enters a log event, it goes through
:func:`printable`; the journal and ``/status`` keep it as it was, and the
status page shows each control as its escaped form (:func:`segments`).

Tab and newline stay: output is read line by line and tabs line it up.
A backslash is not doubled: build output is full of them (paths, regexes),
and the page sets escaped controls apart by their style.
"""

from __future__ import annotations

import re

#: C0 controls but tab and newline, DEL, and the C1 controls (U+0080 to
#: U+009F: a terminal may read U+009B as CSI, the start of an escape sequence).
CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def escaped(control: str) -> str:
    """The form one control character is shown in: ``\\x1b``."""
    return f"\\x{ord(control):02x}"


def printable(text: str) -> str:
    """``text`` with every control character but tab and newline escaped."""
    return CONTROLS.sub(lambda match: escaped(match.group()), text)


def segments(text: str) -> list[tuple[str, bool]]:
    """
    ``text`` cut into runs of plain text (``False``) and escaped controls,
    one per segment (``True``), in order, so that a page can style the
    controls; joined, the segments are :func:`printable` of ``text``.
    """
    parts: list[tuple[str, bool]] = []
    start = 0
    for match in CONTROLS.finditer(text):
        if match.start() > start:
            parts.append((text[start : match.start()], False))
        parts.append((escaped(match.group()), True))
        start = match.end()
    if start < len(text):
        parts.append((text[start:], False))
    return parts


__all__ = ["CONTROLS", "escaped", "printable", "segments"]
