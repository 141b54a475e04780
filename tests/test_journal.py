"""The journal: where it may live, and how it fails and recovers."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ghhook.journal import (
    PROBE_INTERVAL,
    WAL_TRUNCATE_AT,
    Journal,
    JournalError,
    why_unusable,
)
from ghhook.runner import StepResult
from tests.fakes import fill_disk


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


# Faults: each is a JournalError with one line, remembered until a write works.


class Ticks:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_write_while_another_process_holds_the_lock_fails_and_health_says_why(
    tmp_path: Path,
) -> None:
    ticks = Ticks()
    journal = Journal(tmp_path / "j.sqlite3", busy_timeout=0.01, clock=ticks).open()
    other = sqlite3.connect(tmp_path / "j.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # a sqlite3 shell, a backup
    with pytest.raises(JournalError, match="database is locked"):
        journal.put("deployed", "a" * 40)
    assert journal.health() is not None and "locked" in journal.health()
    other.execute("ROLLBACK")
    assert journal.health() is not None, "probes at most every PROBE_INTERVAL s"
    ticks.now += PROBE_INTERVAL
    assert journal.health() is None
    journal.put("deployed", "a" * 40)
    assert journal.get("deployed") == "a" * 40


def test_a_transaction_that_fails_runs_none_of_its_changes(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3").open()
    disk = fill_disk(journal)
    changes: list[str] = []
    with journal.transaction():
        journal.add_delivery("d-1", "push", "accepted", 1.0)
        journal.on_commit(lambda: changes.append("d-1"))
        assert changes == [], "nothing changes before the commit"
    assert changes == ["d-1"]
    disk.full = True
    with pytest.raises(JournalError, match="disk is full"), journal.transaction():
        journal.add_delivery("d-2", "push", "accepted", 1.0)
        journal.on_commit(lambda: changes.append("d-2"))
    assert changes == ["d-1"]
    disk.full = False
    assert not journal.seen_delivery("d-2"), "the failed transaction left nothing"


def _corrupt_the_delivery_index(path: Path, journal: Journal) -> None:
    page = journal._db.execute(
        "SELECT rootpage FROM sqlite_master WHERE name LIKE 'sqlite_autoindex_deliveries%'"
    ).fetchone()[0]
    size = journal._db.execute("PRAGMA page_size").fetchone()[0]
    with path.open("r+b") as f:
        f.seek((page - 1) * size)
        f.write(b"\0" * size)


def test_a_zeroed_page_fails_deliveries_and_health_until_the_journal_is_sound(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.sqlite3"
    journal = Journal(path).open()
    journal.checkpoint_elsewhere()
    for i in range(2000):
        journal.add_delivery(f"d-{i}", "push", "accepted", 1.0, "a" * 40)
    journal.checkpoint()
    _corrupt_the_delivery_index(path, journal)
    journal._db.execute("PRAGMA shrink_memory")  # forget the pages it cached
    with pytest.raises(JournalError, match="is corrupt"):
        journal.add_delivery("d-new", "push", "accepted", 1.0)
    problem = journal.health()
    assert problem is not None and "move it aside" in problem and str(path) in problem
    journal.close()
    with pytest.raises(JournalError, match=r"is corrupt.*move it aside"):
        Journal(path).open()
    why = why_unusable(str(path))
    assert why is not None and why.startswith("is corrupt")
    assert "\n" not in why


def test_deploys_beyond_keep_deploys_are_pruned_with_their_steps(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3", keep_deploys=5).open()
    step = StepResult("pull", ("git", "pull"), 0, None, False, 1.0, 0.5, "out\n" * 40)
    for _ in range(30):
        deploy = journal.queue_deploy("push", None, "a" * 40, 1.0)
        journal.add_step(deploy, 1, step)
        journal.finish_deploy(deploy, "deployed", "a" * 40, 2.0)
    kept = journal.recent_deploys(100)
    assert [d["id"] for d in kept] == [30, 29, 28, 27, 26]
    assert all(len(d["steps"]) == 1 for d in kept)
    assert journal._db.execute("SELECT COUNT(*) FROM steps").fetchone()[0] == 5


def test_a_wal_past_its_limit_is_truncated_by_the_next_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    journal = Journal(path).open()
    journal.checkpoint_elsewhere()
    wal = Path(f"{path}-wal")
    i = 0
    while wal.stat().st_size <= WAL_TRUNCATE_AT:
        journal.add_delivery(f"d-{i}", "push", "accepted", 1.0, "a" * 40)
        i += 1
    assert journal.checkpoint() == "TRUNCATE"
    assert wal.stat().st_size == 0
    journal.add_delivery("d-after", "push", "accepted", 1.0)
    assert journal.checkpoint() == "PASSIVE"


def test_an_older_journal_gains_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE deploys (id INTEGER PRIMARY KEY AUTOINCREMENT, trigger TEXT NOT NULL,"
        " delivery TEXT, deliveries INTEGER NOT NULL DEFAULT 0, target TEXT, before TEXT,"
        " sha TEXT, result TEXT NOT NULL, failed_step TEXT, error TEXT, queued REAL NOT NULL,"
        " started REAL, finished REAL)"
    )
    old.commit()
    old.close()
    journal = Journal(path).open()
    deploy = journal.queue_deploy("push", None, "a" * 40, 1.0)
    journal.finish_deploy(deploy, "deployed", "a" * 40, 2.0, subject="Fix it", author="Ann")
    assert journal.recent_deploys(1)[0]["subject"] == "Fix it"


def test_long_step_output_is_kept_compressed_and_read_back_whole(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3").open()
    deploy = journal.queue_deploy("push", None, "a" * 40, 1.0)
    long = "\n".join(f"  Compiling crate-{i} v0.{i}.0 (é)" for i in range(40))
    for seq, output in enumerate(("short", long), 1):
        step = StepResult("build", ("make",), 0, None, False, 1.0, 0.5, output)
        journal.add_step(deploy, seq, step)
    steps = journal.recent_deploys(1)[0]["steps"]
    assert [s["output"] for s in steps] == ["short", long]
    stored = journal._db.execute("SELECT length(output) FROM steps WHERE seq = 2").fetchone()[0]
    assert stored < len(long.encode()) / 3
