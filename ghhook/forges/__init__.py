"""
One adapter per forge: how a delivery from it is recognised, authenticated
and read.

Pure functions on headers and the raw body, no Twisted: each adapter takes
the request's headers (a lookup, :data:`Headers`) and body, and gives a
:class:`~ghhook.signature.Verdict`, then the forge-neutral values the rest
of ghhook works with (:class:`~ghhook.delivery.Push`, or a
:class:`~ghhook.decision.Pong` or :class:`~ghhook.decision.Ignore`).
Routing, the engines and the journal never learn which forge spoke. Adding
a forge is adding one adapter here, and its tests.
"""

from __future__ import annotations

from ghhook.forges.base import Adapter, BadHeader, Headers, Read
from ghhook.forges.bitbucket import BitbucketCloud, BitbucketServer
from ghhook.forges.gitea import GiteaFamily
from ghhook.forges.github import GitHub
from ghhook.forges.gitlab import GitLab

#: Every adapter, in the order a delivery is recognised: most specific
#: first, since Forgejo sends Gitea's and Gogs' headers as well as its own,
#: and all three send GitHub's.
ADAPTERS: tuple[Adapter, ...] = (
    GiteaFamily("forgejo", "Forgejo"),
    GiteaFamily("gitea", "Gitea"),
    GiteaFamily("gogs", "Gogs"),
    GitLab(),
    BitbucketServer(),
    BitbucketCloud(),
    GitHub(),
)
BY_NAME: dict[str, Adapter] = {adapter.name: adapter for adapter in ADAPTERS}
#: The names ``forge`` takes, in the order the README lists them.
FORGES = ("github", "gitea", "forgejo", "gogs", "gitlab", "bitbucket", "bitbucket-server")
DEFAULT_FORGE = "github"


def recognise(header: Headers) -> Adapter | None:
    """The forge whose headers the delivery carries, or None when no forge's do."""
    for adapter in ADAPTERS:
        if adapter.recognises(header):
            return adapter
    return None


def adapter(name: str) -> Adapter:
    """The adapter of forge ``name`` (one of :data:`FORGES`)."""
    return BY_NAME[name]


__all__ = [
    "ADAPTERS",
    "BY_NAME",
    "DEFAULT_FORGE",
    "FORGES",
    "Adapter",
    "BadHeader",
    "Headers",
    "Read",
    "adapter",
    "recognise",
]
