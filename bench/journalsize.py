"""
How big the journal gets: 50,000 deliveries and 1,000 deploys written through
:class:`ghhook.journal.Journal`, in this process, as the daemon writes them.

Driving the real daemon that far would take about 40 minutes at 20
deliveries/s, and 1,000 real deploys as long again, so the writes are made
here with the daemon's own calls, in the daemon's order:

* each delivery is one transaction, as ``Hook._act`` makes it:
  ``add_delivery`` and, for a push that deploys, ``queue_deploy`` and
  ``settle_delivery``;
* a deploy's lifecycle is spread over the deliveries that follow its push,
  one call per delivery, as the engine runs while pushes keep coming:
  ``start_deploy`` and ``set_before``, then per step ``put(step_group)``,
  ``add_step`` and ``forget(step_group)``, then ``finish_deploy`` with the
  state it leaves;
* checkpoints run as ``GhhookService`` runs them: ``checkpoint_elsewhere()``
  at open, then ``Journal.checkpoint`` in a thread, while the writes go on.
  The daemon checkpoints every 5 s, which at 20 deliveries/s is every 100
  deliveries, so here one starts every 100 journaled deliveries.

The writes go as fast as SQLite takes them (about 15,000 deliveries/s), so
each checkpoint overlaps many more writes than it would at 20/s: for the WAL
this is harsher than the daemon. When the writes reach the next 100 before
a checkpoint ended, the writer waits for it: at 20/s a checkpoint always ends
long before the next one is due.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import random
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ghhook.journal import Journal, JournalError
from ghhook.runner import StepResult

#: The one app the simulated daemon serves (the journal keeps every row per app).
APP = "bench"
DELIVERIES = 50_000
DEPLOYS = 1_000
KEEP_DEPLOYS = 1_000
#: The daemon's 5 s checkpoint interval at 20 deliveries/s.
CHECKPOINT_EVERY = 100
#: Steps per deploy, each with a full output tail (the runner keeps at most
#: 40 lines and 4,000 characters of a step's output).
STEPS = ("rev-parse", "pull", "build", "restart")
OUTPUT_LINES = 40
LINE_CHARS = 80
#: The figure is the largest size over this many last deliveries: where the
#: last delivery falls in a checkpoint cycle would otherwise decide it.
FINAL_STRETCH = 5_000
#: Sizes are sampled this often (in journaled deliveries) for the trajectory.
SAMPLE_EVERY = 5_000
#: Delivery kinds in each stretch of 50 deliveries (one deploy per stretch).
#: "redelivery" reuses an earlier id: answered as a duplicate, not journaled.
MIX = (
    ("deploy", 1),
    ("tracked_push_already_deployed", 4),
    ("ping", 5),
    ("untracked_branch", 40),
    ("redelivery", 5),
)
MB = 1024 * 1024
#: Seconds after which the writer gives up (it takes well under a minute).
TIME_BOUND = 600.0


def file_sizes(path: Path) -> dict[str, int]:
    """Bytes of the database, its WAL and its shared-memory index."""
    sizes = {}
    for part, suffix in (("db", ""), ("wal", "-wal"), ("shm", "-shm")):
        try:
            sizes[part] = os.stat(f"{path}{suffix}").st_size
        except FileNotFoundError:
            sizes[part] = 0
    return sizes


_WORDS = (
    "app api auth billing cache client config core db events forms http jobs"
    " logging mail models orders payments queue search server storage tasks users"
    " utils views web worker"
).split()


def _output(name: str, deploy: int) -> str:
    """
    A step's output tail shaped like real tool output (package and file names,
    versions, sizes, hex shas), seeded per step: a filler of one character
    would compress to nothing and flatter the figure.
    """
    rng = random.Random(f"{name}-{deploy}")
    lines = []
    for i in range(OUTPUT_LINES):
        a, b = rng.choice(_WORDS), rng.choice(_WORDS)
        sha = f"{rng.getrandbits(28):07x}"
        line = rng.choice(
            (
                f"Collecting {a}-{b}=={rng.randint(0, 9)}.{rng.randint(0, 40)}."
                f"{rng.randint(0, 20)} (from -r requirements.txt (line {i + 1}))",
                f"  Downloading {a}_{b}-{rng.randint(1, 5)}.{rng.randint(0, 99)}-py3-none-any.whl"
                f" ({rng.randint(8, 2000)} kB)",
                f"[{i + 1:3d}/{OUTPUT_LINES}] CC src/{a}/{b}_{rng.randint(1, 99)}.o",
                f" src/{a}/{b}.py | {rng.randint(1, 120)} {'+' * rng.randint(0, 20)}"
                f"{'-' * rng.randint(0, 12)}",
                f"Updating {sha}..{rng.getrandbits(28):07x} ({a}: {b} #{rng.randint(100, 9999)})",
                f"remote: Counting objects: {rng.randint(1, 100)}% ({rng.randint(1, 500)}/500),"
                f" done.",
            )
        )
        lines.append(line[:LINE_CHARS])
    return "\n".join(lines)


def _pattern() -> list[str]:
    """The kinds of one stretch: the deploy first, then the others round-robin."""
    left = {kind: n for kind, n in MIX[1:]}
    kinds = [MIX[0][0]]
    while any(left.values()):
        for kind in left:
            if left[kind]:
                kinds.append(kind)
                left[kind] -= 1
    return kinds


class _Checkpoints:
    """``journal.checkpoint`` in one thread, at most one at a time."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.pool = concurrent.futures.ThreadPoolExecutor(1, "checkpoint")
        self.running: concurrent.futures.Future[Any] | None = None
        self.started = 0
        self.waited = 0.0
        self.modes: collections.Counter[str] = collections.Counter()
        self.errors = 0
        self.first_error: str | None = None
        self.seconds: list[float] = []

    def _run(self) -> Any:
        t0 = time.perf_counter()
        try:
            return self.journal.checkpoint()
        finally:
            self.seconds.append(time.perf_counter() - t0)

    def _collect(self) -> None:
        if self.running is None:
            return
        try:
            mode = self.running.result()
            self.modes[str(mode) if mode is not None else "done"] += 1
        except Exception as e:  # noqa: BLE001 - the daemon's LoopingCall would die of it
            self.errors += 1
            self.first_error = self.first_error or repr(e)
        self.running = None

    def tick(self) -> None:
        """
        Start the next checkpoint. At 20 deliveries/s a checkpoint (well under
        a second) ends long before the next is due 30 s later, so when the
        writes here outrun the last one, the writer waits for it instead of
        skipping one, as the daemon never has to.
        """
        if self.running is not None and not self.running.done():
            t0 = time.perf_counter()
            concurrent.futures.wait([self.running], 60)
            self.waited += time.perf_counter() - t0
        self._collect()
        self.running = self.pool.submit(self._run)
        self.started += 1

    def finish(self) -> None:
        if self.running is not None:
            concurrent.futures.wait([self.running], 60)
        self._collect()
        self.pool.shutdown(wait=True)


