"""
The durable record of deliveries and deploys, in SQLite.

Each write is one short transaction in WAL mode with ``synchronous=NORMAL``:
tens of microseconds, so the reactor thread does them itself (``make bench``
measures it) and the order of events is the order of writes.

Every failure of SQLite (locked by another process, disk full, corrupt) is
raised as one :class:`JournalError` and remembered as the journal's
:attr:`~Journal.fault` until a write succeeds again, so ``/healthz`` can say
why. Callers change what they hold in memory only once a write committed:
:meth:`Journal.on_commit` runs a change then, and never if it rolled back.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from twisted.logger import Logger

from ghhook.runner import StepResult

log = Logger(namespace="ghhook.journal")
_P = ParamSpec("_P")
_T = TypeVar("_T")

#: Delivery ids kept for duplicate detection; GitHub redelivers with the same id.
KEEP_DELIVERIES = 50_000
_PRUNE_EVERY = 1_000
#: Deploys (with their steps) kept for /status and history: --keep-deploys.
KEEP_DEPLOYS = 1_000
#: Seconds a write waits for a lock another process holds; the reactor
#: thread waits with it, so keep it short: the caller answers 503 instead.
BUSY_TIMEOUT = 0.5
#: A WAL larger than this is truncated by the next checkpoint: a passive
#: checkpoint never resets a WAL that is written to all the time.
WAL_TRUNCATE_AT = 4 * 1024 * 1024
#: Step output from this many characters on is kept compressed: a step row
#: then shares its page with others instead of filling one.
COMPRESS_FROM = 256
#: Seconds between two write probes of a journal that failed (``/healthz``).
PROBE_INTERVAL = 1.0
#: Seconds between two integrity checks of a journal found corrupt.
CHECK_INTERVAL = 30.0

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
    finished REAL,
    subject TEXT,
    author TEXT
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
FINAL_RESULTS = ("deployed", "unchanged", "failed", "timeout", "rolled_back", "interrupted")
#: Columns added since the first release, added to an older journal at open.
_ADDED_COLUMNS = {"deploys": ("subject TEXT", "author TEXT")}


class JournalError(Exception):
    """
    The journal cannot be opened, read or written; the message is one line
    that names the file.
    """


#: What to do with a corrupt journal: deploy history is lost, deploys are not.
MOVE_ASIDE = (
    "move it aside (with its -wal and -shm files) and start ghhook again: it begins a new journal"
)

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
    if header:
        # immutable=1: read without locks and without creating -wal or -shm.
        try:
            db = sqlite3.connect(f"{file.as_uri()}?mode=ro&immutable=1", uri=True)
        except sqlite3.Error as e:
            return str(e)
        try:
            problem = integrity_problem(db)
        finally:
            db.close()
        if problem is not None:
            return f"is corrupt ({problem}): {MOVE_ASIDE}"
    return None


def _corrupt(error: sqlite3.Error) -> bool:
    name = getattr(error, "sqlite_errorname", None)  # Python 3.11+
    if name is not None:
        return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
    return "malformed" in str(error) or "not a database" in str(error)


def integrity_problem(db: sqlite3.Connection) -> str | None:
    """What ``PRAGMA quick_check`` finds wrong, in one line; None when sound."""
    try:
        rows = db.execute("PRAGMA quick_check(3)").fetchall()
    except sqlite3.Error as e:
        return str(e)
    found = [str(row[0]) for row in rows]
    if found == ["ok"]:
        return None
    lines = [" ".join(line.split()) for text in found for line in text.splitlines()]
    return "; ".join(line for line in lines if line and not line.startswith("***"))[:300]


def _guarded(method: Callable[_P, _T]) -> Callable[_P, _T]:
    """Turn SQLite's errors into one JournalError, and remember the fault."""

    @wraps(method)
    def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        journal = args[0]
        assert isinstance(journal, Journal)
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as e:
            raise journal._failed(e) from None

    return guarded


