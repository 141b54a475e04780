"""
Header values that are not UTF-8, as raw bytes on the wire to the site
ghhook serves. Each one is a 4xx with one sentence, and never a 500 or a
logged traceback. One client once sent 41,665 of them in 10 s, and the
tracebacks came to 57.5 MB of log.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from ghhook.payloads import encode, ping_payload
from ghhook.signature import sign
from ghhook.site import make_site
from tests.test_web import SECRET, Client

BODY = encode(ping_payload())
#: A signed ping, header by header; a case changes some of them (None drops one).
SIGNED = {
    b"Host": b"ghhook.invalid",
    b"Content-Type": b"application/json",
    b"X-GitHub-Event": b"ping",
    b"X-GitHub-Delivery": b"d-1",
    b"X-Hub-Signature-256": sign(BODY, SECRET).encode(),
    b"X-Hub-Signature": sign(BODY, SECRET, "sha1").encode(),
}
UNSIGNED = {**SIGNED, b"X-Hub-Signature-256": None, b"X-Hub-Signature": None}


def exchange(
    client: Client, headers: list[tuple[bytes, bytes]], path: bytes = b"/github"
) -> tuple[int, dict[bytes, bytes], bytes]:
    """Send one request as raw bytes to the real site; return code, headers, body."""
    site = make_site(client.hook.resource())
    site.reactor = MemoryReactorClock()  # the channel's timeout runs on it
    protocol = site.buildProtocol(None)
    assert protocol is not None
    transport = StringTransport()
    protocol.makeConnection(transport)
    lines = [b"POST " + path + b" HTTP/1.1"]
    lines += [name + b": " + value for name, value in headers]
    lines += [b"Content-Length: %d" % len(BODY), b"", BODY]
    protocol.dataReceived(b"\r\n".join(lines))
    protocol.connectionLost(Failure(ConnectionDone()))
    head, _, content = transport.value().partition(b"\r\n\r\n")
    status, *fields = head.split(b"\r\n")
    answer = {k.lower(): v for k, _, v in (f.partition(b": ") for f in fields)}
    if answer.get(b"transfer-encoding") == b"chunked":
        content = dechunk(content)
    return int(status.split()[1]), answer, content


def dechunk(data: bytes) -> bytes:
    """The body of a chunked response."""
    out = b""
    while True:
        size, _, data = data.partition(b"\r\n")
        length = int(size, 16)
        if not length:
            return out
        out, data = out + data[:length], data[length + 2 :]


def headers_of(
    base: dict[bytes, bytes | None], **changes: bytes | None
) -> list[tuple[bytes, bytes]]:
    """``base`` with ``changes`` (``X_GitHub_Event=`` for ``X-GitHub-Event``)."""
    merged = {**base, **{k.replace("_", "-").encode(): v for k, v in changes.items()}}
    return [(k, v) for k, v in merged.items() if v is not None]


def errors_and_failures(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events that carry a traceback (either logging API) or are errors."""
    return [
        e
        for e in events
        if e.get("log_failure") is not None
        or e.get("failure") is not None
        or e.get("isError")
        or e.get("log_level") in (LogLevel.error, LogLevel.critical)
    ]


