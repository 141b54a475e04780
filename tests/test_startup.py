"""
End to end: settings that would fail every deploy, or the start itself, are
refused by the real ``twistd ghhook`` with one line and a non-zero exit, no
traceback, no pidfile left, nothing listening: before anything listens when
they can be known then, else as soon as they are.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon import Daemon, environment, free_port, ghhook, run_twistd
from tests.gitfixture import GitFixture
from tests.gitfixture import git as run_git

pytestmark = pytest.mark.e2e

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to own files as others")


def refused(done: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """The one line on stderr; no traceback anywhere."""
    assert done.returncode != 0, done
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ghhook: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def env() -> dict[str, str]:
    return environment(GHHOOK_SECRET="s")


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_a_branch_the_clone_is_not_on_is_refused(git: GitFixture, tmp_path: Path) -> None:
    done = run_twistd(ghhook(git, "--branch", "prod", twistd=("-n", "--pidfile=")), tmp_path, env())
    refused(done, "--branch prod", "is on branch main", "switch prod")
    assert done.stdout == ""


def test_a_detached_head_is_refused_even_with_a_branch(git: GitFixture, tmp_path: Path) -> None:
    run_git(git.clone, "checkout", "--quiet", "--detach")
    done = run_twistd(ghhook(git, "--branch", "main", twistd=("-n", "--pidfile=")), tmp_path, env())
    refused(done, "HEAD is detached", "switch main")


@pytest.mark.parametrize("value", ["0", "-5", "many", "2.5"])
def test_keep_deploys_must_be_a_positive_whole_number(
    git: GitFixture, tmp_path: Path, value: str
) -> None:
    done = run_twistd(
        ghhook(git, "--keep-deploys", value, twistd=("-n", "--pidfile=")),
        tmp_path,
        env(),
    )
    refused(done, f"--keep-deploys {value}")


@pytest.mark.parametrize("daemonize", [False, True], ids=["nodaemon", "daemon"])
def test_a_port_in_use_is_refused_before_anything_listens(
    git: GitFixture, tmp_path: Path, daemonize: bool
) -> None:
    pidfile = tmp_path / "ghhook.pid"
    flags = ("--pidfile", str(pidfile), "--logfile", str(tmp_path / "twistd.log"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = ghhook(
            git,
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            twistd=flags if daemonize else ("-n", *flags),
        )
        done = run_twistd(args, tmp_path, env())
    line = refused(done, f"--listen tcp:{port}:interface=127.0.0.1", "Address already in use")
    assert line.endswith("Address already in use"), "whole, not cut off"
    assert not pidfile.exists()
    assert not (tmp_path / "TWISTD-CRASH.log").exists()


@as_root
def test_a_clone_git_refuses_for_dubious_ownership_is_refused(
    git: GitFixture, tmp_path: Path
) -> None:
    shutil.chown(git.clone, NOBODY, NOBODY)
    for path in git.clone.rglob("*"):
        os.lchown(path, NOBODY, NOBODY)
    # Where the daemon's git reads safe.directory: HOME, as for every step.
    home = tmp_path / "home"
    home.mkdir()
    done = run_twistd(
        ghhook(git, twistd=("-n", "--pidfile=")),
        tmp_path,
        environment(GHHOOK_SECRET="s", HOME=str(home)),
    )
    refused(done, f"--repo {git.clone}", "dubious ownership", "belongs to nobody")
    # The exception git offers works for ghhook as it does for the deploys.
    run_git(home, "config", "--file", str(home / ".gitconfig"), "safe.directory", str(git.clone))
    daemon = Daemon(tmp_path, git.clone, env=environment(HOME=str(home))).start()
    daemon.stop()


@pytest.fixture
def public() -> Iterator[Path]:
    """A directory every user may enter (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="ghhook-public-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


@as_root
def test_a_clone_git_refuses_to_the_uid_user_is_refused_as_root(public: Path) -> None:
    git = GitFixture.create(public)
    for path in (git.root, *git.root.rglob("*")):
        path.chmod(path.stat().st_mode | 0o055)
    run = public / "run"
    run.mkdir(mode=0o777)
    run.chmod(0o777)
    done = run_twistd(
        ghhook(git, twistd=("-n", "--pidfile=", "--uid", str(NOBODY), "--rundir", str(run))),
        run,
        env(),
    )
    refused(done, "dubious ownership", "as nobody (uid 65534)", "belongs to root")


@as_root
@pytest.mark.parametrize("daemonize", [False, True], ids=["nodaemon", "daemon"])
def test_a_rundir_the_uid_user_cannot_write_is_refused_without_a_pidfile(
    public: Path, daemonize: bool
) -> None:
    git = GitFixture.create(public)
    for path in (git.clone, *git.clone.rglob("*")):
        os.lchown(path, NOBODY, NOBODY)
    run = public / "run"
    run.mkdir(mode=0o755)  # root's: nobody cannot create the journal, nor remove a pidfile
    twistd = ("--uid", str(NOBODY), "--gid", str(NOBODY), "--rundir", str(run))
    if not daemonize:
        twistd = ("-n", *twistd)
    done = run_twistd(ghhook(git, twistd=twistd), run, env())
    refused(done, f"cannot create files in {run}", "nobody (uid 65534)", "--rundir")
    assert list(run.iterdir()) == [], "no pidfile, no journal"


def _broken_journal(tmp_path: Path) -> Path:
    """A journal whose header is sound but SQLite cannot open: its WAL is a directory."""
    state = tmp_path / "ghhook.sqlite3"
    db = sqlite3.connect(state)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    Path(f"{state}-wal").mkdir()
    return state


def test_a_journal_that_fails_to_open_stops_the_daemon_with_one_line(
    git: GitFixture, tmp_path: Path
) -> None:
    state = _broken_journal(tmp_path)
    pidfile = tmp_path / "ghhook.pid"
    port = free_port()
    args = ghhook(
        git,
        "--state",
        str(state),
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        twistd=("-n", "--pidfile", str(pidfile)),
    )
    done = run_twistd(args, tmp_path, env())
    line = refused(done, f"cannot open the journal {state}")
    assert line.removeprefix("ghhook: ") in done.stdout, "the log has it too"
    assert not pidfile.exists()
    assert not listening(port)


def test_a_journal_that_fails_to_open_stops_a_daemonizing_twistd(
    git: GitFixture, tmp_path: Path
) -> None:
    state = _broken_journal(tmp_path)
    pidfile, logfile = tmp_path / "ghhook.pid", tmp_path / "twistd.log"
    args = ghhook(
        git,
        "--state",
        str(state),
        twistd=("--pidfile", str(pidfile), "--logfile", str(logfile)),
    )
    done = run_twistd(args, tmp_path, env())
    assert done.returncode != 0
    # twistd's parent prints what its daemon child reports, whole, in its own two lines.
    assert "ghhook: cannot open the journal" in done.stderr and "Traceback" not in done.stderr
    assert not pidfile.exists()
    log = logfile.read_text()
    assert "ghhook cannot start: cannot open the journal" in log and "Traceback" not in log


@pytest.mark.parametrize("daemonize", [False, True], ids=["nodaemon", "daemon"])
def test_a_listener_that_fails_after_the_checks_stops_the_daemon_with_one_line(
    git: GitFixture, tmp_path: Path, daemonize: bool
) -> None:
    # A UNIX socket is bound only once twistd is in --rundir: it fails there.
    pidfile, logfile = tmp_path / "ghhook.pid", tmp_path / "twistd.log"
    flags = ("--pidfile", str(pidfile), "--logfile", str(logfile))
    args = ghhook(
        git,
        "--listen",
        "unix:/nonexistent/ghhook.sock",
        twistd=flags if daemonize else ("-n", *flags),
    )
    done = run_twistd(args, tmp_path, env())
    assert done.returncode != 0
    assert "Traceback" not in done.stdout + done.stderr
    if not daemonize:
        refused(done, "--listen unix:/nonexistent/ghhook.sock", "No such file or directory")
    else:
        assert "ghhook: --listen unix:/nonexistent/ghhook.sock" in done.stderr
    assert not pidfile.exists()
    log = logfile.read_text()
    assert "ghhook cannot start: --listen unix:" in log and "Traceback" not in log


def test_every_problem_of_a_config_file_is_a_line_before_anything_listens(
    git: GitFixture, tmp_path: Path
) -> None:
    port = free_port()
    pidfile = tmp_path / "ghhook.pid"
    config = tmp_path / "ghhook.toml"
    config.write_text(
        f'listen = "tcp:{port}:interface=127.0.0.1"\nadmin_listen = []\n'
        '[defaults]\nsecret_env = "APP_SECRET"\n'
        f'[apps.site]\nrepo = "{git.clone}"\nbranch = "prod"\n'
        '[apps.Other]\nrepo = "nowhere"\n'
    )
    done = run_twistd(
        ["-n", "--pidfile", str(pidfile), "ghhook", "--config", str(config)], tmp_path, env()
    )
    assert done.returncode != 0 and "Traceback" not in done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        f"ghhook: {config}: defaults.secret_env: $APP_SECRET is not set in ghhook's environment",
        f"ghhook: {config}: apps.site.branch: the clone {git.clone} is on branch main, and"
        f" deploys pull into the branch it is on; check out prod there (git -C {git.clone}"
        ' switch prod), or set branch = "main"',
        f"ghhook: {config}: apps.Other: not a valid app name (lower-case letters, digits, - and"
        " _, starting with a letter or digit)",
        f"ghhook: {config}: apps.Other.repo: {tmp_path}/nowhere is not a directory",
    ]
    assert not pidfile.exists() and not listening(port)


def test_config_and_repo_together_are_refused(git: GitFixture, tmp_path: Path) -> None:
    done = run_twistd(
        ["-n", "--pidfile=", "ghhook", "--config", "x.toml", "--repo", str(git.clone)],
        tmp_path,
        env(),
    )
    assert refused(done) == "ghhook: give --config FILE or --repo PATH, not both"
