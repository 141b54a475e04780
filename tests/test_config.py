"""
The config file and the single-repo options, both read by
:mod:`ghhook.config` into frozen settings, against real clones and real
files: one row per kind of problem, every problem at once in file order,
[defaults] and what overrides it, the secret sources, relative paths, the
forms of a command, and what a reload skips.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest

from ghhook import config
from ghhook.config import (
    AppSettings,
    ConfigError,
    DaemonSettings,
    app_name,
    from_options,
    load_file,
)
from ghhook.frontdoor import Limits
from tests.gitfixture import GitFixture
from tests.gitfixture import git as run_git

SECRET = "s3cret"


@attrs.frozen
class Host:
    """Two repositories with their clones, a secret file, and where config files go."""

    root: Path
    blog: GitFixture
    api: GitFixture
    secret: Path

    @property
    def file(self) -> Path:
        return self.root / "ghhook.toml"

    def environ(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("GHHOOK_SECRET", "GITHUB_SECRET")}
        env.update(extra)
        return env

    def twistd(self) -> dict[str, Any]:
        return {"rundir": str(self.root)}

    def write(self, text: str, file: Path | None = None) -> Path:
        """The config file: ``text`` with {blog}, {api} and {secret} filled in."""
        file = file or self.file
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(
            text.replace("{blog}", str(self.blog.clone))
            .replace("{api}", str(self.api.clone))
            .replace("{secret}", str(self.secret))
        )
        return file

    def load(
        self, text: str, environ: Mapping[str, str] | None = None, **kw: Any
    ) -> DaemonSettings:
        file = self.write(text)
        return load_file(str(file), environ or self.environ(), self.twistd(), **kw)

    def problems(self, text: str, environ: Mapping[str, str] | None = None, **kw: Any) -> list[str]:
        with pytest.raises(ConfigError) as raised:
            self.load(text, environ, **kw)
        return [line.replace(str(self.file), "FILE") for line in raised.value.problems]


@pytest.fixture(scope="module")
def repositories(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two repositories with their clones, made once: each test copies them."""
    root = tmp_path_factory.mktemp("repositories")
    for name in ("blog", "api"):
        (root / name).mkdir()
        GitFixture.create(root / name)
    return root


@pytest.fixture
def host(tmp_path: Path, repositories: Path) -> Host:
    def copy(name: str) -> GitFixture:
        where = tmp_path / name
        shutil.copytree(repositories / name, where, symlinks=True)
        return GitFixture(where, where / "remote.git", where / "clone", where / "work")

    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    return Host(tmp_path, copy("blog"), copy("api"), secret)


#: A valid daemon head: no ports to bind, the secret for every app.
HEAD = 'listen = "tcp:0"\nadmin_listen = []\n[defaults]\nsecret_file = "{secret}"\n'
BLOG = '[apps.blog]\nrepo = "{blog}"\n'


# --- One row per kind of problem -------------------------------------------------------