@pytest.mark.parametrize(
    ("headers", "path", "code", "sentence"),
    [
        pytest.param(
            headers_of(UNSIGNED, X_GitHub_Event=b"\xff"),
            b"/github",
            401,
            "the request carries no X-Hub-Signature-256 header (GitHub delivery)",
            id="unsigned-event",
        ),
        pytest.param(
            headers_of(UNSIGNED, X_GitHub_Delivery=b"\xff", Content_Type=b"\xff"),
            b"/github",
            401,
            "the request carries no X-Hub-Signature-256 header (GitHub delivery)",
            id="unsigned-delivery-and-content-type",
        ),
        pytest.param(
            headers_of(UNSIGNED, X_Hub_Signature_256=b"\xff"),
            b"/github",
            403,
            "the X-Hub-Signature-256 header must look like sha256=<hex digest> (GitHub delivery)",
            id="sha256",
        ),
        pytest.param(
            headers_of(UNSIGNED, X_Hub_Signature_256=b"sha256=" + b"\xff" * 64),
            b"/github",
            403,
            "the X-Hub-Signature-256 header must look like sha256=<hex digest> (GitHub delivery)",
            id="sha256-digest",
        ),
        pytest.param(
            headers_of(SIGNED, X_Hub_Signature_256=b"\xff"),
            b"/github",
            403,
            "the X-Hub-Signature-256 header must look like sha256=<hex digest> (GitHub delivery)",
            id="sha256-beside-a-right-sha1",
        ),
        pytest.param(
            headers_of(UNSIGNED, X_Hub_Signature=b"\xff", X_GitHub_Event=b"\xff"),
            b"/github",
            403,
            "the X-Hub-Signature header must look like sha1=<hex digest> (GitHub delivery)",
            id="sha1",
        ),
        pytest.param(
            headers_of(SIGNED, X_GitHub_Event=b"\xff"),
            b"/github",
            400,
            "the X-GitHub-Event header is not UTF-8",
            id="signed-event",
        ),
        pytest.param(
            headers_of(SIGNED, X_GitHub_Delivery=b"\xff"),
            b"/github",
            400,
            "the X-GitHub-Delivery header is not a delivery id",
            id="signed-delivery",
        ),
        pytest.param(
            headers_of(SIGNED, Content_Type=b"\xff"),
            b"/github",
            400,
            "the Content-Type header is not UTF-8",
            id="signed-content-type",
        ),
        pytest.param(
            headers_of(SIGNED, Content_Type=b"application/json; charset=\xff"),
            b"/github",
            400,
            "the Content-Type header is not UTF-8",
            id="signed-content-type-parameter",
        ),
        pytest.param(
            headers_of(UNSIGNED, Host=b"\xff"),
            b"/github",
            400,
            "the Host header is not UTF-8",
            id="host",
        ),
        pytest.param(
            headers_of(SIGNED, Host=b"\xff:8000"),
            b"/github",
            400,
            "the Host header is not UTF-8",
            id="host-with-port",
        ),
        pytest.param(
            headers_of(UNSIGNED),
            b"/github%FF",
            404,
            "nothing is served at this path",
            id="path",
        ),
        pytest.param(
            headers_of(UNSIGNED, X_GitHub_Event=b"\xff"),
            b"/hooks/app",
            401,
            "the request carries no X-Hub-Signature-256 header (GitHub delivery)",
            id="unsigned-event-on-an-apps-url",
        ),
        pytest.param(
            headers_of(SIGNED, X_GitHub_Event=b"\xff"),
            b"/hooks/app",
            400,
            "the X-GitHub-Event header is not UTF-8",
            id="signed-event-on-an-apps-url",
        ),
        pytest.param(
            headers_of(SIGNED),
            b"/hooks/app%FF",
            404,
            "nothing is served at this path",
            id="app-name",
        ),
        pytest.param(
            headers_of(SIGNED),
            b"/hooks/%C3%A9",
            404,
            "nothing is served at this path",
            id="app-name-utf-8",
        ),
        pytest.param(
            headers_of(SIGNED),
            b"/healthz/%C3",
            404,
            "nothing is served at this path",
            id="path-under-healthz",
        ),
    ],
)
def test_undecodable_header_values_get_one_sentence_and_log_no_failure(
    tmp_path: Path,
    events: list[dict[str, Any]],
    headers: list[tuple[bytes, bytes]],
    path: bytes,
    code: int,
    sentence: str,
) -> None:
    client = Client(tmp_path)
    for _ in range(3):
        got, answer, content = exchange(client, headers, path)
        assert (got, json.loads(content)) == (code, {"error": sentence})
        assert answer[b"content-type"] == b"application/json"
    assert errors_and_failures(events) == []
    assert len([e for e in events if e.get("log_namespace") == "ghhook.web"]) <= 1, (
        "at most one line for three requests: a flood of them stays quiet"
    )
    assert not client.engine.journal.seen_delivery("d-1")
    client.engine.turn()
    assert client.engine.runner.calls == []


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(headers_of(SIGNED), id="baseline"),
        pytest.param(headers_of(SIGNED, X_Hub_Signature=b"\xff"), id="unused-sha1"),
        pytest.param([*headers_of(SIGNED), (b"X-GitHub-Event", b"\xff")], id="second-event-value"),
        pytest.param(
            [*headers_of(SIGNED), (b"X-Hub-Signature-256", b"\xff")],
            id="second-signature-value",
        ),
        pytest.param(headers_of(SIGNED, User_Agent=b"\xff\xfe"), id="unread-header"),
    ],
)
def test_values_ghhook_does_not_use_are_not_decoded(
    tmp_path: Path, events: list[dict[str, Any]], headers: list[tuple[bytes, bytes]]
) -> None:
    """Only the first value of a header ghhook reads is decoded, and only where used."""
    client = Client(tmp_path)
    code, _, content = exchange(client, headers)
    assert (code, json.loads(content)["pong"]) == (200, True)
    assert errors_and_failures(events) == []
