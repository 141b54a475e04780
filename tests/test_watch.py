"""
Watch paths: the gitignore-style globs of :mod:`ghhook.watch` as a table,
and their pathspecs against real git, which must select exactly the files
:func:`~ghhook.watch.compile_glob` says the glob matches.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ghhook.watch import SHOWN, compile_glob, matching, pathspecs
from tests.gitfixture import git as run_git

# (pattern, path, matches)
GLOBS = [
    # "*" stays within one segment.
    ("*.py", "app.py", True),
    ("*.py", "src/lib/deep.py", True),
    ("*.py", "app.pyc", False),
    ("src/*.py", "src/app.py", True),
    ("src/*.py", "src/lib/deep.py", False),
    ("*", "anything/at/all", True),
    # "?" is one character, never "/".
    ("file?.log", "file1.log", True),
    ("file?.log", "file10.log", False),
    ("a?b", "axb", True),
    ("a?b", "a/b", False),
    # Classes, ranges and their negation.
    ("file[0-9].log", "file7.log", True),
    ("file[0-9].log", "fileA.log", False),
    ("file[!0-9].log", "fileA.log", True),
    ("file[!0-9].log", "file7.log", False),
    ("file[^0-9].log", "fileA.log", True),
    ("[]]x", "]x", True),
    ("[Mm]akefile", "src/makefile", True),
    # "**": any number of segments, zero included.
    ("**/Dockerfile", "Dockerfile", True),
    ("**/Dockerfile", "services/api/Dockerfile", True),
    ("docs/**/*.md", "docs/index.md", True),
    ("docs/**/*.md", "docs/guide/deep/intro.md", True),
    ("docs/**/*.md", "x/docs/index.md", False),
    ("services/api/**", "services/api/main.go", True),
    ("services/api/**", "services/api/cmd/x/main.go", True),
    ("services/api/**", "services/api.txt", False),
    ("services/api/**", "services/apix/main.go", False),
    ("a/**/b", "a/b", True),
    ("a/**/b", "a/x/y/b", True),
    ("a/**/b", "a/xb", False),
    ("**", "a/b/c", True),
    # A pattern without "/" matches a file or directory of that name at any depth.
    ("Makefile", "Makefile", True),
    ("Makefile", "src/Makefile", True),
    ("Makefile", "src/Makefile.in", False),
    ("docs", "x/docs/nested.md", True),
    ("docs", "docsy/readme.md", False),
    # A leading "/" anchors at the top.
    ("/Makefile", "Makefile", True),
    ("/Makefile", "src/Makefile", False),
    ("/src/lib", "src/lib/deep.py", True),
    ("/src/lib", "x/src/lib/deep.py", False),
    # A "/" inside anchors too (gitignore).
    ("src/lib", "src/lib/deep.py", True),
    ("src/lib", "x/src/lib/deep.py", False),
    # A trailing "/" is a directory: what is below it, at any depth unless anchored.
    ("build/", "build/out.bin", True),
    ("build/", "lib/build/x.o", True),
    ("build/", "build", False),
    ("/build/", "build/out.bin", True),
    ("/build/", "lib/build/x.o", False),
    # Without the "/" a name matches the file itself too.
    ("build", "build", True),
    ("build", "lib/build/x.o", True),
    # Escapes and surrounding blanks.
    ("star\\*.txt", "star*.txt", True),
    ("star\\*.txt", "starry.txt", False),
    ("  *.md  ", "README.md", True),
    # No case folding, and regular expression characters are literal.
    ("*.MD", "README.md", False),
    ("a+b.(x)", "a+b.(x)", True),
    ("a+b.(x)", "aab.(x)", False),
]


@pytest.mark.parametrize(("pattern", "path", "matches"), GLOBS)
def test_compile_glob(pattern: str, path: str, matches: bool) -> None:
    assert bool(compile_glob(pattern).fullmatch(path)) is matches


def test_a_class_never_matches_a_slash() -> None:
    assert not compile_glob("a[!x]b").fullmatch("a/b")


@pytest.mark.filterwarnings("ignore:Possible nested set:FutureWarning")
def test_posix_character_classes() -> None:
    assert compile_glob("file[[:digit:]].log").fullmatch("file1.log")


@pytest.mark.parametrize("pattern", ["", "   ", "/", "!"])
def test_an_empty_pattern_is_refused(pattern: str) -> None:
    with pytest.raises(ValueError, match="matches nothing"):
        compile_glob(pattern)


def test_pathspecs_use_glob_magic() -> None:
    assert pathspecs(["*.py", "/src/", "docs/**"]) == [
        ":(glob)**/*.py/**",
        ":(glob)**/*.py",
        ":(glob)src/**",
        ":(glob)docs/**/**",
        ":(glob)docs/**",
    ]


def test_matching_keeps_the_order_given() -> None:
    patterns = [compile_glob("*.md"), compile_glob("src/")]
    paths = ["src/b.py", "README.md", "app.py", "docs/a.md"]
    assert matching(paths, patterns) == ["src/b.py", "README.md", "docs/a.md"]
    assert SHOWN == 50


TREE = [
    "Makefile",
    "README.md",
    "app.py",
    "setup.cfg",
    "src/app.py",
    "src/util.py",
    "src/Makefile",
    "src/lib/deep.py",
    "src/lib/a1.txt",
    "docs/index.md",
    "docs/guide/intro.md",
    "docs/guide/img/logo.png",
    "docsy/readme.md",
    "x/docs/nested.md",
    "services/api/Dockerfile",
    "services/api/main.go",
    "services/web/Dockerfile",
    "services/api.txt",
    "Dockerfile",
    "build/out.bin",
    "lib/build/x.o",
    "tests/test_app.py",
    "a/b",
    "a/x/y/b",
    "axb",
    "ayb",
    "file1.log",
    "file2.log",
    "fileA.log",
    "sp ace.txt",
    "star*.txt",
    "ünïcode.md",
]

PATTERNS = [
    "*.py",
    "Makefile",
    "/Makefile",
    "src/",
    "src",
    "/src/lib",
    "src/*.py",
    "docs",
    "docs/**",
    "docs/**/*.md",
    "**/Dockerfile",
    "services/*/Dockerfile",
    "services/api/**",
    "**/lib/**",
    "a/**/b",
    "a?b",
    "file?.log",
    "file[0-9].log",
    "file[!0-9].log",
    "build/",
    "/build/",
    "build",
    "*.md",
    "star\\*.txt",
    "sp ace.txt",
    "*",
    "**",
    "a[!x]b",
    "file[[:digit:]].log",
]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository whose index holds :data:`TREE`."""
    root = tmp_path_factory.mktemp("tree")
    run_git(root, "init", "--quiet")
    for name in TREE:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{name}\n")
    run_git(root, "add", "--all")
    return root


def ls_files(repo: Path, *specs: str) -> set[str]:
    """What ``git ls-files`` selects, NUL-separated so no name is quoted."""
    done = subprocess.run(
        ["git", "ls-files", "-z", "--", *specs],
        cwd=repo,
        capture_output=True,
        check=True,
    )
    return {name.decode() for name in done.stdout.split(b"\0") if name}


def test_the_tree_is_what_git_holds(tree: Path) -> None:
    assert ls_files(tree) == set(TREE)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_git_selects_exactly_what_compile_glob_matches(tree: Path, pattern: str) -> None:
    regex = compile_glob(pattern)
    expected = {name for name in TREE if regex.fullmatch(name)}
    assert expected, f"{pattern!r} should select something in the tree"
    assert ls_files(tree, *pathspecs([pattern])) == expected


def test_several_patterns_select_the_union(tree: Path) -> None:
    patterns = ["/Makefile", "services/api/**", "*.log"]
    regexes = [compile_glob(p) for p in patterns]
    assert ls_files(tree, *pathspecs(patterns)) == set(matching(TREE, regexes))
