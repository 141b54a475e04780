"""
Read what ghhook needs to know about a clone from its files.

This runs once at start-up, before the reactor: reading ``.git/HEAD`` and
``.git/config`` directly keeps start-up free of subprocesses.
"""

from __future__ import annotations

import re
from pathlib import Path

_GITHUB_URL = re.compile(
    r"""^(?:
        (?:https?|git|ssh)://(?:[^@/]+@)?github\.com(?::\d+)?/
      | (?:[^@/]+@)?github\.com:
    )(?P<owner>[A-Za-z0-9_.-]+)/(?P<name>[A-Za-z0-9_.-]+?)(?:\.git)?/?$""",
    re.VERBOSE | re.IGNORECASE,
)
_SECTION = re.compile(r'^\[\s*([A-Za-z0-9.-]+)(?:\s+"((?:[^"\\]|\\.)*)")?\s*\]')


class NotAClone(ValueError):
    """The path is not a git work tree; the message names it."""


def git_dir(work_tree: Path) -> Path:
    """Return the git directory of ``work_tree`` or raise :class:`NotAClone`."""
    if not work_tree.is_dir():
        raise NotAClone(f"{work_tree} is not a directory")
    dot_git = work_tree / ".git"
    if dot_git.is_dir():
        return dot_git
    if dot_git.is_file():
        # A linked work tree or submodule: ".git" names the real directory.
        text = dot_git.read_text(encoding="utf-8", errors="replace").strip()
        if text.startswith("gitdir:"):
            target = Path(text[len("gitdir:") :].strip())
            target = target if target.is_absolute() else work_tree / target
            if target.is_dir():
                return target.resolve()
    raise NotAClone(f"{work_tree} is not a git work tree (no .git in it)")


def common_dir(gdir: Path) -> Path:
    """The directory holding config and refs shared by linked work trees."""
    pointer = gdir / "commondir"
    if pointer.is_file():
        target = Path(pointer.read_text(encoding="utf-8").strip())
        return (target if target.is_absolute() else gdir / target).resolve()
    return gdir


def current_branch(gdir: Path) -> str | None:
    """The checked-out branch, or None for a detached HEAD."""
    head = (gdir / "HEAD").read_text(encoding="utf-8", errors="replace").strip()
    if head.startswith("ref: refs/heads/"):
        return head[len("ref: refs/heads/") :]
    return None


def remote_url(gdir: Path, remote: str) -> str | None:
    """The fetch URL of ``remote``, or None when no such remote is configured."""
    config = common_dir(gdir) / "config"
    try:
        lines = config.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    in_section = False
    found = False
    url = None
    for raw in lines:
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        section = _SECTION.match(line)
        if section:
            name, sub = section.group(1).lower(), section.group(2)
            in_section = name == "remote" and sub == remote
            found = found or in_section
            continue
        if in_section:
            key, sep, value = line.partition("=")
            # Git fetches from the first url when a remote lists several.
            if sep and key.strip().lower() == "url" and url is None:
                url = value.strip().strip('"')
    if found and url is None:
        return ""
    return url


def in_rebase(gdir: Path) -> bool:
    """Whether a rebase was left in progress (by a conflict or a crash)."""
    return (gdir / "rebase-merge").exists() or (gdir / "rebase-apply").exists()


def github_repository(url: str) -> str | None:
    """``owner/name`` for a GitHub remote URL (https or ssh form), else None."""
    match = _GITHUB_URL.match(url.strip())
    if match is None:
        return None
    return f"{match.group('owner')}/{match.group('name')}"


#: The public hosts whose forge is known, so a clone's repository can be
#: read off its remote's URL; a self-hosted forge's host tells nothing.
KNOWN_HOSTS = {
    "github.com": "github",
    "gitlab.com": "gitlab",
    "bitbucket.org": "bitbucket",
    "codeberg.org": "forgejo",
    "gitea.com": "gitea",
}
_URL = re.compile(
    r"""^(?:
        (?:https?|git|ssh)://(?:[^@/]+@)?(?P<host>[^/:]+)(?::\d+)?/
      | (?:[^@/]+@)?(?P<scp_host>[^/:]+):
    )(?P<path>[A-Za-z0-9_.~/-]+?)(?:\.git)?/?$""",
    re.VERBOSE | re.IGNORECASE,
)


def forge_repository(url: str, forge: str) -> str | None:
    """
    The forge's full name of the repository a remote URL points at
    (``owner/name``; GitLab's ``group/subgroup/project``), when its host
    is the public host of ``forge``; else None.
    """
    if forge == "github":
        return github_repository(url)
    match = _URL.match(url.strip())
    if match is None:
        return None
    host = (match.group("host") or match.group("scp_host") or "").lower()
    if KNOWN_HOSTS.get(host) != forge and not (forge == "gitea" and host == "codeberg.org"):
        return None
    parts = [part for part in match.group("path").split("/") if part]
    if len(parts) < 2 or (forge != "gitlab" and len(parts) != 2):
        return None
    return "/".join(parts)
