"""
Build deliveries shaped like each forge's: for ``ghhook send``, the demo,
the benchmark and the tests, so that all of them speak exactly what the
forges send.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any

from ghhook.delivery import ZERO_SHA
from ghhook.signature import SHA1_HEADER, SHA256_HEADER, sign


def push_payload(
    after: str,
    before: str = ZERO_SHA,
    ref: str = "refs/heads/main",
    repository: str = "example/app",
    message: str = "ghhook test delivery",
    pusher: str = "ghhook",
    forced: bool = False,
) -> dict[str, Any]:
    """A push event payload with the fields GitHub sends and ghhook reads."""
    owner, _, name = repository.partition("/")
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    commit = {
        "id": after,
        "tree_id": ZERO_SHA,
        "distinct": True,
        "message": message,
        "timestamp": now,
        "url": f"https://github.com/{repository}/commit/{after}",
        "author": {"name": pusher, "email": f"{pusher}@example.invalid"},
        "committer": {"name": pusher, "email": f"{pusher}@example.invalid"},
        "added": [],
        "removed": [],
        "modified": [],
    }
    return {
        "ref": ref,
        "before": before,
        "after": after,
        "created": before == ZERO_SHA,
        "deleted": after == ZERO_SHA,
        "forced": forced,
        "base_ref": None,
        "compare": f"https://github.com/{repository}/compare/{before[:12]}...{after[:12]}",
        "commits": [commit] if after != ZERO_SHA else [],
        "head_commit": commit if after != ZERO_SHA else None,
        "repository": {
            "id": 1,
            "name": name,
            "full_name": repository,
            "private": True,
            "owner": {"login": owner, "name": owner},
            "html_url": f"https://github.com/{repository}",
            "clone_url": f"https://github.com/{repository}.git",
            "ssh_url": f"git@github.com:{repository}.git",
            "default_branch": "main",
        },
        "pusher": {"name": pusher, "email": f"{pusher}@example.invalid"},
        "sender": {"login": pusher, "id": 1, "type": "User"},
    }


def ping_payload(repository: str = "example/app", hook_id: int = 1) -> dict[str, Any]:
    """A ping event payload, as GitHub sends when a hook is created."""
    return {
        "zen": "Keep it logically awesome.",
        "hook_id": hook_id,
        "hook": {"type": "Repository", "id": hook_id, "active": True, "events": ["push"]},
        "repository": {"id": 1, "full_name": repository},
        "sender": {"login": "ghhook", "id": 1, "type": "User"},
    }


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def delivery_headers(
    body: bytes,
    secret: bytes,
    event: str,
    delivery: str | None = None,
    content_type: str = "application/json",
) -> dict[str, str]:
    """GitHub's headers for ``body``: both signatures, a fresh delivery id."""
    return {
        "Content-Type": content_type,
        "User-Agent": "GitHub-Hookshot/ghhook",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "1",
        SHA256_HEADER: sign(body, secret, "sha256"),
        SHA1_HEADER: sign(body, secret, "sha1"),
    }


# --- The other forges ----------------------------------------------------------
#
# Each builder follows its forge's documented example payload, with the
# fields ghhook reads and the ones around them a receiver would see.

GITEA_FAMILY = ("gitea", "forgejo", "gogs")
#: The forges whose "test" button sends a delivery ghhook answers with a pong.
PING_FORGES = ("github", "gitea", "forgejo", "gogs", "bitbucket-server")
_TITLES = {"gitea": "Gitea", "forgejo": "Forgejo", "gogs": "Gogs"}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _branch_or_tag(ref: str) -> tuple[str, bool]:
    """The short name of ``ref`` and whether it is a tag."""
    for prefix, tag in (("refs/heads/", False), ("refs/tags/", True)):
        if ref.startswith(prefix):
            return ref[len(prefix) :], tag
    return ref, False


