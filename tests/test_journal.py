"""Checking where the journal may live, before start-up creates it."""

from __future__ import annotations

from pathlib import Path

from ghhook.journal import Journal, why_unusable


def test_a_new_file_in_a_writable_directory_is_fine(tmp_path: Path) -> None:
    assert why_unusable(str(tmp_path / "ghhook.sqlite3")) is None
    assert list(tmp_path.iterdir()) == [], "the check creates nothing"


def test_an_existing_journal_is_fine_and_nothing_is_created_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "ghhook.sqlite3"
    Journal(path).open().close()
    before = sorted(p.name for p in tmp_path.iterdir())
    assert why_unusable(str(path)) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_an_empty_file_is_an_empty_database(tmp_path: Path) -> None:
    path = tmp_path / "ghhook.sqlite3"
    path.touch()
    assert why_unusable(str(path)) is None


def test_unusable_places_say_why(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a journal\n")
    assert why_unusable(str(tmp_path)) == "is a directory"
    assert why_unusable(str(tmp_path / "missing" / "j.sqlite3")) == (
        f"no such directory: {tmp_path / 'missing'}"
    )
    assert why_unusable(str(tmp_path / "notes.txt")) == "not an SQLite database"