PROBLEMS = [
    pytest.param(
        HEAD + BLOG + 'restrat = "true"\n',
        ["FILE: apps.blog.restrat: unknown key 'restrat'; did you mean 'restart'?"],
        id="unknown-key-suggested",
    ),
    pytest.param(
        "zebra = 1\n" + HEAD + BLOG,
        ["FILE: zebra: unknown key 'zebra'"],
        id="unknown-key-no-suggestion",
    ),
    pytest.param(
        'secret = "x"\n' + HEAD + 'secret = "y"\n' + BLOG + 'secret = "z"\n',
        [
            f"FILE: {where}secret: secrets never go in the config file (it is often"
            " world-readable and kept in git); use secret_file, secret_env or secret_credential"
            for where in ("", "defaults.", "apps.blog.")
        ],
        id="secret-key",
    ),
    pytest.param(
        HEAD + '[apps.blog]\nbranch = "main"\n',
        ["FILE: apps.blog.repo: missing: every app needs the path of its git clone"],
        id="missing-repo",
    ),
    pytest.param(
        HEAD + '[apps.Blog]\nrepo = "{blog}"\n',
        [
            "FILE: apps.Blog: not a valid app name (lower-case letters, digits, - and _,"
            " starting with a letter or digit)"
        ],
        id="bad-app-name",
    ),
    pytest.param(
        HEAD + '[apps.blog]\nrepo = "{blog}/../nowhere"\n',
        ["FILE: apps.blog.repo: {root}/blog/nowhere is not a directory"],
        id="not-a-clone",
    ),
    pytest.param(
        HEAD + BLOG + 'branch = "prod"\n',
        [
            "FILE: apps.blog.branch: the clone {root}/blog/clone is on branch main, and"
            " deploys pull into the branch it is on; check out prod there (git -C"
            ' {root}/blog/clone switch prod), or set branch = "main"'
        ],
        id="branch-mismatch",
    ),
    pytest.param(
        HEAD + BLOG + 'branch = ""\n',
        [
            "FILE: apps.blog.branch: is empty; name the branch to deploy, or leave it out for"
            " the clone's"
        ],
        id="branch-empty",
    ),
    pytest.param(
        HEAD + BLOG + 'remote = "upstream"\n',
        ["FILE: apps.blog.remote: no such remote 'upstream' in {root}/blog/clone"],
        id="no-such-remote",
    ),
    pytest.param(
        HEAD + BLOG + 'github_repo = "me"\n',
        ["FILE: apps.blog.github_repo: expected OWNER/NAME"],
        id="github-repo",
    ),
    pytest.param(
        HEAD + BLOG + 'restart_signal = "NOPE"\nrestart_pidfile = "app.pid"\n',
        ["FILE: apps.blog.restart_signal: no such signal"],
        id="bad-restart-signal",
    ),
    pytest.param(
        HEAD + BLOG + 'restart_pidfile = "app.pid"\n',
        [
            "FILE: apps.blog.restart_pidfile: goes with restart_signal, the signal to send to"
            " the pid it holds"
        ],
        id="pidfile-without-signal",
    ),
    pytest.param(
        HEAD + BLOG + 'restart_signal = "HUP"\n',
        [
            "FILE: apps.blog.restart_signal: needs restart_pidfile, the file holding the pid to signal"
        ],
        id="signal-without-pidfile",
    ),
    pytest.param(
        HEAD + BLOG + 'restart = "true"\nrestart_signal = "HUP"\nrestart_pidfile = "p"\n',
        ["FILE: apps.blog.restart_signal: give restart or restart_signal, not both"],
        id="restart-command-and-signal",
    ),
    pytest.param(
        HEAD + BLOG + 'health_url = "127.0.0.1:8001"\n',
        ["FILE: apps.blog.health_url: not an http(s) URL"],
        id="health-url",
    ),
    pytest.param(
        HEAD + BLOG + 'timeout = "600"\nhealth_timeout = -1\n',
        [
            "FILE: apps.blog.timeout: expected a number of seconds, not a string",
            "FILE: apps.blog.health_timeout: must be a positive number of seconds",
        ],
        id="timeouts",
    ),
    pytest.param(
        HEAD + BLOG + 'build = ["true", "no-such-program-x --flag", ["sh", "-c", "x"], []]\n',
        [
            "FILE: apps.blog.build[1]: 'no-such-program-x' is not an executable on PATH",
            "FILE: apps.blog.build[3]: the command is empty",
        ],
        id="build-programs",
    ),
    pytest.param(
        HEAD + BLOG + 'build = [1]\nrestart = "echo \'unclosed"\n',
        [
            "FILE: apps.blog.build: expected a string, or a list of strings (commands) and"
            " lists of strings (argvs), not an array",
            'FILE: apps.blog.restart: "echo \'unclosed" cannot be split into words: No'
            " closing quotation",
        ],
        id="command-forms",
    ),
    pytest.param(
        HEAD + BLOG + 'secret_env = "WEBHOOK_SECRET"\nsecret_file = "{secret}"\n',
        [
            "FILE: apps.blog.secret_file: give only one of secret_file, secret_env and"
            " secret_credential; secret_env is given too"
        ],
        id="two-secret-sources",
    ),
    pytest.param(
        HEAD + BLOG + 'secret_env = "WEBHOOK_SECRET"\n',
        ["FILE: apps.blog.secret_env: $WEBHOOK_SECRET is not set in ghhook's environment"],
        id="secret-env-unset",
    ),
    pytest.param(
        HEAD + BLOG + 'secret_credential = "ghhook-secret"\n',
        [
            "FILE: apps.blog.secret_credential: $CREDENTIALS_DIRECTORY is not set: systemd"
            " sets it for a unit with LoadCredential=; outside systemd use secret_file or"
            " secret_env"
        ],
        id="secret-credential-outside-systemd",
    ),
    pytest.param(
        HEAD + BLOG + 'secret_file = "missing"\n',
        ["FILE: apps.blog.secret_file: {root}/missing: cannot read it: No such file or directory"],
        id="secret-file-missing",
    ),
    pytest.param(
        'listen = "tcp:0"\nadmin_listen = []\n' + BLOG,
        [
            "FILE: apps.blog: no webhook secret: set secret_file, secret_env or"
            " secret_credential, in [defaults] or in the app's table"
        ],
        id="no-secret",
    ),
    pytest.param(
        HEAD + 'repo = "{blog}"\n' + BLOG,
        ["FILE: defaults.repo: each app has a clone of its own: set repo in its [apps.NAME] table"],
        id="repo-in-defaults",
    ),
    pytest.param(
        HEAD,
        ["FILE: no apps: add an [apps.NAME] table for each, with its repo = PATH"],
        id="no-apps",
    ),
    pytest.param(
        "timeout = 5\n" + HEAD + BLOG + 'listen = "tcp:0"\n',
        [
            "FILE: timeout: timeout is an app's key: put it in [defaults] (every app) or in an"
            " [apps.NAME] table",
            "FILE: apps.blog.listen: listen is the daemon's key: put it at the top of the"
            " file, before any [table]",
        ],
        id="keys-in-the-wrong-place",
    ),
    pytest.param(
        'path = "github"\nparallel = 0\nkeep_deploys = 1.5\nmax_inflight = "64X"\n' + HEAD + BLOG,
        [
            "FILE: path: must start with /",
            "FILE: parallel: must be a positive whole number",
            "FILE: keep_deploys: expected a whole number, not a float",
            "FILE: max_inflight: not a number of bytes (e.g. 67108864, 65536K or 64M)",
        ],
        id="daemon-values",
    ),
    pytest.param(
        'path = "/hooks/all"\nheader_timeout = 30\nbody_timeout = 20\n' + HEAD + BLOG,
        [
            "FILE: path: /hooks/ holds each app's own URL (/hooks/NAME); choose another path",
            "FILE: body_timeout: must be at least header_timeout (30), since it counts from"
            " the same start",
        ],
        id="shared-path-and-deadlines",
    ),
    pytest.param(
        'listen = ["tcp:0", "bogus:1"]\nadmin_listen = []\nadmin_host = ["a b"]\n'
        '[defaults]\nsecret_file = "{secret}"\n' + BLOG,
        [
            "FILE: listen[1]: not a valid endpoint (Unknown endpoint type: 'bogus')",
            "FILE: admin_host[0]: 'a b' is not a host name or address (give it without scheme"
            " or port; a name in ASCII, xn-- for others)",
        ],
        id="endpoints-and-admin-hosts",
    ),
    pytest.param(
        'listen = []\nadmin_listen = "none"\n[defaults]\nsecret_file = "{secret}"\n' + BLOG,
        ["FILE: listen: give at least one endpoint: the hook listens there"],
        id="no-listener",
    ),
    pytest.param(
        HEAD + 'state = "nowhere/j.sqlite3"\n' + BLOG,
        [
            "FILE: defaults.state: state is the daemon's key: put it at the top of the file, before any [table]"
        ],
        id="daemon-key-in-defaults",
    ),
    pytest.param(
        'state = "nowhere/j.sqlite3"\n' + HEAD + BLOG,
        ["FILE: state: {root}/nowhere/j.sqlite3: no such directory: {root}/nowhere"],
        id="state-directory",
    ),
    pytest.param(
        HEAD + "[apps.blog\n" + 'repo = "{blog}"\n',
        ["FILE: line 5, column 11: not valid TOML: Expected ']' at the end of a table declaration"],
        id="toml-syntax",
    ),
    pytest.param(
        HEAD + "apps = 3\n",
        [
            "FILE: defaults.apps: unknown key 'apps'",
            "FILE: no apps: add an [apps.NAME] table for each, with its repo = PATH",
        ],
        id="apps-inside-defaults",
    ),
    pytest.param(
        'apps = 3\nlisten = "tcp:0"\n',
        ["FILE: apps: expected a table ([apps...]), not an integer"],
        id="apps-not-a-table",
    ),
    pytest.param(
        HEAD + '[apps]\nblog = "{blog}"\n',
        ["FILE: apps.blog: expected a table ([apps.blog] and its keys), not a string"],
        id="app-not-a-table",
    ),
]


