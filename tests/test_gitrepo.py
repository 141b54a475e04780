"""
Tests for :mod:`ghhook.gitrepo` against real git repositories in ``tmp_path``:
what ghhook reads from a clone's files must agree with what git itself does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ghhook.gitrepo import (
    NotAClone,
    current_branch,
    git_dir,
    github_repository,
    in_rebase,
    remote_url,
)
from tests.gitfixture import GitFixture
from tests.gitfixture import git as run_git


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("https://github.com/octo/app", "octo/app", id="https"),
        pytest.param("https://github.com/octo/app.git", "octo/app", id="https-dot-git"),
        pytest.param("https://github.com/octo/app/", "octo/app", id="https-trailing-slash"),
        pytest.param("https://github.com/octo/app.git/", "octo/app", id="dot-git-and-slash"),
        pytest.param("http://github.com/octo/app.git", "octo/app", id="http"),
        pytest.param("https://token@github.com/octo/app.git", "octo/app", id="https-token"),
        pytest.param("https://user:pw@github.com/octo/app", "octo/app", id="https-user-pw"),
        pytest.param("https://github.com:443/octo/app.git", "octo/app", id="https-port"),
        pytest.param("ssh://git@github.com/octo/app.git", "octo/app", id="ssh-url"),
        pytest.param("ssh://git@github.com:22/octo/app.git", "octo/app", id="ssh-url-port"),
        pytest.param("ssh://github.com/octo/app", "octo/app", id="ssh-url-no-user"),
        pytest.param("git://github.com/octo/app.git", "octo/app", id="git-protocol"),
        pytest.param("git@github.com:octo/app.git", "octo/app", id="scp"),
        pytest.param("git@github.com:octo/app", "octo/app", id="scp-no-dot-git"),
        pytest.param("git@github.com:octo/app/", "octo/app", id="scp-trailing-slash"),
        pytest.param("github.com:octo/app.git", "octo/app", id="scp-no-user"),
        pytest.param("  git@github.com:octo/app.git\n", "octo/app", id="surrounding-space"),
        pytest.param("https://GitHub.com/Octo/App.git", "Octo/App", id="host-case-kept-name"),
        pytest.param("HTTPS://GITHUB.COM/octo/app", "octo/app", id="scheme-case"),
        pytest.param("git@github.com:my-org/my.app_2.git", "my-org/my.app_2", id="punctuation"),
        pytest.param("git@github.com:octo/app.js.git", "octo/app.js", id="dot-in-name"),
        pytest.param("git@github.com:octo/app.git.git", "octo/app.git", id="dot-git-twice"),
        pytest.param("https://gitlab.com/octo/app.git", None, id="gitlab"),
        pytest.param("git@gitlab.com:octo/app.git", None, id="gitlab-scp"),
        pytest.param("https://github.example.com/octo/app", None, id="github-enterprise"),
        pytest.param("https://github.com.evil.com/octo/app", None, id="lookalike-suffix"),
        pytest.param("https://evilgithub.com/octo/app", None, id="lookalike-prefix"),
        pytest.param("https://github.com@evil.com/octo/app", None, id="github-as-userinfo"),
        pytest.param("https://evil.com/github.com/octo/app", None, id="github-in-path"),
        pytest.param("git@evil.com:github.com:octo/app", None, id="github-in-scp-path"),
        pytest.param("https://github.com/octo", None, id="owner-only"),
        pytest.param("https://github.com/octo/app/tree/main", None, id="extra-path"),
        pytest.param("https://github.com/octo/app?x=1", None, id="query"),
        pytest.param("https://github.com//app", None, id="empty-owner"),
        pytest.param("ftp://github.com/octo/app", None, id="other-scheme"),
        pytest.param("file:///srv/github.com/octo/app.git", None, id="file-url"),
        pytest.param("/srv/git/app.git", None, id="absolute-path"),
        pytest.param("../app.git", None, id="relative-path"),
        pytest.param("/srv/github.com:octo/app", None, id="path-with-colon"),
        pytest.param("", None, id="empty"),
    ],
)
def test_github_repository(url: str, expected: str | None) -> None:
    """``owner/name`` for GitHub's https, ssh and scp forms; None for anything else."""
    assert github_repository(url) == expected


