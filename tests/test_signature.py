"""
Table-driven tests for :mod:`ghhook.signature`: bytes and header values in,
a verdict out, with no reactor.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest

from ghhook.signature import (
    SHA1_HEADER,
    SHA256_HEADER,
    Outcome,
    Verdict,
    load_secrets,
    sign,
    verify,
)

# GitHub's published example ("Validating webhook deliveries").
GITHUB_SECRET = b"It's a Secret to Everybody"
GITHUB_BODY = b"Hello, World!"
GITHUB_SHA256 = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

SECRET = b"s3cr3t-value-that-must-never-leak"
OTHER = b"another-secret"
BODY = b'{"ref":"refs/heads/main","after":"' + b"a" * 40 + b'"}'
SHA256 = sign(BODY, SECRET, "sha256")
SHA1 = sign(BODY, SECRET, "sha1")
SHA256_DIGEST = SHA256.partition("=")[2]
SHA1_DIGEST = SHA1.partition("=")[2]


def test_github_published_vector() -> None:
    """sign() reproduces GitHub's documented example and verify() accepts it."""
    assert sign(GITHUB_BODY, GITHUB_SECRET) == GITHUB_SHA256
    verdict = verify(GITHUB_BODY, [GITHUB_SECRET], GITHUB_SHA256)
    assert verdict == Verdict(Outcome.VALID, "sha256 signature verified", GITHUB_SECRET)
    assert verdict.valid


@pytest.mark.parametrize("algorithm", ["sha256", "sha1"])
def test_sign_matches_hmac_of_raw_bytes(algorithm: str) -> None:
    """sign() is ``<algorithm>=<lowercase hex HMAC>`` over the raw body bytes."""
    body = b"\xff\x00not utf-8 \xe9"
    expected = hmac.new(SECRET, body, getattr(hashlib, algorithm)).hexdigest()
    assert sign(body, SECRET, algorithm) == f"{algorithm}={expected}"


def test_sign_defaults_to_sha256() -> None:
    """Without an algorithm, sign() produces the X-Hub-Signature-256 form."""
    assert sign(BODY, SECRET) == SHA256
    assert SHA256.startswith("sha256=")
    assert len(SHA256_DIGEST) == 64


@pytest.mark.parametrize(
    ("sha256_header", "sha1_header", "expected"),
    [
        pytest.param(SHA256, None, Outcome.VALID, id="sha256-only"),
        pytest.param(SHA256, SHA1, Outcome.VALID, id="both-right"),
        pytest.param(None, SHA1, Outcome.VALID, id="sha1-fallback-when-256-absent"),
        pytest.param(sign(BODY, OTHER), SHA1, Outcome.MISMATCH, id="wrong-256-beats-right-sha1"),
        pytest.param("sha256=zz", SHA1, Outcome.MALFORMED, id="malformed-256-beats-right-sha1"),
        pytest.param("", SHA1, Outcome.MALFORMED, id="empty-256-is-present-not-absent"),
        pytest.param(SHA256, "garbage", Outcome.VALID, id="sha1-ignored-when-256-present"),
        pytest.param(None, sign(BODY, OTHER, "sha1"), Outcome.MISMATCH, id="wrong-sha1"),
        pytest.param(None, None, Outcome.MISSING, id="no-header"),
        pytest.param(sign(BODY, OTHER), None, Outcome.MISMATCH, id="wrong-secret"),
        pytest.param(
            sign(BODY + b" ", SECRET), None, Outcome.MISMATCH, id="body-changed-by-one-byte"
        ),
        pytest.param(
            "sha256=" + "0" * 64, None, Outcome.MISMATCH, id="well-formed-but-wrong-digest"
        ),
        pytest.param(
            "sha256=" + SHA256_DIGEST[:-1] + ("0" if SHA256_DIGEST[-1] != "0" else "1"),
            None,
            Outcome.MISMATCH,
            id="last-digit-flipped",
        ),
    ],
)
def test_header_selection_and_outcome(
    sha256_header: str | None, sha1_header: str | None, expected: Outcome
) -> None:
    """SHA-256 wins when present at all; SHA-1 is only a fallback when it is absent."""
    verdict = verify(BODY, [SECRET], sha256_header, sha1_header)
    assert verdict.outcome is expected
    assert verdict.valid is (expected is Outcome.VALID)