@pytest.mark.parametrize(("text", "expected"), PROBLEMS)
def test_each_problem_is_one_line_naming_file_and_key(
    host: Host, text: str, expected: list[str]
) -> None:
    problems = host.problems(text)
    assert problems == [line.replace("{root}", str(host.root)) for line in expected]


def test_two_apps_on_one_clone_are_refused_naming_both(host: Host) -> None:
    (host.root / "link").symlink_to(host.blog.clone)
    text = HEAD + BLOG + '[apps.blog-copy]\nrepo = "link"\n'
    assert host.problems(text) == [
        f"FILE: apps.blog-copy.repo: {host.root}/link is the clone of apps.blog too; two apps"
        " cannot deploy one clone (give each its own clone)"
    ]


def test_a_detached_head_is_refused(host: Host) -> None:
    run_git(host.blog.clone, "checkout", "--quiet", "--detach")
    assert host.problems(HEAD + BLOG + 'branch = "main"\n') == [
        f"FILE: apps.blog.repo: HEAD is detached, and deploys pull into a branch; check out"
        f" the branch to deploy (git -C {host.blog.clone} switch main)"
    ]


def test_every_problem_is_reported_at_once_in_file_order(host: Host) -> None:
    text = (
        'listen = "tcp:0"\n'
        "admin_listen = []\n"
        "parallel = -1\n"
        "[defaults]\n"
        'secret_file = "{secret}"\n'
        "timeout = 0\n"
        "[apps.api]\n"
        'repo = "{api}"\n'
        'restrat = "true"\n'
        'branch = "prod"\n'
        "[apps.blog]\n"
        'repo = "{blog}"\n'
        'secret = "no"\n'
        'health_url = "ftp://x"\n'
        "[apps.zz]\n"
    )
    assert host.problems(text) == [
        "FILE: parallel: must be a positive whole number",
        "FILE: defaults.timeout: must be a positive number of seconds",
        "FILE: apps.api.restrat: unknown key 'restrat'; did you mean 'restart'?",
        f"FILE: apps.api.branch: the clone {host.api.clone} is on branch main, and deploys"
        f" pull into the branch it is on; check out prod there (git -C {host.api.clone}"
        ' switch prod), or set branch = "main"',
        "FILE: apps.blog.secret: secrets never go in the config file (it is often"
        " world-readable and kept in git); use secret_file, secret_env or secret_credential",
        "FILE: apps.blog.health_url: not an http(s) URL",
        "FILE: apps.zz.repo: missing: every app needs the path of its git clone",
    ]


