"""
Table-driven tests for :func:`ghhook.routing.route`: a verified push and the
apps in, the apps that take it (config order) or why none does out.
"""

from __future__ import annotations

import pytest

from ghhook.config import AppSettings
from ghhook.delivery import Push
from ghhook.routing import Routed, route

S1, S2, S3 = b"first secret", b"second secret", b"third secret"
SHA_A, SHA_B = "a" * 40, "b" * 40


def app(name: str, repository: str | None, branch: str, *secrets: bytes) -> AppSettings:
    return AppSettings(
        repo=f"/srv/{name}",
        git_dir=f"/srv/{name}/.git",
        remote="origin",
        branch=branch,
        git="/usr/bin/git",
        name=name,
        repository=repository,
        secrets=secrets,
    )


#: A host: one repository's main deployed twice and its staging once, a
#: blog, and an app that takes any repository's release branch.
APPS = (
    app("blog", "me/blog", "main", S1),
    app("api", "Me/Api", "main", S1),
    app("api-staging", "me/api", "staging", S1, S2),
    app("api-mirror", "me/api", "main", S1),
    app("anything", None, "release", S3),
)


def push(repository: str | None, branch: str = "main") -> Push:
    return Push(
        ref=f"refs/heads/{branch}",
        before=SHA_A,
        after=SHA_B,
        repository=repository,
        deleted=False,
    )


@pytest.mark.parametrize(
    ("pushed", "secret", "expected"),
    [
        pytest.param(
            push("me/api"), S1, Routed(("api", "api-mirror")), id="two-clones-of-one-branch"
        ),
        pytest.param(
            push("me/api", "staging"), S1, Routed(("api-staging",)), id="same-repo-other-branch"
        ),
        pytest.param(push("me/blog"), S1, Routed(("blog",)), id="other-repository"),
        pytest.param(
            push("ME/api"), S1, Routed(("api", "api-mirror")), id="repository-case-insensitive"
        ),
        pytest.param(
            push("someone/else", "release"), S3, Routed(("anything",)), id="repository-none"
        ),
        pytest.param(push(None, "release"), S3, Routed(("anything",)), id="unnamed-push-any-app"),
        pytest.param(
            push("me/api", "staging"), S2, Routed(("api-staging",)), id="second-secret-of-an-app"
        ),
        pytest.param(
            push("me/api", "release"),
            S1,
            Routed((), "no app deploys branch 'release' of 'me/api'"),
            id="release-needs-the-secret-of-the-app-that-deploys-it",
        ),
        pytest.param(
            push("me/blog", "dev"),
            S1,
            Routed((), "no app deploys branch 'dev' of 'me/blog'"),
            id="no-match",
        ),
        pytest.param(
            push(None),
            S1,
            Routed((), "no app deploys branch 'main' (the push names no repository)"),
            id="no-match-unnamed-repository",
        ),
        pytest.param(
            push("me/api"),
            S2,
            Routed((), "push to branch 'main'; only 'staging' deploys"),
            id="one-holder-gives-its-own-reason",
        ),
        pytest.param(
            push("me/blog", "main"),
            S3,
            Routed((), "push to branch 'main'; only 'release' deploys"),
            id="one-holder-any-repository-other-branch",
        ),
        pytest.param(
            push("me/api"),
            b"nobody's secret",
            Routed((), "no app deploys branch 'main' of 'me/api'"),
            id="no-holder",
        ),
    ],
)
def test_route_on_the_shared_path(pushed: Push, secret: bytes, expected: Routed) -> None:
    """Every app is a candidate; those that hold the secret and match take it."""
    assert route(pushed, APPS, secret) == expected


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        pytest.param(S1, ("a", "b"), id="shared-secret-both"),
        pytest.param(S2, ("b",), id="s2-only-b"),
        pytest.param(S3, (), id="neither"),
    ],
)
def test_secret_subsets(secret: bytes, expected: tuple[str, ...]) -> None:
    """A holds s1, B holds s1 and s2: an s2-signed push reaches B only."""
    apps = (app("a", "me/x", "main", S1), app("b", "me/x", "main", S1, S2))
    assert route(push("me/x"), apps, secret).apps == expected


def test_apps_are_listed_in_config_order() -> None:
    """The names come in the order of the apps given, not alphabetically."""
    apps = (app("zeta", "me/x", "main", S1), app("alpha", "me/x", "main", S1))
    assert route(push("me/x"), apps, S1) == Routed(("zeta", "alpha"))


@pytest.mark.parametrize(
    ("pushed", "reason"),
    [
        pytest.param(
            push("me/api", "dev"), "push to branch 'dev'; only 'main' deploys", id="branch"
        ),
        pytest.param(
            push("me/blog"), "push to repository 'me/blog', not 'Me/Api'", id="repository"
        ),
    ],
)
def test_an_apps_own_url_gives_its_own_reason(pushed: Push, reason: str) -> None:
    """On /hooks/<name> the one app's reason is today's sentence."""
    api = APPS[1]
    assert route(pushed, [api], S1) == Routed((), reason)


def test_a_push_to_an_apps_own_url_reaches_that_app_only() -> None:
    """Routing one app never names another, whatever else would match."""
    assert route(push("me/api"), [APPS[3]], S1) == Routed(("api-mirror",))


def test_routing_imports_no_twisted() -> None:
    """The routing module stays pure: importing it alone pulls in no Twisted."""
    import subprocess
    import sys

    code = "import sys, ghhook.routing; print(any(m.startswith('twisted') for m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_apps_that_deploy_the_branch_with_another_secret_are_named_for_the_log() -> None:
    apps = [
        app("api", "me/api", "main", b"s-api"),
        app("blog", "me/blog", "main", b"s-shared"),
        app("docs", "me/docs", "main", b"s-shared"),
    ]
    routed = route(push("me/api", "main"), apps, b"s-shared")
    assert routed.apps == () and routed.reason == "no app deploys branch 'main' of 'me/api'"
    assert routed.hint is not None and routed.hint.startswith("api deploys this branch but not")
    assert route(push("me/web", "main"), apps, b"s-shared").hint is None
