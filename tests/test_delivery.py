"""
Table-driven tests for :mod:`ghhook.delivery`: a delivery body becomes a
payload dict, and a push payload becomes a checked :class:`Push`.
"""

from __future__ import annotations

import json
import tracemalloc
from typing import Any
from urllib.parse import quote, unquote_plus, urlencode

import attrs
import pytest

from ghhook.delivery import ZERO_SHA, BadDelivery, Push, parse_body, parse_push

OBJECT = {"zen": "Design for failure.", "hook_id": 7, "nested": {"list": [1, "two", None]}}
JSON = json.dumps(OBJECT).encode("utf-8")
FORM = urlencode({"payload": json.dumps(OBJECT)}).encode("ascii")
FORM_TYPE = "application/x-www-form-urlencoded"

SHA_A = "a" * 40
SHA_B = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param(JSON, "application/json", id="json"),
        pytest.param(JSON, "application/json; charset=utf-8", id="json-charset"),
        pytest.param(JSON, "application/json;charset=UTF-8", id="json-charset-no-space"),
        pytest.param(JSON, "Application/JSON", id="json-media-type-case"),
        pytest.param(JSON, "  application/json  ", id="json-padded"),
        pytest.param(JSON, None, id="no-content-type-means-json"),
        pytest.param(JSON, "", id="empty-content-type-means-json"),
        pytest.param(b"\n  " + JSON + b"\n", "application/json", id="json-white-space"),
        pytest.param(FORM, FORM_TYPE, id="form"),
        pytest.param(FORM, FORM_TYPE + "; charset=utf-8", id="form-charset"),
        pytest.param(FORM.replace(b"+", b"%20"), FORM_TYPE, id="form-percent-20-spaces"),
        pytest.param(b"a=1&" + FORM + b"&b=2", FORM_TYPE, id="form-other-fields"),
        pytest.param(b"=1&" + FORM + b"&x=", FORM_TYPE, id="form-empty-name-and-value"),
        pytest.param(b"a=b=c&" + FORM, FORM_TYPE, id="form-equals-in-other-value"),
        pytest.param(b"apayload=1&" + FORM, FORM_TYPE, id="form-name-ending-in-payload"),
        pytest.param(FORM + b"&xpayload=%5B%5D", FORM_TYPE, id="form-lookalike-after"),
    ],
)
def test_parse_body_accepts(body: bytes, content_type: str | None) -> None:
    """JSON and form-encoded deliveries (with or without parameters) give the object."""
    assert parse_body(body, content_type) == OBJECT


