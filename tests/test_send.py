"""
``python -m ghhook send`` as a user runs it: a real subprocess posting to a
real HTTP server (stdlib, in a thread) that records the request and checks
its signatures with :func:`ghhook.signature.verify`.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.error import ConnectionLost, ConnectionRefusedError, DNSLookupError
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.web._newclient import ResponseNeverReceived

from ghhook.delivery import ZERO_SHA
from ghhook.send import CannotSend, Options, SendOptions, build_payload, describe_failure, post
from ghhook.signature import SHA1_HEADER, SHA256_HEADER, verify
from tests.daemon import environment
from tests.gitfixture import GitFixture
from tests.gitfixture import git as run_git
from tests.stallserver import GUARD, StallServer, stalled

ROOT = Path(__file__).resolve().parent.parent
SECRET = b"send secret"
SHA_A = "a" * 40
SHA_B = "b" * 40


@attrs.frozen
class Received:
    method: str
    path: str
    headers: Message  # case-insensitive, as HTTP headers are
    body: bytes

    @property
    def payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = json.loads(self.body)
        return payload


class Hook:
    """A loopback HTTP server that records each request and answers as told."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answer: tuple[int, bytes] = (202, b'{"deploy": 1}\n')
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                hook.received.append(Received("POST", self.path, self.headers, body))
                code, answer = hook.answer
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/github"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    @property
    def only(self) -> Received:
        assert len(self.received) == 1, self.received
        return self.received[0]


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    yield server
    server.close()


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    # The first line signs; a second (old) secret is there for rotation.
    path.write_bytes(SECRET + b"\nold secret\n")
    return path