def gitea_push(
    after: str,
    before: str = ZERO_SHA,
    ref: str = "refs/heads/main",
    repository: str = "example/app",
    message: str = "ghhook test delivery",
    pusher: str = "ghhook",
    host: str = "https://gitea.example.com",
) -> dict[str, Any]:
    """A push as Gitea, Forgejo and Gogs send it: GitHub's shape, without ``forced``."""
    owner, _, name = repository.partition("/")
    user = {
        "id": 1,
        "login": pusher,
        "username": pusher,
        "full_name": "",
        "email": f"{pusher}@example.invalid",
    }
    commit: dict[str, Any] = {
        "id": after,
        "message": message + "\n",
        "url": f"{host}/{repository}/commit/{after}",
        "author": {"name": pusher, "email": f"{pusher}@example.invalid", "username": pusher},
        "committer": {"name": pusher, "email": f"{pusher}@example.invalid", "username": pusher},
        "verification": None,
        "timestamp": _now(),
        "added": [],
        "removed": [],
        "modified": [],
    }
    live = after != ZERO_SHA
    return {
        "ref": ref,
        "before": before,
        "after": after,
        "compare_url": f"{host}/{repository}/compare/{before}...{after}",
        "commits": [commit] if live else [],
        "total_commits": 1 if live else 0,
        "head_commit": commit if live else None,
        "repository": {
            "id": 1,
            "owner": {"id": 1, "login": owner, "username": owner, "full_name": "", "email": ""},
            "name": name,
            "full_name": repository,
            "description": "",
            "private": True,
            "fork": False,
            "html_url": f"{host}/{repository}",
            "ssh_url": f"git@{host.split('//')[-1]}:{repository}.git",
            "clone_url": f"{host}/{repository}.git",
            "default_branch": "main",
        },
        "pusher": user,
        "sender": user,
    }


def gitlab_push(
    after: str,
    before: str = ZERO_SHA,
    ref: str = "refs/heads/main",
    repository: str = "group/app",
    message: str = "ghhook test delivery",
    pusher: str = "ghhook",
    host: str = "https://gitlab.example.com",
) -> dict[str, Any]:
    """A Push Hook (a Tag Push Hook for a tag), as GitLab documents it."""
    namespace, _, name = repository.rpartition("/")
    _, tag = _branch_or_tag(ref)
    live = after != ZERO_SHA
    commit = {
        "id": after,
        "message": message + "\n",
        "title": message.splitlines()[0] if message else "",
        "timestamp": _now(),
        "url": f"{host}/{repository}/-/commit/{after}",
        "author": {"name": pusher, "email": f"{pusher}@example.invalid"},
        "added": [],
        "modified": [],
        "removed": [],
    }
    project = {
        "id": 15,
        "name": name,
        "description": "",
        "web_url": f"{host}/{repository}",
        "avatar_url": None,
        "git_ssh_url": f"git@{host.split('//')[-1]}:{repository}.git",
        "git_http_url": f"{host}/{repository}.git",
        "namespace": namespace,
        "visibility_level": 0,
        "path_with_namespace": repository,
        "default_branch": "main",
        "homepage": f"{host}/{repository}",
        "url": f"git@{host.split('//')[-1]}:{repository}.git",
        "ssh_url": f"git@{host.split('//')[-1]}:{repository}.git",
        "http_url": f"{host}/{repository}.git",
    }
    return {
        "object_kind": "tag_push" if tag else "push",
        "event_name": "tag_push" if tag else "push",
        "before": before,
        "after": after,
        "ref": ref,
        "ref_protected": True,
        "checkout_sha": after if live else None,
        "message": None,
        "user_id": 4,
        "user_name": pusher,
        "user_username": pusher,
        "user_email": "",
        "user_avatar": None,
        "project_id": 15,
        "project": project,
        "commits": [commit] if live else [],
        "total_commits_count": 1 if live else 0,
        "push_options": {},
        "repository": {
            "name": name,
            "url": project["url"],
            "description": "",
            "homepage": project["homepage"],
            "git_http_url": project["git_http_url"],
            "git_ssh_url": project["git_ssh_url"],
            "visibility_level": 0,
        },
    }


