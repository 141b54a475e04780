"""
Every forge through the hook's HTTP contract, in memory through StubTreq:
an app of each forge on its own URL and on the shared path, with the
deliveries :mod:`ghhook.payloads` builds as that forge sends them.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import attrs
import pytest

from ghhook.forges import adapter
from ghhook.payloads import encode, forge_ping, forge_push
from ghhook.payloads import forge_headers as build_headers
from tests.test_web import SECRET, Client, app_settings, pending

A, B, ZERO = "a" * 40, "b" * 40, "0" * 40
SIGNING = b"whsec_" + base64.b64encode(b"k" * 32)
WRONG_SIGNING = b"whsec_" + base64.b64encode(b"w" * 32)
SHARED = "/github"


@attrs.frozen
class Forge:
    """One way a forge delivers: its name, the repository it names, how it signs."""

    id: str
    forge: str
    repository: str
    #: The header a 401 names when the delivery carries no credential.
    header: str
    #: The secret the forge signs with (a GitLab signing token for ``signing``).
    secret: bytes = SECRET
    wrong: bytes = b"wrong-7f3a9c"
    gitlab_auth: str = "token"
    #: A forge whose delivery the app must refuse on its own URL.
    other: str = "gitlab"

    @property
    def name(self) -> str:
        return f"app-{self.forge}"


FORGES = [
    Forge("github", "github", "me/app", "X-Hub-Signature-256"),
    Forge("gitea", "gitea", "me/app", "X-Gitea-Signature", other="github"),
    Forge("forgejo", "forgejo", "me/app", "X-Forgejo-Signature", other="gitea"),
    Forge("gogs", "gogs", "me/app", "X-Gogs-Signature", other="github"),
    Forge("gitlab-token", "gitlab", "group/sub/app", "X-Gitlab-Token", other="github"),
    Forge(
        "gitlab-signing",
        "gitlab",
        "group/sub/app",
        "X-Gitlab-Token",
        secret=SIGNING,
        wrong=WRONG_SIGNING,
        gitlab_auth="signing",
        other="bitbucket",
    ),
    Forge("bitbucket", "bitbucket", "me/app", "X-Hub-Signature", other="bitbucket-server"),
    Forge("bitbucket-server", "bitbucket-server", "PROJ/app", "X-Hub-Signature", other="bitbucket"),
]
#: Every header that carries a credential, whichever forge sends it.
CREDENTIALS = {
    name.lower()
    for name in (
        "X-Hub-Signature",
        "X-Hub-Signature-256",
        "X-Gitea-Signature",
        "X-Forgejo-Signature",
        "X-Gogs-Signature",
        "X-Gitlab-Token",
        "webhook-signature",
        "webhook-id",
        "webhook-timestamp",
    )
}


def client_for(tmp_path: Path, *forges: tuple[str, Forge], branch: str = "main") -> Client:
    """A hook over one app per ``(name, forge)``, each with an old secret and the forge's."""
    apps = tuple(
        attrs.evolve(
            app_settings(tmp_path, name, f.repository, branch, (b"old secret", f.secret)),
            forge=f.forge,
        )
        for name, f in forges
    )
    return Client(tmp_path, apps=apps)


def post(
    client: Client,
    forge: Forge,
    payload: dict[str, Any],
    path: str,
    event: str = "push",
    ref: str = "refs/heads/main",
    delivery: str | None = None,
    secret: bytes | None = None,
    credentials: bool = True,
) -> tuple[int, dict[str, Any]]:
    """POST ``payload`` as ``forge`` sends it, signed with ``secret`` (the forge's own)."""
    body = encode(payload)
    headers = build_headers(
        forge.forge,
        body,
        secret or forge.secret,
        event,
        ref=ref,
        delivery=delivery,
        gitlab_auth=forge.gitlab_auth,
        now=client.clock.seconds(),
    )
    if not credentials:
        headers = {k: v for k, v in headers.items() if k.lower() not in CREDENTIALS}
    code, answer, _ = client.request(
        "POST", "http://ghhook.invalid" + path, body=body, headers=headers
    )
    return code, answer


def push(forge: Forge, after: str = B, before: str = A, ref: str = "refs/heads/main") -> Any:
    return forge_push(forge.forge, after, before, ref, forge.repository)


@pytest.fixture(params=FORGES, ids=[f.id for f in FORGES])
def forge(request: pytest.FixtureRequest) -> Forge:
    return request.param


@pytest.fixture(params=["own", "shared"])
def path(request: pytest.FixtureRequest, forge: Forge) -> str:
    return f"/hooks/{forge.name}" if request.param == "own" else SHARED


@pytest.fixture
def client(tmp_path: Path, forge: Forge) -> Client:
    return client_for(tmp_path, (forge.name, forge))


def nothing_queued(client: Client) -> bool:
    client.engine.turn()
    return pending(client) == {} and client.engine.runner.calls == []


# --- Each forge, on its app's own URL and on the shared path ---------------------------


def test_a_push_is_accepted_and_reaches_the_engine(client: Client, forge: Forge, path: str) -> None:
    code, answer = post(client, forge, push(forge), path, delivery="d-1")
    assert code == 202, answer
    assert answer == {
        "after": B,
        "delivery": "d-1",
        "deploys": [{"app": forge.name, "deploy": 1, "coalesced": False}],
    }
    assert pending(client) == {forge.name: [B]}
    job = client.engine.deployer.pending
    assert job is not None and job.delivery == "d-1"
    assert job.forced is (forge.forge not in ("github", "bitbucket")), (
        "a forge that does not say whether the push was forced: the engine always pulls"
    )
    client.engine.turn()
    assert client.engine.runner.names() == ["pull"]


