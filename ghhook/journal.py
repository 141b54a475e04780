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

One journal serves every app of the daemon: each deploy and state key
belongs to an app, and :meth:`Journal.for_app` gives an engine a view with
its app implied. Deliveries are the daemon's: an id is seen once, whichever
apps it reached. The schema's version is ``PRAGMA user_version``; a journal
of the releases before apps (version 0) is upgraded in place at open.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import zlib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from twisted.logger import Logger

from ghhook.reports import Call

# FINAL_RESULTS is re-exported until every caller takes it from ghhook.results.
from ghhook.results import FINAL_RESULTS as FINAL_RESULTS
from ghhook.results import Result
from ghhook.runner import StepResult

log = Logger(namespace="ghhook.journal")
_P = ParamSpec("_P")
_T = TypeVar("_T")

#: Delivery ids kept for duplicate detection; GitHub redelivers with the same id.
KEEP_DELIVERIES = 50_000
_PRUNE_EVERY = 1_000
#: Deploys (with their steps) kept per app for /status and history: --keep-deploys.
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

#: The schema this module reads and writes (``PRAGMA user_version``). 0: the
#: releases before apps; 1: every deploy and state key belongs to an app;
#: 2: the outbox of reports to forges and notifications.
SCHEMA_VERSION = 2
#: Reports kept once sent or given up, for /status and the pages.
KEEP_REPORTS = 5_000
#: Reports waiting to be sent at most; past it the oldest are given up.
MAX_PENDING_REPORTS = 10_000
#: The app of the daemon's own state keys (the health probe's).
DAEMON = ""

#: The deploys table; ``{name}`` lets the upgrade build it beside the old one.
_DEPLOYS = """
CREATE TABLE IF NOT EXISTS {name} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
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
    author TEXT,
    requested_by TEXT,
    changed TEXT
)"""
#: The state table, keyed by app and key.
_STATE = """
CREATE TABLE IF NOT EXISTS {name} (
    app TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (app, key)
)"""
#: Statements, not a script: ``executescript`` would commit the upgrade's
#: transaction half way. ``deliveries.app`` comes last, as version 0 gains it.
_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY,
    delivery TEXT UNIQUE,
    event TEXT NOT NULL,
    outcome TEXT NOT NULL,
    after TEXT,
    deploy INTEGER,
    received REAL NOT NULL,
    app TEXT
)""",
    _DEPLOYS.format(name="deploys"),
    "CREATE INDEX IF NOT EXISTS deploys_by_app ON deploys (app, id)",
    """
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
)""",
    _STATE.format(name="state"),
    """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    deploy INTEGER NOT NULL,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    method TEXT NOT NULL,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    created REAL NOT NULL,
    due REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'pending',
    outcome TEXT,
    answer TEXT
)""",
    "CREATE INDEX IF NOT EXISTS outbox_by_state ON outbox (state, app, deploy, id)",
)

#: Columns added to version 0 after its first release, added to an older
#: journal at open, before the upgrade copies its rows.
_ADDED_COLUMNS = {"deploys": ("subject TEXT", "author TEXT")}
#: State keys of version 0 that were the daemon's, not the app's.
_DAEMON_KEYS = ("probe",)


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
            version = None if problem is not None else _user_version(db)
        except sqlite3.Error as e:
            return str(e)
        finally:
            db.close()
        if problem is not None:
            return f"is corrupt ({problem}): {MOVE_ASIDE}"
        if version is not None and version > SCHEMA_VERSION:
            return _too_new(version)
    return None


def _user_version(db: sqlite3.Connection) -> int:
    row = db.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    """The names of ``table``'s columns in order; empty when there is no such table."""
    return [str(row[1]) for row in db.execute(f"PRAGMA table_info({table})")]