def bitbucket_push(
    after: str,
    before: str = ZERO_SHA,
    ref: str = "refs/heads/main",
    repository: str = "example/app",
    message: str = "ghhook test delivery",
    pusher: str = "ghhook",
    forced: bool = False,
) -> dict[str, Any]:
    """A ``repo:push`` as Bitbucket Cloud sends it: one change in ``push.changes``."""
    workspace, _, name = repository.partition("/")
    short, tag = _branch_or_tag(ref)
    html = f"https://bitbucket.org/{repository}"

    def side(sha: str) -> dict[str, Any] | None:
        if sha == ZERO_SHA:
            return None
        return {
            "type": "tag" if tag else "branch",
            "name": short,
            "target": {
                "type": "commit",
                "hash": sha,
                "message": message + "\n",
                "date": _now(),
                "author": {"type": "author", "raw": f"{pusher} <{pusher}@example.invalid>"},
                "links": {"html": {"href": f"{html}/commits/{sha}"}},
            },
            "links": {"html": {"href": f"{html}/branch/{short}"}},
        }

    change: dict[str, Any] = {
        "new": side(after),
        "old": side(before),
        "created": before == ZERO_SHA,
        "closed": after == ZERO_SHA,
        "forced": forced,
        "truncated": False,
        "commits": [],
        "links": {"html": {"href": f"{html}/branches/compare/{after}..{before}"}},
    }
    return {
        "push": {"changes": [change]},
        "actor": {
            "type": "user",
            "display_name": pusher,
            "nickname": pusher,
            "uuid": "{d301aafa-d676-4ee0-88be-962be7417567}",
            "account_id": "557058:c0b72ad0-1cb5-4018-9cdc-0cde8492c443",
        },
        "repository": {
            "type": "repository",
            "name": name,
            "full_name": repository,
            "uuid": "{21fa9bf8-b5b2-4891-97ed-d590bad0f871}",
            "is_private": True,
            "scm": "git",
            "workspace": {"type": "workspace", "slug": workspace, "name": workspace},
            "links": {"html": {"href": html}},
        },
    }


def bitbucket_server_push(
    after: str,
    before: str = ZERO_SHA,
    ref: str = "refs/heads/main",
    repository: str = "PROJ/app",
    pusher: str = "ghhook",
) -> dict[str, Any]:
    """A ``repo:refs_changed`` as Bitbucket Data Center sends it."""
    key, _, slug = repository.partition("/")
    short, tag = _branch_or_tag(ref)
    kind = "ADD" if before == ZERO_SHA else "DELETE" if after == ZERO_SHA else "UPDATE"
    return {
        "eventKey": "repo:refs_changed",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime()),
        "actor": {
            "name": pusher,
            "emailAddress": f"{pusher}@example.invalid",
            "id": 1,
            "displayName": pusher,
            "active": True,
            "slug": pusher,
            "type": "NORMAL",
        },
        "repository": {
            "slug": slug,
            "id": 84,
            "name": slug,
            "hierarchyId": "af05451fc2db3ed5e8dc",
            "scmId": "git",
            "state": "AVAILABLE",
            "statusMessage": "Available",
            "forkable": True,
            "project": {"key": key, "id": 84, "name": key, "public": False, "type": "NORMAL"},
            "public": False,
        },
        "changes": [
            {
                "ref": {"id": ref, "displayId": short, "type": "TAG" if tag else "BRANCH"},
                "refId": ref,
                "fromHash": before,
                "toHash": after,
                "type": kind,
            }
        ],
    }


def forge_push(
    forge: str,
    after: str,
    before: str = ZERO_SHA,
    ref: str = "refs/heads/main",
    repository: str = "example/app",
    message: str = "ghhook test delivery",
    pusher: str = "ghhook",
) -> dict[str, Any]:
    """A push of ``forge``'s shape."""
    if forge == "github":
        return push_payload(after, before, ref, repository, message, pusher)
    if forge in GITEA_FAMILY:
        return gitea_push(after, before, ref, repository, message, pusher)
    if forge == "gitlab":
        return gitlab_push(after, before, ref, repository, message, pusher)
    if forge == "bitbucket":
        return bitbucket_push(after, before, ref, repository, message, pusher)
    if forge == "bitbucket-server":
        return bitbucket_server_push(after, before, ref, repository, pusher)
    raise ValueError(f"unknown forge {forge!r}")


