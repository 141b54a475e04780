"""A controllable process runner and a failing disk for the engine's unit tests."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred, succeed

from ghhook.runner import StepResult


@attrs.define
class Call:
    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    timeout: float
    deferred: Deferred[StepResult]

    def finish(self, exit_code: int | None = 0, output: str = "", timed_out: bool = False) -> None:
        self.deferred.callback(
            StepResult(self.name, self.argv, exit_code, None, timed_out, 0.0, 0.5, output)
        )


class FakeRunner:
    """
    Records each step; read-only git questions (rev-parse, remote-head,
    merge-base, show-commit) are answered at once from ``head``,
    ``tracking`` and ``contained``, every other step waits until the test
    finishes it. Fails loudly if two steps ever overlap.
    """

    def __init__(self, head: str) -> None:
        self.head = head
        #: The remote branch's head as last fetched (refs/remotes/origin/main).
        self.tracking: str | None = head
        self.contained: set[str] = {head}
        #: The shas asked about with merge-base, in order.
        self.asked: list[str] = []
        self.calls: list[Call] = []
        self.outstanding: Call | None = None
        self.interrupted: list[float] = []

    def run(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: str,
        env: Mapping[str, str],
        timeout: float,
        fields: Mapping[str, Any] | None = None,
        on_start: Any = None,
        on_line: Any = None,
    ) -> Deferred[StepResult]:
        assert self.outstanding is None, f"{name} started while {self.outstanding.name} runs"
        argv = tuple(argv)
        if name == "rev-parse":
            return succeed(StepResult(name, argv, 0, None, False, 0.0, 0.0, self.head + "\n"))
        if name == "remote-head":
            found = self.tracking is not None
            output = f"{self.tracking}\n" if found else ""
            return succeed(StepResult(name, argv, 0 if found else 1, None, False, 0, 0, output))
        if name == "merge-base":
            self.asked.append(argv[-2])
            assert argv[-2] in self.contained or argv[-2] == self.tracking, (
                f"git asked about {argv[-2]}, which the clone has not fetched"
            )
            code = 0 if argv[-2] in self.contained else 1
            return succeed(StepResult(name, argv, code, None, False, 0.0, 0.0, ""))
        if name == "show-commit":
            output = f"Ann Author\nsubject of {argv[-1][:7]}\n"
            return succeed(StepResult(name, argv, 0, None, False, 0.0, 0.0, output))
        call = Call(name, argv, env, timeout, Deferred())
        self.calls.append(call)
        self.outstanding = call
        call.deferred.addBoth(self._done)
        return call.deferred

    def _done(self, result: StepResult) -> StepResult:
        self.outstanding = None
        return result

    def names(self) -> list[str]:
        return [c.name for c in self.calls]

    def pull_to(self, sha: str) -> None:
        """Finish the running pull as if the remote's tip were ``sha``."""
        assert self.outstanding is not None and self.outstanding.name == "pull"
        self.head = sha
        self.tracking = sha
        self.contained.add(sha)
        self.outstanding.finish(0, "Updating\n")

    def interrupt(self, grace: float) -> Deferred[None]:
        self.interrupted.append(grace)
        if self.outstanding is not None:
            self.outstanding.finish(None, "killed")
        return succeed(None)


class FailingDisk:
    """
    Stands in for a journal's SQLite connection: reads pass, and while
    ``full`` every write fails as SQLite fails on a full disk.
    """

    WRITES = ("INSERT", "UPDATE", "DELETE", "COMMIT")

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self.full = False
        self.refused = 0

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        if self.full and sql.lstrip().upper().startswith(self.WRITES):
            self.refused += 1
            raise sqlite3.OperationalError("database or disk is full")
        return self._db.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def fill_disk(journal: Any) -> FailingDisk:
    """Put a FailingDisk under an open journal; set its ``full`` to fail writes."""
    disk = FailingDisk(journal._db)
    journal._db = disk
    return disk