def test_parse_body_decodes_utf_8_in_both_encodings() -> None:
    """Non-ASCII text survives JSON and form encoding alike."""
    payload = {"head_commit": {"message": "caf\u00e9 \u2603 \U0001f680"}}
    raw = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    assert parse_body(raw, "application/json") == payload
    form = b"payload=" + quote(raw.decode("utf-8")).encode("ascii")
    assert parse_body(form, FORM_TYPE) == payload


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        pytest.param(b"{", "application/json", "not valid JSON", id="truncated-json"),
        pytest.param(b"", "application/json", "not valid JSON", id="empty-json"),
        pytest.param(b"{'a': 1}", "application/json", "not valid JSON", id="single-quotes"),
        pytest.param(b'{"a": 1} x', "application/json", "not valid JSON", id="trailing-garbage"),
        pytest.param(b"\xef\xbb\xbf" + JSON, "application/json", "not valid JSON", id="utf-8-bom"),
        pytest.param(
            b"[" * 100_000 + b"]" * 100_000,
            "application/json",
            "not valid JSON",
            id="nested-too-deep",
        ),
        pytest.param(b"[]", "application/json", "not a JSON object", id="array"),
        pytest.param(b'"text"', "application/json", "not a JSON object", id="string"),
        pytest.param(b"42", "application/json", "not a JSON object", id="number"),
        pytest.param(b"null", "application/json", "not a JSON object", id="null"),
        pytest.param(b"true", "application/json", "not a JSON object", id="bool"),
        pytest.param(b'{"a": "\xff"}', "application/json", "not UTF-8", id="json-latin-1"),
        pytest.param(b"\xff\xfe{\x00}\x00", "application/json", "not UTF-8", id="json-utf-16"),
        pytest.param(b"\xff", None, "not UTF-8", id="no-content-type-non-utf-8"),
        pytest.param(b"a=1&b=2", FORM_TYPE, "no payload field", id="form-without-payload"),
        pytest.param(b"Payload=%7B%7D", FORM_TYPE, "no payload field", id="form-field-case"),
        pytest.param(b"", FORM_TYPE, "no payload field", id="form-empty"),
        pytest.param(b"payload", FORM_TYPE, "cannot be decoded", id="form-field-without-equals"),
        pytest.param(b"payload=%7B%7D&&", FORM_TYPE, "cannot be decoded", id="form-empty-field"),
        pytest.param(b"payload=\xff", FORM_TYPE, "cannot be decoded", id="form-raw-non-utf-8"),
        pytest.param(
            b"payload=%7B%22a%22%3A%22%FF%22%7D",
            FORM_TYPE,
            "cannot be decoded",
            id="form-escaped-non-utf-8",
        ),
        pytest.param(b"payload=", FORM_TYPE, "not valid JSON", id="form-empty-payload"),
        pytest.param(
            FORM + b"&payload=%5B%5D", FORM_TYPE, "more than one payload", id="form-two-payloads"
        ),
        pytest.param(FORM + b"&" + FORM, FORM_TYPE, "more than one payload", id="form-same-twice"),
        pytest.param(b"pay%6Coad=%7B%7D", FORM_TYPE, "cannot be decoded", id="form-escaped-name"),
        pytest.param(
            b"pay%6Coad=%5B%5D&" + FORM, FORM_TYPE, "cannot be decoded", id="form-escaped-twin"
        ),
        pytest.param(b"a+b=1&" + FORM, FORM_TYPE, "cannot be decoded", id="form-plus-in-name"),
        pytest.param(b"&" + FORM, FORM_TYPE, "cannot be decoded", id="form-leading-empty-field"),
        pytest.param(FORM + b"&", FORM_TYPE, "cannot be decoded", id="form-trailing-ampersand"),
        pytest.param(b"a&" + FORM, FORM_TYPE, "cannot be decoded", id="form-other-without-equals"),
        pytest.param(
            b"payload=%7B%7D%", FORM_TYPE, "cannot be decoded", id="form-trailing-percent"
        ),
        pytest.param(
            b"payload=%7B%22a%22%3A%22100%%22%7D", FORM_TYPE, "cannot be decoded", id="stray-%"
        ),
        pytest.param(b"payload=%7B%7D%4", FORM_TYPE, "cannot be decoded", id="form-short-escape"),
        pytest.param(b"payload=%7B%7G", FORM_TYPE, "cannot be decoded", id="form-non-hex-escape"),
        pytest.param(b"x=\xff&" + FORM, FORM_TYPE, "cannot be decoded", id="form-other-non-utf-8"),
        pytest.param(b"payload=%7B", FORM_TYPE, "not valid JSON", id="form-bad-json"),
        pytest.param(b"payload=%5B%5D", FORM_TYPE, "not a JSON object", id="form-array"),
        pytest.param(JSON, FORM_TYPE, "cannot be decoded", id="json-sent-as-form"),
        pytest.param(FORM, "application/json", "not valid JSON", id="form-sent-as-json"),
        pytest.param(JSON, "text/plain", "not supported", id="text-plain"),
        pytest.param(JSON, "multipart/form-data; boundary=x", "not supported", id="multipart"),
        pytest.param(JSON, "application/json-patch+json", "not supported", id="json-lookalike"),
        pytest.param(JSON, "application/xml", "not supported", id="xml"),
        pytest.param(JSON, "json", "not supported", id="bare-json"),
    ],
)
def test_parse_body_rejects(body: bytes, content_type: str | None, message: str) -> None:
    """Every body ghhook cannot read is one BadDelivery with a one-sentence reason."""
    with pytest.raises(BadDelivery, match=message) as info:
        parse_body(body, content_type)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"plain", id="plain"),
        pytest.param(b"a+b", id="plus-is-space"),
        pytest.param(b"%2B%2b", id="escaped-plus"),
        pytest.param(b"a=b", id="raw-equals"),
        pytest.param(b"=3D", id="raw-qp-lookalike"),
        pytest.param(b"==%3d=", id="equals-runs"),
        pytest.param(b"%3D%3d", id="escaped-equals"),
        pytest.param(b"%25%2525", id="escaped-percent"),
        pytest.param(b"%e2%98%83%E2%98%83", id="hex-either-case"),
        pytest.param(b"caf\xc3\xa9", id="raw-utf-8"),
        pytest.param(b"caf%C3%A9", id="escaped-utf-8"),
        pytest.param(b"_%5F~.-*", id="unreserved"),
        pytest.param(b"%20+%20", id="spaces"),
        pytest.param(b"", id="empty"),
    ],
)
def test_form_payload_decodes_as_unquote_plus(value: bytes) -> None:
    """The payload field is percent-decoded exactly as urllib's unquote_plus does."""
    body = b"payload=%7B%22s%22%3A%22" + value + b"%22%7D"
    assert parse_body(body, FORM_TYPE) == {"s": unquote_plus(value.decode("utf-8"))}


