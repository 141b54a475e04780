"""
Settings checked before the reactor runs: values, the secret, the child
environment, and what would fail every deploy (the branch, git's view of the
clone, the --uid user's access, ports in use). :mod:`ghhook.config` applies
them to each app and to the daemon. The one place where ghhook runs a
subprocess synchronously: nothing listens or runs yet (a reload, under the
reactor, skips those checks).
"""

from __future__ import annotations

import math
import os
import pwd
import shlex
import shutil
import socket
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
from twisted.python import usage

from ghhook.gitrepo import current_branch
from ghhook.signature import load_secrets

SECRET_VARIABLES = ("GHHOOK_SECRET", "GITHUB_SECRET")


def positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError("not a number of seconds") from None
    if not number > 0:
        raise ValueError("must be a positive number of seconds")
    if not math.isfinite(number):
        raise ValueError("must be a finite number of seconds")
    return number


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError("not a whole number") from None
    if number < 1:
        raise ValueError("must be a positive whole number")
    return number


def command(value: str) -> tuple[str, ...]:
    """Split a command as a shell would split words; it never runs in one."""
    try:
        argv = tuple(shlex.split(value))
    except ValueError as e:
        raise ValueError(f"{value!r} cannot be split into words: {e}") from None
    if not argv:
        raise ValueError("the command is empty")
    return argv


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of every step: ours without the secret, git never prompting."""
    env = {k: v for k, v in environ.items() if k not in SECRET_VARIABLES}
    env["GIT_TERMINAL_PROMPT"] = "0"
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    return env


def secrets_in_file(path: str | Path) -> tuple[bytes, ...]:
    """
    The secrets a secret file holds, one per line (none when it holds none).

    :raises ValueError: ``cannot read it: <reason>``.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise ValueError(f"cannot read it: {reason}") from None
    return load_secrets(text)


def secrets_in_environment(environ: Mapping[str, str]) -> tuple[bytes, ...]:
    """The secrets of ``$GHHOOK_SECRET``, else of ``$GITHUB_SECRET``; none when unset."""
    for name in SECRET_VARIABLES:
        secrets = load_secrets(environ.get(name, ""))
        if secrets:
            return secrets
    return ()


#: The sentence for no secret at all from the single-repo options.
NO_SECRET = (
    "no webhook secret: give --secret-file FILE (one secret per line),"
    " or set GHHOOK_SECRET (or GITHUB_SECRET) in the environment"
)


def read_secrets(secret_file: str | None, environ: Mapping[str, str]) -> tuple[bytes, ...]:
    """The secrets to verify with: the file's lines, else an environment variable."""
    if secret_file is not None:
        try:
            secrets = secrets_in_file(secret_file)
        except ValueError as e:
            raise usage.UsageError(f"--secret-file {secret_file}: {e}") from None
        if not secrets:
            raise usage.UsageError(f"--secret-file {secret_file} holds no secret")
        return secrets
    secrets = secrets_in_environment(environ)
    if not secrets:
        raise usage.UsageError(NO_SECRET)
    return secrets


def checked_out_branch(gdir: Path) -> str | None:
    """
    The branch the clone is on; while a rebase a crash left holds HEAD
    detached, the branch being rebased (the catch-up aborts that rebase).
    """
    for rebase in ("rebase-merge", "rebase-apply"):
        try:
            name = (gdir / rebase / "head-name").read_text(encoding="utf-8").strip()
        except OSError:
            continue
        if name.startswith("refs/heads/"):
            return name[len("refs/heads/") :]
    return current_branch(gdir)


@attrs.frozen
class RunAs:
    """The user twistd switches to after binding (``--uid``), as root checks it before."""

    uid: int
    gid: int
    name: str
    #: The supplementary groups twistd gives it (initgroups, as switchUID does).
    groups: tuple[int, ...]

    def __str__(self) -> str:
        return f"{self.name} (uid {self.uid})"

    def subprocess_options(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "extra_groups": list(self.groups)}


def run_as(twistd: Mapping[str, Any]) -> RunAs | None:
    """
    Whom twistd will run ghhook as after ``--uid``/``--gid``, when that is
    another user than now and we are root to check as them; else None.

    :raises ValueError: with the line to show, for a uid no user has.
    """
    uid, gid = twistd.get("uid"), twistd.get("gid")
    if uid is None or uid == os.geteuid() or os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        raise ValueError(f"--uid {uid}: no such user") from None
    if gid is None:
        gid = entry.pw_gid
    return RunAs(uid, gid, entry.pw_name, tuple(os.getgrouplist(entry.pw_name, gid)))


def _user_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def git_refusal(git: str, repo: Path, env: Mapping[str, str], user: RunAs | None) -> str | None:
    """
    Why git will not work in ``repo`` for the user that runs the deploys, with
    the environment the deploys get (HOME, so the same safe.directory); None
    when it works. Run once before the reactor starts.
    """
    who = str(user) if user is not None else _user_name(os.geteuid())
    try:
        done = subprocess.run(
            [git, "-C", str(repo), "rev-parse", "--git-dir"],
            cwd="/",
            env=dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            **(user.subprocess_options() if user is not None else {}),
        )
    except (OSError, subprocess.SubprocessError) as e:
        return f"cannot run {git} as {who}: {e}"
    if done.returncode == 0:
        return None
    return explain_git_refusal(done.returncode, done.stderr, repo, env, who)


