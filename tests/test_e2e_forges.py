"""
End to end, one forge at a time: one real ``twistd ghhook --config`` serving
seven apps, one per forge, each with its own repository and clone. Every
delivery is built and signed by ``python -m ghhook send --forge``, run as a
user runs it, so the daemon sees exactly the headers and body that forge sends.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from ghhook.forges import FORGES
from tests.daemon import ROOT, Daemon, environment, eventually
from tests.gitfixture import GitFixture
from tests.gitfixture import git as run_git

pytestmark = pytest.mark.e2e

#: Each forge's app (named after it) and the repository its pushes come from,
#: in the shape that forge names repositories.
REPOSITORIES = {
    "github": "me/site",
    "gitea": "me/site",
    "forgejo": "me/site",
    "gogs": "me/site",
    "gitlab": "group/sub/site",
    "bitbucket": "workspace/site",
    "bitbucket-server": "PROJ/site",
}
#: A signed delivery from another forge, sent to each app's own URL.
WRONG_FORGE = {forge: FORGES[(i + 1) % len(FORGES)] for i, forge in enumerate(FORGES)}
GITLAB_TOKEN = "gitlab secret token"
GITLAB_SIGNING = "whsec_" + base64.b64encode(bytes(range(32))).decode("ascii")


@attrs.frozen
class Host:
    """The repositories and clones of the seven apps, and the secret files senders use."""

    root: Path
    gits: dict[str, GitFixture]

    def head(self, app: str) -> str:
        return run_git(self.gits[app].clone, "rev-parse", "HEAD")

    def restarts(self, app: str) -> list[str]:
        path = self.gits[app].root / f"{app}.restarts"
        return path.read_text().split() if path.exists() else []

    @property
    def gitlab_secrets(self) -> Path:
        """The gitlab app's secret file: a secret token, then a signing token."""
        return self.root / "gitlab.secrets"

    @property
    def gitlab_signing(self) -> Path:
        """What a sender signs GitLab's signed deliveries with: the signing token alone."""
        return self.root / "gitlab.signing"


def app_table(name: str, git: GitFixture, secret_file: Path | None = None) -> str:
    restart = f"git rev-parse HEAD >> ../{name}.restarts"
    secret = f'secret_file = "{secret_file}"\n' if secret_file is not None else ""
    return (
        f'[apps."{name}"]\n'
        f'repo = "{git.clone}"\n'
        f'forge = "{name}"\n'
        f'repository = "{REPOSITORIES[name]}"\n'
        'branch = "main"\n'
        f"{secret}"
        f'restart = ["sh", "-c", "{restart}"]\n\n'
    )


def config(host: Host) -> str:
    text = '[defaults]\nsecret_file = "{secret_file}"\ntimeout = 60\n\n'
    return text + "".join(
        app_table(forge, host.gits[forge], host.gitlab_secrets if forge == "gitlab" else None)
        for forge in FORGES
    )


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Host:
    root = tmp_path_factory.mktemp("forges")
    gits = {}
    for forge in FORGES:
        (root / forge).mkdir()
        gits[forge] = GitFixture.create(root / forge)
    host = Host(root, gits)
    host.gitlab_secrets.write_text(f"{GITLAB_TOKEN}\n{GITLAB_SIGNING}\n")
    host.gitlab_signing.write_text(f"{GITLAB_SIGNING}\n")
    return host


@pytest.fixture(scope="module")
def daemon(host: Host) -> Iterator[Daemon]:
    workdir = host.root / "daemon"
    workdir.mkdir()
    d = Daemon(workdir, None, config=config(host)).start()
    eventually(lambda: settled(d), what=f"the catch-ups at start; log:\n{d.log()}")
    assert [app["name"] for app in d.overview()["apps"]] == list(FORGES)
    yield d
    d.stop()


def settled(d: Daemon) -> bool:
    """Every app idle, nothing pending, and at least its catch-up finished."""
    return all(
        not app["busy"] and app["pending"] is None and app["last"] is not None
        for app in d.overview()["apps"]
    )


