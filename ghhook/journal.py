"""
The durable record of deliveries and deploys, in SQLite.

Each write is one short transaction in WAL mode with ``synchronous=NORMAL``:
tens of microseconds, so the reactor thread does them itself (``make bench``
measures it) and the order of events is the order of writes.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ghhook.runner import StepResult

#: Delivery ids kept for duplicate detection; GitHub redelivers with the same id.
KEEP_DELIVERIES = 50_000
_PRUNE_EVERY = 1_000
#: Deploys (with their steps) kept for /status and history: --keep-deploys.
KEEP_DEPLOYS = 1_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY,
    delivery TEXT UNIQUE,
    event TEXT NOT NULL,
    outcome TEXT NOT NULL,
    after TEXT,
    deploy INTEGER,
    received REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deploys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    trigger TEXT NOT NULL,
    delivery TEXT,
    deliveries INTEGER NOT NULL DEFAULT 0,
    target TEXT,
    before TEXT,
    sha TEXT,
    result TEXT NOT NULL,
    failed_step TEXT,
    error TEXT,
    queued REAL NOT NULL,
    started REAL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS steps (
    deploy INTEGER NOT NULL REFERENCES deploys(id),
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    argv TEXT NOT NULL,
    exit_code INTEGER,
    signal INTEGER,
    timed_out INTEGER NOT NULL,
    started REAL NOT NULL,
    duration REAL NOT NULL,
    output TEXT NOT NULL,
    PRIMARY KEY (deploy, seq)
);
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

#: Results a deploy can end with; "queued" and "running" are not final.
FINAL_RESULTS = ("deployed", "unchanged", "failed", "timeout", "rolled_back")


class JournalError(Exception):
    """The journal file cannot be opened; the message names it."""


#: How every SQLite database file begins (an empty file is one too).
_SQLITE_HEADER = b"SQLite format 3\x00"


def why_unusable(path: str) -> str | None:
    """
    Why no journal can be kept at ``path``, found before start-up without
    creating anything (the file is created after twistd's --uid).
    """
    file = Path(path).absolute()
    if file.is_dir():
        return "is a directory"
    if not file.parent.is_dir():
        return f"no such directory: {file.parent}"
    if not file.exists():
        if os.access(file.parent, os.W_OK | os.X_OK):
            return None
        return f"cannot create a file in {file.parent}"
    # Only the header is read: opening it with SQLite, even read-only, may
    # create a -shm file owned by the user twistd has not yet dropped.
    try:
        with file.open("rb") as f:
            header = f.read(len(_SQLITE_HEADER))
    except OSError as e:
        return e.strerror or str(e)
    if header and header != _SQLITE_HEADER:
        return "not an SQLite database"
    return None


class Journal:
    """All reads and writes of the SQLite journal, one method per question."""

    def __init__(self, path: str | Path, keep_deploys: int = KEEP_DEPLOYS) -> None:
        self.path = str(path)
        self.keep_deploys = keep_deploys
        self._since_prune = 0

    def open(self) -> Journal:
        """Connect; done at service start, after twistd's chdir and --uid."""
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=2000")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as e:
            raise JournalError(f"cannot open the journal {self.path}: {e}") from None
        self._db.row_factory = sqlite3.Row
        return self

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes into one commit (one WAL append instead of several)."""
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def checkpoint_elsewhere(self) -> None:
        """Stop checkpointing on writes; :meth:`checkpoint` runs off the reactor."""
        self._db.execute("PRAGMA wal_autocheckpoint=0")

    def checkpoint(self) -> None:
        """Copy the WAL into the database: fsyncs, so run it in a thread."""
        db = sqlite3.connect(self.path)
        try:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            db.close()

    # Deliveries

    def add_delivery(
        self,
        delivery: str | None,
        event: str,
        outcome: str,
        received: float,
        after: str | None = None,
    ) -> int | None:
        """Record a verified delivery; None when its id was seen before."""
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO deliveries"
            " (delivery, event, outcome, after, received) VALUES (?, ?, ?, ?, ?)",
            (delivery, event, outcome, after, received),
        )
        if cursor.rowcount == 0:
            return None
        self._since_prune += 1
        if self._since_prune >= _PRUNE_EVERY:
            self._since_prune = 0
            self._db.execute(
                "DELETE FROM deliveries WHERE seq <= (SELECT MAX(seq) FROM deliveries) - ?",
                (KEEP_DELIVERIES,),
            )
        return cursor.lastrowid

    def seen_delivery(self, delivery: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM deliveries WHERE delivery = ?", (delivery,)
        ).fetchone()
        return row is not None

    def settle_delivery(self, seq: int, outcome: str, deploy: int | None = None) -> None:
        """What became of a push once the engine had its say."""
        self._db.execute(
            "UPDATE deliveries SET outcome = ?, deploy = ? WHERE seq = ?", (outcome, deploy, seq)
        )

    # Deploys

    def queue_deploy(
        self, trigger: str, delivery: str | None, target: str | None, queued: float
    ) -> int:
        cursor = self._db.execute(
            "INSERT INTO deploys (trigger, delivery, deliveries, target, result, queued)"
            " VALUES (?, ?, ?, ?, 'queued', ?)",
            (trigger, delivery, 0 if delivery is None else 1, target, queued),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def coalesce(self, deploy: int, delivery: str | None, target: str) -> None:
        """A later push joins a queued deploy, which now targets its sha."""
        self._db.execute(
            "UPDATE deploys SET delivery = coalesce(?, delivery), target = ?,"
            " deliveries = deliveries + 1 WHERE id = ?",
            (delivery, target, deploy),
        )

    def start_deploy(self, deploy: int, started: float) -> None:
        self._db.execute(
            "UPDATE deploys SET result = 'running', started = ? WHERE id = ?",
            (started, deploy),
        )

    def set_before(self, deploy: int, before: str) -> None:
        self._db.execute("UPDATE deploys SET before = ? WHERE id = ?", (before, deploy))

    def add_step(self, deploy: int, seq: int, step: StepResult) -> None:
        self._db.execute(
            "INSERT INTO steps (deploy, seq, name, argv, exit_code, signal,"
            " timed_out, started, duration, output)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                deploy,
                seq,
                step.name,
                json.dumps(list(step.argv)),
                step.exit_code,
                step.signal,
                int(step.timed_out),
                step.started,
                step.duration,
                step.output,
            ),
        )

    def finish_deploy(
        self,
        deploy: int,
        result: str,
        sha: str | None,
        finished: float,
        failed_step: str | None = None,
        error: str | None = None,
    ) -> None:
        assert result in FINAL_RESULTS, result
        self._db.execute(
            "UPDATE deploys SET result = ?, sha = coalesce(?, sha, target),"
            " finished = ?, failed_step = ?, error = ? WHERE id = ?",
            (result, sha, finished, failed_step, error, deploy),
        )

    def close_unfinished(self, finished: float) -> list[int]:
        """Mark deploys a previous run left queued or running as failed."""
        rows = self._db.execute(
            "SELECT id, result FROM deploys WHERE result IN ('queued', 'running')"
        ).fetchall()
        for row in rows:
            why = (
                "ghhook stopped during this deploy; the next start caught up"
                if row["result"] == "running"
                else "ghhook stopped before this deploy ran; the next start caught up"
            )
            self.finish_deploy(row["id"], "failed", None, finished, error=why)
        return [row["id"] for row in rows]

    def recent_deploys(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest deploys first, each with its steps in order."""
        deploys = [
            dict(row)
            for row in self._db.execute("SELECT * FROM deploys ORDER BY id DESC LIMIT ?", (limit,))
        ]
        if not deploys:
            return deploys
        by_id = {d["id"]: d for d in deploys}
        for d in deploys:
            d["steps"] = []
        placeholders = ",".join("?" * len(by_id))
        for row in self._db.execute(
            f"SELECT * FROM steps WHERE deploy IN ({placeholders}) ORDER BY deploy, seq",
            tuple(by_id),
        ):
            step = dict(row)
            step["argv"] = json.loads(step["argv"])
            step["timed_out"] = bool(step["timed_out"])
            by_id[step.pop("deploy")]["steps"].append(step)
        return deploys

    # Small persistent state

    def get(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    def forget(self, key: str) -> None:
        self._db.execute("DELETE FROM state WHERE key = ?", (key,))

    def put(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO state (key, value) VALUES (?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )
