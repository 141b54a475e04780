"""
``[apps.NAME.report]``, ``[defaults.report]`` and ``[[notify]]`` in the
config file, read by :func:`ghhook.config.load_file` against real clones:
the token's three sources, each forge's default API, [defaults.report]
inherited key by key, the notifications' defaults, and every refusal as one
line naming file and key. No token, secret or webhook URL in a ``repr``.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from ghhook import config
from ghhook.reports import DEFAULT_API_URLS, REPEAT_AFTER, NotifySettings, ReportSettings
from tests.gitfixture import git as run_git
from tests.test_config import BLOG, HEAD, Host, host, repositories  # noqa: F401

TOKEN = "tok-NEVER-IN-A-REPR"
HOOK_URL = "https://hooks.example/services/T0K3N"
#: The app blog with its repository on the forge, ready for a report table.
APP = HEAD + BLOG + 'repository = "me/blog"\n'
REPORT = APP + '[apps.blog.report]\ntoken_file = "token"\n'
API = '[apps.api]\nrepo = "{api}"\nrepository = "me/api"\n'
NOTIFY = REPORT + f'[[notify]]\nurl = "{HOOK_URL}"\n'
TOKEN_REFUSED = (
    "tokens never go in the config file (it is often world-readable and kept in git);"
    " use token_file, token_env or token_credential"
)
NOTIFY_RESULTS = "deployed, failed, timeout, rolled_back, interrupted"


@pytest.fixture(autouse=True)
def token(host: Host) -> None:  # noqa: F811 (a fixture)
    """A token file beside the config file; a second line is ignored."""
    (host.root / "token").write_text(TOKEN + "\nan-old-token\n")
    (host.root / "hook-secret").write_text("hook secret\n")


def forge_app(forge: str, repository: str, report: str = "") -> str:
    return (
        HEAD
        + BLOG
        + (
            f'forge = "{forge}"\nrepository = "{repository}"\n'
            f'[apps.blog.report]\ntoken_file = "token"\n{report}'
        )
    )


# --- What is accepted ---------------------------------------------------------------


def test_a_report_with_a_token_file_and_the_defaults(host: Host) -> None:  # noqa: F811
    (blog,) = host.load(REPORT).apps
    assert blog.report == ReportSettings(token=TOKEN, api_url="https://api.github.com")
    assert (blog.report.statuses, blog.report.deployments) == (True, False)
    assert (blog.report.environment, blog.report.environment_url, blog.report.public_url) == (
        None,
        None,
        None,
    )


def test_a_report_with_every_key(host: Host) -> None:  # noqa: F811
    (blog,) = host.load(
        APP + "[apps.blog.report]\n"
        'token_env = "BLOG_TOKEN"\n'
        'api_url = "https://github.example.com/api/v3/"\n'
        "statuses = false\n"
        "deployments = true\n"
        'environment = "production"\n'
        'environment_url = "https://blog.example/"\n'
        'public_url = "https://ghhook.example/admin/"\n',
        environ=host.environ(BLOG_TOKEN=f"  {TOKEN}  \n"),
    ).apps
    assert blog.report == ReportSettings(
        token=TOKEN,
        api_url="https://github.example.com/api/v3",
        statuses=False,
        deployments=True,
        environment="production",
        environment_url="https://blog.example",
        public_url="https://ghhook.example/admin",
    )


def test_the_tokens_variable_is_hidden_from_the_steps(host: Host) -> None:  # noqa: F811
    text = APP + '[apps.blog.report]\ntoken_env = "BLOG_TOKEN"\n'
    (blog,) = host.load(text, environ=host.environ(BLOG_TOKEN=TOKEN)).apps
    assert blog.report is not None and blog.report.token == TOKEN
    assert "BLOG_TOKEN" not in blog.env, "no step sees the token's variable"


def test_a_notifications_secret_variable_is_hidden_from_the_steps(host: Host) -> None:  # noqa: F811
    text = NOTIFY + 'secret_env = "HOOK_SECRET"\n'
    settings = host.load(text, environ=host.environ(HOOK_SECRET="env secret"))
    assert settings.notify[0].secret == b"env secret"
    assert "HOOK_SECRET" not in settings.apps[0].env, "no step sees the secret's variable"


def test_a_token_from_a_systemd_credential(host: Host) -> None:  # noqa: F811
    credentials = host.root / "credentials"
    credentials.mkdir()
    (credentials / "blog-token").write_text(TOKEN + "\n")
    text = APP + '[apps.blog.report]\ntoken_credential = "blog-token"\n'
    (blog,) = host.load(text, environ=host.environ(CREDENTIALS_DIRECTORY=str(credentials))).apps
    assert blog.report is not None and blog.report.token == TOKEN


@pytest.mark.parametrize(
    ("forge", "repository", "report", "api_url"),
    [
        ("github", "me/blog", "", DEFAULT_API_URLS["github"]),
        ("gitea", "me/blog", "", "https://gitea.com/api/v1"),
        ("forgejo", "me/blog", "", "https://codeberg.org/api/v1"),
        ("gitlab", "group/sub/blog", "", "https://gitlab.com/api/v4"),
        (
            "bitbucket",
            "workspace/blog",
            'public_url = "https://ghhook.example"\n',
            "https://api.bitbucket.org/2.0",
        ),
        (
            "gogs",
            "me/blog",
            'api_url = "https://git.example.com/api/v1"\n',
            "https://git.example.com/api/v1",
        ),
        (
            "bitbucket-server",
            "PROJ/blog",
            'api_url = "https://bitbucket.example.com"\nenvironment_url = "https://blog.example"\n',
            "https://bitbucket.example.com",
        ),
    ],
)
def test_each_forges_api_url(
    host: Host,  # noqa: F811
    forge: str,
    repository: str,
    report: str,
    api_url: str,
) -> None:
    (blog,) = host.load(forge_app(forge, repository, report)).apps
    assert (blog.forge, blog.repository) == (forge, repository)
    assert blog.report is not None and blog.report.api_url == api_url


def test_bitbucket_without_statuses_needs_no_link(host: Host) -> None:  # noqa: F811
    (blog,) = host.load(forge_app("bitbucket", "ws/blog", "statuses = false\n")).apps
    assert blog.report is not None and not blog.report.statuses


def test_the_repository_may_come_from_the_remote(host: Host) -> None:  # noqa: F811
    run_git(host.blog.clone, "remote", "set-url", "origin", "https://github.com/me/blog.git")
    (blog,) = host.load(HEAD + BLOG + '[apps.blog.report]\ntoken_file = "token"\n').apps
    assert blog.repository == "me/blog" and blog.report is not None


def test_no_report_table_no_report(host: Host) -> None:  # noqa: F811
    (blog,) = host.load(APP).apps
    assert blog.report is None and blog.notify == ()


def test_defaults_report_is_inherited_key_by_key(host: Host) -> None:  # noqa: F811
    settings = host.load(
        HEAD + "[defaults.report]\n"
        'token_file = "token"\n'
        'public_url = "https://ghhook.example"\n'
        'environment = "staging"\n'
        "deployments = true\n" + BLOG + 'repository = "me/blog"\n' + "[apps.blog.report]\n"
        'token_env = "BLOG_TOKEN"\n'
        'environment = "production"\n' + API,
        environ=host.environ(BLOG_TOKEN="blog's own token"),
    )
    blog, api = settings.apps
    assert blog.report == ReportSettings(
        token="blog's own token",
        api_url="https://api.github.com",
        deployments=True,
        environment="production",
        public_url="https://ghhook.example",
    ), "its own token source replaces the default's, its environment wins, the rest inherited"
    assert api.report == ReportSettings(
        token=TOKEN,
        api_url="https://api.github.com",
        deployments=True,
        environment="staging",
        public_url="https://ghhook.example",
    ), "no report table of its own: the whole default"


def test_the_token_is_in_no_repr(host: Host) -> None:  # noqa: F811
    settings = host.load(NOTIFY + 'secret_file = "hook-secret"\n')
    (blog,) = settings.apps
    assert blog.report is not None and blog.report.token == TOKEN
    for shown in (repr(settings), repr(blog), repr(blog.report), str(blog.report)):
        assert TOKEN not in shown and "an-old-token" not in shown
        assert "T0K3N" not in shown and "hook secret" not in shown


# --- Notifications ------------------------------------------------------------------


def test_a_notification_with_its_defaults(host: Host) -> None:  # noqa: F811
    settings = host.load(NOTIFY)
    assert settings.notify == (
        NotifySettings(
            name="notify[0]",
            url=HOOK_URL,
            on=("failed", "timeout", "rolled_back"),
            repeat_after=REPEAT_AFTER,
        ),
    )
    assert settings.apps[0].notify == settings.notify


def test_a_notification_with_every_key_but_apps(host: Host) -> None:  # noqa: F811
    settings = host.load(
        NOTIFY
        + 'secret_env = "HOOK_SECRET"\n'
        + 'on = ["deployed", "interrupted"]\nrepeat_after = 60\n'
        + '[[notify]]\nurl = "https://hooks.example/all"\nsecret_file = "hook-secret"\n'
        + 'on = "failed"\n'
        + API,
        environ=host.environ(HOOK_SECRET="env secret\n"),
    )
    first, second = settings.notify
    assert first == NotifySettings(
        name="notify[0]",
        url=HOOK_URL,
        secret=b"env secret",
        on=("deployed", "interrupted"),
        repeat_after=60.0,
    )
    assert second == NotifySettings(
        name="notify[1]",
        url="https://hooks.example/all",
        secret=b"hook secret",
        on=("failed",),
    )
    blog, api = settings.apps
    assert blog.notify == api.notify == (first, second), "no apps: every app"


def test_notifications_go_to_the_apps_they_list(host: Host) -> None:  # noqa: F811
    settings = host.load(
        NOTIFY
        + 'secret_env = "HOOK_SECRET"\n'
        + 'on = ["deployed", "interrupted"]\napps = ["api"]\nrepeat_after = 60\n'
        + '[[notify]]\nurl = "https://hooks.example/all"\nsecret_file = "hook-secret"\n'
        + 'on = "failed"\napps = "blog"\n'
        + API,
        environ=host.environ(HOOK_SECRET="env secret\n"),
    )
    first, second = settings.notify
    assert first == NotifySettings(
        name="notify[0]",
        url=HOOK_URL,
        secret=b"env secret",
        on=("deployed", "interrupted"),
        apps=("api",),
        repeat_after=60.0,
    )
    assert second == NotifySettings(
        name="notify[1]",
        url="https://hooks.example/all",
        secret=b"hook secret",
        on=("failed",),
        apps=("blog",),
    )
    blog, api = settings.apps
    assert blog.notify == (second,) and api.notify == (first,)


def test_an_apprise_url_when_apprise_is_installed(
    host: Host,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    find_spec = importlib.util.find_spec

    def installed(name: str, *args: Any) -> Any:
        return object() if name == "apprise" else find_spec(name, *args)

    monkeypatch.setattr(config.importlib.util, "find_spec", installed)
    settings = host.load(APP + '[[notify]]\napprise_url = "mailto://me:pw@example.com"\n')
    assert settings.notify == (
        NotifySettings(name="notify[0]", apprise_url="mailto://me:pw@example.com"),
    )
    assert "pw@" not in repr(settings)


@pytest.mark.skipif(importlib.util.find_spec("apprise") is not None, reason="apprise installed")
def test_an_apprise_url_without_apprise_names_the_pip_command(host: Host) -> None:  # noqa: F811
    assert host.problems(APP + '[[notify]]\napprise_url = "json://localhost"\n') == [
        "FILE: notify[0].apprise_url: needs Apprise, which is not installed:"
        " pip install 'ghhook[notify]'"
    ]


# --- One line per refusal -------------------------------------------------------------


PROBLEMS = [
    # The report's token.
    pytest.param(
        APP + '[apps.blog.report]\ntoken = "x"\ntoken_file = "token"\n',
        [f"FILE: apps.blog.report.token: {TOKEN_REFUSED}"],
        id="token-key",
    ),
    pytest.param(
        HEAD
        + '[defaults.report]\ntoken = "x"\ntoken_file = "token"\n'
        + BLOG
        + 'repository = "me/blog"\n',
        [f"FILE: defaults.report.token: {TOKEN_REFUSED}"],
        id="token-key-in-defaults",
    ),
    pytest.param(
        APP + "[apps.blog.report]\nstatuses = true\n",
        ["FILE: apps.blog.report: no API token: set token_file, token_env or token_credential"],
        id="no-token",
    ),
    pytest.param(
        REPORT + 'token_env = "BLOG_TOKEN"\n',
        [
            "FILE: apps.blog.report.token_env: give only one of token_file, token_env and"
            " token_credential; token_file is given too"
        ],
        id="two-tokens",
    ),
    pytest.param(
        APP + '[apps.blog.report]\ntoken_env = "NO_SUCH_TOKEN"\n',
        ["FILE: apps.blog.report.token_env: $NO_SUCH_TOKEN is not set in ghhook's environment"],
        id="token-env-unset",
    ),
    pytest.param(
        APP + '[apps.blog.report]\ntoken_env = "2 bad"\n',
        ["FILE: apps.blog.report.token_env: '2 bad' is not an environment variable's name"],
        id="token-env-bad-name",
    ),
    pytest.param(
        APP + '[apps.blog.report]\ntoken_credential = "blog-token"\n',
        [
            "FILE: apps.blog.report.token_credential: $CREDENTIALS_DIRECTORY is not set:"
            " systemd sets it for a unit with LoadCredential=; outside systemd use token_file"
            " or token_env"
        ],
        id="token-credential-outside-systemd",
    ),
    pytest.param(
        APP + '[apps.blog.report]\ntoken_file = "nope"\n',
        [
            "FILE: apps.blog.report.token_file: {root}/nope: cannot read it: No such file or"
            " directory"
        ],
        id="token-file-missing",
    ),
    # The report's other keys.
    pytest.param(
        REPORT + 'forge = "gitlab"\n',
        ["FILE: apps.blog.report.forge: unknown key 'forge'"],
        id="app-key-inside-report",
    ),
    pytest.param(
        forge_app("gitlab", "group/blog", "deployments = true\n"),
        [
            "FILE: apps.blog.report.deployments: deployments are GitHub's; this app's forge"
            " is gitlab"
        ],
        id="deployments-not-github",
    ),
    pytest.param(
        HEAD
        + '[defaults.report]\ntoken_file = "token"\ndeployments = true\n'
        + BLOG
        + 'forge = "gitea"\nrepository = "me/blog"\n',
        ["FILE: defaults.report.deployments: deployments are GitHub's; this app's forge is gitea"],
        id="deployments-inherited",
    ),
    pytest.param(
        forge_app("gogs", "me/blog"),
        [
            "FILE: apps.blog.report: gogs has no public API to default to: set api_url (e.g."
            ' api_url = "https://git.example.com/api/v1" for Gogs,'
            ' "https://bitbucket.example.com" for Bitbucket Data Center)'
        ],
        id="gogs-needs-api-url",
    ),
    pytest.param(
        forge_app("bitbucket-server", "PROJ/blog", 'environment_url = "https://blog.example"\n'),
        [
            "FILE: apps.blog.report: bitbucket-server has no public API to default to: set"
            ' api_url (e.g. api_url = "https://git.example.com/api/v1" for Gogs,'
            ' "https://bitbucket.example.com" for Bitbucket Data Center)'
        ],
        id="bitbucket-server-needs-api-url",
    ),
    pytest.param(
        forge_app("bitbucket", "ws/blog"),
        [
            "FILE: apps.blog.report: Bitbucket wants a link with every build status: set"
            " public_url (where ghhook's admin pages are reachable) or environment_url"
        ],
        id="bitbucket-needs-a-link",
    ),
    pytest.param(
        HEAD + BLOG + '[apps.blog.report]\ntoken_file = "token"\n',
        [
            "FILE: apps.blog.report: reporting needs the app's repository on its forge:"
            " set repository"
        ],
        id="no-repository",
    ),
    pytest.param(
        REPORT + 'api_url = "api.github.com"\n',
        ["FILE: apps.blog.report.api_url: not an http(s) URL"],
        id="api-url-not-http",
    ),
    pytest.param(
        REPORT + 'public_url = "ftp://ghhook.example"\n',
        ["FILE: apps.blog.report.public_url: not an http(s) URL"],
        id="public-url-not-http",
    ),
    pytest.param(
        REPORT + 'environment_url = "blog.example"\n',
        ["FILE: apps.blog.report.environment_url: not an http(s) URL"],
        id="environment-url-not-http",
    ),
    pytest.param(
        REPORT + 'statuses = "yes"\n',
        ["FILE: apps.blog.report.statuses: expected true or false, not a string"],
        id="statuses-not-a-boolean",
    ),
    pytest.param(
        REPORT + "environment = 3\n",
        ["FILE: apps.blog.report.environment: expected a string, not an integer"],
        id="environment-not-a-string",
    ),
    pytest.param(
        APP + 'report = "github"\n',
        ["FILE: apps.blog.report: expected a table ([apps.NAME.report]), not a string"],
        id="report-not-a-table",
    ),
    pytest.param(
        REPORT + 'tokne_env = "X"\n',
        ["FILE: apps.blog.report.tokne_env: unknown key 'tokne_env'; did you mean 'token_env'?"],
        id="unknown-key-suggested",
    ),
    pytest.param(
        REPORT + "statuss = false\n",
        ["FILE: apps.blog.report.statuss: unknown key 'statuss'; did you mean 'statuses'?"],
        id="unknown-key-statuses",
    ),
    pytest.param(
        HEAD
        + "[defaults.report]\nenviroment = 'x'\ntoken_file = 'token'\n"
        + BLOG
        + 'repository = "me/blog"\n',
        ["FILE: defaults.report.enviroment: unknown key 'enviroment'; did you mean 'environment'?"],
        id="unknown-key-in-defaults",
    ),
    pytest.param(
        REPORT + "zebra = 1\n",
        ["FILE: apps.blog.report.zebra: unknown key 'zebra'"],
        id="unknown-key-no-suggestion",
    ),
    # [[notify]].
    pytest.param(
        APP + "[[notify]]\non = ['failed']\n",
        ["FILE: notify[0]: give url (a JSON POST) or apprise_url (Apprise), one of them"],
        id="notify-neither-url",
    ),
    pytest.param(
        APP + f'[[notify]]\nurl = "{HOOK_URL}"\n[[notify]]\nurl = "mailto:me@example.com"\n',
        ["FILE: notify[1].url: not an http(s) URL"],
        id="notify-url-not-http",
    ),
    pytest.param(
        NOTIFY + 'on = ["failed", "deploied"]\n',
        [f"FILE: notify[0].on[1]: 'deploied' is no result to notify; choose from {NOTIFY_RESULTS}"],
        id="notify-on-item",
    ),
    pytest.param(
        NOTIFY + 'on = "unchanged"\n',
        [f"FILE: notify[0].on: 'unchanged' is no result to notify; choose from {NOTIFY_RESULTS}"],
        id="notify-on-string",
    ),
    pytest.param(
        NOTIFY + "on = [1]\n",
        ["FILE: notify[0].on: expected a list of results, not an array"],
        id="notify-on-not-strings",
    ),
    pytest.param(
        NOTIFY + 'apps = ["blog", "nope"]\n',
        ["FILE: notify[0].apps[1]: no app is called 'nope'"],
        id="notify-unknown-app",
    ),
    pytest.param(
        NOTIFY + 'apps = "blgo"\n',
        ["FILE: notify[0].apps: no app is called 'blgo'"],
        id="notify-unknown-app-string",
    ),
    pytest.param(
        NOTIFY + "repeat_after = 0\n",
        ["FILE: notify[0].repeat_after: must be a positive number of seconds"],
        id="notify-repeat-after-zero",
    ),
    pytest.param(
        NOTIFY + "repeat_after = -60\n",
        ["FILE: notify[0].repeat_after: must be a positive number of seconds"],
        id="notify-repeat-after-negative",
    ),
    pytest.param(
        NOTIFY + 'repeat_after = "1h"\n',
        ["FILE: notify[0].repeat_after: expected a number of seconds, not a string"],
        id="notify-repeat-after-string",
    ),
    pytest.param(
        NOTIFY + 'secret = "x"\n',
        [
            "FILE: notify[0].secret: secrets never go in the config file (it is often"
            " world-readable and kept in git); use secret_file, secret_env or secret_credential"
        ],
        id="notify-secret-key",
    ),
    pytest.param(
        NOTIFY + 'secret_file = "hook-secret"\nsecret_env = "HOOK_SECRET"\n',
        [
            "FILE: notify[0].secret_env: give only one of secret_file, secret_env and"
            " secret_credential; secret_file is given too"
        ],
        id="notify-two-secrets",
    ),
    pytest.param(
        NOTIFY + 'secret_file = "nope"\n',
        ["FILE: notify[0].secret_file: {root}/nope: cannot read it: No such file or directory"],
        id="notify-secret-file-missing",
    ),
    pytest.param(
        NOTIFY + 'onn = ["failed"]\n',
        ["FILE: notify[0].onn: unknown key 'onn'; did you mean 'on'?"],
        id="notify-unknown-key",
    ),
    pytest.param(
        "notify = 3\n" + APP,
        ["FILE: notify: expected an array of tables ([[notify]]), not an integer"],
        id="notify-not-tables",
    ),
    pytest.param(
        HEAD + "notify = []\n" + BLOG,
        [
            "FILE: defaults.notify: notify is the daemon's key: put it at the top of the file,"
            " before any [table]"
        ],
        id="notify-in-defaults",
    ),
]


@pytest.mark.parametrize(("text", "expected"), PROBLEMS)
def test_each_problem_is_one_line_naming_file_and_key(
    host: Host,  # noqa: F811
    text: str,
    expected: list[str],
) -> None:
    problems = host.problems(text)
    assert problems == [line.replace("{root}", str(host.root)) for line in expected]


APPRISE_ABSENT = pytest.mark.skipif(
    importlib.util.find_spec("apprise") is not None, reason="apprise installed"
)
PIP = "FILE: notify[0].apprise_url: needs Apprise, which is not installed: pip install 'ghhook[notify]'"


@APPRISE_ABSENT
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param(
            f'url = "{HOOK_URL}"\n',
            ["FILE: notify[0]: give url (a JSON POST) or apprise_url (Apprise), one of them", PIP],
            id="url-and-apprise-url",
        ),
        pytest.param(
            'secret_file = "hook-secret"\n',
            ["FILE: notify[0]: an apprise_url is not signed: its secret_* key is for url", PIP],
            id="secret-with-apprise-url",
        ),
    ],
)
def test_apprise_refusals(host: Host, extra: str, expected: list[str]) -> None:  # noqa: F811
    text = APP + '[[notify]]\napprise_url = "json://localhost"\n' + extra
    assert host.problems(text) == expected


def test_every_report_and_notify_problem_at_once_in_file_order(host: Host) -> None:  # noqa: F811
    text = (
        HEAD
        + "[defaults.report]\n"
        + 'token = "no"\n'
        + BLOG
        + 'forge = "gitlab"\nrepository = "group/blog"\n'
        + "[apps.blog.report]\n"
        + 'token_file = "token"\n'
        + "deployments = true\n"
        + 'public_url = "nowhere"\n'
        + "[[notify]]\n"
        + f'url = "{HOOK_URL}"\n'
        + 'on = ["failed", "oops"]\n'
        + "repeat_after = 0\n"
        + "[[notify]]\n"
        + "repeat_after = 60\n"
    )
    assert host.problems(text) == [
        f"FILE: defaults.report.token: {TOKEN_REFUSED}",
        "FILE: apps.blog.report.deployments: deployments are GitHub's; this app's forge is gitlab",
        "FILE: apps.blog.report.public_url: not an http(s) URL",
        f"FILE: notify[0].on[1]: 'oops' is no result to notify; choose from {NOTIFY_RESULTS}",
        "FILE: notify[0].repeat_after: must be a positive number of seconds",
        "FILE: notify[1]: give url (a JSON POST) or apprise_url (Apprise), one of them",
    ]


def test_a_broken_clone_adds_no_line_about_the_repository(host: Host) -> None:  # noqa: F811
    text = HEAD + '[apps.blog]\nrepo = "nowhere"\nrepository = "me/blog"\n'
    text += '[apps.blog.report]\ntoken_file = "token"\n'
    assert host.problems(text) == [f"FILE: apps.blog.repo: {host.root}/nowhere is not a directory"]