def send(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ghhook", "send", *args],
        cwd=cwd,
        env=env or environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line_error(done: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    """Assert ``done`` failed with ``code`` and one line on stderr naming ``fragments``."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("ghhook send: ")
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def assert_signed(received: Received, event: str) -> None:
    headers = received.headers
    assert received.method == "POST"
    assert received.path == "/github"
    assert headers["Content-Type"] == "application/json"
    assert headers["X-GitHub-Event"] == event
    assert headers["User-Agent"].startswith("GitHub-Hookshot/")
    uuid.UUID(headers["X-GitHub-Delivery"])
    assert verify(received.body, [SECRET], headers[SHA256_HEADER]).valid
    assert verify(received.body, [SECRET], None, headers[SHA1_HEADER]).valid
    assert not verify(received.body, [b"old secret"], headers[SHA256_HEADER]).valid


# -- deliveries -----------------------------------------------------------------


def test_push_of_the_clone_head_from_its_directory(
    hook: Hook, git: GitFixture, secret_file: Path
) -> None:
    done = send(
        "--url", hook.url, "--secret-file", str(secret_file), "--event", "push", cwd=git.clone
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.splitlines() == ["202 Accepted", '{"deploy": 1}']
    assert_signed(hook.only, "push")
    payload = hook.only.payload
    assert payload["after"] == git.head()
    assert payload["before"] == ZERO_SHA  # the clone has one commit
    assert payload["ref"] == "refs/heads/main"
    assert payload["repository"]["full_name"] == "example/app"  # the remote is a path
    assert payload["head_commit"]["id"] == git.head()
    assert payload["created"] is True and payload["deleted"] is False


def test_push_defaults_from_a_github_clone_on_a_branch(
    hook: Hook, git: GitFixture, secret_file: Path
) -> None:
    parent = git.head()
    run_git(git.clone, "checkout", "--quiet", "-b", "release")
    head = git.commit("app.txt", "version 2\n", "second", repo=git.clone)
    run_git(git.clone, "remote", "set-url", "origin", "git@github.com:acme/site.git")
    done = send(
        "--url", hook.url, "--secret-file", str(secret_file), "--event", "push",
        "--repo-dir", str(git.clone),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    payload = hook.only.payload
    assert (payload["after"], payload["before"]) == (head, parent)
    assert payload["ref"] == "refs/heads/release"
    assert payload["repository"]["full_name"] == "acme/site"


def test_push_with_every_field_given_needs_no_clone(
    hook: Hook, tmp_path: Path, secret_file: Path
) -> None:
    done = send(
        "--url", hook.url, "--secret-file", str(secret_file), "--event", "push",
        "--after", SHA_A.upper(), "--before", SHA_B, "--ref", "refs/heads/prod",
        "--github-repo", "acme/api", "--repo-dir", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert_signed(hook.only, "push")
    payload = hook.only.payload
    assert (payload["after"], payload["before"]) == (SHA_A, SHA_B)
    assert payload["ref"] == "refs/heads/prod"
    assert payload["repository"]["full_name"] == "acme/api"


def test_an_after_unknown_to_the_clone_has_the_zero_sha_before(
    hook: Hook, git: GitFixture, secret_file: Path
) -> None:
    done = send(
        "--url", hook.url, "--secret-file", str(secret_file), "--event", "push",
        "--after", SHA_A, "--repo-dir", str(git.clone),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (hook.only.payload["after"], hook.only.payload["before"]) == (SHA_A, ZERO_SHA)


def test_ping_with_the_secret_from_the_environment(hook: Hook, tmp_path: Path) -> None:
    hook.answer = (200, b'{"pong": true, "hook_id": 1}')
    env = environment(GITHUB_SECRET=SECRET.decode())
    done = send("--url", hook.url, "--event", "ping", "--repo-dir", str(tmp_path), env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["200 OK", '{"pong": true, "hook_id": 1}']
    assert_signed(hook.only, "ping")
    payload = hook.only.payload
    assert payload["zen"] and payload["hook_id"] == 1
    assert payload["repository"]["full_name"] == "example/app"


def test_every_delivery_has_a_fresh_id(hook: Hook, tmp_path: Path, secret_file: Path) -> None:
    for _ in range(2):
        args = ("--url", hook.url, "--secret-file", str(secret_file), "--event", "ping")
        assert send(*args, "--repo-dir", str(tmp_path)).returncode == 0
    first, second = (r.headers["X-GitHub-Delivery"] for r in hook.received)
    assert first != second


@pytest.mark.parametrize(
    ("code", "body", "status_line"),
    [
        (403, b'{"error": "the signature does not match"}', "403 Forbidden"),
        (400, b'{"error": "the payload is not valid JSON"}', "400 Bad Request"),
        (500, b"not json at all", "500 Internal Server Error"),
    ],
)
def test_an_answer_outside_2xx_fails_and_is_printed(
    hook: Hook, tmp_path: Path, secret_file: Path, code: int, body: bytes, status_line: str
) -> None:
    hook.answer = (code, body)
    done = send(
        "--url", hook.url, "--secret-file", str(secret_file), "--event", "ping",
        "--repo-dir", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stdout.splitlines() == [status_line, body.decode()]
    assert done.stderr == ""


# -- one line on stderr, no traceback -----------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_refused_connection(secret_file: Path, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/github"
    done = send("--url", url, "--secret-file", str(secret_file), "--event", "ping",
                "--repo-dir", str(tmp_path))  # fmt: skip
    one_line_error(done, 3, url, "connection refused")


def test_no_answer_within_the_timeout(secret_file: Path, tmp_path: Path) -> None:
    # The kernel accepts the connection into the backlog; nobody answers.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/github"
        done = send("--url", url, "--secret-file", str(secret_file), "--event", "ping",
                    "--repo-dir", str(tmp_path), "--timeout", "0.5")  # fmt: skip
    one_line_error(done, 3, "no answer within 0.5 s")


def test_connection_closed_without_an_answer(secret_file: Path, tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def hang_up() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)

        thread = threading.Thread(target=hang_up, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/github"
        done = send("--url", url, "--secret-file", str(secret_file), "--event", "ping",
                    "--repo-dir", str(tmp_path))  # fmt: skip
        thread.join(timeout=10)
    one_line_error(done, 3, "the connection failed before a whole answer came")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--secret-file", "{tmp}/missing"], ["--secret-file", "No such file or directory"]),
        (["--secret-file", "{tmp}"], ["--secret-file", "Is a directory"]),
        (["--url", "not a url"], ["--url not a url", "http://"]),
        (["--url", "ftp://example.org/github"], ["--url ftp://example.org/github"]),
        (["--url", "http://127.0.0.1:99999/github"], ["--url", "not a valid URL"]),
        (["--after", "abc123"], ["--after abc123", "40-hex-digit"]),
        (["--before", "g" * 40], ["--before", "40-hex-digit"]),
    ],
)
def test_bad_settings(hook: Hook, tmp_path: Path, args: list[str], fragments: list[str]) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    base = {"--url": hook.url, "--secret-file": str(secret), "--event": "push"}
    given = dict(zip(args[::2], (a.format(tmp=tmp_path) for a in args[1::2]), strict=True))
    argv = [item for pair in {**base, **given}.items() for item in pair]
    done = send(*argv, "--repo-dir", str(tmp_path))
    line = one_line_error(done, 2, *fragments)
    assert "Traceback" not in line
    assert hook.received == []


def test_a_push_from_a_directory_that_is_no_clone(
    hook: Hook, tmp_path: Path, secret_file: Path
) -> None:
    done = send("--url", hook.url, "--secret-file", str(secret_file), "--event", "push",
                "--repo-dir", str(tmp_path))  # fmt: skip
    one_line_error(done, 2, f"--repo-dir {tmp_path}", "give --after SHA")
    assert hook.received == []


def test_a_push_from_a_clone_without_commits(hook: Hook, tmp_path: Path, secret_file: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    run_git(empty, "init", "--quiet")
    done = send("--url", hook.url, "--secret-file", str(secret_file), "--event", "push",
                "--repo-dir", str(empty))  # fmt: skip
    one_line_error(done, 2, "HEAD names no commit")
    assert hook.received == []


# -- options and payloads in process ---------------------------------------------------


@pytest.fixture
def no_secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GHHOOK_SECRET", "GITHUB_SECRET"):
        monkeypatch.delenv(name, raising=False)


def parse(*args: str) -> SendOptions:
    options = Options()
    options.parseOptions(["send", *args])
    sub = options.subOptions
    assert isinstance(sub, SendOptions)
    return sub


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--url is required"),
        (["--url", "http://h/x"], "--event is required"),
        (["--url", "http://h/x", "--event", "release"], "--event release: unknown event"),
        (["--url", "http:///x", "--event", "ping"], "expected an http:// or https:// URL"),
        (["--url", "http://h/x", "--event", "push", "--ref", "main"], "--ref main"),
        (["--url", "http://h/x", "--event", "ping", "--github-repo", "acme"], "OWNER/NAME"),
        (["--url", "http://h/x", "--event", "ping", "--github-repo", "a/b/c"], "OWNER/NAME"),
        (["--url", "http://h/x", "--event", "ping", "--timeout", "0"], "--timeout 0: "),
        (["--url", "http://h/x", "--event", "ping", "--timeout", "soon"], "--timeout soon: "),
        (["--url", "http://h/x", "--event", "ping"], "no webhook secret"),
    ],
)
def test_option_errors(no_secret_env: None, tmp_path: Path, args: list[str], message: str) -> None:
    with pytest.raises(usage.UsageError) as raised:
        parse(*args, "--repo-dir", str(tmp_path))
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_no_command(no_secret_env: None) -> None:
    with pytest.raises(usage.UsageError, match="give a command: send"):
        Options().parseOptions([])


def test_an_empty_secret_file(no_secret_env: None, tmp_path: Path) -> None:
    empty = tmp_path / "secret"
    empty.write_text("\n\n")
    with pytest.raises(usage.UsageError, match="holds no secret"):
        parse("--url", "http://h/x", "--event", "ping", "--secret-file", str(empty))


def test_ping_payload_names_the_github_repository(
    no_secret_env: None, git: GitFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_git(git.clone, "remote", "set-url", "origin", "https://github.com/acme/site.git")
    monkeypatch.setenv("GHHOOK_SECRET", "s")
    config = parse("--url", "https://h/x", "--event", "ping", "--repo-dir", str(git.clone))
    assert config["secret"] == b"s"
    payloads: list[dict[str, Any]] = []
    ensureDeferred(build_payload(None, config)).addCallback(payloads.append)
    [payload] = payloads  # nothing to wait for: a ping reads files only
    assert payload["repository"]["full_name"] == "acme/site"


def test_describe_failure() -> None:
    assert "connection refused" in describe_failure(ConnectionRefusedError())
    assert "does not resolve" in describe_failure(DNSLookupError("nowhere"))
    lost = ResponseNeverReceived([Failure(ConnectionLost())])
    assert describe_failure(lost) == (
        "the connection failed before a whole answer came:"
        " Connection to the other side was lost in a non-clean fashion."
    )
    assert describe_failure(ValueError("odd\nthing")) == "ValueError: odd thing"


def test_describe_a_tls_failure() -> None:
    ssl = pytest.importorskip("OpenSSL.SSL")
    tls = ssl.Error([("SSL routines", "", "certificate verify failed")])
    wrapped = ResponseNeverReceived([Failure(tls)])
    assert describe_failure(wrapped).endswith(": TLS failed: certificate verify failed")


# -- a hook that stalls after its headers ------------------------------------------------


def twisted_reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest_twisted.ensureDeferred
async def test_post_gives_up_on_a_body_that_stalls_and_hangs_up() -> None:
    server = StallServer(twisted_reactor(), stalled(202, sent=b'{"depl', length=40))
    try:
        attempt = Deferred.fromCoroutine(
            post(twisted_reactor(), server.url, b"{}", {"X-GitHub-Event": "ping"}, 1.0)
        )
        with pytest.raises(CannotSend) as raised:
            await attempt.addTimeout(GUARD, twisted_reactor())
        await server.all_closed()
    finally:
        await server.stop()
    assert raised.value.code == 3
    assert str(raised.value) == (
        f"cannot deliver to {server.url}: no whole answer within 1 s:"
        " the headers came (HTTP 202) but the body stalled after 6 of 40 bytes"
    )


@pytest_twisted.ensureDeferred
async def test_send_gives_up_on_a_body_that_stalls(secret_file: Path, tmp_path: Path) -> None:
    server = StallServer(twisted_reactor(), stalled(202))
    try:
        argv = ("-m", "ghhook", "send", "--url", server.url, "--secret-file", str(secret_file),
                "--event", "ping", "--repo-dir", str(tmp_path), "--timeout", "1")  # fmt: skip
        done = getProcessOutputAndValue(
            sys.executable, argv, env=environment(), path=str(ROOT), reactor=twisted_reactor()
        )
        out, err, code = await done.addTimeout(GUARD, twisted_reactor())
        await server.all_closed()
    finally:
        await server.stop()
    one_line_error(
        subprocess.CompletedProcess(argv, code, out.decode(), err.decode()),
        3,
        "no whole answer within 1 s: the headers came (HTTP 202) but the body stalled",
    )
    assert len(server.connections) == 1