def forge_ping(forge: str, repository: str = "example/app") -> dict[str, Any]:
    """A ping of ``forge``'s shape (see :data:`PING_FORGES`)."""
    if forge == "github":
        return ping_payload(repository)
    if forge in GITEA_FAMILY:
        # Their "Test Delivery" button: a push of a fake commit, both shas zero.
        return gitea_push(ZERO_SHA, ZERO_SHA, repository=repository)
    if forge == "bitbucket-server":
        return {"test": True}
    raise ValueError(f"{forge} sends no ping; send a push")


def forge_headers(
    forge: str,
    body: bytes,
    secret: bytes,
    event: str,
    ref: str = "refs/heads/main",
    delivery: str | None = None,
    gitlab_auth: str = "token",
    now: float | None = None,
) -> dict[str, str]:
    """
    The headers ``forge`` sends with ``body`` (``event`` is ``push`` or
    ``ping``), signed with ``secret``, and a fresh delivery id.

    :param gitlab_auth: ``token`` (X-Gitlab-Token) or ``signing`` (a
        Standard Webhooks signature; ``secret`` is then a ``whsec_`` token).
    """
    delivery = delivery or str(uuid.uuid4())
    if forge == "github":
        return delivery_headers(body, secret, event, delivery)
    digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
    if forge in GITEA_FAMILY:
        # Forgejo sends Gitea's and Gogs' headers too, Gitea sends Gogs', and
        # both send GitHub's; Gogs sends only its own.
        family = {"forgejo": ("forgejo", "gitea", "gogs"), "gitea": ("gitea", "gogs")}.get(
            forge, ("gogs",)
        )
        headers = {"Content-Type": "application/json", "User-Agent": "Go-http-client/1.1"}
        event = "push"  # a test delivery is a push too (see forge_ping)
        for member in family:
            title = _TITLES[member]
            headers[f"X-{title}-Event"] = event
            headers[f"X-{title}-Delivery"] = delivery
            headers[f"X-{title}-Signature"] = digest
        if forge != "gogs":
            headers.update(
                {
                    "X-GitHub-Event": event,
                    "X-GitHub-Delivery": delivery,
                    SHA256_HEADER: f"sha256={digest}",
                }
            )
        return headers
    if forge == "gitlab":
        _, tag = _branch_or_tag(ref)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "GitLab/18.6.0",
            "X-Gitlab-Event": "Tag Push Hook" if tag else "Push Hook",
            "X-Gitlab-Webhook-UUID": str(uuid.uuid4()),
            "X-Gitlab-Event-UUID": str(uuid.uuid4()),
            "X-Gitlab-Instance": "https://gitlab.example.com",
            "Idempotency-Key": delivery,
        }
        if gitlab_auth == "signing":
            from ghhook.forges.gitlab import sign as gitlab_sign

            stamp = int(time.time() if now is None else now)
            headers["webhook-id"] = delivery
            headers["webhook-timestamp"] = str(stamp)
            headers["webhook-signature"] = gitlab_sign(delivery, stamp, body, secret)
        else:
            headers["X-Gitlab-Token"] = secret.decode("utf-8")
        return headers
    if forge == "bitbucket":
        return {
            "Content-Type": "application/json",
            "User-Agent": "Bitbucket-Webhooks/2.0",
            "X-Event-Key": "repo:push",
            "X-Hook-UUID": str(uuid.uuid4()),
            "X-Request-UUID": delivery,
            "X-Attempt-Number": "1",
            SHA1_HEADER: f"sha256={digest}",
        }
    if forge == "bitbucket-server":
        return {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Atlassian HttpClient 4.2.0 / Bitbucket-9.4.0 (9004000) / Default",
            "X-Event-Key": "diagnostics:ping" if event == "ping" else "repo:refs_changed",
            "X-Request-Id": delivery,
            SHA1_HEADER: f"sha256={digest}",
        }
    raise ValueError(f"unknown forge {forge!r}")