def test_git_dir_of_clone(git: GitFixture) -> None:
    """A plain clone's git directory is its ``.git`` directory."""
    assert git_dir(git.clone) == git.clone / ".git"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(lambda root: root / "missing", "is not a directory", id="missing-path"),
        pytest.param(
            lambda root: root / "missing" / "deeper", "is not a directory", id="missing-parent"
        ),
        pytest.param(lambda root: _file(root / "a-file"), "is not a directory", id="a-file"),
        pytest.param(lambda root: _dir(root / "plain"), "is not a git work tree", id="plain-dir"),
        pytest.param(
            lambda root: _with_dot_git_file(root / "junk", "not a pointer\n"),
            "is not a git work tree",
            id="dot-git-file-without-gitdir",
        ),
        pytest.param(
            lambda root: _with_dot_git_file(root / "dangling", f"gitdir: {root / 'nowhere'}\n"),
            "is not a git work tree",
            id="dot-git-file-pointing-nowhere",
        ),
        pytest.param(
            lambda root: _with_dot_git_file(root / "empty", ""),
            "is not a git work tree",
            id="empty-dot-git-file",
        ),
    ],
)
def test_git_dir_rejects(tmp_path: Path, make: Callable[[Path], Path], message: str) -> None:
    """Paths that are not a work tree raise NotAClone naming the path."""
    path = make(tmp_path)
    with pytest.raises(NotAClone, match=message) as info:
        git_dir(path)
    assert str(path) in str(info.value)


def test_git_dir_rejects_bare_repository(git: GitFixture) -> None:
    """A bare repository has no work tree to pull into."""
    with pytest.raises(NotAClone):
        git_dir(git.remote)


def test_git_dir_rejects_subdirectory_of_clone(git: GitFixture) -> None:
    """ghhook wants the top of the work tree, not a directory inside it."""
    inner = git.clone / "sub"
    inner.mkdir()
    with pytest.raises(NotAClone):
        git_dir(inner)


def test_git_dir_of_linked_worktree(git: GitFixture) -> None:
    """A ``git worktree add`` tree has a ``.git`` file; it names the real git dir."""
    tree = git.root / "tree"
    run_git(git.clone, "worktree", "add", "--quiet", "-b", "feature/wt", str(tree))
    assert (tree / ".git").is_file()
    gdir = git_dir(tree)
    expected = run_git(tree, "rev-parse", "--absolute-git-dir")
    assert gdir == Path(expected).resolve()
    assert current_branch(gdir) == "feature/wt"
    assert current_branch(git_dir(git.clone)) == "main"
    # Config is shared through commondir, so the remote is the clone's.
    assert remote_url(gdir, "origin") == str(git.remote)
    assert not in_rebase(gdir)


def test_git_dir_of_submodule_with_relative_gitdir(git: GitFixture) -> None:
    """A submodule's ``.git`` file holds a relative path, read from the work tree."""
    run_git(
        git.work,
        "-c",
        "protocol.file.allow=always",
        "submodule",
        "add",
        "--quiet",
        str(git.remote),
        "sub",
    )
    pointer = (git.work / "sub" / ".git").read_text()
    assert pointer.startswith("gitdir: ../")
    gdir = git_dir(git.work / "sub")
    assert gdir == (git.work / ".git" / "modules" / "sub").resolve()
    assert gdir == Path(run_git(git.work / "sub", "rev-parse", "--absolute-git-dir")).resolve()
    assert remote_url(gdir, "origin") == str(git.remote)


def test_current_branch(git: GitFixture) -> None:
    """The checked-out branch, including names with slashes."""
    gdir = git_dir(git.clone)
    assert current_branch(gdir) == "main"
    run_git(git.clone, "switch", "--quiet", "-c", "release/2.0")
    assert current_branch(gdir) == "release/2.0"


def test_current_branch_unborn(tmp_path: Path) -> None:
    """A fresh repository's HEAD names a branch that has no commit yet."""
    run_git(tmp_path, "init", "--quiet", "--initial-branch=trunk", "repo")
    assert current_branch(git_dir(tmp_path / "repo")) == "trunk"


def test_current_branch_detached(git: GitFixture) -> None:
    """A detached HEAD has no branch: None, so the tap asks for --branch."""
    run_git(git.clone, "switch", "--quiet", "--detach", "HEAD")
    gdir = git_dir(git.clone)
    assert current_branch(gdir) is None
    assert (gdir / "HEAD").read_text().strip() == git.head()


