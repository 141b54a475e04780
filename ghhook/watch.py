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

#: Changed files kept and shown per deploy: the first of git's list.
SHOWN = 50


#: The POSIX classes git's globs know, as regular expression ranges.
_POSIX = {
    "alnum": "a-zA-Z0-9",
    "alpha": "a-zA-Z",
    "blank": " \\t",
    "digit": "0-9",
    "lower": "a-z",
    "space": " \\t\\n\\r\\f\\v",
    "upper": "A-Z",
    "xdigit": "0-9a-fA-F",
    "punct": re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
}


def _class(pattern: str, start: int) -> tuple[str, int] | None:
    """
    The bracket expression at ``start`` as a regex class, and the index of
    its closing ``]``; None when it is not closed (then ``[`` is literal).
    """
    i = start + 1
    negate = i < len(pattern) and pattern[i] in "!^"
    if negate:
        i += 1
    parts: list[str] = []
    first = True
    while i < len(pattern):
        char = pattern[i]
        if char == "]" and not first:
            body = "".join(parts)
            return (f"[^{body}]" if negate else f"[{body}]"), i
        first = False
        if pattern.startswith("[:", i):
            end = pattern.find(":]", i + 2)
            name = pattern[i + 2 : end] if end >= 0 else ""
            if name in _POSIX:
                parts.append(_POSIX[name])
                i = end + 2
                continue
        if char == "\\" and i + 1 < len(pattern):
            i += 1
            char = pattern[i]
        parts.append("\\" + char if char in "\\]^[-" and not (char == "-" and parts) else char)
        i += 1
    return None


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
            found = _class(pattern, i)
            if found is None:
                out.append(re.escape(char))
            else:
                regex, i = found
                # As in git's wildmatch, a class never matches a "/".
                out.append(f"(?!/){regex}")
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