def explain_git_refusal(
    code: int | None, stderr: str, repo: Path, env: Mapping[str, str], who: str | None = None
) -> str:
    """
    Why git refused the clone, from its exit and its words, as one sentence
    saying what to do (:func:`git_refusal` at start, the reload's check later).
    """
    who = who if who is not None else _user_name(os.geteuid())
    lines = stderr.strip().splitlines() or [f"git exited with {code}"]
    fatal = next((line for line in lines if line.startswith("fatal:")), lines[0])
    reason = fatal.removeprefix("fatal:").strip()
    if "dubious ownership" not in reason:
        return f"git cannot use the clone as {who}: {reason}"
    try:
        owner = _user_name(repo.stat().st_uid)
    except OSError:
        owner = "another user"
    return (
        f"git refuses to work in it as {who}, since it belongs to {owner} (dubious ownership);"
        f" chown -R it to that user, or add it to that user's safe.directory (git config"
        f" --global --add safe.directory {repo}, with HOME={env.get('HOME', '')})"
    )


def inaccessible(user: RunAs, paths: Iterable[Path]) -> Path | None:
    """
    The first of ``paths`` that ``user`` cannot write, asked of the kernel as
    that user (permissions, ACLs, read-only mounts) with coreutils' ``test``,
    never through a shell: a directory it cannot create files in, or an
    existing file it cannot read and write. None when all are fine.
    """
    program = shutil.which("test", path=os.defpath) or "/usr/bin/test"
    for path in paths:
        if path.is_dir():
            question = ["-w", str(path), "-a", "-x", str(path)]
        elif os.path.lexists(path):
            question = ["-r", str(path), "-a", "-w", str(path)]
        else:
            continue
        try:
            done = subprocess.run(
                [program, *question],
                cwd="/",
                env={"PATH": os.defpath},
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=30,
                **user.subprocess_options(),
            )
        except (OSError, subprocess.SubprocessError):
            return None  # cannot ask: twistd's own start-up will tell
        if done.returncode == 1:
            return path
    return None


def endpoint_problem(description: str) -> str | None:
    """Why ``description`` is no server endpoint Twisted can parse; None when it is one."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    try:
        serverFromString(reactor, description)
    except Exception as e:  # noqa: BLE001 - parsers raise many kinds
        return f"not a valid endpoint ({e})"
    return None


def bind_refusal(description: str) -> str | None:
    """
    Why a TCP (or SSL) endpoint's address cannot be bound now: in use,
    privileged, not on this host; None when it can, or is no TCP endpoint. A
    trial bind with SO_REUSEADDR, as Twisted binds, then closed at once:
    nothing listens.
    """
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    endpoint = serverFromString(reactor, description)
    # The parsed port and interface; UNIX and systemd endpoints have none.
    port = getattr(endpoint, "_port", None)
    interface = getattr(endpoint, "_interface", None)
    if not isinstance(port, int) or not isinstance(interface, str) or port == 0:
        return None
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as trial:
        trial.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            trial.bind((interface, port))
        except OSError as e:
            where = f"{interface}:{port}" if interface else f"port {port}"
            return f"cannot listen on {where}: {e.strerror or e}"
    return None


def file_refusal(
    pidfile: Path | None, state: Path, user: RunAs | None, elsewhere: str
) -> tuple[str, str] | None:
    """
    twistd writes the pidfile as the user it starts as, then removes it at
    stop as --uid; the journal is created as --uid. Say what either user
    could not do, before twistd writes the pidfile: ``("pidfile", why)`` or
    ``("state", why)``; None when both can.

    :param elsewhere: the advice for a journal directory that user cannot
        write, e.g. ``choose another --rundir``.
    """
    if pidfile is not None and not pidfile.exists():
        if not pidfile.parent.is_dir():
            return "pidfile", f"no such directory: {pidfile.parent}"
        if not os.access(pidfile.parent, os.W_OK | os.X_OK):
            return "pidfile", f"twistd cannot create it: no write permission in {pidfile.parent}"
    if user is None:
        return None
    wal, shm = Path(f"{state}-wal"), Path(f"{state}-shm")
    paths = [state.parent, state, wal, shm]
    if pidfile is not None:
        paths.append(pidfile.parent)
    blocked = inaccessible(user, paths)
    if blocked is None:
        return None
    if pidfile is not None and blocked == pidfile.parent and blocked != state.parent:
        return "pidfile", (
            f"the --uid user {user} cannot write in {blocked}, so twistd could not remove"
            f" the pidfile at stop; put it in a directory that user can write"
        )
    if blocked == state.parent:
        also = ""
        if pidfile is not None and pidfile.parent == blocked:
            also = " (and twistd's pidfile, removed at stop)"
        return "state", (
            f"the --uid user {user} cannot create files in {blocked}, where the journal"
            f" goes{also}; make that directory writable by that user, or {elsewhere}"
        )
    return "state", f"the --uid user {user} cannot write {blocked}; chown it to that user"