# --- What a valid file gives --------------------------------------------------------


def test_a_valid_file_gives_every_app_in_file_order(host: Host) -> None:
    settings = host.load(
        'listen = ["tcp:0", "unix:/tmp/ghhook-test.sock"]\n'
        'admin_listen = ["none"]\n'
        'admin_host = "ghhook.example"\n'
        'path = "/all"\n'
        "parallel = 3\n"
        "keep_deploys = 10\n"
        'max_inflight = "1M"\n'
        "header_timeout = 5\n"
        "body_timeout = 7.5\n"
        "max_per_address = 4\n"
        '[defaults]\nsecret_file = "{secret}"\n'
        '[apps.zeta]\nrepo = "{blog}"\ngithub_repo = "me/blog"\n'
        '[apps.alpha]\nrepo = "{api}"\nrestart = ["touch", "restarted"]\n'
        'health_url = "http://127.0.0.1:8001/"\nhealth_timeout = 5\n'
    )
    assert [app.name for app in settings.apps] == ["zeta", "alpha"]
    assert settings.listen == ("tcp:0", "unix:/tmp/ghhook-test.sock")
    assert settings.admin_listen == () and settings.admin_hosts == ("ghhook.example",)
    assert (settings.path, settings.parallel, settings.keep_deploys) == ("/all", 3, 10)
    assert settings.limits == Limits(
        header_timeout=5.0, body_timeout=7.5, max_per_address=4, max_inflight=1024 * 1024
    )
    assert settings.source == str(host.file) and settings.state == str(host.root / "ghhook.sqlite3")
    zeta, alpha = settings.apps
    assert (zeta.repo, zeta.branch, zeta.remote, zeta.repository) == (
        str(host.blog.clone),
        "main",
        "origin",
        "me/blog",
    )
    assert zeta.git_dir == str(host.blog.clone / ".git") and zeta.hook_path == "/hooks/zeta"
    assert zeta.secrets == (SECRET.encode(),) and zeta.restart is None and zeta.builds == ()
    assert alpha.repository is None, "the remote is no GitHub URL, so any repository"
    assert alpha.restart is not None and alpha.restart[1:] == ("restarted",)
    assert os.path.isabs(alpha.restart[0]) and alpha.restart[0].endswith("/touch")
    assert (alpha.health_url, alpha.health_timeout, alpha.timeout) == (
        "http://127.0.0.1:8001/",
        5.0,
        600.0,
    )
    assert settings.app("alpha") is alpha and settings.app("nope") is None