def measure(path: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Write until DELIVERIES are journaled and DEPLOYS finished; the sizes found."""
    journal = Journal(path, keep_deploys=KEEP_DEPLOYS).open()
    journal.checkpoint_elsewhere()  # as GhhookService.startService does
    checkpoints = _Checkpoints(journal)
    pattern = _pattern()
    lifecycle: collections.deque[Callable[[], None]] = collections.deque()
    kinds: collections.Counter[str] = collections.Counter()
    recent_ids: collections.deque[str] = collections.deque(maxlen=100)
    deployed = "0" * 40
    journaled = deploys_queued = deploys_finished = attempts = 0
    sizes: dict[str, int] = {}
    write_errors = 0
    first_write_error: str | None = None
    wal_max = total_max = end_max = 0
    trajectory = []
    started = time.monotonic()

    def plan_deploy(deploy: int, sha: str, before: str) -> None:
        def start() -> None:
            now = time.time()
            journal.start_deploy(deploy, now)
            journal.set_before(deploy, before)

        lifecycle.append(start)
        for seq, name in enumerate(STEPS, start=1):

            def step(seq: int = seq, name: str = name) -> None:
                now = time.time()
                journal.put("step_group", str(40_000 + seq), app=APP)
                journal.add_step(
                    deploy,
                    seq,
                    StepResult(
                        name=name,
                        argv=("/usr/bin/git", name) if name in ("rev-parse", "pull") else (name,),
                        exit_code=0,
                        signal=None,
                        timed_out=False,
                        started=now,
                        duration=0.05,
                        output=_output(name, deploy),
                    ),
                )
                journal.forget("step_group", app=APP)

            lifecycle.append(step)

        def finish() -> None:
            nonlocal deployed, deploys_finished
            journal.finish_deploy(
                deploy,
                "deployed",
                sha,
                time.time(),
                None,
                None,
                app=APP,
                subject=f"bench commit for deploy {deploy}",
                author="ghhook bench",
                state={"deployed": sha},
            )
            deployed = sha
            deploys_finished += 1

        lifecycle.append(finish)

    def deliver(kind: str) -> bool:
        """One delivery as the hook writes it; True if it was journaled."""
        now = time.time()
        if kind == "redelivery" and recent_ids:
            delivery = recent_ids[0]
        else:
            delivery = str(uuid.uuid4())
            recent_ids.append(delivery)
        with journal.transaction():
            if kind == "deploy":
                sha = uuid.uuid4().hex + uuid.uuid4().hex[:8]
                seq = journal.add_delivery(delivery, "push", "accepted", now, sha, apps=[APP])
                if seq is None:
                    return False
                deploy = journal.queue_deploy("push", delivery, sha, now, app=APP)
                journal.settle_delivery(seq, "accepted", deploy)
                # The engine learns of the deploy once it is committed.
                journal.on_commit(lambda: plan_deploy(deploy, sha, deployed))
            elif kind == "tracked_push_already_deployed":
                seq = journal.add_delivery(delivery, "push", "accepted", now, deployed)
                if seq is None:
                    return False
                journal.settle_delivery(seq, "ignored")
            elif kind == "ping":
                seq = journal.add_delivery(delivery, "ping", "pong", now)
            else:  # an untracked branch, or a redelivery of one
                seq = journal.add_delivery(delivery, "push", "ignored", now)
        return seq is not None

    def sample() -> None:
        nonlocal wal_max, total_max, end_max
        sizes = file_sizes(path)
        wal_max = max(wal_max, sizes["wal"])
        total_max = max(total_max, sizes["db"] + sizes["wal"])
        if journaled >= DELIVERIES - FINAL_STRETCH:
            end_max = max(end_max, sizes["db"] + sizes["wal"])

    try:
        while journaled < DELIVERIES or lifecycle:
            if attempts >= 2 * DELIVERIES or time.monotonic() - started > TIME_BOUND:
                raise RuntimeError(
                    f"gave up after {attempts} deliveries ({journaled} journaled) and"
                    f" {time.monotonic() - started:.0f} s"
                )
            attempts += 1
            if journaled < DELIVERIES:
                kind = pattern[(attempts - 1) % len(pattern)]
                if kind == "deploy" and deploys_queued >= DEPLOYS:
                    kind = "untracked_branch"
                try:
                    fresh = deliver(kind)
                except JournalError as e:  # the hook answers 503; GitHub shows a failure
                    write_errors += 1
                    first_write_error = first_write_error or str(e)
                    fresh = None
                if fresh:
                    journaled += 1
                    kinds[kind] += 1
                    deploys_queued += kind == "deploy"
                    if journaled % CHECKPOINT_EVERY == 0:
                        sample()  # the WAL at its largest, just before a checkpoint
                        checkpoints.tick()
                    if journaled % SAMPLE_EVERY == 0:
                        sizes = file_sizes(path)
                        trajectory.append(
                            {
                                "deliveries": journaled,
                                "deploys": deploys_finished,
                                "db_mb": round(sizes["db"] / MB, 2),
                                "wal_mb": round(sizes["wal"] / MB, 2),
                            }
                        )
                        say(
                            f"journal size: {journaled} deliveries, {deploys_finished} deploys:"
                            f" db {sizes['db'] / MB:.1f} MB, WAL {sizes['wal'] / MB:.1f} MB"
                        )
                elif fresh is False:
                    kinds["duplicate"] += 1
            if lifecycle:
                try:
                    lifecycle[0]()
                    lifecycle.popleft()
                except JournalError as e:  # the engine tries the same write again
                    write_errors += 1
                    first_write_error = first_write_error or str(e)
        sample()
        sizes = file_sizes(path)
    finally:
        checkpoints.finish()
        live = file_sizes(path)
        journal.close()
    seconds = time.monotonic() - started
    content = _content(path)
    return {
        "value": round(end_max / MB, 2),
        "value_is": f"the largest database + WAL over the last {FINAL_STRETCH} deliveries,"
        " each measured just before a checkpoint (when the WAL is largest) and at the end",
        "at_last_delivery_mb": {
            "db": round(sizes["db"] / MB, 2),
            "wal": round(sizes["wal"] / MB, 2),
            "shm": round(sizes["shm"] / MB, 2),
        },
        "after_last_checkpoint_mb": {
            "db": round(live["db"] / MB, 2),
            "wal": round(live["wal"] / MB, 2),
        },
        "max_db_plus_wal_mb": round(total_max / MB, 2),
        "max_wal_mb": round(wal_max / MB, 2),
        "journaled_deliveries": journaled,
        "deploys": deploys_finished,
        "kinds": dict(kinds),
        "rows": content["rows"],
        "step_output_mb": content["step_output_mb"],
        "pages": content["pages"],
        "mb_by_table": content["mb_by_table"],
        "write_errors": write_errors,
        "first_write_error": first_write_error,
        "checkpoints": {
            "every_deliveries": CHECKPOINT_EVERY,
            "started": checkpoints.started,
            "writer_waited_for_them_s": round(checkpoints.waited, 3),
            "modes": dict(checkpoints.modes),
            "errors": checkpoints.errors,
            "first_error": checkpoints.first_error,
            "max_s": round(max(checkpoints.seconds, default=0.0), 3),
        },
        "trajectory": trajectory,
        "seconds": round(seconds, 1),
        "keep_deploys": KEEP_DEPLOYS,
        "steps_per_deploy": f"{len(STEPS)} ({', '.join(STEPS)}),"
        f" {OUTPUT_LINES} lines of {LINE_CHARS} chars each",
    }


def _content(path: Path) -> dict[str, Any]:
    """What the database holds, read after the journal closed."""
    db = sqlite3.connect(path)
    try:
        rows = {
            table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("deliveries", "deploys", "steps", "state")
        }
        output = db.execute("SELECT coalesce(sum(length(output)), 0) FROM steps").fetchone()[0]
        pages = {
            name: db.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("page_size", "page_count", "freelist_count")
        }
        try:  # bytes per table and index, where SQLite has the dbstat table
            by_table = {
                name: round(size / MB, 2)
                for name, size in db.execute(
                    "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"
                )
            }
        except sqlite3.Error:
            by_table = None
    finally:
        db.close()
    return {
        "rows": rows,
        "step_output_mb": round(output / MB, 2),
        "pages": pages,
        "mb_by_table": by_table,
    }
