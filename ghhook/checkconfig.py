"""
``python -m ghhook check-config FILE``: the daemon's validation of a config
file, for ``ExecStartPre=`` and CI.

It runs exactly :func:`ghhook.config.load_file`, as a start would, except
the trial bind of the ports (the daemon may be running and holding them)
and the ``--uid`` checks (there are no twistd options here). It prints a
table of the apps and exits 0, or prints every problem to stderr, one per
line, and exits 2. It imports nothing of the daemon beyond what the
validation needs, so it is quick.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NoReturn, TextIO

from twisted.python import usage

import ghhook

if TYPE_CHECKING:
    from ghhook.config import AppSettings, DaemonSettings

EXIT_OK = 0
EXIT_INVALID = 2
COLUMNS = ("name", "clone", "branch", "forge", "repository", "URL path", "commands")


class CheckConfigOptions(usage.Options):
    synopsis = "FILE"
    longdesc = (
        "Validate a ghhook config file as the daemon does at start and at a reload,"
        " then print its apps. Exits 0 when it is valid, 2 with every problem otherwise."
    )

    def parseArgs(self, *paths: str) -> None:
        if len(paths) != 1:
            raise usage.UsageError("give one config file: check-config FILE")
        self["path"] = paths[0]

    def getSynopsis(self) -> str:
        return f"Usage: python -m ghhook check-config {self.synopsis}"

    def opt_version(self) -> NoReturn:
        """Print the version and exit."""
        print(f"ghhook {ghhook.__version__}")
        sys.exit(0)


def app_row(app: AppSettings, shared_path: str) -> tuple[str, ...]:
    """One app's row: what it deploys, from where, at which URLs, with which commands."""
    commands = "; ".join(shlex.join(argv) for argv in app.commands())
    return (
        app.name,
        app.repo,
        app.branch,
        app.forge,
        app.repository or "(any)",
        f"{app.hook_path}, {shared_path}",
        commands or "-",
    )


def table(settings: DaemonSettings) -> str:
    """The apps as a plain text table, one row each, columns padded to line up."""
    rows = [COLUMNS, *(app_row(app, settings.path) for app in settings.apps)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(COLUMNS))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines)


def check(
    path: str,
    environ: Mapping[str, str],
    out: TextIO,
    err: TextIO,
) -> int:
    """
    Validate ``path`` and report: the table on ``out`` (exit 0), or the
    problems on ``err`` (exit 2).
    """
    # Here, not at the top: ``python -m ghhook send`` needs none of it.
    from ghhook.config import ConfigError, load_file

    try:
        settings = load_file(path, environ, {}, check_ports=False)
    except ConfigError as e:
        for line in e.problems:
            print(line, file=err)
        return EXIT_INVALID
    print(table(settings), file=out)
    return EXIT_OK


def main(
    argv: Sequence[str],
    out: TextIO | None = None,
    err: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """
    ``check-config``'s arguments (``[FILE]``) in, its exit status out.

    :param environ: the environment secrets and PATH come from; default ours.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    options = CheckConfigOptions()
    try:
        options.parseOptions(list(argv))
    except usage.UsageError as e:
        print(f"ghhook check-config: {e}", file=err)
        return EXIT_INVALID
    return check(options["path"], os.environ if environ is None else environ, out, err)