def test_remote_url_of_clone(git: GitFixture) -> None:
    """The clone's origin is the path it was cloned from; that is not GitHub."""
    url = remote_url(git_dir(git.clone), "origin")
    assert url == run_git(git.clone, "remote", "get-url", "origin")
    assert url == str(git.remote)
    assert github_repository(url) is None


def test_remote_url_of_added_remote(git: GitFixture) -> None:
    """Any named remote is found, and a GitHub URL gives its repository."""
    run_git(git.clone, "remote", "add", "github", "git@github.com:octo/app.git")
    gdir = git_dir(git.clone)
    url = remote_url(gdir, "github")
    assert url == "git@github.com:octo/app.git"
    assert github_repository(url) == "octo/app"
    assert remote_url(gdir, "origin") == str(git.remote)


def test_remote_url_unknown_remote(git: GitFixture) -> None:
    """An unknown remote is None; remote names are case-sensitive."""
    gdir = git_dir(git.clone)
    assert remote_url(gdir, "upstream") is None
    assert remote_url(gdir, "Origin") is None


def test_remote_url_after_set_url(git: GitFixture) -> None:
    """``git remote set-url`` is seen: the file is read, nothing is cached."""
    gdir = git_dir(git.clone)
    run_git(git.clone, "remote", "set-url", "origin", "https://github.com/octo/app.git")
    assert remote_url(gdir, "origin") == "https://github.com/octo/app.git"


def test_remote_url_with_several_urls_is_the_fetch_url(git: GitFixture) -> None:
    """With several urls git fetches from the first; ghhook must name that one."""
    run_git(git.clone, "remote", "set-url", "--add", "origin", "https://github.com/octo/mirror")
    fetch_url = run_git(git.clone, "remote", "get-url", "origin")
    assert fetch_url == str(git.remote)
    assert remote_url(git_dir(git.clone), "origin") == fetch_url


def test_remote_url_of_remote_without_url(git: GitFixture) -> None:
    """A remote section with no url is configured but empty: ``""``, not None."""
    run_git(git.clone, "config", "remote.nourl.fetch", "+refs/heads/*:refs/remotes/nourl/*")
    assert remote_url(git_dir(git.clone), "nourl") == ""


def test_remote_url_without_config_file(tmp_path: Path) -> None:
    """An unreadable config is no remote at all."""
    assert remote_url(tmp_path, "origin") is None


SECTION = '[remote "origin"]\n'