def _too_new(version: int) -> str:
    return (
        f"was written by a newer ghhook (schema version {version}; this one reads up to"
        f" {SCHEMA_VERSION}): run that ghhook, or move the journal aside to begin a new one"
    )


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
        #: Told, once they are committed, that reports were added to the outbox.
        self.reported: Callable[[], None] | None = None

    def open(self, upgrade_app: str = "app") -> Journal:
        """
        Connect; done at service start, after twistd's chdir and --uid. A
        journal of the releases before apps (schema version 0) is upgraded in
        place, in one transaction; one written by a newer ghhook is refused.

        :param upgrade_app: the app a version 0 journal's deploys and state
            keys go to: the one app such a daemon served.
        """
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as e:
            raise self._cannot_open(e) from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
            self._db.execute(f"PRAGMA journal_size_limit={WAL_TRUNCATE_AT}")
            problem = integrity_problem(self._db)
            if problem is not None:
                raise JournalError(corrupt_advice(self.path, problem))
            upgraded = self._migrate(upgrade_app)
        except JournalError:
            self._db.close()
            raise
        except sqlite3.Error as e:
            self._db.close()
            raise self._cannot_open(e) from None
        self._db.row_factory = sqlite3.Row
        if upgraded is not None:
            log.info(
                "upgraded the journal {path} to schema version {version}: its {deploys}"
                " deploys and its state now belong to the app {app}",
                path=self.path,
                version=SCHEMA_VERSION,
                deploys=upgraded,
                app=upgrade_app,
            )
        return self

    def _cannot_open(self, error: sqlite3.Error) -> JournalError:
        if _corrupt(error):
            return JournalError(corrupt_advice(self.path, str(error)))
        return JournalError(f"cannot open the journal {self.path}: {error}")

    def _migrate(self, upgrade_app: str) -> int | None:
        """
        Bring the schema to SCHEMA_VERSION in one transaction, so a failure
        leaves the file as it was; the version is read inside it, so two
        daemons starting at once upgrade it once. Returns how many deploys a
        version 0 journal handed to ``upgrade_app``, None when none was.
        """
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            version = _user_version(db)
            if version > SCHEMA_VERSION:
                raise JournalError(f"the journal {self.path} {_too_new(version)}")
            upgraded = None
            columns = _columns(db, "deploys")
            if columns and "app" not in columns:
                self._add_columns()
                upgraded = self._upgrade_v0(upgrade_app)
            for statement in _SCHEMA:
                db.execute(statement)
            have = _columns(db, "deploys")
            # Version 1's deploys gain who asked for a manual deploy or a
            # rollback, and the watched paths a deploy changed.
            for column in ("requested_by", "changed"):
                if column not in have:
                    db.execute(f"ALTER TABLE deploys ADD COLUMN {column} TEXT")
            if version != SCHEMA_VERSION:
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise
        return upgraded

    def _add_columns(self) -> None:
        for table, columns in _ADDED_COLUMNS.items():
            have = _columns(self._db, table)
            for column in columns:
                if column.split()[0] not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")

    def _upgrade_v0(self, app: str) -> int:
        """
        Give a version 0 journal's deploys and state keys to ``app``. The
        deploys and state tables are rebuilt (a key's primary key becomes
        ``(app, key)``, and ``app`` is NOT NULL as in a new file); deliveries
        that reached the engine gain the app. Deploy ids and the
        AUTOINCREMENT counter are kept, so no id is ever reused.
        """
        db = self._db
        counter = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'deploys'").fetchone()
        db.execute(_DEPLOYS.format(name="deploys_v1"))
        wanted = _columns(db, "deploys_v1")
        names = ", ".join(f'"{c}"' for c in _columns(db, "deploys") if c in wanted)
        db.execute(
            f"INSERT INTO deploys_v1 (app, {names}) SELECT ?, {names} FROM deploys ORDER BY id",
            (app,),
        )
        count = int(db.execute("SELECT COUNT(*) FROM deploys_v1").fetchone()[0])
        db.execute("DROP TABLE deploys")
        db.execute("ALTER TABLE deploys_v1 RENAME TO deploys")
        if counter is not None:
            db.execute("DELETE FROM sqlite_sequence WHERE name = 'deploys'")
            db.execute(
                "INSERT INTO sqlite_sequence (name, seq)"
                " VALUES ('deploys', max(?, coalesce((SELECT MAX(id) FROM deploys), 0)))",
                (counter[0],),
            )
        if _columns(db, "state"):
            db.execute(_STATE.format(name="state_v1"))
            daemon_keys = ",".join("?" * len(_DAEMON_KEYS))
            db.execute(
                "INSERT INTO state_v1 (app, key, value) SELECT"
                f" CASE WHEN key IN ({daemon_keys}) THEN ? ELSE ? END, key, value FROM state",
                (*_DAEMON_KEYS, DAEMON, app),
            )
            db.execute("DROP TABLE state")
            db.execute("ALTER TABLE state_v1 RENAME TO state")
        if _columns(db, "deliveries"):
            db.execute("ALTER TABLE deliveries ADD COLUMN app TEXT")
            db.execute("UPDATE deliveries SET app = ? WHERE deploy IS NOT NULL", (app,))
        return count

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
            self.put("probe", str(int(time.time())), app=DAEMON)
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

    # Deliveries: the daemon's, whichever apps they reached

    @_guarded
    def add_delivery(
        self,
        delivery: str | None,
        event: str,
        outcome: str,
        received: float,
        after: str | None = None,
        apps: Sequence[str] | None = None,
    ) -> int | None:
        """
        Record a verified delivery; None when its id was seen before, by
        any app: a redelivery is a duplicate for every app it reached.

        :param apps: the apps that took it, if known yet (see :meth:`settle_delivery`).
        """
        cursor = self._write(
            "INSERT OR IGNORE INTO deliveries"
            " (delivery, event, outcome, after, received, app) VALUES (?, ?, ?, ?, ?, ?)",
            (delivery, event, outcome, after, received, _joined(apps)),
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
    def settle_delivery(
        self,
        seq: int,
        outcome: str,
        deploy: int | None = None,
        apps: Sequence[str] | None = None,
    ) -> None:
        """
        What became of a push once the engines had their say.

        :param deploy: a deploy it queued or joined (the first, when several apps took it).
        :param apps: the apps that took it, stored comma-joined; empty: none
            did (NULL); None leaves what :meth:`add_delivery` recorded.
        """
        if apps is None:
            self._write(
                "UPDATE deliveries SET outcome = ?, deploy = ? WHERE seq = ?",
                (outcome, deploy, seq),
            )
        else:
            self._write(
                "UPDATE deliveries SET outcome = ?, deploy = ?, app = ? WHERE seq = ?",
                (outcome, deploy, _joined(apps), seq),
            )

    # Deploys: each belongs to an app; one id sequence for all of them

    def for_app(self, name: str) -> AppJournal:
        """The view an app's engine uses: the same questions, its app implied."""
        return AppJournal(self, name)

    @_guarded
    def queue_deploy(
        self,
        trigger: str,
        delivery: str | None,
        target: str | None,
        queued: float,
        *,
        app: str,
        requested_by: str | None = None,
    ) -> int:
        cursor = self._write(
            "INSERT INTO deploys (app, trigger, delivery, deliveries, target, result, queued,"
            " requested_by) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?)",
            (app, trigger, delivery, 0 if delivery is None else 1, target, queued, requested_by),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    @_guarded
    def set_trigger(self, deploy: int, trigger: str, requested_by: str | None) -> None:
        """A queued deploy becomes an operator's (a manual deploy joined it)."""
        self._write(
            "UPDATE deploys SET trigger = ?, requested_by = ? WHERE id = ?",
            (trigger, requested_by, deploy),
        )

    @_guarded
    def was_deployed(self, sha: str, *, app: str) -> bool:
        """Whether ``app`` ever released ``sha`` (deployed, or found deployed)."""
        row = self._db.execute(
            "SELECT 1 FROM deploys WHERE app = ? AND sha = ? AND result IN ('deployed', 'unchanged')"
            " LIMIT 1",
            (app, sha),
        ).fetchone()
        return row is not None

    @_guarded
    def previous_deployed(self, current: str | None, *, app: str) -> str | None:
        """The newest commit ``app`` deployed other than ``current``: what a rollback goes back to."""
        row = self._db.execute(
            "SELECT sha FROM deploys WHERE app = ? AND result IN ('deployed', 'unchanged')"
            " AND sha IS NOT NULL AND sha IS NOT ? ORDER BY id DESC LIMIT 1",
            (app, current),
        ).fetchone()
        return None if row is None else str(row[0])

    @_guarded
    def coalesce(self, deploy: int, delivery: str | None, target: str) -> None:
        """A later push joins a queued deploy, which now targets its sha."""
        self._write(
            "UPDATE deploys SET delivery = coalesce(?, delivery), target = ?,"
            " deliveries = deliveries + 1 WHERE id = ?",
            (delivery, target, deploy),
        )

    @_guarded
    def start_deploy(
        self, deploy: int, started: float, *, app: str = "", reports: Sequence[Call] = ()
    ) -> None:
        """Record a deploy's start and, in the same transaction, the reports it makes."""
        with self._atomic():
            self._write(
                "UPDATE deploys SET result = 'running', started = ? WHERE id = ?",
                (started, deploy),
            )
            self._add_reports(app, deploy, reports, started)

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
        result: Result | str,
        sha: str | None,
        finished: float,
        failed_step: str | None = None,
        error: str | None = None,
        *,
        app: str,
        subject: str | None = None,
        author: str | None = None,
        state: Mapping[str, str] | None = None,
        reports: Sequence[Call] = (),
        changed: Sequence[str] | None = None,
    ) -> None:
        """
        Record how a deploy ended and, in the same transaction, the ``state``
        it leaves (what runs, what was rolled back) and the ``reports`` it
        makes (its outbox rows): all or nothing.

        :param result: a :class:`~ghhook.results.Result` or its value; a
            ValueError for anything else (``queued``, ``running``).
        :param app: the deploy's app: its state keys, and whose deploys are pruned.
        """
        value = Result(result).value
        with self._atomic():
            self._write(
                "UPDATE deploys SET result = ?, sha = coalesce(?, sha, target),"
                " finished = ?, failed_step = ?, error = ?,"
                " subject = coalesce(?, subject), author = coalesce(?, author),"
                " changed = ? WHERE id = ?",
                (
                    value,
                    sha,
                    finished,
                    failed_step,
                    error,
                    subject,
                    author,
                    json.dumps(list(changed)) if changed is not None else None,
                    deploy,
                ),
            )
            for key, state_value in (state or {}).items():
                self._put(app, key, state_value)
            self._add_reports(app, deploy, reports, finished)
            self._prune_deploys(app)

    @_guarded
    def cancel_deploy(self, app: str, deploy: int, finished: float, why: str) -> None:
        """
        End a deploy that will never run (its app was removed from the
        configuration) as ``cancelled``.
        """
        self.finish_deploy(deploy, Result.CANCELLED, None, finished, error=why, app=app)

    def _prune_deploys(self, app: str) -> None:
        """
        Keep ``app``'s newest ``keep_deploys`` deploys and their steps. The
        cut is found on the ``(app, id)`` index; the deletes go by it and by
        the steps' primary key. Queued and running deploys stay.
        """
        row = self._db.execute(
            "SELECT id FROM deploys WHERE app = ? ORDER BY id DESC LIMIT 1 OFFSET ?",
            (app, self.keep_deploys),
        ).fetchone()
        if row is None:
            return
        cut = row[0]
        self._write(
            "DELETE FROM steps WHERE deploy IN (SELECT id FROM deploys WHERE app = ?"
            " AND id <= ? AND result NOT IN ('queued', 'running'))",
            (app, cut),
        )
        self._write(
            "DELETE FROM deploys WHERE app = ? AND id <= ? AND result NOT IN ('queued', 'running')",
            (app, cut),
        )

    @_guarded
    def close_unfinished(
        self, finished: float, app: str | None = None, *, exclude: Collection[str] = ()
    ) -> list[int]:
        """
        Mark deploys a previous run left queued or running as interrupted, in
        one transaction; returns their ids.

        :param app: only this app's; None: every app's (e.g. of apps no longer configured).
        :param exclude: apps to leave alone (each engine closes its own at its start).
        """
        if app is None:
            rows = self._db.execute(
                "SELECT id, app, result FROM deploys WHERE result IN ('queued', 'running')"
                " ORDER BY id"
            ).fetchall()
        else:
            rows = self._db.execute(
                "SELECT id, app, result FROM deploys WHERE app = ?"
                " AND result IN ('queued', 'running') ORDER BY id",
                (app,),
            ).fetchall()
        rows = [row for row in rows if row[1] not in exclude]
        if not rows:
            return []
        with self._atomic():
            for deploy, owner, result in rows:
                why = (
                    "ghhook stopped during this deploy; the next start caught up"
                    if result == "running"
                    else "ghhook stopped before this deploy ran; the next start caught up"
                )
                self.finish_deploy(deploy, Result.INTERRUPTED, None, finished, error=why, app=owner)
        return [row[0] for row in rows]

    @_guarded
    def recent_deploys(self, limit: int = 50, app: str | None = None) -> list[dict[str, Any]]:
        """
        The newest deploys first, each with its steps in order.

        :param app: only this app's; None: every app's.
        """
        if app is None:
            rows = self._db.execute("SELECT * FROM deploys ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._db.execute(
                "SELECT * FROM deploys WHERE app = ? ORDER BY id DESC LIMIT ?", (app, limit)
            )
        return self._with_steps([dict(row) for row in rows])

    @_guarded
    def deploy(self, deploy: int, *, app: str) -> dict[str, Any] | None:
        """
        ``app``'s deploy ``deploy`` as a row of :meth:`recent_deploys`, or
        None (another app's, pruned, never queued).
        """
        row = self._db.execute(
            "SELECT * FROM deploys WHERE id = ? AND app = ?", (deploy, app)
        ).fetchone()
        return None if row is None else self._with_steps([dict(row)])[0]

    @_guarded
    def last_finished(self, app: str) -> dict[str, Any] | None:
        """``app``'s newest deploy that has ended, as a row of :meth:`recent_deploys`."""
        row = self._db.execute(
            "SELECT * FROM deploys WHERE app = ? AND result NOT IN ('queued', 'running')"
            " ORDER BY id DESC LIMIT 1",
            (app,),
        ).fetchone()
        return None if row is None else self._with_steps([dict(row)])[0]

    def _with_steps(self, deploys: list[dict[str, Any]]) -> list[dict[str, Any]]:
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

    # The outbox: reports to forges and notifications, sent by ghhook.outbox

    def _add_reports(self, app: str, deploy: int, reports: Sequence[Call], now: float) -> None:
        for call in reports:
            self._write(
                "INSERT INTO outbox (app, deploy, kind, target, method, url, body, created, due)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    app,
                    deploy,
                    str(call.kind),
                    call.target,
                    call.method,
                    call.url,
                    json.dumps(call.body),
                    now,
                    now,
                ),
            )
        if reports:
            self._trim_outbox()
            if self.reported is not None:
                self.on_commit(self.reported)

    def _trim_outbox(self) -> None:
        """Give up the oldest reports past MAX_PENDING_REPORTS; forget old sent ones."""
        cursor = self._write(
            "UPDATE outbox SET state = 'failed', outcome = 'given up: too many reports waiting'"
            " WHERE state = 'pending' AND id <= (SELECT id FROM outbox WHERE state = 'pending'"
            " ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (MAX_PENDING_REPORTS,),
        )
        if cursor.rowcount > 0:
            log.warn(
                "the outbox holds more than {most} reports waiting; gave up the {count} oldest",
                most=MAX_PENDING_REPORTS,
                count=cursor.rowcount,
            )
        self._write(
            "DELETE FROM outbox WHERE state != 'pending' AND id <= (SELECT id FROM outbox"
            " WHERE state != 'pending' ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (KEEP_REPORTS,),
        )

    @_guarded
    def add_reports(
        self,
        app: str,
        deploy: int,
        reports: Sequence[Call],
        now: float,
        state: Mapping[str, str] | None = None,
    ) -> None:
        """Add a deploy's reports, and the state keys they leave, in one transaction."""
        with self._atomic():
            for key, value in (state or {}).items():
                self._put(app, key, value)
            self._add_reports(app, deploy, reports, now)

    @_guarded
    def running_deploys(self, app: str) -> list[dict[str, Any]]:
        """``app``'s deploys recorded as running: a previous run was cut off during them."""
        rows = self._db.execute(
            "SELECT * FROM deploys WHERE app = ? AND result = 'running' ORDER BY id", (app,)
        )
        return [dict(row) for row in rows]

    @_guarded
    def due_reports(self, now: float, limit: int = 20) -> list[dict[str, Any]]:
        """
        Reports to send now, oldest first: each the first one waiting of its
        deploy, so that a deploy's reports go out in the order they were made.
        """
        rows = self._db.execute(
            "SELECT * FROM outbox AS o WHERE state = 'pending' AND due <= ? AND NOT EXISTS"
            " (SELECT 1 FROM outbox AS p WHERE p.state = 'pending' AND p.app = o.app"
            " AND p.deploy = o.deploy AND p.id < o.id) ORDER BY id LIMIT ?",
            (now, limit),
        )
        found = []
        for row in rows:
            report = dict(row)
            report["body"] = json.loads(report["body"])
            found.append(report)
        return found

    @_guarded
    def next_report_due(self) -> float | None:
        """When the next report waiting is due, or None when none waits."""
        # The first report waiting of each deploy: the later ones wait for it.
        row = self._db.execute(
            "SELECT MIN(due) FROM outbox AS o WHERE state = 'pending' AND NOT EXISTS"
            " (SELECT 1 FROM outbox AS p WHERE p.state = 'pending' AND p.app = o.app"
            " AND p.deploy = o.deploy AND p.id < o.id)"
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    @_guarded
    def report_done(self, report: int, state: str, outcome: str, answer: str | None = None) -> None:
        """A report was sent (``sent``) or given up (``failed``); ``answer`` keeps what a later one needs."""
        self._write(
            "UPDATE outbox SET state = ?, outcome = ?, answer = ?, attempts = attempts + 1"
            " WHERE id = ?",
            (state, outcome, answer, report),
        )

    @_guarded
    def report_later(self, report: int, due: float, outcome: str) -> None:
        """A report could not be sent yet: try again at ``due``."""
        self._write(
            "UPDATE outbox SET due = ?, outcome = ?, attempts = attempts + 1 WHERE id = ?",
            (due, outcome, report),
        )

    @_guarded
    def report_answer(self, app: str, deploy: int, kind: str) -> str | None:
        """What the forge answered a sent report of ``kind`` of a deploy (a deployment's id)."""
        row = self._db.execute(
            "SELECT answer FROM outbox WHERE app = ? AND deploy = ? AND kind = ?"
            " AND state = 'sent' ORDER BY id DESC LIMIT 1",
            (app, deploy, kind),
        ).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    @_guarded
    def report_counts(self, app: str | None = None) -> dict[str, dict[str, int]]:
        """
        Per app, the reports waiting and given up: ``{"api": {"pending": 2, "failed": 0}}``.

        :param app: only this app's; None: every app's.
        """
        counts: dict[str, dict[str, int]] = {}
        where, params = ("AND app = ?", (app,)) if app is not None else ("", ())
        for owner, state, count in self._db.execute(
            f"SELECT app, state, COUNT(*) FROM outbox WHERE state != 'sent' {where}"
            " GROUP BY app, state",
            params,
        ):
            counts.setdefault(owner, {"pending": 0, "failed": 0})[state] = count
        return counts

    @_guarded
    def reports_of(self, app: str, deploy: int) -> list[dict[str, Any]]:
        """A deploy's reports, in order, for its page: no credential is in them."""
        rows = self._db.execute(
            "SELECT id, kind, target, url, state, outcome, attempts, created, due FROM outbox"
            " WHERE app = ? AND deploy = ? ORDER BY id",
            (app, deploy),
        )
        return [dict(row) for row in rows]

    # Small persistent state, per app; the daemon's own keys under DAEMON

    @_guarded
    def values(self, key: str) -> dict[str, str]:
        """Every app's value of ``key``, by app (the daemon's own under ``""``)."""
        rows = self._db.execute("SELECT app, value FROM state WHERE key = ?", (key,))
        return {str(row[0]): str(row[1]) for row in rows}

    @_guarded
    def get(self, key: str, *, app: str) -> str | None:
        row = self._db.execute(
            "SELECT value FROM state WHERE app = ? AND key = ?", (app, key)
        ).fetchone()
        return None if row is None else str(row[0])

    @_guarded
    def forget(self, key: str, *, app: str) -> None:
        self._write("DELETE FROM state WHERE app = ? AND key = ?", (app, key))

    @_guarded
    def put(self, key: str, value: str, *, app: str) -> None:
        self._put(app, key, value)

    def _put(self, app: str, key: str, value: str) -> None:
        self._write(
            "INSERT INTO state (app, key, value) VALUES (?, ?, ?)"
            " ON CONFLICT(app, key) DO UPDATE SET value = excluded.value",
            (app, key, value),
        )


class AppJournal:
    """
    One app's view of the journal: the questions its engine asks, the app
    implied. Transactions, commits and faults are the journal's, shared by
    every app.
    """

    __slots__ = ("app", "journal")

    def __init__(self, journal: Journal, app: str) -> None:
        #: The journal every app shares (deliveries, the daemon's keys).
        self.journal = journal
        #: The app's name.
        self.app = app

    def __repr__(self) -> str:
        return f"<AppJournal {self.app!r} of {self.journal.path}>"

    @property
    def path(self) -> str:
        return self.journal.path

    @property
    def fault(self) -> str | None:
        return self.journal.fault

    def health(self) -> str | None:
        return self.journal.health()

    def transaction(self) -> AbstractContextManager[None]:
        return self.journal.transaction()

    def on_commit(self, change: Callable[[], None]) -> None:
        self.journal.on_commit(change)

    def get(self, key: str) -> str | None:
        return self.journal.get(key, app=self.app)

    def put(self, key: str, value: str) -> None:
        self.journal.put(key, value, app=self.app)

    def forget(self, key: str) -> None:
        self.journal.forget(key, app=self.app)

    def queue_deploy(
        self,
        trigger: str,
        delivery: str | None,
        target: str | None,
        queued: float,
        requested_by: str | None = None,
    ) -> int:
        return self.journal.queue_deploy(
            trigger, delivery, target, queued, app=self.app, requested_by=requested_by
        )

    def set_trigger(self, deploy: int, trigger: str, requested_by: str | None) -> None:
        self.journal.set_trigger(deploy, trigger, requested_by)

    def was_deployed(self, sha: str) -> bool:
        return self.journal.was_deployed(sha, app=self.app)

    def previous_deployed(self, current: str | None) -> str | None:
        return self.journal.previous_deployed(current, app=self.app)

    def coalesce(self, deploy: int, delivery: str | None, target: str) -> None:
        self.journal.coalesce(deploy, delivery, target)

    def start_deploy(self, deploy: int, started: float, reports: Sequence[Call] = ()) -> None:
        self.journal.start_deploy(deploy, started, app=self.app, reports=reports)

    def set_before(self, deploy: int, before: str) -> None:
        self.journal.set_before(deploy, before)

    def add_step(self, deploy: int, seq: int, step: StepResult) -> None:
        self.journal.add_step(deploy, seq, step)

    def finish_deploy(
        self,
        deploy: int,
        result: Result | str,
        sha: str | None,
        finished: float,
        failed_step: str | None = None,
        error: str | None = None,
        *,
        subject: str | None = None,
        author: str | None = None,
        state: Mapping[str, str] | None = None,
        reports: Sequence[Call] = (),
        changed: Sequence[str] | None = None,
    ) -> None:
        self.journal.finish_deploy(
            deploy,
            result,
            sha,
            finished,
            failed_step,
            error,
            app=self.app,
            subject=subject,
            author=author,
            state=state,
            reports=reports,
            changed=changed,
        )

    def cancel_deploy(self, deploy: int, finished: float, why: str) -> None:
        self.journal.cancel_deploy(self.app, deploy, finished, why)

    def close_unfinished(self, finished: float) -> list[int]:
        return self.journal.close_unfinished(finished, app=self.app)

    def recent_deploys(self, limit: int = 50) -> list[dict[str, Any]]:
        return self.journal.recent_deploys(limit, app=self.app)

    def last_finished(self) -> dict[str, Any] | None:
        return self.journal.last_finished(self.app)

    def deploy(self, deploy: int) -> dict[str, Any] | None:
        return self.journal.deploy(deploy, app=self.app)

    def add_reports(
        self,
        deploy: int,
        reports: Sequence[Call],
        now: float,
        state: Mapping[str, str] | None = None,
    ) -> None:
        self.journal.add_reports(self.app, deploy, reports, now, state)

    def running_deploys(self) -> list[dict[str, Any]]:
        return self.journal.running_deploys(self.app)

    def reports(self) -> dict[str, int]:
        """The app's reports waiting in the outbox, and those given up."""
        return self.journal.report_counts(self.app).get(self.app, {"pending": 0, "failed": 0})


def _joined(apps: Sequence[str] | None) -> str | None:
    """Apps as the deliveries table holds them: comma-joined, NULL for none."""
    if not apps:
        return None
    assert not any("," in app for app in apps), apps
    return ",".join(apps)


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