def test_an_unsigned_delivery_is_401_naming_the_header(
    client: Client, forge: Forge, path: str
) -> None:
    code, answer = post(client, forge, push(forge), path, delivery="d-1", credentials=False)
    assert code == 401
    assert forge.header in answer["error"]
    assert nothing_queued(client)
    assert not client.journal.seen_delivery("d-1")


def test_a_delivery_signed_with_another_secret_is_403(
    client: Client, forge: Forge, path: str
) -> None:
    code, answer = post(client, forge, push(forge), path, delivery="d-1", secret=forge.wrong)
    assert code == 403
    assert forge.wrong.decode() not in answer["error"]
    assert forge.secret.decode() not in answer["error"]
    assert nothing_queued(client)
    assert not client.journal.seen_delivery("d-1")


def test_another_forges_delivery_to_the_apps_own_url_is_400_naming_both(
    client: Client, forge: Forge
) -> None:
    other = Forge("other", forge.other, forge.repository, "", secret=SECRET)
    code, answer = post(client, other, push(other), f"/hooks/{forge.name}", delivery="d-1")
    assert code == 400
    title = adapter(forge.other).title
    assert answer == {
        "error": f"this is a {title} delivery; app {forge.name} expects {forge.forge}"
    }
    assert nothing_queued(client)
    assert not client.journal.seen_delivery("d-1")


@pytest.mark.parametrize(
    ("after", "before", "ref", "reason"),
    [
        pytest.param(B, A, "refs/tags/v1", "tag push 'refs/tags/v1' does not deploy", id="tag"),
        pytest.param(ZERO, A, "refs/heads/main", "branch 'main' was deleted", id="deletion"),
        pytest.param(
            B, A, "refs/heads/feature", "push to branch 'feature'; only 'main'", id="other-branch"
        ),
    ],
)
def test_a_push_that_deploys_nothing_is_200_ignored(
    client: Client, forge: Forge, path: str, after: str, before: str, ref: str, reason: str
) -> None:
    code, answer = post(client, forge, push(forge, after, before, ref), path, ref=ref)
    assert code == 200
    assert reason in answer["ignored"]
    assert nothing_queued(client)


def test_a_redelivery_is_200_duplicate_and_queues_nothing_more(
    client: Client, forge: Forge, path: str
) -> None:
    first, _ = post(client, forge, push(forge), path, delivery="d-1")
    again, answer = post(client, forge, push(forge), path, delivery="d-1")
    assert (first, again) == (202, 200)
    assert answer == {"duplicate": "d-1"}
    assert pending(client) == {forge.name: [B]}


# --- Apps of several forges --------------------------------------------------------------

BY_ID = {f.id: f for f in FORGES}
GITHUB, GITEA = BY_ID["github"], BY_ID["gitea"]


@pytest.mark.parametrize(("sender", "reached"), [(GITEA, "tea"), (GITHUB, "hub")])
def test_on_the_shared_path_a_delivery_reaches_only_its_forges_apps(
    tmp_path: Path, sender: Forge, reached: str
) -> None:
    """Both apps hold the secret and track me/app's main; Gitea's delivery carries GitHub's headers too."""
    client = client_for(tmp_path, ("hub", GITHUB), ("tea", GITEA))
    code, answer = post(client, sender, push(sender), SHARED, delivery="d-1")
    assert code == 202
    assert [d["app"] for d in answer["deploys"]] == [reached]
    assert pending(client) == {reached: [B]}


def test_on_the_shared_path_a_forge_no_app_has_is_refused(tmp_path: Path) -> None:
    client = client_for(tmp_path, ("hub", GITHUB))
    gitlab = BY_ID["gitlab-token"]
    code, _ = post(client, gitlab, push(gitlab), SHARED, delivery="d-1")
    assert code == 403
    assert nothing_queued(client)


def test_a_bitbucket_push_of_two_branches_reaches_the_app_of_each(tmp_path: Path) -> None:
    bitbucket = BY_ID["bitbucket"]
    apps = tuple(
        attrs.evolve(app_settings(tmp_path, name, "me/app", branch, (SECRET,)), forge="bitbucket")
        for name, branch in (("web", "main"), ("web-staging", "staging"))
    )
    client = Client(tmp_path, apps=apps)
    payload = push(bitbucket)
    staged = push(bitbucket, after="c" * 40, before="d" * 40, ref="refs/heads/staging")
    payload["push"]["changes"].extend(staged["push"]["changes"])
    code, answer = post(client, bitbucket, payload, SHARED, delivery="d-1")
    assert code == 202, answer
    assert answer["deploys"] == [
        {"app": "web", "deploy": 1, "coalesced": False, "after": B},
        {"app": "web-staging", "deploy": 2, "coalesced": False, "after": "c" * 40},
    ]
    assert pending(client) == {"web": [B], "web-staging": ["c" * 40]}


@pytest.mark.parametrize("path", ["/hooks/dc", SHARED])
def test_a_bitbucket_data_center_ping_is_answered(tmp_path: Path, path: str) -> None:
    server = BY_ID["bitbucket-server"]
    client = client_for(tmp_path, ("dc", server))
    code, answer = post(client, server, forge_ping("bitbucket-server"), path, event="ping")
    assert (code, answer) == (200, {"pong": True, "zen": None, "hook_id": None})
    assert nothing_queued(client)
