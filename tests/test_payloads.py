"""
Tests for :mod:`ghhook.payloads`: the deliveries built for ``ghhook send``, the
demo and the tests must be ones ghhook's own core accepts.
"""

from __future__ import annotations

import uuid
from urllib.parse import urlencode

import pytest

from ghhook.decision import Deploy, Ignore, Pong, Tracked, decide
from ghhook.delivery import ZERO_SHA, parse_body, parse_push
from ghhook.payloads import delivery_headers, encode, ping_payload, push_payload
from ghhook.signature import SHA1_HEADER, SHA256_HEADER, Outcome, verify

SHA_A = "a" * 40
SHA_B = "0123456789abcdef0123456789abcdef01234567"
SECRET = b"payload-test-secret"


def test_push_payload_parses_to_its_arguments() -> None:
    """Every field parse_push reads comes from push_payload's arguments."""
    payload = push_payload(
        SHA_A,
        before=SHA_B,
        ref="refs/heads/dev",
        repository="octo/app",
        message="ship it",
        pusher="octocat",
    )
    push = parse_push(payload)
    assert (push.ref, push.before, push.after) == ("refs/heads/dev", SHA_B, SHA_A)
    assert (push.repository, push.pusher, push.message) == ("octo/app", "octocat", "ship it")
    assert push.branch == "dev"
    assert not push.deleted


def test_push_payload_defaults_deploy_main_of_example_app() -> None:
    """The defaults are a push to main of example/app, which deploys."""
    payload = push_payload(SHA_A)
    assert decide("push", payload, Tracked("main", "example/app")) == Deploy(parse_push(payload))
    assert parse_push(payload).before == ZERO_SHA


@pytest.mark.parametrize(
    ("kwargs", "tracked", "expected"),
    [
        pytest.param({}, Tracked("main"), Deploy, id="default"),
        pytest.param({"repository": "Octo/App"}, Tracked("main", "octo/app"), Deploy, id="case"),
        pytest.param({"ref": "refs/heads/dev"}, Tracked("main"), Ignore, id="other-branch"),
        pytest.param({"ref": "refs/tags/v1"}, Tracked("main"), Ignore, id="tag"),
        pytest.param({"repository": "o/other"}, Tracked("main", "o/app"), Ignore, id="other-repo"),
        pytest.param({"after": ZERO_SHA, "before": SHA_B}, Tracked("main"), Ignore, id="deletion"),
        pytest.param({"before": SHA_B}, Tracked("main"), Deploy, id="update"),
    ],
)
def test_push_payload_decisions(
    kwargs: dict[str, str], tracked: Tracked, expected: type[Deploy | Ignore]
) -> None:
    """push_payload variants are routed as GitHub's own pushes would be."""
    after = kwargs.pop("after", SHA_A)
    assert isinstance(decide("push", push_payload(after, **kwargs), tracked), expected)


def test_deletion_payload_looks_like_githubs() -> None:
    """A deletion has no head commit and no commits, and is flagged deleted."""
    payload = push_payload(ZERO_SHA, before=SHA_B)
    assert payload["deleted"] is True
    assert payload["head_commit"] is None
    assert payload["commits"] == []
    assert parse_push(payload).deleted


def test_creation_payload_is_flagged_created() -> None:
    """A push from the zero sha is a branch creation, not a deletion."""
    payload = push_payload(SHA_A)
    assert payload["created"] is True
    assert payload["deleted"] is False


@pytest.mark.parametrize("hook_id", [1, 123456789])
def test_ping_payload_is_a_pong(hook_id: int) -> None:
    """ping_payload gives a Pong carrying its zen and hook id."""
    decision = decide("ping", ping_payload(hook_id=hook_id), Tracked("main", "example/app"))
    assert decision == Pong(zen="Keep it logically awesome.", hook_id=hook_id)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(push_payload(SHA_A), id="push"),
        pytest.param(push_payload(ZERO_SHA, before=SHA_B), id="deletion"),
        pytest.param(ping_payload(), id="ping"),
        pytest.param(push_payload(SHA_A, message="caf\u00e9 \u2603"), id="non-ascii"),
    ],
)
def test_encode_round_trips_through_parse_body(payload: dict[str, object]) -> None:
    """encode() gives compact UTF-8 JSON that parse_body reads back unchanged."""
    body = encode(payload)
    assert b"\n" not in body
    assert b", " not in body
    assert parse_body(body, "application/json") == payload