class Journal:
    """All reads and writes of the SQLite journal, one method per question."""

    def __init__(
        self,
        path: str | Path,
        keep_deploys: int = KEEP_DEPLOYS,
        busy_timeout: float = BUSY_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = str(path)
        self.keep_deploys = keep_deploys
        #: Why the journal last failed, until a write succeeds again.
        self.fault: str | None = None
        self._busy_timeout = busy_timeout
        self._clock = clock
        self._corrupt = False
        self._last_probe = -1e18
        self._since_prune = 0
        self._on_commit: list[Callable[[], None]] | None = None

    def open(self) -> Journal:
        """Connect; done at service start, after twistd's chdir and --uid."""
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
            self._db.execute(f"PRAGMA journal_size_limit={WAL_TRUNCATE_AT}")
            problem = integrity_problem(self._db)
            if problem is not None:
                self._db.close()
                raise JournalError(corrupt_advice(self.path, problem))
            self._db.executescript(_SCHEMA)
            self._add_columns()
        except sqlite3.Error as e:
            if _corrupt(e):
                raise JournalError(corrupt_advice(self.path, str(e))) from None
            raise JournalError(f"cannot open the journal {self.path}: {e}") from None
        self._db.row_factory = sqlite3.Row
        return self

    def _add_columns(self) -> None:
        for table, columns in _ADDED_COLUMNS.items():
            have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for column in columns:
                if column.split()[0] not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")

    def close(self) -> None:
        self._db.close()

    # Faults

    def _failed(self, error: sqlite3.Error) -> JournalError:
        """Remember why the journal failed (logged when it starts failing)."""
        if self._db.in_transaction and self._on_commit is None:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        reason = f"the journal {self.path} failed: {error}"
        if _corrupt(error):
            self._corrupt = True
            reason = corrupt_advice(self.path, str(error))
        if self.fault is None:
            log.error("{reason}", reason=reason)
        self.fault = reason
        return JournalError(reason)

    def _recovered(self) -> None:
        if self.fault is not None and not self._corrupt:
            log.info("the journal {path} works again", path=self.path)
            self.fault = None

    def health(self) -> str | None:
        """
        Why the journal cannot be read or written now, or None when it can.
        After a failure, a small write (at most every PROBE_INTERVAL s) or,
        for corruption, an integrity check (every CHECK_INTERVAL s) tells
        whether it works again.
        """
        if self.fault is None:
            return None
        now = self._clock()
        interval = CHECK_INTERVAL if self._corrupt else PROBE_INTERVAL
        if now - self._last_probe < interval:
            return self.fault
        self._last_probe = now
        if self._corrupt:
            if integrity_problem(self._db) is not None:
                return self.fault
            self._corrupt = False
        try:
            self.put("probe", str(int(time.time())))
        except JournalError:
            pass
        return self.fault

    # Transactions

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """
        Group writes into one commit (one WAL append instead of several);
        what was handed to :meth:`on_commit` runs once it committed.
        """
        assert self._on_commit is None, "transactions do not nest"
        self._on_commit = []
        try:
            try:
                self._db.execute("BEGIN")
                yield
                self._db.execute("COMMIT")
            except BaseException as e:
                if self._db.in_transaction:
                    try:
                        self._db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                if isinstance(e, sqlite3.Error):
                    raise self._failed(e) from None
                raise
            changes = self._on_commit
        finally:
            self._on_commit = None
        self._recovered()
        for change in changes:
            change()

    @contextmanager
    def _atomic(self) -> Iterator[None]:
        """One transaction: the caller's when one is open, else a new one."""
        if self._on_commit is not None:
            yield
            return
        with self.transaction():
            yield

    def on_commit(self, change: Callable[[], None]) -> None:
        """Run ``change`` once the writes before it are committed."""
        if self._on_commit is None:
            change()  # outside a transaction every write commits at once
        else:
            self._on_commit.append(change)

    def _write(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        cursor = self._db.execute(sql, params)
        if self._on_commit is None:
            self._recovered()
        return cursor

    # Checkpoints

    def checkpoint_elsewhere(self) -> None:
        """Stop checkpointing on writes; :meth:`checkpoint` runs off the reactor."""
        self._db.execute("PRAGMA wal_autocheckpoint=0")

    def checkpoint(self) -> str:
        """
        Copy the WAL into the database: fsyncs, so run it in a thread. A
        passive checkpoint alone lets the WAL grow while writes keep coming,
        so once it passes WAL_TRUNCATE_AT a truncating one follows. That one
        holds the writer (the reactor thread) back while it runs; after the
        passive pass it has only the frames written meanwhile left to copy.
        """
        db = sqlite3.connect(self.path, timeout=5.0)
        try:
            db.execute(f"PRAGMA journal_size_limit={WAL_TRUNCATE_AT}")
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            try:
                size = Path(self.path + "-wal").stat().st_size
            except OSError:
                size = 0
            if size <= WAL_TRUNCATE_AT:
                return "PASSIVE"
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return "TRUNCATE"
        finally:
            db.close()

    # Deliveries

    @_guarded
    def add_delivery(
        self,
        delivery: str | None,
        event: str,
        outcome: str,
        received: float,
        after: str | None = None,
    ) -> int | None:
        """Record a verified delivery; None when its id was seen before."""
        cursor = self._write(
            "INSERT OR IGNORE INTO deliveries"
            " (delivery, event, outcome, after, received) VALUES (?, ?, ?, ?, ?)",
            (delivery, event, outcome, after, received),
        )
        if cursor.rowcount == 0:
            return None
        self._since_prune += 1
        if self._since_prune >= _PRUNE_EVERY:
            self._since_prune = 0
            self._write(
                "DELETE FROM deliveries WHERE seq <= (SELECT MAX(seq) FROM deliveries) - ?",
                (KEEP_DELIVERIES,),
            )
        return cursor.lastrowid

    @_guarded
    def seen_delivery(self, delivery: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM deliveries WHERE delivery = ?", (delivery,)
        ).fetchone()
        return row is not None

    @_guarded
    def settle_delivery(self, seq: int, outcome: str, deploy: int | None = None) -> None:
        """What became of a push once the engine had its say."""
        self._write(
            "UPDATE deliveries SET outcome = ?, deploy = ? WHERE seq = ?", (outcome, deploy, seq)
        )

    # Deploys

    @_guarded
    def queue_deploy(
        self, trigger: str, delivery: str | None, target: str | None, queued: float
    ) -> int:
        cursor = self._write(
            "INSERT INTO deploys (trigger, delivery, deliveries, target, result, queued)"
            " VALUES (?, ?, ?, ?, 'queued', ?)",
            (trigger, delivery, 0 if delivery is None else 1, target, queued),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    @_guarded
    def coalesce(self, deploy: int, delivery: str | None, target: str) -> None:
        """A later push joins a queued deploy, which now targets its sha."""
        self._write(
            "UPDATE deploys SET delivery = coalesce(?, delivery), target = ?,"
            " deliveries = deliveries + 1 WHERE id = ?",
            (delivery, target, deploy),
        )

    @_guarded
    def start_deploy(self, deploy: int, started: float) -> None:
        self._write(
            "UPDATE deploys SET result = 'running', started = ? WHERE id = ?",
            (started, deploy),
        )

    @_guarded
    def set_before(self, deploy: int, before: str) -> None:
        self._write("UPDATE deploys SET before = ? WHERE id = ?", (before, deploy))

    @_guarded
    def add_step(self, deploy: int, seq: int, step: StepResult) -> None:
        self._write(
            "INSERT OR REPLACE INTO steps (deploy, seq, name, argv, exit_code, signal,"
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
                _pack(step.output),
            ),
        )

    @_guarded
    def finish_deploy(
        self,
        deploy: int,
        result: str,
        sha: str | None,
        finished: float,
        failed_step: str | None = None,
        error: str | None = None,
        *,
        subject: str | None = None,
        author: str | None = None,
        state: dict[str, str] | None = None,
    ) -> None:
        """
        Record how a deploy ended and, in the same transaction, the ``state``
        it leaves (what runs, what was rolled back): both or neither.
        """
        assert result in FINAL_RESULTS, result
        with self._atomic():
            self._write(
                "UPDATE deploys SET result = ?, sha = coalesce(?, sha, target),"
                " finished = ?, failed_step = ?, error = ?,"
                " subject = coalesce(?, subject), author = coalesce(?, author) WHERE id = ?",
                (result, sha, finished, failed_step, error, subject, author, deploy),
            )
            for key, value in (state or {}).items():
                self._put(key, value)
            self._prune_deploys()

    def _prune_deploys(self) -> None:
        """
        Keep the newest ``keep_deploys`` deploys and their steps: two deletes
        by primary key, nothing to do on most calls.
        """
        row = self._db.execute("SELECT MAX(id) FROM deploys").fetchone()
        newest = row[0] if row is not None and row[0] is not None else 0
        cut = newest - self.keep_deploys
        if cut <= 0:
            return
        self._write("DELETE FROM steps WHERE deploy <= ?", (cut,))
        self._write(
            "DELETE FROM deploys WHERE id <= ? AND result NOT IN ('queued', 'running')", (cut,)
        )

    @_guarded
    def close_unfinished(self, finished: float) -> list[int]:
        """Mark deploys a previous run left queued or running as interrupted."""
        rows = self._db.execute(
            "SELECT id, result FROM deploys WHERE result IN ('queued', 'running')"
        ).fetchall()
        for row in rows:
            why = (
                "ghhook stopped during this deploy; the next start caught up"
                if row[1] == "running"
                else "ghhook stopped before this deploy ran; the next start caught up"
            )
            self.finish_deploy(row[0], "interrupted", None, finished, error=why)
        return [row[0] for row in rows]

    @_guarded
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
            step["output"] = _unpack(step["output"])
            by_id[step.pop("deploy")]["steps"].append(step)
        return deploys

    # Small persistent state

    @_guarded
    def get(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @_guarded
    def forget(self, key: str) -> None:
        self._write("DELETE FROM state WHERE key = ?", (key,))

    @_guarded
    def put(self, key: str, value: str) -> None:
        self._put(key, value)

    def _put(self, key: str, value: str) -> None:
        self._write(
            "INSERT INTO state (key, value) VALUES (?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


def _pack(output: str) -> str | bytes:
    """A step's output as stored: long ones compressed (as a BLOB)."""
    if len(output) < COMPRESS_FROM:
        return output
    return zlib.compress(output.encode("utf-8", "replace"), 6)


def _unpack(stored: str | bytes) -> str:
    if isinstance(stored, bytes):
        return zlib.decompress(stored).decode("utf-8", "replace")
    return stored


def corrupt_advice(path: str, problem: str) -> str:
    """One line: the journal is corrupt, and what the operator can do."""
    return f"the journal {path} is corrupt ({problem}): stop ghhook, {MOVE_ASIDE}"
