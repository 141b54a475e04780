"""
The admin listener answers only requests that name it (DNS rebinding): the
Host rule as a table, then the answers in memory, over TCP and a unix socket.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.web.server import Site

from ghhook.admin import Admin, admin_host, allowed_host, allowed_origin
from ghhook.metrics import Metrics
from tests.test_admin import Client, Host

EXTRA = ("status.example.com", "10.0.0.5", "[fd00::1]")


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        (b"localhost", True),
        (b"localhost:9000", True),
        (b"LocalHost:9000", True),
        (b"localhost.", True),
        (b"app.localhost:9000", True),
        (b"127.0.0.1", True),
        (b"127.0.0.1:9000", True),
        (b"127.8.9.10:80", True),
        (b"[::1]", True),
        (b"[::1]:9000", True),
        (b"[0:0:0:0:0:0:0:1]:9000", True),
        (b"[::ffff:127.0.0.1]:9000", True),
        # --admin-host names, any port, any case, IPv6 in its canonical form.
        (b"status.example.com", True),
        (b"Status.Example.COM.:8443", True),
        (b"10.0.0.5:9000", True),
        (b"[fd00:0::1]:9000", True),
        # A DNS-rebinding page sends its own domain.
        (b"evil.example:9000", False),
        (b"localhost.evil.example", False),
        (b"evillocalhost", False),
        (b"example.com", False),
        (b"status.example.com.evil.example", False),
        # The "0.0.0.0 day": browsers reached local listeners through it.
        (b"0.0.0.0:9000", False),
        (b"[::]:9000", False),
        (b"10.0.0.6", False),
        (b"128.0.0.1", False),
        # Malformed: refused, not guessed at.
        (None, False),
        (b"", False),
        (b"::1", False),
        (b"[127.0.0.1]", False),
        (b"[::1", False),
        (b"[::1]x", False),
        (b"localhost:", False),
        (b"localhost:port", False),
        (b"localhost:9000:9000", False),
        (b"user@localhost", False),
        (b"local host", False),
        (b"localhost/x", False),
        ("l\u043ecalhost".encode(), False),  # a Cyrillic o
    ],
)
def test_allowed_host(host: bytes | None, allowed: bool) -> None:
    assert allowed_host(host, EXTRA, via_unix=False) is allowed


@pytest.mark.parametrize("host", [None, b"evil.example", b"localhost", b"\xff"])
def test_a_unix_socket_is_answered_whatever_its_host(host: bytes | None) -> None:
    assert allowed_host(host, (), via_unix=True)


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),
        (b"http://localhost:9000", True),
        (b"http://127.0.0.1:9000", True),
        (b"https://[::1]", True),
        (b"https://status.example.com", True),
        (b"http://evil.example", False),
        (b"http://localhost.evil.example", False),
        (b"null", False),
        (b"file://", False),
        (b"ftp://localhost", False),
        (b"http://localhost/path", False),
        (b"http://user@localhost", False),
        (b"", False),
    ],
)
def test_allowed_origin(origin: bytes | None, allowed: bool) -> None:
    assert allowed_origin(origin, EXTRA) is allowed


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("status.example.com", "status.example.com"),
        ("Status.Example.com.", "status.example.com"),
        ("10.0.0.5", "10.0.0.5"),
        ("fd00:0::1", "fd00::1"),
        ("[fd00::1]", "fd00::1"),
    ],
)
def test_admin_host_values(value: str, key: str) -> None:
    assert admin_host(value) == key


@pytest.mark.parametrize(
    "value", ["", "http://status.example.com", "status.example.com:9000", "a b", "stätus.example"]
)
def test_admin_host_refuses_what_is_no_host(value: str) -> None:
    with pytest.raises(ValueError, match="is not a host name or address"):
        admin_host(value)
    with pytest.raises(ValueError, match="is not a host name or address"):
        Admin(None, None, None, hosts=[value])  # type: ignore[arg-type]


@pytest.fixture
def client(tmp_path: Path) -> Client:
    return Client(Host(tmp_path))


def ask(client: Client, path: str, **headers: str) -> tuple[int, Any, bytes]:
    """A GET with these headers (Host replaces the one the URL gives)."""
    given = {name: [value] for name, value in headers.items()}
    responses: list[Any] = []
    client.stub.request("GET", "http://127.0.0.1:9000" + path, headers=given).addCallback(
        responses.append
    )
    client.stub.flush()
    [response] = responses
    bodies: list[bytes] = []
    client.stub.content(response).addCallback(bodies.append)
    client.stub.flush()
    return response.code, response.headers, bodies[0]


@pytest.mark.parametrize(
    "path", ["/", "/status", "/apps/blog", "/apps/nothing", "/metrics", "/healthz", "/nothing"]
)
def test_another_host_is_421_in_json(client: Client, path: str) -> None:
    code, headers, body = ask(client, path, Host="evil.example:9000")
    assert code == 421
    assert headers.getRawHeaders("Content-Type") == ["application/json"]
    assert headers.getRawHeaders("Cache-Control") == ["no-store"]
    assert "--admin-host" in json.loads(body)["error"]
    assert b"/blog" not in body and b"me/" not in body


def test_a_loopback_host_is_answered(client: Client) -> None:
    for host in ("localhost:9000", "127.0.0.1:9000", "[::1]:9000", "app.localhost"):
        code, _, body = ask(client, "/status", Host=host)
        assert code == 200, host
        assert json.loads(body)["apps"][0]["name"] == "blog"


def test_an_admin_host_name_is_answered(client: Client) -> None:
    host = client.host
    named = Client(host, Admin(host.engines, host.journal, Metrics(), ["status.example.com"]))
    assert ask(named, "/status", Host="status.example.com:9000")[0] == 200
    assert ask(named, "/status", Host="other.example.com:9000")[0] == 421
    assert ask(client, "/status", Host="status.example.com:9000")[0] == 421, "only when named"


@pytest.mark.parametrize("path", ["/", "/status", "/apps/blog", "/healthz", "/nothing"])
def test_another_origin_gets_403_and_no_body(client: Client, path: str) -> None:
    code, headers, body = ask(client, path, Origin="http://evil.example")
    assert (code, body) == (403, b"")
    assert headers.getRawHeaders("Cache-Control") == ["no-store"]


def test_another_origin_and_host_get_421_and_no_body(client: Client) -> None:
    code, _, body = ask(client, "/status", Host="evil.example", Origin="http://evil.example")
    assert (code, body) == (421, b"")


def test_a_loopback_origin_is_answered(client: Client) -> None:
    code, _, body = ask(client, "/status", Origin="http://localhost:9000")
    assert code == 200 and json.loads(body)["apps"][0]["name"] == "blog"


def raw_get(admin: Admin, local: Any, *headers: bytes) -> tuple[bytes, bytes]:
    """
    GET /status with these header lines over an in-memory connection whose
    local address is ``local``: the status line and the body.
    """
    site = Site(admin.resource(), reactor=MemoryReactorClock())
    protocol = site.buildProtocol(local)
    assert protocol is not None
    transport = StringTransport(hostAddress=local, peerAddress=local)
    protocol.makeConnection(transport)
    lines = [b"GET /status HTTP/1.1", *headers, b"Connection: close", b"", b""]
    protocol.dataReceived(b"\r\n".join(lines))
    head, _, body = transport.value().partition(b"\r\n\r\n")
    protocol.connectionLost(None)
    return head.split(b"\r\n")[0], body


TCP = IPv4Address("TCP", "127.0.0.1", 9000)
UNIX = UNIXAddress(b"/run/ghhook-admin.sock")


def test_over_a_unix_socket_any_host_is_answered(client: Client) -> None:
    assert raw_get(client.admin, UNIX, b"Host: evil.example")[0] == b"HTTP/1.1 200 OK"
    assert raw_get(client.admin, TCP, b"Host: evil.example")[0].startswith(b"HTTP/1.1 421 ")


def test_over_a_unix_socket_another_origin_still_gets_no_body(client: Client) -> None:
    line, body = raw_get(client.admin, UNIX, b"Host: localhost", b"Origin: http://evil.example")
    assert (line, body) == (b"HTTP/1.1 403 Forbidden", b"")


@pytest.mark.parametrize(
    "headers",
    [
        (b"Host: localhost", b"Host: evil.example"),
        (b"Host: evil.example", b"Host: localhost"),
        (),
    ],
)
def test_two_hosts_or_none_are_421(client: Client, headers: tuple[bytes, ...]) -> None:
    assert raw_get(client.admin, TCP, *headers)[0].startswith(b"HTTP/1.1 421 ")


def test_two_origins_get_no_body(client: Client) -> None:
    line, body = raw_get(
        client.admin,
        TCP,
        b"Host: localhost",
        b"Origin: http://localhost",
        b"Origin: http://evil.example",
    )
    assert (line, body) == (b"HTTP/1.1 403 Forbidden", b"")


@pytest.mark.parametrize("path", ["/%ff%fe", "/apps/%ff%fe"])
def test_a_path_that_is_not_utf8_is_a_404_without_a_traceback(client: Client, path: str) -> None:
    code, _, body = client.request("GET", path)
    assert code == 404 and b"nothing is served at this path" in body