def test_delivery_headers_verify() -> None:
    """Both signatures in delivery_headers verify, each on its own."""
    body = encode(push_payload(SHA_A))
    headers = delivery_headers(body, SECRET, "push")
    assert verify(body, [SECRET], headers[SHA256_HEADER]).valid
    assert verify(body, [SECRET], None, headers[SHA1_HEADER]).valid
    assert verify(body, [SECRET], headers[SHA256_HEADER], headers[SHA1_HEADER]).valid


def test_delivery_headers_fail_for_another_secret_or_body() -> None:
    """The signatures are bound to the secret and to the exact body bytes."""
    body = encode(push_payload(SHA_A))
    headers = delivery_headers(body, SECRET, "push")
    sig256, sig1 = headers[SHA256_HEADER], headers[SHA1_HEADER]
    assert verify(body, [b"other"], sig256, sig1).outcome is Outcome.MISMATCH
    assert verify(body + b" ", [SECRET], sig256, sig1).outcome is Outcome.MISMATCH


def test_delivery_headers_fields() -> None:
    """The headers GitHub sends: event, a UUID delivery id, content type, agent."""
    headers = delivery_headers(b"{}", SECRET, "ping")
    assert headers["X-GitHub-Event"] == "ping"
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"].startswith("GitHub-Hookshot/")
    assert str(uuid.UUID(headers["X-GitHub-Delivery"])) == headers["X-GitHub-Delivery"]
    assert headers[SHA256_HEADER].startswith("sha256=")
    assert headers[SHA1_HEADER].startswith("sha1=")


def test_delivery_headers_fresh_id_unless_given() -> None:
    """Each call has a new delivery id; a given one is used as is."""
    first = delivery_headers(b"{}", SECRET, "push")["X-GitHub-Delivery"]
    second = delivery_headers(b"{}", SECRET, "push")["X-GitHub-Delivery"]
    assert first != second
    fixed = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert delivery_headers(b"{}", SECRET, "push", delivery=fixed)["X-GitHub-Delivery"] == fixed


def test_delivery_headers_never_hold_the_secret() -> None:
    """The secret itself is in no header value."""
    headers = delivery_headers(b"{}", SECRET, "push")
    assert all(SECRET.decode() not in value for value in headers.values())


def test_form_encoded_delivery_end_to_end() -> None:
    """A form-encoded push built from these helpers verifies, parses and deploys."""
    payload = push_payload(SHA_A, repository="octo/app")
    body = urlencode({"payload": encode(payload).decode("utf-8")}).encode("ascii")
    content_type = "application/x-www-form-urlencoded"
    headers = delivery_headers(body, SECRET, "push", content_type=content_type)
    assert headers["Content-Type"] == content_type
    assert verify(body, [SECRET], headers[SHA256_HEADER], headers[SHA1_HEADER]).valid
    parsed = parse_body(body, headers["Content-Type"])
    assert parsed == payload
    decision = decide(headers["X-GitHub-Event"], parsed, Tracked("main", "octo/app"))
    assert isinstance(decision, Deploy)
    assert decision.push.after == SHA_A


def test_json_delivery_end_to_end() -> None:
    """A JSON push built from these helpers verifies, parses and deploys."""
    body = encode(push_payload(SHA_A.upper()))
    headers = delivery_headers(body, SECRET, "push")
    assert verify(body, [b"old", SECRET], headers[SHA256_HEADER]).valid
    decision = decide(
        headers["X-GitHub-Event"], parse_body(body, headers["Content-Type"]), Tracked("main")
    )
    assert isinstance(decision, Deploy)
    assert decision.push.after == SHA_A
