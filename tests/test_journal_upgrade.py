"""
A journal written before apps (schema version 0, ``tests/fixtures/journal-v0.sqlite3``)
upgraded in place at open, its history going to the one app.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import ghhook.journal
from ghhook.journal import SCHEMA_VERSION, Journal, JournalError, why_unusable

FIXTURE = Path(__file__).parent / "fixtures" / "journal-v0.sqlite3"
A, B, C, D = "a" * 40, "b" * 40, "c" * 40, "d" * 40
#: The build output of deploy 2, stored compressed (see make_journal_v0.py).
LONG = "\n".join(f"  Compiling crate-{i} v0.{i}.0 (é)" for i in range(40))


@pytest.fixture
def old(tmp_path: Path) -> Path:
    """A copy of the version 0 fixture: the fixture itself is never written."""
    path = tmp_path / "ghhook.sqlite3"
    shutil.copyfile(FIXTURE, path)
    return path


def _version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def _dump(path: Path) -> list[str]:
    """The whole database as SQL, to compare two states of a file."""
    db = sqlite3.connect(path)
    try:
        return list(db.iterdump())
    finally:
        db.close()


def _upgrades(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e.get("log_namespace") == "ghhook.journal" and "deploys" in e]


def test_the_fixture_is_a_version_0_journal() -> None:
    assert _version(FIXTURE) == 0
    db = sqlite3.connect(FIXTURE)
    columns = {row[1] for row in db.execute("PRAGMA table_info(deploys)")}
    db.close()
    assert "app" not in columns and {"subject", "author"} <= columns
    assert not Path(f"{FIXTURE}-wal").exists() and not Path(f"{FIXTURE}-shm").exists()
    assert FIXTURE.stat().st_size < 100_000


def test_the_upgrade_gives_history_and_state_to_the_app(
    old: Path, events: list[dict[str, Any]]
) -> None:
    journal = Journal(old).open(upgrade_app="blog")
    assert _version(old) == SCHEMA_VERSION == 2
    apps = {row[0] for row in journal._db.execute("SELECT app FROM deploys")}
    assert apps == {"blog"}
    blog = journal.for_app("blog")
    assert blog.get("deployed") == B
    assert blog.get("rolled_back") == C
    assert journal.get("deployed", app="app") is None, "no key stays with the default app"

    history = blog.recent_deploys()
    assert [(d["id"], d["result"], d["app"]) for d in history] == [
        (5, "interrupted", "blog"),
        (4, "failed", "blog"),
        (3, "rolled_back", "blog"),
        (2, "deployed", "blog"),
        (1, "unchanged", "blog"),
    ]
    assert [len(d["steps"]) for d in history] == [0, 3, 4, 3, 1]
    deployed = history[3]
    assert (deployed["sha"], deployed["subject"], deployed["author"]) == (
        B,
        "Add the archive",
        "Ann",
    )
    build = deployed["steps"][1]
    assert (build["name"], build["argv"], build["output"]) == ("build", ["make"], LONG)
    assert history[2]["deliveries"] == 2 and history[2]["failed_step"] == "health"
    assert blog.last_finished() == history[0]

    (upgraded,) = _upgrades(events)
    assert (upgraded["app"], upgraded["deploys"], upgraded["version"]) == ("blog", 5, 2)
    assert upgraded["log_level"].name == "info"


def test_deliveries_keep_their_ids_and_gain_the_app(old: Path) -> None:
    journal = Journal(old).open(upgrade_app="blog")
    rows = journal._db.execute("SELECT delivery, app FROM deliveries ORDER BY seq").fetchall()
    assert [tuple(row) for row in rows] == [
        ("delivery-b", "blog"),
        ("delivery-c", "blog"),
        ("delivery-other", None),  # ignored: no app took it
        ("delivery-d", "blog"),
        (None, None),  # a ping
    ]
    assert journal.seen_delivery("delivery-b")
    assert journal.add_delivery("delivery-b", "push", "accepted", 1.0, B, apps=["api"]) is None, (
        "a redelivery of a delivery from before the upgrade is a duplicate"
    )


def test_another_app_starts_its_own_history_after_the_upgrade(old: Path) -> None:
    journal = Journal(old).open(upgrade_app="blog")
    api = journal.for_app("api")
    assert api.get("deployed") is None
    assert api.recent_deploys() == [] and api.last_finished() is None
    deploy = api.queue_deploy("push", "delivery-api", D, 2.0)
    assert deploy == 6, "deploy ids go on after the old ones, never reused"
    api.finish_deploy(deploy, "deployed", D, 3.0, state={"deployed": D})
    assert api.get("deployed") == D
    assert journal.for_app("blog").get("deployed") == B
    assert [d["id"] for d in api.recent_deploys()] == [6]
    assert [d["id"] for d in journal.for_app("blog").recent_deploys()] == [5, 4, 3, 2, 1]
    assert [d["id"] for d in journal.recent_deploys()] == [6, 5, 4, 3, 2, 1]


def test_a_deleted_newest_deploy_id_is_not_reused(old: Path) -> None:
    db = sqlite3.connect(old)
    db.execute("DELETE FROM steps WHERE deploy = 5")
    db.execute("DELETE FROM deploys WHERE id = 5")
    db.commit()
    db.close()
    journal = Journal(old).open(upgrade_app="blog")
    assert journal.for_app("blog").queue_deploy("catch-up", None, None, 2.0) == 6


def test_opening_an_upgraded_journal_again_changes_nothing(
    old: Path, events: list[dict[str, Any]]
) -> None:
    Journal(old).open(upgrade_app="blog").close()
    before = _dump(old)
    events.clear()
    journal = Journal(old).open(upgrade_app="other")
    journal.close()
    assert _dump(old) == before
    assert _upgrades(events) == []


def test_a_failed_upgrade_leaves_the_old_journal_as_it_was(
    old: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _dump(old)
    # The deploys are rebuilt first; the state table then fails to build.
    monkeypatch.setattr(ghhook.journal, "_STATE", "CREATE TABLE {name} (")
    with pytest.raises(JournalError, match="cannot open the journal"):
        Journal(old).open(upgrade_app="blog")
    assert _dump(old) == before
    assert _version(old) == 0
    monkeypatch.undo()
    assert Journal(old).open(upgrade_app="blog").for_app("blog").get("deployed") == B


def test_a_journal_of_a_newer_ghhook_is_refused_and_left_alone(old: Path) -> None:
    db = sqlite3.connect(old)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    before = _dump(old)
    with pytest.raises(JournalError) as raised:
        Journal(old).open(upgrade_app="blog")
    message = str(raised.value)
    assert "written by a newer ghhook" in message and str(old) in message
    assert "\n" not in message
    assert _dump(old) == before and _version(old) == SCHEMA_VERSION + 1
    why = why_unusable(str(old))
    assert why is not None and why.startswith("was written by a newer ghhook")


def _shape(db: sqlite3.Connection) -> dict[str, Any]:
    tables = [
        row[0]
        for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'sqlite_sequence'"
            " ORDER BY name"
        )
    ]
    return {
        "tables": {
            t: [tuple(row)[1:] for row in db.execute(f"PRAGMA table_info({t})")] for t in tables
        },
        "indexes": {
            t: sorted(tuple(row)[1:3] for row in db.execute(f"PRAGMA index_list({t})"))
            for t in tables
        },
    }


def test_a_new_journal_is_created_at_the_current_version_in_the_upgraded_shape(
    old: Path, tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    fresh = Journal(tmp_path / "new.sqlite3").open()
    assert _version(tmp_path / "new.sqlite3") == SCHEMA_VERSION
    assert _upgrades(events) == [], "a new file is no upgrade"
    upgraded = Journal(old).open(upgrade_app="blog")
    assert _shape(fresh._db) == _shape(upgraded._db)


def test_a_version_1_journal_gains_the_outbox_and_keeps_its_deploys(tmp_path: Path) -> None:
    """Version 1 (apps, before reports) to 2: the outbox table is added, nothing else moves."""
    path = tmp_path / "ghhook.sqlite3"
    journal = Journal(path).open()
    deploy = journal.queue_deploy("push", "d-1", "a" * 40, 1.0, app="blog")
    journal.close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE outbox")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()

    journal = Journal(path).open()
    assert _version(path) == 2
    assert [d["id"] for d in journal.recent_deploys(app="blog")] == [deploy]
    assert journal.due_reports(now=2.0) == []
    journal.close()


def test_a_journal_of_the_previous_release_gains_the_outbox_and_the_new_columns(
    tmp_path: Path,
) -> None:
    """The fixture journal-v1.sqlite3, as the release before reports wrote it."""
    path = tmp_path / "ghhook.sqlite3"
    shutil.copy(Path(__file__).parent / "fixtures" / "journal-v1.sqlite3", path)
    assert _version(path) == 1
    journal = Journal(path).open(upgrade_app="blog")
    assert _version(path) == SCHEMA_VERSION == 2
    blog = journal.for_app("blog")
    history = blog.recent_deploys()
    assert [(d["result"], d["requested_by"], d["changed"]) for d in history] == [
        ("rolled_back", None, None),
        ("deployed", None, None),
    ]
    assert blog.get("deployed") == "a" * 40 and blog.get("rolled_back") == "b" * 40
    deploy = blog.queue_deploy("rollback", None, "a" * 40, 2000.0, requested_by="alice")
    blog.finish_deploy(deploy, "skipped", "c" * 40, 2001.0, changed=[])
    assert blog.deploy(deploy) is not None and blog.deploy(deploy)["requested_by"] == "alice"
    assert journal.due_reports(now=3000.0) == []
    journal.close()