def test_valid_reason_names_algorithm() -> None:
    """The reason says which algorithm verified, so a SHA-1 fallback is visible."""
    assert verify(BODY, [SECRET], SHA256).reason == "sha256 signature verified"
    assert verify(BODY, [SECRET], None, SHA1).reason == "sha1 signature verified"


def test_missing_reason_names_the_sha256_header() -> None:
    """A missing signature asks for the SHA-256 header, the one senders should use."""
    verdict = verify(BODY, [SECRET], None, None)
    assert verdict == Verdict(Outcome.MISSING, f"the request carries no {SHA256_HEADER} header")
    assert not verdict.valid


@pytest.mark.parametrize(
    ("secrets", "expected"),
    [
        pytest.param([SECRET], Outcome.VALID, id="only-secret"),
        pytest.param([SECRET, OTHER], Outcome.VALID, id="first-of-two"),
        pytest.param([OTHER, SECRET], Outcome.VALID, id="second-of-two"),
        pytest.param([OTHER, b"x", SECRET, b"y"], Outcome.VALID, id="third-of-four"),
        pytest.param((OTHER, SECRET), Outcome.VALID, id="tuple"),
        pytest.param([OTHER, b"x"], Outcome.MISMATCH, id="none-match"),
        pytest.param([], Outcome.MISMATCH, id="no-secrets-verifies-nothing"),
    ],
)
@pytest.mark.parametrize("algorithm", ["sha256", "sha1"])
def test_secret_rotation(secrets: list[bytes], expected: Outcome, algorithm: str) -> None:
    """
    Any one of several secrets verifies, for either algorithm, in any
    position; the verdict names the one that did, and none when none did.
    """
    header = sign(BODY, SECRET, algorithm)
    if algorithm == "sha256":
        verdict = verify(BODY, secrets, header)
    else:
        verdict = verify(BODY, secrets, None, header)
    assert verdict.outcome is expected
    assert verdict.secret == (SECRET if expected is Outcome.VALID else None)


@pytest.mark.parametrize(
    ("sha256_header", "sha1_header"),
    [
        pytest.param(None, None, id="missing"),
        pytest.param("garbage", None, id="malformed"),
        pytest.param(sign(BODY, b"stranger"), None, id="mismatch"),
    ],
)
def test_only_a_valid_verdict_names_a_secret(
    sha256_header: str | None, sha1_header: str | None
) -> None:
    """A refused delivery is tied to no secret, so it reaches no app."""
    assert verify(BODY, [SECRET, OTHER], sha256_header, sha1_header).secret is None


@pytest.mark.parametrize("position", [0, 1, 2])
def test_every_secret_is_computed_whichever_matches(
    monkeypatch: pytest.MonkeyPatch, position: int
) -> None:
    """
    No early exit: one HMAC and one constant-time comparison per secret,
    wherever the matching one sits, so timing does not tell which matched.
    """
    made: list[bytes] = []
    compared: list[bytes] = []
    real_new, real_compare = hmac.new, hmac.compare_digest

    def new(key: bytes, msg: bytes, digestmod: str) -> hmac.HMAC:
        made.append(key)
        return real_new(key, msg, digestmod)

    def compare_digest(a: bytes, b: bytes) -> bool:
        compared.append(a)
        return real_compare(a, b)

    monkeypatch.setattr(hmac, "new", new)
    monkeypatch.setattr(hmac, "compare_digest", compare_digest)
    secrets = [b"one", b"two", b"three"]
    secrets[position] = SECRET
    verdict = verify(BODY, secrets, SHA256)
    assert verdict.valid and verdict.secret == SECRET
    assert made == secrets
    assert len(compared) == len(secrets)


def test_a_secret_repeated_across_apps_is_named_once() -> None:
    """With the same secret listed twice (two apps share it), the verdict names it."""
    assert verify(BODY, [OTHER, SECRET, SECRET], SHA256).secret == SECRET


