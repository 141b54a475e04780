"""
``python -m ghhook check-config FILE``: exit 0 and a table of the apps for
a valid file, exit 2 and every problem on stderr otherwise; in process and
as the real command.
"""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import ghhook
from ghhook import send
from ghhook.checkconfig import main
from tests.daemon import environment
from tests.gitfixture import GitFixture
from tests.gitfixture import git as run_git


@pytest.fixture
def clones(tmp_path: Path) -> tuple[GitFixture, Path]:
    """A repository with its clone, and a second clone of it on a branch staging."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git = GitFixture.create(repo)
    run_git(git.work, "push", "--quiet", "origin", "HEAD:staging")
    staging = tmp_path / "staging"
    run_git(tmp_path, "clone", "--quiet", "--branch", "staging", str(git.remote), str(staging))
    run_git(git.clone, "remote", "set-url", "origin", "git@github.com:me/api.git")
    return git, staging


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "secret").write_text("s\n")
    file = tmp_path / "ghhook.toml"
    file.write_text(
        'listen = ["tcp:8000"]\nadmin_listen = []\n[defaults]\nsecret_file = "secret"\n' + text
    )
    return file


VALID = (
    '[apps.api]\nrepo = "repo/clone"\nbuild = ["true", ["echo", "two words"]]\n'
    'restart = "true"\n'
    '[apps.api-staging]\nrepo = "staging"\ngithub_repo = "me/api"\n'
)


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err, environment())
    return code, out.getvalue(), err.getvalue()


def test_a_valid_file_prints_the_apps_and_exits_0(
    tmp_path: Path, clones: tuple[GitFixture, Path]
) -> None:
    git, staging = clones
    code, out, err = run(str(write(tmp_path, VALID)))
    assert (code, err) == (0, "")
    header, api, api_staging = out.splitlines()
    assert header.split() == [
        "name",
        "clone",
        "branch",
        "forge",
        "repository",
        "URL",
        "path",
        "commands",
    ]
    true, echo = shutil.which("true"), shutil.which("echo")
    assert api.split()[:7] == [
        "api",
        str(git.clone),
        "main",
        "github",
        "me/api",
        "/hooks/api,",
        "/github",
    ]
    assert api.endswith(f"  {true}; {echo} 'two words'; {true}"), "shell-quoted, build first"
    assert api_staging.split() == [
        "api-staging",
        str(staging),
        "staging",
        "github",
        "me/api",
        "/hooks/api-staging,",
        "/github",
        "-",
    ]
    # The columns line up: each starts where the header's does.
    for column in ("clone", "branch", "forge", "repository", "URL path", "commands"):
        at = header.index(column)
        assert api[at - 2 : at] == "  " and api[at] != " "


def test_check_config_passes_while_the_daemon_holds_its_port(
    tmp_path: Path, clones: tuple[GitFixture, Path]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        file = write(tmp_path, VALID)
        file.write_text(file.read_text().replace("tcp:8000", f"tcp:{port}:interface=127.0.0.1"))
        code, out, err = run(str(file))
    assert (code, err) == (0, "") and "api-staging" in out


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        pytest.param(
            VALID + 'restrat = "x"\nsecret = "y"\n',
            [
                "{file}: apps.api-staging.restrat: unknown key 'restrat'; did you mean 'restart'?",
                "{file}: apps.api-staging.secret: secrets never go in the config file (it is"
                " often world-readable and kept in git); use secret_file, secret_env or"
                " secret_credential",
            ],
            id="two-problems",
        ),
        pytest.param("[apps.api\n", None, id="syntax"),
    ],
)
def test_an_invalid_file_prints_every_problem_and_exits_2(
    tmp_path: Path, clones: tuple[GitFixture, Path], text: str, problems: list[str] | None
) -> None:
    file = write(tmp_path, text)
    code, out, err = run(str(file))
    assert (code, out) == (2, "")
    lines = err.splitlines()
    if problems is None:
        assert len(lines) == 1 and lines[0].startswith(f"{file}: line 5, column 10: not valid TOML")
    else:
        assert lines == [line.format(file=file) for line in problems]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "ghhook check-config: give one config file: check-config FILE"),
        (["a.toml", "b.toml"], "ghhook check-config: give one config file: check-config FILE"),
        (["/nonexistent/ghhook.toml"], "/nonexistent/ghhook.toml: cannot read it: No such file"),
    ],
)
def test_no_readable_file_exits_2_with_one_line(argv: list[str], message: str) -> None:
    code, out, err = run(*argv)
    assert (code, out) == (2, "")
    (line,) = err.splitlines()
    assert line.startswith(message)


def test_the_command_is_dispatched_by_python_m_ghhook(
    tmp_path: Path, clones: tuple[GitFixture, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        send.main(["check-config", str(write(tmp_path, VALID))])
    assert exit.value.code == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("name ")
    with pytest.raises(SystemExit) as exit:
        send.main(["check-config", str(write(tmp_path, "[apps.x]\n"))])
    assert exit.value.code == 2
    assert "apps.x.repo: missing" in capsys.readouterr().err


def test_the_real_command(tmp_path: Path, clones: tuple[GitFixture, Path]) -> None:
    file = write(tmp_path, VALID)
    command = [sys.executable, "-X", "importtime", "-m", "ghhook", "check-config", str(file)]
    done = subprocess.run(
        command, cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines()] == ["name", "api", "api-staging"]
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert "ghhook.config" in imported
    assert not {"klein", "ghhook.deployer", "ghhook.web", "ghhook.admin"} & imported, "quick"
    file.write_text(file.read_text() + "parallel = 0\n")
    done = subprocess.run(
        command[:1] + command[3:],
        cwd=tmp_path,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines() == [
        f"{file}: apps.api-staging.parallel: parallel is the daemon's key: put it at the top"
        " of the file, before any [table]"
    ]
    assert "Traceback" not in done.stderr


def test_version_is_ghhooks(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out == f"ghhook {ghhook.__version__}\n"
