"""
Build deliveries shaped like GitHub's: for ``ghhook send``, the demo, the
benchmark and the tests, so that all of them speak exactly what GitHub sends.
"""

from __future__ import annotations

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
