"""
The journal: where it may live, how it fails and recovers, and how the apps
of one daemon share it (their deploys and state apart, deliveries in common).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from ghhook.journal import (
    DAEMON,
    PROBE_INTERVAL,
    WAL_TRUNCATE_AT,
    AppJournal,
    Journal,
    JournalError,
    why_unusable,
)
from ghhook.results import Result
from ghhook.runner import StepResult
from tests.fakes import fill_disk

A, B, C = "a" * 40, "b" * 40, "c" * 40
STEP = StepResult("pull", ("git", "pull"), 0, None, False, 1.0, 0.5, "out\n" * 40)


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
    blog = journal.for_app("blog")
    with pytest.raises(JournalError, match="database is locked"):
        blog.put("deployed", A)
    assert blog.fault is not None and "locked" in blog.fault
    problem = journal.health()
    assert problem is not None and "locked" in problem
    other.execute("ROLLBACK")
    assert blog.health() is not None, "probes at most every PROBE_INTERVAL s"
    ticks.now += PROBE_INTERVAL
    assert blog.health() is None
    assert journal.get("probe", app=DAEMON) is not None, "the probe is the daemon's key"
    assert blog.get("probe") is None
    blog.put("deployed", A)
    assert blog.get("deployed") == A


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


def _finished(view: AppJournal, n: int) -> list[int]:
    """``n`` deploys of one app, each with a step, ended deployed."""
    ids = []
    for _ in range(n):
        deploy = view.queue_deploy("push", None, A, 1.0)
        view.add_step(deploy, 1, STEP)
        view.finish_deploy(deploy, "deployed", A, 2.0)
        ids.append(deploy)
    return ids


def _step_owners(journal: Journal) -> set[int]:
    return {row[0] for row in journal._db.execute("SELECT deploy FROM steps")}


def test_deploys_beyond_keep_deploys_are_pruned_per_app_with_their_steps(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3", keep_deploys=3).open()
    blog, api = journal.for_app("blog"), journal.for_app("api")
    api_ids = _finished(api, 2)
    # An old queued deploy of the blog's (an engine waiting for its turn)
    # and a running one: neither is pruned, however old.
    queued = blog.queue_deploy("push", None, B, 1.0)
    running = blog.queue_deploy("push", None, B, 1.0)
    blog.start_deploy(running, 1.5)
    blog.add_step(running, 1, STEP)
    blog_ids = _finished(blog, 10)
    kept = [d["id"] for d in blog.recent_deploys(100)]
    assert kept == [*blog_ids[:-4:-1], running, queued]
    assert [d["id"] for d in api.recent_deploys(100)] == api_ids[::-1], (
        "another app's busy history does not push the quiet app's out"
    )
    assert _step_owners(journal) == set(blog_ids[-3:]) | set(api_ids) | {running}
    _finished(api, 2)
    assert len(api.recent_deploys(100)) == 3
    assert len(blog.recent_deploys(100)) == 5, "pruning one app leaves the others alone"


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
    journal = Journal(path).open(upgrade_app="blog")
    blog = journal.for_app("blog")
    deploy = blog.queue_deploy("push", None, A, 1.0)
    blog.finish_deploy(deploy, "deployed", A, 2.0, subject="Fix it", author="Ann")
    assert blog.recent_deploys(1)[0]["subject"] == "Fix it"


def test_long_step_output_is_kept_compressed_and_read_back_whole(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3").open().for_app("blog")
    deploy = journal.queue_deploy("push", None, A, 1.0)
    long = "\n".join(f"  Compiling crate-{i} v0.{i}.0 (é)" for i in range(40))
    for seq, output in enumerate(("short", long), 1):
        step = StepResult("build", ("make",), 0, None, False, 1.0, 0.5, output)
        journal.add_step(deploy, seq, step)
    steps = journal.recent_deploys(1)[0]["steps"]
    assert [s["output"] for s in steps] == ["short", long]
    stored = journal.journal._db.execute(
        "SELECT length(output) FROM steps WHERE seq = 2"
    ).fetchone()[0]
    assert stored < len(long.encode()) / 3


# Apps: one journal, each app's deploys and state its own.


def test_two_apps_state_keys_do_not_collide(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3").open()
    blog, api = journal.for_app("blog"), journal.for_app("api")
    blog.put("deployed", A)
    api.put("deployed", B)
    journal.put("deployed", C, app=DAEMON)
    assert (blog.get("deployed"), api.get("deployed")) == (A, B)
    assert journal.get("deployed", app=DAEMON) == C
    blog.forget("deployed")
    assert (blog.get("deployed"), api.get("deployed")) == (None, B)
    # What a deploy leaves is recorded under its app, in its transaction.
    deploy = api.queue_deploy("push", None, C, 1.0)
    api.finish_deploy(deploy, "rolled_back", C, 2.0, state={"rolled_back": C})
    assert (blog.get("rolled_back"), api.get("rolled_back")) == (None, C)


#: Who closes what a stop left open: (the call, the apps whose deploys it closes).
CLOSERS: list[tuple[str, Any, set[str]]] = [
    ("one app's engine", lambda j, t: j.for_app("blog").close_unfinished(t), {"blog"}),
    ("one app, by name", lambda j, t: j.close_unfinished(t, app="api"), {"api"}),
    ("every app", lambda j, t: j.close_unfinished(t), {"blog", "api", "gone"}),
    (
        "apps no longer configured",
        lambda j, t: j.close_unfinished(t, exclude={"blog", "api"}),
        {"gone"},
    ),
]


@pytest.mark.parametrize(("who", "close", "apps"), CLOSERS, ids=[c[0] for c in CLOSERS])
def test_close_unfinished_closes_only_the_apps_it_is_asked_for(
    tmp_path: Path, who: str, close: Any, apps: set[str]
) -> None:
    journal = Journal(tmp_path / "j.sqlite3").open()
    left: dict[int, tuple[str, str]] = {}
    for app in ("blog", "api", "gone"):
        view = journal.for_app(app)
        _finished(view, 1)
        running = view.queue_deploy("push", None, A, 1.0)
        view.start_deploy(running, 1.5)
        queued = view.queue_deploy("push", None, B, 1.6)
        left[running] = (app, "ghhook stopped during this deploy; the next start caught up")
        left[queued] = (app, "ghhook stopped before this deploy ran; the next start caught up")
    closed = close(journal, 9.0)
    assert closed == sorted(d for d, (app, _) in left.items() if app in apps)
    rows = {d["id"]: d for d in journal.recent_deploys(100)}
    for deploy, (app, why) in left.items():
        if app in apps:
            assert (rows[deploy]["result"], rows[deploy]["error"]) == ("interrupted", why)
            assert rows[deploy]["finished"] == 9.0
        else:
            assert rows[deploy]["result"] in ("queued", "running"), f"{app}'s was left alone"
    assert close(journal, 10.0) == [], "nothing is closed twice"


def test_a_delivery_id_is_seen_once_whichever_apps_it_reached(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3").open()
    seq = journal.add_delivery("d-1", "push", "received", 1.0, A)
    assert seq is not None
    journal.settle_delivery(seq, "accepted", 7, apps=["blog", "api"])
    assert journal.add_delivery("d-1", "push", "received", 2.0, A, apps=["docs"]) is None
    assert journal.seen_delivery("d-1")

    def app_of(seq: int) -> str | None:
        row = journal._db.execute("SELECT app FROM deliveries WHERE seq = ?", (seq,)).fetchone()
        return None if row[0] is None else str(row[0])

    assert app_of(seq) == "blog,api"
    other = journal.add_delivery("d-2", "push", "received", 3.0, A, apps=["blog"])
    assert other is not None and app_of(other) == "blog"
    journal.settle_delivery(other, "accepted", 8)
    assert app_of(other) == "blog", "no apps given: what add_delivery recorded stays"
    journal.settle_delivery(other, "ignored", apps=[])
    assert app_of(other) is None, "no app took it"


@pytest.mark.parametrize(
    "result", [Result.DEPLOYED, "deployed", Result.CANCELLED, "timeout"], ids=repr
)
def test_finish_deploy_takes_a_result_or_its_value(tmp_path: Path, result: Result | str) -> None:
    blog = Journal(tmp_path / "j.sqlite3").open().for_app("blog")
    deploy = blog.queue_deploy("push", None, A, 1.0)
    blog.finish_deploy(deploy, result, A, 2.0)
    row = blog.journal._db.execute("SELECT result, typeof(result) FROM deploys").fetchone()
    assert tuple(row) == (Result(result).value, "text")
    assert blog.recent_deploys()[0]["result"] == Result(result)


@pytest.mark.parametrize("result", ["queued", "running", "unknown"])
def test_finish_deploy_refuses_what_is_no_final_result(tmp_path: Path, result: str) -> None:
    blog = Journal(tmp_path / "j.sqlite3").open().for_app("blog")
    deploy = blog.queue_deploy("push", None, A, 1.0)
    with pytest.raises(ValueError):
        blog.finish_deploy(deploy, result, A, 2.0)
    assert blog.recent_deploys()[0]["result"] == "queued"


def test_a_removed_apps_queued_deploy_is_cancelled(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3").open()
    gone = journal.for_app("gone")
    first = gone.queue_deploy("push", "d-1", A, 1.0)
    second = gone.queue_deploy("push", "d-2", B, 1.0)
    gone.cancel_deploy(first, 3.0, "the app was removed from the configuration")
    journal.cancel_deploy("gone", second, 4.0, "the app was removed from the configuration")
    rows = gone.recent_deploys()
    assert [(d["id"], d["result"], d["finished"]) for d in rows] == [
        (second, "cancelled", 4.0),
        (first, "cancelled", 3.0),
    ]
    assert rows[0]["error"] == "the app was removed from the configuration"
    assert journal.close_unfinished(5.0) == [], "a cancelled deploy is finished"


def test_last_finished_is_the_apps_newest_ended_deploy(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3").open()
    blog, api = journal.for_app("blog"), journal.for_app("api")
    assert blog.last_finished() is None
    done = blog.queue_deploy("push", None, A, 1.0)
    blog.add_step(done, 1, STEP)
    blog.finish_deploy(done, "failed", A, 2.0, "pull", "pull failed")
    blog.queue_deploy("push", None, B, 3.0)  # queued: not finished
    _finished(api, 1)  # newer, but another app's
    last = blog.last_finished()
    assert last is not None
    assert (last["id"], last["app"], last["result"], last["error"]) == (
        done,
        "blog",
        "failed",
        "pull failed",
    )
    assert last == next(d for d in blog.recent_deploys() if d["id"] == done)
    assert [s["name"] for s in last["steps"]] == ["pull"]


def test_recent_deploys_of_one_app_or_all(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3").open()
    blog, api = journal.for_app("blog"), journal.for_app("api")
    first = _finished(blog, 1) + _finished(api, 1) + _finished(blog, 1)
    assert [d["id"] for d in blog.recent_deploys()] == [first[2], first[0]]
    assert [d["id"] for d in api.recent_deploys()] == [first[1]]
    assert [(d["id"], d["app"]) for d in journal.recent_deploys(2)] == [
        (first[2], "blog"),
        (first[1], "api"),
    ]


def test_an_apps_view_shares_the_journals_transactions(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3").open()
    blog = journal.for_app("blog")
    assert (blog.app, blog.journal, blog.path) == ("blog", journal, journal.path)
    disk = fill_disk(journal)
    changes: list[str] = []
    with blog.transaction():
        seq = journal.add_delivery("d-1", "push", "accepted", 1.0, A, apps=["blog"])
        deploy = blog.queue_deploy("push", "d-1", A, 1.0)
        blog.on_commit(lambda: changes.append("queued"))
        assert changes == []
    assert changes == ["queued"] and seq is not None
    disk.full = True
    with pytest.raises(JournalError, match="disk is full"), blog.transaction():
        blog.coalesce(deploy, "d-2", B)
        blog.on_commit(lambda: changes.append("coalesced"))
    assert changes == ["queued"]
    assert blog.fault is not None and "disk is full" in blog.fault
    disk.full = False
    assert blog.recent_deploys()[0]["target"] == A, "the failed transaction left nothing"