@pytest.mark.parametrize("where", ["first", "last"])
def test_form_parsing_holds_no_per_field_memory(where: str) -> None:
    """
    Many fields cost no more memory than a few copies of the body: the
    payload is found by scanning bytes, not by building every field (which
    made 8 million empty fields take seconds).
    """
    fields = b"&a=" * 200_000
    body = FORM + fields if where == "first" else fields[1:] + b"&" + FORM
    tracemalloc.start()
    try:
        assert parse_body(body, FORM_TYPE) == OBJECT
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 6 * len(body), f"{peak} bytes held to parse {len(body)}"


def test_unsupported_content_type_is_named_lowercase() -> None:
    """The rejection names the media type it saw, without its parameters."""
    with pytest.raises(BadDelivery) as info:
        parse_body(JSON, "Text/Plain; charset=utf-8")
    assert "'text/plain'" in str(info.value)
    assert "charset" not in str(info.value)


def push(**overrides: Any) -> dict[str, Any]:
    """A minimal push payload, with ``overrides`` applied (None deletes a key)."""
    payload: dict[str, Any] = {
        "ref": "refs/heads/main",
        "before": SHA_B,
        "after": SHA_A,
        "deleted": False,
        "repository": {"full_name": "Example/App"},
        "pusher": {"name": "octocat"},
        "head_commit": {"message": "fix it"},
    }
    for key, value in overrides.items():
        if value is None:
            payload.pop(key, None)
        else:
            payload[key] = value
    return payload


def test_parse_push_reads_every_field() -> None:
    """A complete push gives every field, repository name verbatim."""
    assert parse_push(push()) == Push(
        ref="refs/heads/main",
        before=SHA_B,
        after=SHA_A,
        repository="Example/App",
        deleted=False,
        pusher="octocat",
        message="fix it",
    )


def test_push_is_frozen() -> None:
    """A Push cannot be changed after validation."""
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        parse_push(push()).after = SHA_B  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "field", "expected"),
    [
        pytest.param({"after": SHA_A.upper()}, "after", SHA_A, id="after-lowercased"),
        pytest.param({"before": SHA_B.upper()}, "before", SHA_B, id="before-lowercased"),
        pytest.param({"after": "AbCdEf" + "0" * 34}, "after", "abcdef" + "0" * 34, id="mixed-case"),
        pytest.param({"deleted": True}, "deleted", True, id="deleted-flag"),
        pytest.param({"after": ZERO_SHA}, "deleted", True, id="zero-after-is-deletion"),
        pytest.param({"after": ZERO_SHA, "deleted": False}, "deleted", True, id="zero-after-wins"),
        pytest.param({"deleted": None}, "deleted", False, id="deleted-absent"),
        pytest.param({"deleted": "true"}, "deleted", False, id="deleted-string-not-true"),
        pytest.param({"deleted": 1}, "deleted", False, id="deleted-one-not-true"),
        pytest.param({"before": ZERO_SHA}, "deleted", False, id="creation-is-not-deletion"),
        pytest.param({"repository": None}, "repository", None, id="repository-absent"),
        pytest.param({"repository": "o/n"}, "repository", None, id="repository-a-string"),
        pytest.param({"repository": {}}, "repository", None, id="repository-no-full-name"),
        pytest.param(
            {"repository": {"full_name": 5}}, "repository", None, id="full-name-not-a-string"
        ),
        pytest.param(
            {"repository": {"name": "n", "full_name": "o/n"}}, "repository", "o/n", id="full"
        ),
        pytest.param({"pusher": None}, "pusher", None, id="pusher-absent"),
        pytest.param({"pusher": "octocat"}, "pusher", None, id="pusher-a-string"),
        pytest.param({"pusher": {"name": 3}}, "pusher", None, id="pusher-name-not-string"),
        pytest.param({"head_commit": None}, "message", None, id="head-commit-absent"),
        pytest.param({"head_commit": {}}, "message", None, id="no-message"),
        pytest.param({"ref": "refs/heads/a/b"}, "ref", "refs/heads/a/b", id="ref-with-slash"),
        pytest.param({"ref": "refs/tags/v1"}, "ref", "refs/tags/v1", id="tag-ref"),
        pytest.param({"ref": "refs/pull/1/head"}, "ref", "refs/pull/1/head", id="other-ref"),
    ],
)
def test_parse_push_fields(overrides: dict[str, Any], field: str, expected: object) -> None:
    """Shas are normalised to lowercase; optional fields of the wrong type become None."""
    assert getattr(parse_push(push(**overrides)), field) == expected