def send(
    daemon: Daemon,
    forge: str,
    repo_dir: Path,
    *extra: str,
    path: str = "/github",
    event: str = "push",
    secret_file: Path | None = None,
) -> tuple[int, Any]:
    """
    Run ``python -m ghhook send --forge FORGE`` against ``daemon``: the
    answer's status and JSON body.
    """
    done = subprocess.run(
        [sys.executable, "-m", "ghhook", "send", "--url", daemon.url + path,
         "--forge", forge, "--event", event, "--repo-dir", str(repo_dir),
         "--secret-file", str(secret_file or daemon.secret_file), *extra],
        cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode in (0, 1), (done.returncode, done.stdout, done.stderr)
    status, _, body = done.stdout.partition("\n")
    code = int(status.split()[0])
    assert done.returncode == (0 if 200 <= code < 300 else 1), done
    return code, json.loads(body) if body.strip() else None


def deploy(
    host: Host,
    daemon: Daemon,
    forge: str,
    text: str,
    *extra: str,
    secret_file: Path | None = None,
) -> str:
    """Commit and push to ``forge``'s app's origin, deliver it on the shared path, await it."""
    git = host.gits[forge]
    released = host.restarts(forge)
    sha = git.commit_and_push(text)
    code, answer = send(
        daemon, forge, git.work, "--repository", REPOSITORIES[forge], *extra,
        secret_file=secret_file,
    )  # fmt: skip
    assert code == 202, answer
    assert [d["app"] for d in answer["deploys"]] == [forge], answer
    assert answer["after"] == sha
    eventually(
        lambda: host.head(forge) == sha and host.restarts(forge) == [*released, sha],
        what=f"{forge} on {sha} and restarted; log:\n{daemon.log()}",
    )
    assert (git.clone / "app.txt").read_text() == text
    return sha


@pytest.mark.parametrize("forge", [f for f in FORGES if f != "gitlab"])
def test_a_push_from_each_forge_deploys_its_app(host: Host, daemon: Daemon, forge: str) -> None:
    others = {app: host.head(app) for app in FORGES if app != forge}
    deploy(host, daemon, forge, f"{forge} v2\n")
    assert {app: host.head(app) for app in others} == others
    assert "Traceback" not in daemon.log()


def test_gitlab_token_then_signing_token_deploy(host: Host, daemon: Daemon) -> None:
    """
    The gitlab app's secret file holds a secret token and a signing token:
    a token delivery matches the first line, a signed one the ``whsec_`` line.
    """
    before = host.restarts("gitlab")
    token = deploy(
        host, daemon, "gitlab", "gitlab v2\n", "--gitlab-auth", "token",
        secret_file=host.gitlab_secrets,  # its first line, the token, is sent
    )  # fmt: skip
    signed = deploy(
        host, daemon, "gitlab", "gitlab v3\n", "--gitlab-auth", "signing",
        secret_file=host.gitlab_signing,
    )  # fmt: skip
    assert host.restarts("gitlab") == [*before, token, signed]
    assert GITLAB_TOKEN not in daemon.log() and GITLAB_SIGNING not in daemon.log()


@pytest.mark.parametrize("forge", FORGES)
def test_an_apps_own_url_refuses_another_forges_delivery(
    host: Host, daemon: Daemon, forge: str
) -> None:
    wrong = WRONG_FORGE[forge]
    released = host.restarts(forge)
    # Signed with the default secret, for the default repository: it is refused
    # for its forge before either is looked at.
    code, answer = send(daemon, wrong, host.gits[forge].work, path=f"/hooks/{forge}")
    assert code == 400, answer
    assert f"app {forge} expects {forge}" in answer["error"], answer
    assert host.restarts(forge) == released


def test_bitbucket_data_center_ping_is_answered(host: Host, daemon: Daemon) -> None:
    git = host.gits["bitbucket-server"]
    code, answer = send(
        daemon, "bitbucket-server", git.work, "--repository", "PROJ/site", event="ping"
    )
    assert code == 200 and answer["pong"] is True, answer


def test_gitea_test_delivery_is_a_ping_and_deploys_nothing(host: Host, daemon: Daemon) -> None:
    """Gitea's "Test Delivery" button: a push with both shas zero."""
    git = host.gits["gitea"]
    before = (host.head("gitea"), host.restarts("gitea"))
    code, answer = send(daemon, "gitea", git.work, "--repository", "me/site", event="ping")
    assert code == 200 and answer["pong"] is True and "deploys" not in answer, answer
    app = next(a for a in daemon.overview()["apps"] if a["name"] == "gitea")
    assert not app["busy"] and app["pending"] is None
    assert (host.head("gitea"), host.restarts("gitea")) == before
