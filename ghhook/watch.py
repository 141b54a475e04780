"""
Which changed files an app watches: gitignore-style globs, matched on the
paths ``git diff --name-only`` gives.

Pure functions, so the rules are rows of a table test:

- ``*`` matches within one path segment, ``?`` one character of it, and
  ``[...]`` a class, as in gitignore;
- ``**`` matches any number of segments (``services/api/**``,
  ``**/Dockerfile``, ``docs/**/*.md``);
- a pattern without a ``/`` (but at its end) matches a file or directory of
  that name at any depth (``*.py``, ``Makefile``);
- a pattern ending in ``/`` matches a directory and everything below it;
- a leading ``/`` anchors the pattern at the top of the repository.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

#: Changed files kept and shown per deploy (git's list is cut to a step's
#: kept output, its last 40 lines, before that).
SHOWN = 50


def _segment(pattern: str) -> str:
    """One path segment's glob as a regular expression (no ``/`` in it)."""
    out = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "]") else i + 1)
            if end < 0:
                out.append(re.escape(char))
            else:
                body = pattern[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body.replace(chr(92), chr(92) * 2)}]")
                i = end
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def compile_glob(pattern: str) -> re.Pattern[str]:
    """
    A gitignore-style glob as a regular expression over a whole path.

    :raises ValueError: for an empty pattern.
    """
    text = pattern.strip()
    if not text or text in ("/", "!"):
        raise ValueError("an empty pattern matches nothing")
    directory = text.endswith("/")
    text = text.strip("/") if text.startswith("/") else text.rstrip("/")
    anchored = pattern.strip().startswith("/") or "/" in text
    parts: list[str | None] = []
    for segment in text.split("/"):
        if segment == "**":
            parts.append(None)
        else:
            parts.append(_segment(segment))
    regex = ""
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part is None:
            # "**": any number of whole segments (zero included).
            regex += ".*" if last else "(?:[^/]+/)*"
        else:
            regex += part + ("" if last else "/")
    if not anchored:
        regex = "(?:.*/)?" + regex
    # A directory's pattern (or one that names a directory) matches what is under it.
    suffix = "/.*" if directory else "(?:/.*)?"
    return re.compile(f"{regex}{suffix}", re.DOTALL)


def pathspecs(patterns: Sequence[str]) -> list[str]:
    """
    The globs as git pathspecs (``:(glob)`` magic), so that git matches
    every changed path itself, with the rules above: a pattern without a
    ``/`` matches at any depth, and one naming a directory matches below it.
    """
    specs: list[str] = []
    for pattern in patterns:
        text = pattern.strip()
        directory = text.endswith("/")
        anchored = text.startswith("/") or "/" in text.rstrip("/")
        text = text.strip("/")
        if not anchored:
            text = f"**/{text}"
        specs.append(f":(glob){text}/**")
        if not directory:
            specs.append(f":(glob){text}")
    return specs


def matching(paths: Iterable[str], patterns: Sequence[re.Pattern[str]]) -> list[str]:
    """The paths that any of ``patterns`` matches, in the order given."""
    return [path for path in paths if any(p.fullmatch(path) for p in patterns)]


__all__ = ["SHOWN", "compile_glob", "matching", "pathspecs"]