def test_parse_push_ignores_json_null_fields() -> None:
    """GitHub sends ``head_commit: null`` on deletion; that is not an error."""
    payload = push(after=ZERO_SHA)
    payload["head_commit"] = None
    parsed = parse_push(payload)
    assert parsed.deleted
    assert parsed.message is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"ref": None}, "no valid ref", id="ref-missing"),
        pytest.param({"ref": ""}, "no valid ref", id="ref-empty"),
        pytest.param({"ref": "main"}, "no valid ref", id="ref-bare-branch"),
        pytest.param({"ref": "heads/main"}, "no valid ref", id="ref-without-refs"),
        pytest.param({"ref": "Refs/heads/main"}, "no valid ref", id="ref-case"),
        pytest.param({"ref": 5}, "no valid ref", id="ref-number"),
        pytest.param({"ref": ["refs/heads/main"]}, "no valid ref", id="ref-list"),
        pytest.param({"after": None}, "'after'", id="after-missing"),
        pytest.param({"after": ""}, "'after'", id="after-empty"),
        pytest.param({"after": SHA_A[:-1]}, "'after'", id="after-39-digits"),
        pytest.param({"after": SHA_A + "a"}, "'after'", id="after-41-digits"),
        pytest.param({"after": "g" * 40}, "'after'", id="after-non-hex"),
        pytest.param({"after": SHA_A[:7]}, "'after'", id="after-short-sha"),
        pytest.param({"after": "b" * 64}, "'after'", id="after-sha256-object-id"),
        pytest.param({"after": f" {SHA_A[1:]}"}, "'after'", id="after-leading-space"),
        pytest.param({"after": SHA_A + "\n"}, "'after'", id="after-trailing-newline"),
        pytest.param({"after": "\u0661" * 40}, "'after'", id="after-non-ascii-digits"),
        pytest.param({"after": int("1" * 40)}, "'after'", id="after-number"),
        pytest.param({"before": None}, "'before'", id="before-missing"),
        pytest.param({"before": "HEAD"}, "'before'", id="before-not-a-sha"),
        pytest.param({"before": SHA_B[:-1] + "z"}, "'before'", id="before-non-hex"),
    ],
)
def test_parse_push_rejects(overrides: dict[str, Any], message: str) -> None:
    """A push whose ref or shas are out of shape is a BadDelivery naming the field."""
    with pytest.raises(BadDelivery, match=message):
        parse_push(push(**overrides))


def test_parse_push_of_empty_payload() -> None:
    """An empty object (e.g. a ping routed as a push) is rejected, not half-read."""
    with pytest.raises(BadDelivery):
        parse_push({})


@pytest.mark.parametrize(
    ("ref", "branch"),
    [
        pytest.param("refs/heads/main", "main", id="main"),
        pytest.param("refs/heads/feature/x", "feature/x", id="slash-in-name"),
        pytest.param("refs/heads/refs/heads/x", "refs/heads/x", id="prefix-stripped-once"),
        pytest.param("refs/heads/tags", "tags", id="branch-called-tags"),
        pytest.param("refs/tags/v1.0", None, id="tag"),
        pytest.param("refs/tags/heads/x", None, id="tag-called-heads"),
        pytest.param("refs/pull/1/merge", None, id="pull"),
        pytest.param("refs/remotes/origin/main", None, id="remote-tracking"),
        pytest.param("refs/headsx/main", None, id="lookalike-prefix"),
    ],
)
def test_push_branch(ref: str, branch: str | None) -> None:
    """``Push.branch`` is the name after ``refs/heads/``, else None."""
    pushed = Push(ref=ref, before=SHA_B, after=SHA_A, repository=None, deleted=False)
    assert pushed.branch == branch


def test_parse_body_then_parse_push() -> None:
    """A form-encoded push goes through both steps to the same Push as JSON."""
    payload = push()
    as_json = parse_push(parse_body(json.dumps(payload).encode(), "application/json"))
    as_form = parse_push(
        parse_body(urlencode({"payload": json.dumps(payload)}).encode(), FORM_TYPE)
    )
    assert as_json == as_form