def test_defaults_are_inherited_and_an_apps_own_key_wins(host: Host) -> None:
    pidfile = host.root / "api.pid"
    settings = host.load(
        'listen = "tcp:0"\nadmin_listen = []\n'
        "[defaults]\n"
        'secret_file = "{secret}"\n'
        "timeout = 60\n"
        'restart = "true"\n'
        'remote = "origin"\n'
        '[apps.blog]\nrepo = "{blog}"\n'
        '[apps.api]\nrepo = "{api}"\ntimeout = 5\nsecret_env = "API_SECRET"\n'
        f'restart_signal = "HUP"\nrestart_pidfile = "{pidfile}"\n',
        environ=host.environ(API_SECRET="api one\napi two\n"),
    )
    blog, api = settings.apps
    assert blog.timeout == 60.0 and blog.secrets == (SECRET.encode(),)
    assert blog.restart is not None and blog.restart[0].endswith("/true")
    assert api.timeout == 5.0, "its own timeout"
    assert api.secrets == (b"api one", b"api two"), "its own secret source replaces the default's"
    assert api.restart is None, "a restart signal replaces the default restart command"
    assert (api.restart_signal, api.restart_pidfile) == (int(signal.SIGHUP), str(pidfile))
    assert "API_SECRET" not in api.env and "API_SECRET" not in blog.env, "no step sees it"


def test_a_secret_from_a_systemd_credential(host: Host) -> None:
    credentials = host.root / "credentials"
    credentials.mkdir()
    (credentials / "ghhook-secret").write_text("from systemd\n")
    settings = host.load(
        'listen = "tcp:0"\nadmin_listen = []\n'
        '[defaults]\nsecret_credential = "ghhook-secret"\n' + BLOG,
        environ=host.environ(CREDENTIALS_DIRECTORY=str(credentials)),
    )
    assert settings.apps[0].secrets == (b"from systemd",)
    (credentials / "ghhook-secret").write_text("\n")
    assert host.problems(
        'listen = "tcp:0"\nadmin_listen = []\n'
        '[defaults]\nsecret_credential = "ghhook-secret"\n' + BLOG,
        environ=host.environ(CREDENTIALS_DIRECTORY=str(credentials)),
    ) == [f"FILE: defaults.secret_credential: {credentials}/ghhook-secret holds no secret"]


def test_a_secret_file_read_once_for_all_apps_is_one_problem_once(host: Host) -> None:
    host.secret.write_text("\n")
    text = HEAD + BLOG + '[apps.api]\nrepo = "{api}"\n'
    assert host.problems(text) == [f"FILE: defaults.secret_file: {host.secret} holds no secret"]


def test_relative_paths_start_at_the_config_files_directory(host: Host) -> None:
    etc = host.root / "etc"
    (etc / "keys").mkdir(parents=True)
    (etc / "keys" / "secret").write_text("relative\n")
    file = host.write(
        'listen = "tcp:0"\nadmin_listen = []\nstate = "journal.sqlite3"\n'
        '[defaults]\nsecret_file = "keys/secret"\n'
        '[apps.blog]\nrepo = "../blog/clone"\n'
        'restart_signal = "SIGUSR2"\nrestart_pidfile = "../run/blog.pid"\n',
        etc / "ghhook.toml",
    )
    # From elsewhere, and named relatively, as `check-config etc/ghhook.toml` would.
    os.chdir(host.root)
    settings = load_file("etc/ghhook.toml", host.environ(), {"rundir": "/"})
    (blog,) = settings.apps
    assert blog.repo == str(host.blog.clone) and blog.secrets == (b"relative",)
    assert blog.restart_pidfile == str(host.root / "run" / "blog.pid")
    assert blog.restart_signal == int(signal.SIGUSR2)
    assert settings.state == str(etc / "journal.sqlite3"), "the file's state: next to it"
    assert settings.source == str(file)


