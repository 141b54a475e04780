"""Control characters shown escaped: the one function logs and the page rely on."""

from __future__ import annotations

import pytest

from ghhook.escape import printable, segments


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain text, ünïcödé, 日本語", "plain text, ünïcödé, 日本語"),
        ("a\tb\nc", "a\tb\nc"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
        ("\x00\x01\x08\x0b\x0c\r\x1f", "\\x00\\x01\\x08\\x0b\\x0c\\x0d\\x1f"),
        ("del\x7f", "del\\x7f"),
        ("\x80\x9b2J\x9f", "\\x80\\x9b2J\\x9f"),
        ("\xa0nbsp stays", "\xa0nbsp stays"),
        ("C:\\path\\x1b as typed", "C:\\path\\x1b as typed"),
        ("", ""),
    ],
)
def test_printable(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_segments_set_each_escaped_control_apart() -> None:
    assert segments("a\x1b[1mb\x07\x07") == [
        ("a", False),
        ("\\x1b", True),
        ("[1mb", False),
        ("\\x07", True),
        ("\\x07", True),
    ]
    assert segments("") == []
    assert segments("\t\n") == [("\t\n", False)]


@pytest.mark.parametrize("text", ["", "x", "\x1b", "a\x1bb\x9bc\x7f", "\x00\x00end"])
def test_segments_join_to_printable(text: str) -> None:
    assert "".join(part for part, _ in segments(text)) == printable(text)
