"""
End to end: the real ``twistd ghhook`` when its journal fails under it (another
process holds the write lock during a deploy) or is corrupt when it starts.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from ghhook.journal import SCHEMA_VERSION
from tests.daemon import Daemon, environment, eventually, run_twistd
from tests.gitfixture import GitFixture

pytestmark = pytest.mark.e2e


def test_a_journal_locked_during_a_deploy_does_not_wedge_the_daemon(
    git: GitFixture, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    # The first restart waits at the gate, so the test can lock the journal
    # while the deploy runs; later restarts pass.
    restart = (
        f"sh -c '[ -e {tmp_path}/gate-used ] || {{ touch {tmp_path}/gate-used;"
        f" head -c1 {gate} >/dev/null; }}; git rev-parse HEAD >> {tmp_path}/restarts'"
    )
    daemon = Daemon(tmp_path, git.clone, "--restart-cmd", restart).start()
    try:
        eventually(lambda: daemon.status()["deploys"][0]["result"] == "unchanged")
        first = git.commit_and_push("v2\n")
        assert daemon.push(first)[0] == 202
        eventually(lambda: (tmp_path / "gate-used").exists(), what="the restart at the gate")

        holder = sqlite3.connect(tmp_path / "ghhook.sqlite3", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # a sqlite3 shell, a backup
        gate.write_bytes(b"x")  # the restart ends while the journal is locked
        eventually(lambda: not daemon.status()["busy"], what="the engine idle again")
        code, health = daemon.get("/healthz")
        assert code == 503 and "locked" in health["error"]
        second = git.commit_and_push("v3\n")
        code, answer = daemon.push(second, delivery="refused-once")
        assert code == 503 and "redeliver" in answer["error"]

        holder.execute("ROLLBACK")
        holder.close()
        eventually(lambda: daemon.get("/healthz")[0] == 200, what="healthz ok again")
        eventually(
            lambda: daemon.status()["deploys"][0]["result"] == "deployed",
            what="the locked-out outcome recorded",
        )
        assert daemon.status()["deploys"][0]["sha"] == first
        assert daemon.push(second, delivery="refused-once")[0] == 202, "the redelivery"
        eventually(lambda: git.head() == second and daemon.status()["deployed"] == second)
        restarted = (tmp_path / "restarts").read_text().split()
        assert restarted == [first, second]
        assert daemon.log().count("cannot record it yet") == 1, "logged once"
    finally:
        daemon.stop()


def test_a_corrupt_journal_is_refused_at_start_with_one_line(
    git: GitFixture, tmp_path: Path
) -> None:
    state = tmp_path / "ghhook.sqlite3"
    db = sqlite3.connect(state)
    db.execute("CREATE TABLE t (x TEXT)")
    db.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 100)
    db.commit()
    db.close()
    with state.open("r+b") as f:
        f.seek(4096)  # the first page after the schema: zeroed
        f.write(b"\0" * 4096)
    done = run_twistd(
        ["-n", "--pidfile=", "ghhook", "--repo", str(git.clone), "--state", str(state)],
        tmp_path,
        environment(GHHOOK_SECRET="s"),
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert len(output.strip().splitlines()) == 1 and "Traceback" not in output, output
    assert str(state) in output and "corrupt" in output and "move it aside" in output


def test_a_journal_of_the_previous_release_is_upgraded_for_the_app(
    git: GitFixture, tmp_path: Path
) -> None:
    fixture = Path(__file__).parent / "fixtures" / "journal-v0.sqlite3"
    (tmp_path / "ghhook.sqlite3").write_bytes(fixture.read_bytes())
    daemon = Daemon(tmp_path, git.clone, "--name", "shop").start()
    try:
        deploys = eventually(
            lambda: (
                [d for d in daemon.status("shop")["deploys"] if d["id"] > 5]
                and daemon.status("shop")["deploys"]
            ),
            what="the catch-up after the upgrade",
        )
        assert [d["id"] for d in deploys][-5:] == [5, 4, 3, 2, 1], "the old history is the app's"
        assert {d["result"] for d in deploys[-5:]} >= {"deployed", "rolled_back", "failed"}
        assert "upgraded" in daemon.log()
    finally:
        daemon.stop()
    db = sqlite3.connect(tmp_path / "ghhook.sqlite3")
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        assert {row[0] for row in db.execute("SELECT DISTINCT app FROM deploys")} == {"shop"}
    finally:
        db.close()