@pytest.fixture(autouse=True)
def _keep_cwd() -> Any:
    cwd = os.getcwd()
    yield
    os.chdir(cwd)


def test_state_left_out_of_the_file_goes_in_twistds_rundir(host: Host, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    file = host.write(HEAD + BLOG)
    settings = load_file(str(file), host.environ(), {"rundir": str(run)})
    assert settings.state == str(run / "ghhook.sqlite3")


@pytest.mark.parametrize(
    ("build", "argvs"),
    [
        pytest.param('"echo a  b"', [("echo", "a", "b")], id="string"),
        pytest.param('["echo a", "true"]', [("echo", "a"), ("true",)], id="list-of-strings"),
        pytest.param('[["echo", "a  b"]]', [("echo", "a  b")], id="list-of-lists"),
        pytest.param(
            '["echo \'one two\'", ["printf", "%s"]]',
            [("echo", "one two"), ("printf", "%s")],
            id="mixed",
        ),
    ],
)
def test_build_forms(host: Host, build: str, argvs: list[tuple[str, ...]]) -> None:
    (app,) = host.load(HEAD + BLOG + f"build = {build}\n").apps
    assert [(os.path.basename(argv[0]), *argv[1:]) for argv in app.builds] == argvs
    assert all(os.path.isabs(argv[0]) for argv in app.builds), "found on PATH once"


# --- What a reload skips -----------------------------------------------------------------


def test_a_reload_skips_gits_refusal(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[Path] = []

    def refusal(git: str, repo: Path, env: Mapping[str, str], user: object) -> str:
        asked.append(repo)
        return "git refuses (a stand-in)"

    monkeypatch.setattr(config, "git_refusal", refusal)
    assert host.problems(HEAD + BLOG) == ["FILE: apps.blog.repo: git refuses (a stand-in)"]
    assert asked == [host.blog.clone]
    settings = host.load(HEAD + BLOG, reloading=True)
    assert [app.name for app in settings.apps] == ["blog"] and len(asked) == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to own the clone as another user")
def test_a_reload_takes_a_clone_git_would_refuse(host: Host) -> None:
    for path in (host.blog.clone, *host.blog.clone.rglob("*")):
        os.lchown(path, 65534, 65534)
    environ = host.environ(HOME=str(host.root))
    (line,) = host.problems(HEAD + BLOG, environ)
    assert line.startswith("FILE: apps.blog.repo: git refuses to work in it as root (uid 0)")
    assert host.load(HEAD + BLOG, environ, reloading=True).apps[0].name == "blog"


@pytest.mark.parametrize(
    "kw",
    [{"reloading": True}, {"check_ports": False}],
    ids=["reloading", "check-config"],
)
def test_ports_in_use_are_refused_at_start_only(host: Host, kw: dict[str, Any]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        text = HEAD.replace('"tcp:0"', f'"tcp:{port}:interface=127.0.0.1"') + BLOG
        assert host.problems(text) == [
            f"FILE: listen: cannot listen on 127.0.0.1:{port}: Address already in use"
        ]
        assert host.load(text, **kw).listen == (f"tcp:{port}:interface=127.0.0.1",)


# --- The single-repo options: the same checks, today's texts -----------------------------


def options(**given: Any) -> dict[str, Any]:
    """Options as twistd leaves them: None or empty for those not given."""
    return {"listen": ["tcp:0"], "admin-listen": ["none"], "build-cmd": [], **given}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param({}, "--repo is required: the path of the git clone to deploy", id="repo"),
        pytest.param(
            {"branch": "prod"},
            "--branch prod: the clone {clone} is on branch main, and deploys pull into the"
            " branch it is on; check out prod there (git -C {clone} switch prod), or give"
            " --branch main",
            id="branch",
        ),
        pytest.param(
            {"restart-signal": "HUP"}, "--restart-signal needs --restart-pidfile FILE", id="sig"
        ),
        pytest.param(
            {"restart-pidfile": "p"}, "--restart-pidfile goes with --restart-signal SIG", id="pid"
        ),
        pytest.param(
            {"restart-signal": "HUP", "restart-pidfile": "p", "restart-cmd": "true"},
            "give --restart-cmd or --restart-signal, not both",
            id="both",
        ),
        pytest.param({"remote": "up"}, "--remote up: no such remote in {clone}", id="remote"),
        pytest.param(
            {"secret-file": "/nonexistent"},
            "--secret-file /nonexistent: cannot read it: No such file or directory",
            id="secret-file",
        ),
        pytest.param(
            {"build-cmd": ["true", "nope-x"]},
            "--build-cmd nope-x: 'nope-x' is not an executable on PATH",
            id="build",
        ),
        pytest.param({"path": "x"}, "--path x: must start with /", id="path"),
        pytest.param({"name": "A"}, "--name A: not a valid app name", id="name"),
        pytest.param(
            {"header-timeout": "30", "body-timeout": "20"},
            "--body-timeout 20: must be at least --header-timeout (30), since it counts from"
            " the same start",
            id="deadlines",
        ),
    ],
)
def test_options_are_checked_by_the_same_rules_in_todays_words(
    git: GitFixture, given: dict[str, Any], expected: str
) -> None:
    if given:
        given = {"repo": str(git.clone), **given}
    with pytest.raises(ConfigError) as raised:
        from_options(options(**given), {"GHHOOK_SECRET": "s", **os.environ}, {})
    (line,) = raised.value.problems
    assert line.startswith(expected.replace("{clone}", str(git.clone)))


def test_options_without_a_secret_name_the_variables(git: GitFixture) -> None:
    environ = {k: v for k, v in os.environ.items() if k not in ("GHHOOK_SECRET", "GITHUB_SECRET")}
    with pytest.raises(ConfigError) as raised:
        from_options(options(repo=str(git.clone)), environ, {})
    assert raised.value.problems == (
        "no webhook secret: give --secret-file FILE (one secret per line), or set"
        " GHHOOK_SECRET (or GITHUB_SECRET) in the environment",
    )


def test_options_report_every_problem_at_once(git: GitFixture) -> None:
    given = options(repo=str(git.clone), timeout="-1", branch="prod")
    given["restart-signal"] = "NOPE"
    with pytest.raises(ConfigError) as raised:
        from_options(given, {"GHHOOK_SECRET": "s", **os.environ}, {})
    assert [line.split(":")[0] for line in raised.value.problems] == [
        "--branch prod",
        "--timeout -1",
        "--restart-signal NOPE",
        "--restart-signal needs --restart-pidfile FILE",
    ]


def test_an_app_from_options_equals_the_same_app_from_a_file(host: Host) -> None:
    """One set of rules: the same settings give the same app either way."""
    text = (
        HEAD + '[apps.clone]\nrepo = "{blog}"\nbuild = ["true", "echo hi"]\n'
        'restart = "true"\ngithub_repo = "me/blog"\ntimeout = 30\n'
    )
    from_file = host.load(text)
    from_cli = from_options(
        options(
            repo=str(host.blog.clone),
            **{
                "secret-file": str(host.secret),
                "build-cmd": ["true", "echo hi"],
                "restart-cmd": "true",
                "github-repo": "me/blog",
                "timeout": "30",
                "listen": ["tcp:0"],
            },
        ),
        host.environ(),
        host.twistd(),
    )
    assert from_cli.apps == from_file.apps
    assert attrs.evolve(from_cli, source=from_file.source) == from_file


@pytest.mark.parametrize(
    ("repo", "name"),
    [
        ("/srv/blog", "blog"),
        ("/srv/My App.git", "my-app-git"),
        ("/srv/_private", "private"),
        ("/srv/-+-", "app"),
        ("/srv/api_v2/", "api_v2"),
        ("/srv/Ünïcode", "n-code"),
    ],
)
def test_the_option_apps_name_comes_from_its_clone(repo: str, name: str) -> None:
    assert app_name(repo) == name


def test_name_names_the_option_app(git: GitFixture) -> None:
    settings = from_options(
        options(repo=str(git.clone), name="site"), {"GHHOOK_SECRET": "s", **os.environ}, {}
    )
    assert [app.name for app in settings.apps] == ["site"] and settings.source is None
    assert isinstance(settings.apps[0], AppSettings)
    assert settings.apps[0].secrets == (b"s",)
    assert (
        from_options(options(repo=str(git.clone)), {"GHHOOK_SECRET": "s", **os.environ}, {})
        .apps[0]
        .name
        == "clone"
    )