def test_the_matching_secret_stays_out_of_repr() -> None:
    """A verdict may be logged whole: its repr never shows the secret."""
    verdict = verify(BODY, [SECRET], SHA256)
    assert verdict.secret == SECRET
    assert SECRET.decode() not in repr(verdict) and SECRET.decode() not in str(verdict)


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param(SHA256_DIGEST, id="no-equals"),
        pytest.param("sha256" + SHA256_DIGEST, id="prefix-without-equals"),
        pytest.param("=" + SHA256_DIGEST, id="empty-prefix"),
        pytest.param("sha1=" + SHA1_DIGEST, id="sha1-in-256-header"),
        pytest.param("sha1=" + SHA256_DIGEST, id="sha1-prefix-sha256-digest"),
        pytest.param("sha512=" + SHA256_DIGEST, id="wrong-prefix"),
        pytest.param("SHA256=" + SHA256_DIGEST, id="uppercase-prefix"),
        pytest.param("sha256 =" + SHA256_DIGEST, id="space-before-equals"),
        pytest.param("sha256= " + SHA256_DIGEST, id="space-after-equals"),
        pytest.param("sha256=", id="empty-digest"),
        pytest.param("sha256=" + SHA256_DIGEST[:-1], id="one-digit-short"),
        pytest.param("sha256=" + SHA256_DIGEST + "0", id="one-digit-long"),
        pytest.param("sha256=" + SHA1_DIGEST, id="sha1-length-digest"),
        pytest.param("sha256=" + SHA256_DIGEST + SHA256_DIGEST, id="doubled-digest"),
        pytest.param("sha256=" + "g" * 64, id="non-hex"),
        pytest.param("sha256=" + SHA256_DIGEST[:-1] + "\u0660", id="non-ascii-digit"),
        pytest.param("sha256=" + SHA256_DIGEST[:-2] + "\uff10\uff10", id="fullwidth-digits"),
        pytest.param("sha256=" + SHA256_DIGEST[:32] + " " + SHA256_DIGEST[33:], id="inner-space"),
        pytest.param("sha256=0x" + SHA256_DIGEST[2:], id="0x-prefix"),
        pytest.param(SHA256 + ",sha1=" + SHA1_DIGEST, id="two-values-joined"),
        pytest.param("sha256=" + SHA256_DIGEST + "=", id="trailing-equals"),
    ],
)
def test_malformed_sha256_header(header: str) -> None:
    """Anything that is not ``sha256=<64 hex digits>`` is MALFORMED, never checked."""
    verdict = verify(BODY, [SECRET], header)
    assert verdict.outcome is Outcome.MALFORMED
    assert not verdict.valid
    assert SHA256_HEADER in verdict.reason


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("", id="empty"),
        pytest.param(SHA1_DIGEST, id="no-equals"),
        pytest.param(SHA256, id="sha256-in-sha1-header"),
        pytest.param("sha1=" + SHA1_DIGEST[:-1], id="short"),
        pytest.param("sha1=" + SHA1_DIGEST + "a", id="long"),
        pytest.param("sha1=" + "x" * 40, id="non-hex"),
    ],
)
def test_malformed_sha1_header(header: str) -> None:
    """The SHA-1 fallback is held to the same shape rules, for ``sha1=<40 hex>``."""
    verdict = verify(BODY, [SECRET], None, header)
    assert verdict.outcome is Outcome.MALFORMED
    assert SHA1_HEADER in verdict.reason
    assert SHA256_HEADER not in verdict.reason


@pytest.mark.parametrize(
    ("sha256_header", "sha1_header"),
    [
        pytest.param("sha256=" + SHA256_DIGEST.upper(), None, id="sha256-uppercase"),
        pytest.param("sha256=" + SHA256_DIGEST[:32].upper() + SHA256_DIGEST[32:], None, id="mixed"),
        pytest.param(None, "sha1=" + SHA1_DIGEST.upper(), id="sha1-uppercase"),
        pytest.param(f"  {SHA256}\t", None, id="surrounding-white-space"),
    ],
)
def test_tolerated_spellings(sha256_header: str | None, sha1_header: str | None) -> None:
    """Uppercase hex and white space around the value are accepted (same digest)."""
    assert verify(BODY, [SECRET], sha256_header, sha1_header).outcome is Outcome.VALID