@pytest.mark.parametrize(
    ("config", "remote", "expected"),
    [
        pytest.param(SECTION + "\turl = https://x/a\n", "origin", "https://x/a", id="plain"),
        pytest.param(SECTION + "url=https://x/a\n", "origin", "https://x/a", id="no-spaces"),
        pytest.param(SECTION + "  URL = https://x/a\n", "origin", "https://x/a", id="key-case"),
        pytest.param(
            '[Remote "origin"]\nurl = https://x/a\n', "origin", "https://x/a", id="section-case"
        ),
        pytest.param(
            '[remote "Origin"]\nurl = https://x/a\n', "origin", None, id="subsection-case"
        ),
        pytest.param(SECTION + 'url = "https://x/a"\n', "origin", "https://x/a", id="quoted"),
        pytest.param(
            SECTION + "url = https://x/a\nurl = https://x/b\n", "origin", "https://x/a", id="two"
        ),
        pytest.param(
            SECTION + "url = https://x/a\n" + SECTION + "url = https://x/b\n",
            "origin",
            "https://x/a",
            id="two-sections",
        ),
        pytest.param(
            SECTION + "fetch = +refs/heads/*:refs/remotes/origin/*\n"
            '[branch "main"]\nremote = origin\n' + SECTION + "url = https://x/b\n",
            "origin",
            "https://x/b",
            id="url-in-reopened-section",
        ),
        pytest.param(
            "# " + SECTION + "; url = https://x/no\n" + SECTION + "# url = https://x/no\n"
            "url = https://x/a\n",
            "origin",
            "https://x/a",
            id="comments",
        ),
        pytest.param(
            SECTION + "pushurl = https://x/push\nurl = https://x/a\n",
            "origin",
            "https://x/a",
            id="pushurl-not-url",
        ),
        pytest.param(
            '[remote "other"]\nurl = https://x/other\n' + SECTION + "url = https://x/a\n",
            "origin",
            "https://x/a",
            id="after-other-remote",
        ),
        pytest.param(
            SECTION + 'url = https://x/a\n[remote "other"]\nurl = https://x/other\n',
            "other",
            "https://x/other",
            id="second-remote",
        ),
        pytest.param(
            '[remote "my.mirror"]\nurl = https://x/m\n', "my.mirror", "https://x/m", id="dots"
        ),
        pytest.param(
            '[remote "other"]\nurl = https://x/other\n', "origin", None, id="only-other-remote"
        ),
        pytest.param(
            '[branch "origin"]\nurl = https://x/no\n', "origin", None, id="branch-not-remote"
        ),
        pytest.param(SECTION + "url = https://x/a\r\n", "origin", "https://x/a", id="crlf"),
        pytest.param(SECTION + "pushurl = https://x/p\n", "origin", "", id="pushurl-only"),
        pytest.param(SECTION, "origin", "", id="empty-section"),
        pytest.param("", "origin", None, id="empty-config"),
    ],
)
def test_remote_url_parsing_agrees_with_git(
    tmp_path: Path, config: str, remote: str, expected: str | None
) -> None:
    """remote_url reads a config file as ``git config`` does (first url wins)."""
    (tmp_path / "config").write_bytes(config.encode("utf-8"))
    assert remote_url(tmp_path, remote) == expected
    assert _git_fetch_url(tmp_path / "config", remote) == (expected or None)


def test_in_rebase_false_on_clean_clone(git: GitFixture) -> None:
    """A fresh clone has no rebase in progress."""
    assert not in_rebase(git_dir(git.clone))


@pytest.mark.parametrize(
    ("backend", "state_dir"), [("merge", "rebase-merge"), ("apply", "rebase-apply")]
)
def test_in_rebase_after_conflicting_pull(git: GitFixture, backend: str, state_dir: str) -> None:
    """A ``pull --rebase`` stopped by a conflict is seen, for either rebase backend."""
    git.commit_and_push("version 2 upstream\n")
    git.commit("app.txt", "version 2 local\n", "local change", repo=git.clone)
    with pytest.raises(RuntimeError, match="pull"):
        run_git(git.clone, "-c", f"rebase.backend={backend}", "pull", "--quiet", "--rebase")
    gdir = git_dir(git.clone)
    assert (gdir / state_dir).is_dir()
    assert in_rebase(gdir)
    # A stopped rebase detaches HEAD, so no branch is named until it ends.
    assert current_branch(gdir) is None
    run_git(git.clone, "rebase", "--abort")
    assert not in_rebase(gdir)
    assert current_branch(gdir) == "main"


def test_in_rebase_in_linked_worktree(git: GitFixture) -> None:
    """Rebase state lives in the worktree's own git dir, not the main one."""
    tree = git.root / "tree"
    run_git(git.clone, "worktree", "add", "--quiet", "-b", "wt", str(tree), "HEAD")
    git.commit("app.txt", "base\n", "base", repo=tree)
    run_git(tree, "switch", "--quiet", "-c", "side", "HEAD~1")
    git.commit("app.txt", "side\n", "side", repo=tree)
    with pytest.raises(RuntimeError, match="rebase"):
        run_git(tree, "rebase", "--quiet", "wt")
    assert in_rebase(git_dir(tree))
    assert not in_rebase(git_dir(git.clone))


def _file(path: Path, text: str = "x\n") -> Path:
    path.write_text(text)
    return path


def _dir(path: Path) -> Path:
    path.mkdir()
    return path


def _with_dot_git_file(work_tree: Path, text: str) -> Path:
    _file(_dir(work_tree) / ".git", text)
    return work_tree


def _git_fetch_url(config: Path, remote: str) -> str | None:
    """What git itself takes as the fetch url: the first ``remote.<name>.url``."""
    try:
        urls = run_git(
            config.parent, "config", "--file", str(config), "--get-all", f"remote.{remote}.url"
        )
    except RuntimeError:
        return None
    return urls.splitlines()[0]
