"""
End to end: one real ``twistd ghhook --config`` serving three apps: two
clones of one repository on different branches, and one of another.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from tests.daemon import Daemon, eventually
from tests.gitfixture import GitFixture
from tests.gitfixture import git as run_git

pytestmark = pytest.mark.e2e
NOBODY = 65534


@attrs.frozen
class Host:
    """The repositories and clones of the three apps."""

    api: GitFixture
    staging: Path
    blog: GitFixture

    def clone(self, app: str) -> Path:
        return {"api": self.api.clone, "api-staging": self.staging, "blog": self.blog.clone}[app]

    def head(self, app: str) -> str:
        return run_git(self.clone(app), "rev-parse", "HEAD")

    def restarts(self, app: str) -> list[str]:
        path = self.clone(app).parent / f"{app}.restarts"
        return path.read_text().split() if path.exists() else []

    def push_staging(self, text: str) -> str:
        """Commit on the staging branch of the api repository and push it."""
        work = self.api.work
        run_git(work, "checkout", "--quiet", "staging")
        try:
            sha = self.api.commit("app.txt", text, f"staging: {text.strip()}")
            run_git(work, "push", "--quiet", "origin", "HEAD:staging")
        finally:
            run_git(work, "checkout", "--quiet", "main")
        return sha


def app_table(name: str, clone: Path, repository: str, branch: str) -> str:
    restart = f"git rev-parse HEAD >> ../{name}.restarts"
    return (
        f"[apps.{name}]\n"
        f'repo = "{clone}"\n'
        f'github_repo = "{repository}"\n'
        f'branch = "{branch}"\n'
        f'restart = ["sh", "-c", "{restart}"]\n\n'
    )


def config(host: Host, apps: tuple[str, ...] = ("api", "api-staging", "blog")) -> str:
    text = '[defaults]\nsecret_file = "{secret_file}"\ntimeout = 60\n\n'
    tables = {
        "api": app_table("api", host.api.clone, "me/api", "main"),
        "api-staging": app_table("api-staging", host.staging, "me/api", "staging"),
        "blog": app_table("blog", host.blog.clone, "me/blog", "main"),
    }
    return text + "".join(tables[name] for name in apps)


@pytest.fixture
def host(tmp_path: Path) -> Host:
    (tmp_path / "api").mkdir()
    (tmp_path / "blog").mkdir()
    api = GitFixture.create(tmp_path / "api")
    run_git(api.work, "push", "--quiet", "origin", "HEAD:staging")
    staging = tmp_path / "api" / "staging"
    run_git(
        tmp_path / "api", "clone", "--quiet", "--branch", "staging", str(api.remote), str(staging)
    )
    run_git(api.work, "branch", "--quiet", "--track", "staging", "origin/staging")
    blog = GitFixture.create(tmp_path / "blog")
    return Host(api, staging, blog)


@pytest.fixture
def daemon(host: Host, tmp_path: Path) -> Iterator[Daemon]:
    workdir = tmp_path / "daemon"
    workdir.mkdir()
    d = Daemon(workdir, None, config=config(host)).start()
    eventually(lambda: settled(d), what=f"the catch-ups at start; log:\n{d.log()}")
    yield d
    d.stop()


def settled(d: Daemon) -> bool:
    """Every app idle, nothing pending, and at least its catch-up finished."""
    return all(
        not app["busy"] and app["pending"] is None and app["last"] is not None
        for app in d.overview()["apps"]
    )


def app_state(d: Daemon, name: str) -> dict[str, Any]:
    return next(app for app in d.overview()["apps"] if app["name"] == name)


def test_one_shared_delivery_deploys_exactly_the_matching_apps(host: Host, daemon: Daemon) -> None:
    overview = daemon.overview()
    assert [app["name"] for app in overview["apps"]] == ["api", "api-staging", "blog"]
    assert overview["config"] == str(daemon.config_path) and overview["config_error"] is None
    before = {app: host.head(app) for app in ("api-staging", "blog")}

    sha = host.api.commit_and_push("api v2\n")
    code, answer = daemon.push(sha, branch="main", repository="me/api", delivery="d-main")
    assert code == 202, answer
    assert [d["app"] for d in answer["deploys"]] == ["api"]
    eventually(lambda: host.restarts("api") == [sha], what="api released")
    assert {app: host.head(app) for app in ("api-staging", "blog")} == before

    staged = host.push_staging("staging v2\n")
    code, answer = daemon.push(staged, branch="staging", repository="me/api", delivery="d-stg")
    assert code == 202 and [d["app"] for d in answer["deploys"]] == ["api-staging"]
    eventually(lambda: host.restarts("api-staging") == [staged], what="staging released")
    assert host.head("api") == sha and host.restarts("blog") == []

    code, answer = daemon.push(sha, branch="main", repository="me/api", delivery="d-main")
    assert code == 200 and answer == {"duplicate": "d-main"}
    code, answer = daemon.push(sha, branch="dev", repository="me/api")
    assert code == 200 and "ignored" in answer


def test_each_app_has_its_own_url(host: Host, daemon: Daemon) -> None:
    sha = host.blog.commit_and_push("blog v2\n")
    code, answer = daemon.push(sha, repository="me/blog", path="/hooks/blog")
    assert code == 202 and [d["app"] for d in answer["deploys"]] == ["blog"]
    eventually(lambda: host.restarts("blog") == [sha], what="blog released")
    code, answer = daemon.push(sha, repository="me/blog", path="/hooks/api")
    assert code == 200 and "ignored" in answer, "api's URL takes api's pushes only"
    assert daemon.push(sha, repository="me/blog", path="/hooks/nope")[0] == 404


def test_sighup_during_a_burst_loses_no_push(host: Host, daemon: Daemon) -> None:
    last: dict[str, str] = {}
    for round in range(4):
        last["api"] = host.api.commit_and_push(f"api {round}\n")
        last["api-staging"] = host.push_staging(f"staging {round}\n")
        last["blog"] = host.blog.commit_and_push(f"blog {round}\n")
        for app, repository, branch in (
            ("api", "me/api", "main"),
            ("api-staging", "me/api", "staging"),
            ("blog", "me/blog", "main"),
        ):
            code, answer = daemon.push(last[app], branch=branch, repository=repository)
            # An earlier deploy's pull may have fetched this commit already.
            assert code == 202 or "is already deployed" in answer["ignored"], answer
        if round == 1:
            # A changed timeout for every app: each engine takes new settings.
            daemon.write_config(config(host).replace("timeout = 60", "timeout = 120"))
            daemon.send(signal.SIGHUP)
    for app in last:
        eventually(
            lambda app=app: host.head(app) == last[app] and app_state(daemon, app)["busy"] is False,
            within=60,
            what=f"{app} on its last sha",
        )
        eventually(lambda app=app: host.restarts(app)[-1:] == [last[app]], what=f"{app} restarted")
    eventually(lambda: "reload: app api changed" in daemon.log(), what="the reload logged")
    assert daemon.overview()["config_error"] is None
    assert daemon.running()


def test_a_broken_reload_changes_nothing_and_a_good_one_applies(host: Host, daemon: Daemon) -> None:
    good = config(host)
    daemon.write_config(good.replace("[apps.blog]", "[apps.blog]\nrestrat = 'x'\n"))
    daemon.send(signal.SIGHUP)
    error = eventually(lambda: daemon.overview()["config_error"], what="the reload refused")
    assert "apps.blog.restrat" in error and "restart" in error
    assert [app["name"] for app in daemon.overview()["apps"]] == ["api", "api-staging", "blog"]
    sha = host.blog.commit_and_push("blog v3\n")
    assert daemon.push(sha, repository="me/blog")[0] == 202
    eventually(lambda: host.restarts("blog") == [sha], what="blog still deploys")

    daemon.write_config(config(host, ("api", "blog")))
    daemon.send(signal.SIGHUP)
    eventually(
        lambda: [a["name"] for a in daemon.overview()["apps"]] == ["api", "blog"],
        what="api-staging removed",
    )
    assert daemon.overview()["config_error"] is None
    staged = host.push_staging("staging v3\n")
    code, _ = daemon.push(staged, branch="staging", repository="me/api", path="/hooks/api-staging")
    assert code == 404
    assert daemon.running()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a clone to another user")
def test_a_reload_adding_a_clone_git_refuses_changes_nothing(
    host: Host, daemon: Daemon, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    run_git(tmp_path, "clone", "--quiet", str(host.blog.remote), str(docs))
    for path in (docs, *docs.rglob("*")):
        os.lchown(path, NOBODY, NOBODY)  # git refuses it to root: dubious ownership
    added = app_table("docs", docs, "me/docs", "main")
    daemon.write_config(config(host) + added)
    daemon.send(signal.SIGHUP)
    error = eventually(lambda: daemon.overview()["config_error"], what="the reload refused")
    assert "apps.docs.repo: git refuses to work in it as root" in error
    assert "dubious ownership" in error
    assert [app["name"] for app in daemon.overview()["apps"]] == ["api", "api-staging", "blog"]
    assert daemon.push("a" * 40, repository="me/docs", path="/hooks/docs")[0] == 404