@pytest.mark.parametrize(
    ("sha256_header", "sha1_header"),
    [
        (None, None),
        (SHA256, None),
        (None, SHA1),
        (sign(BODY, OTHER), None),
        (None, sign(BODY, OTHER, "sha1")),
        ("sha256=" + SHA256_DIGEST[:10], None),
        ("nonsense", None),
        (None, "nonsense"),
        ("sha1=" + SHA1_DIGEST, None),
    ],
)
def test_reason_never_reveals_secret_or_digest(
    sha256_header: str | None, sha1_header: str | None
) -> None:
    """No reason, whatever the outcome, quotes a secret or the expected digest."""
    verdict = verify(BODY, [OTHER, SECRET], sha256_header, sha1_header)
    for secret in (SECRET, OTHER):
        assert secret.decode() not in verdict.reason
    for digest in (SHA256_DIGEST, SHA1_DIGEST, sign(BODY, OTHER).partition("=")[2]):
        assert digest not in verdict.reason
        assert digest.upper() not in verdict.reason


@pytest.mark.parametrize(
    ("sha256_header", "sha1_header", "expected"),
    [
        pytest.param(SHA256.encode(), None, Outcome.VALID, id="sha256-bytes"),
        pytest.param(None, SHA1.encode(), Outcome.VALID, id="sha1-bytes"),
        pytest.param(b"\xff", None, Outcome.MALFORMED, id="sha256-not-ascii"),
        pytest.param(None, b"\xff", Outcome.MALFORMED, id="sha1-not-ascii"),
        pytest.param(SHA256.encode() + b"\xff", None, Outcome.MALFORMED, id="valid-then-not-ascii"),
        pytest.param(b"sha256=" + "\u0660".encode() * 64, None, Outcome.MALFORMED, id="utf-8"),
        pytest.param(b"\xff", SHA1.encode(), Outcome.MALFORMED, id="bad-256-beats-right-sha1"),
        pytest.param(SHA256.encode(), b"\xff", Outcome.VALID, id="unused-sha1-not-decoded"),
    ],
)
def test_header_values_as_raw_bytes(
    sha256_header: bytes | None, sha1_header: bytes | None, expected: Outcome
) -> None:
    """Raw header bytes are decoded here: a value that is not ASCII is MALFORMED, never an error."""
    verdict = verify(BODY, [SECRET], sha256_header, sha1_header)
    assert verdict.outcome is expected
    assert "\n" not in verdict.reason


def test_verify_takes_any_bytes_body() -> None:
    """The body is verified as raw bytes: non-UTF-8 and empty bodies both work."""
    for body in (b"", b"\xff\xfe\x00", "caf\u00e9".encode("latin-1")):
        assert verify(body, [SECRET], sign(body, SECRET)).valid
        assert not verify(body, [SECRET], sign(body + b"x", SECRET)).valid


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", (), id="empty"),
        pytest.param("\n\n  \n\t\n", (), id="only-blank-lines"),
        pytest.param("one", (b"one",), id="one-no-newline"),
        pytest.param("one\n", (b"one",), id="one-with-newline"),
        pytest.param("new\nold\n", (b"new", b"old"), id="rotation-order-kept"),
        pytest.param("  new  \n\n\told\t\n", (b"new", b"old"), id="white-space-dropped"),
        pytest.param("new\r\nold\r\n", (b"new", b"old"), id="crlf"),
        pytest.param("a b c\n", (b"a b c",), id="inner-space-kept"),
        pytest.param("It's a Secret to Everybody\n", (GITHUB_SECRET,), id="github-example"),
        pytest.param("p\u00e4ss\n", ("p\u00e4ss".encode(),), id="utf-8-encoded"),
        pytest.param("#not-a-comment\n", (b"#not-a-comment",), id="hash-is-a-secret"),
    ],
)
def test_load_secrets(text: str, expected: tuple[bytes, ...]) -> None:
    """One secret per line, trimmed, blank lines skipped, encoded as UTF-8."""
    assert load_secrets(text) == expected


def test_loaded_secrets_verify_github_vector() -> None:
    """A secret file holding an old and GitHub's secret verifies GitHub's example."""
    secrets = load_secrets("old-secret\nIt's a Secret to Everybody\n")
    assert verify(GITHUB_BODY, secrets, GITHUB_SHA256).valid
