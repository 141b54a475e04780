"""
Verify HMAC signatures (GitHub's, and the forges' that sign like it) on
the raw request body.

Pure functions: bytes and header values in, a verdict out. No Twisted here.
"""

from __future__ import annotations

import enum
import hmac
import re
from collections.abc import Iterable, Sequence

import attrs

SHA256_HEADER = "X-Hub-Signature-256"
SHA1_HEADER = "X-Hub-Signature"

_HEX_DIGEST = {
    "sha256": re.compile(r"[0-9a-f]{64}"),
    "sha1": re.compile(r"[0-9a-f]{40}"),
}


class Outcome(enum.Enum):
    """Why a delivery is, or is not, from someone who knows the secret."""

    VALID = "valid"
    MISSING = "missing"
    MALFORMED = "malformed"
    MISMATCH = "mismatch"


@attrs.frozen
class Verdict:
    """
    The result of checking a signature; ``reason`` is safe to show a client.
    ``secret`` is the one that verified (None unless valid), so that a
    delivery on the shared path reaches only the apps that hold it; it is
    kept out of ``repr`` and so out of every log line.
    """

    outcome: Outcome
    reason: str
    secret: bytes | None = attrs.field(default=None, repr=False)

    @property
    def valid(self) -> bool:
        return self.outcome is Outcome.VALID


def sign(body: bytes, secret: bytes, algorithm: str = "sha256") -> str:
    """Return the header value GitHub would send for ``body``."""
    digest = hmac.new(secret, body, algorithm).hexdigest()
    return f"{algorithm}={digest}"


def verify(
    body: bytes,
    secrets: Sequence[bytes],
    sha256_header: str | bytes | None,
    sha1_header: str | bytes | None = None,
) -> Verdict:
    """
    Check ``body`` against any of ``secrets`` (several allow rotation, and
    the shared path checks every app's); a valid verdict names the secret
    that matched.

    The SHA-256 header wins when present; SHA-1 is only a fallback for
    senders that do not send it, because SHA-1 HMAC is the weaker of the two.
    Header values may be the raw bytes from the wire: one that is not ASCII
    is malformed, like any other value that is not ``<algorithm>=<hex>``.
    """
    if sha256_header is not None:
        return verify_hex(body, secrets, SHA256_HEADER, sha256_header, "sha256")
    if sha1_header is not None:
        return verify_hex(body, secrets, SHA1_HEADER, sha1_header, "sha1")
    return Verdict(Outcome.MISSING, f"the request carries no {SHA256_HEADER} header")


def verify_hex(
    body: bytes,
    secrets: Sequence[bytes],
    header: str,
    raw: str | bytes,
    algorithm: str,
    prefixed: bool = True,
) -> Verdict:
    """
    Check the hex HMAC of ``body`` in header ``header``, whose value is
    ``raw``: ``<algorithm>=<hex>`` when ``prefixed`` (GitHub, Bitbucket),
    the bare hex digest otherwise (Gitea, Forgejo, Gogs).
    """
    form = f"{algorithm}=<hex digest>" if prefixed else f"a {algorithm} hex digest"
    shape = Verdict(Outcome.MALFORMED, f"the {header} header must look like {form}")
    try:
        value = raw.decode("ascii") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        return shape
    if prefixed:
        prefix, sep, digest = value.strip().partition("=")
        if not sep or prefix != algorithm:
            return shape
    else:
        digest = value.strip()
    digest = digest.lower()
    if not _HEX_DIGEST[algorithm].fullmatch(digest):
        return Verdict(
            Outcome.MALFORMED,
            f"the {header} header does not hold a {algorithm} hex digest",
        )
    secret = _matching(body, secrets, algorithm, digest.encode("ascii"))
    if secret is not None:
        return Verdict(Outcome.VALID, f"{algorithm} signature verified", secret)
    return Verdict(
        Outcome.MISMATCH,
        f"the {header} signature does not match the body",
    )


def _matching(body: bytes, secrets: Iterable[bytes], algorithm: str, digest: bytes) -> bytes | None:
    """
    The first of ``secrets`` whose HMAC is ``digest``, or None. Every secret
    is compared, in constant time and without stopping at a match, so that
    timing tells neither which secret matched nor how close any came.
    """
    found: bytes | None = None
    for secret in secrets:
        expected = hmac.new(secret, body, algorithm).hexdigest().encode("ascii")
        matched = hmac.compare_digest(expected, digest)
        if matched and found is None:
            found = secret
    return found


def load_secrets(text: str) -> tuple[bytes, ...]:
    """
    Read secrets from a secret file's text: one per line, so that an old
    and a new secret can both verify while GitHub's setting is rotated.
    Blank lines are skipped and white space around a secret is dropped.
    """
    return tuple(line.strip().encode("utf-8") for line in text.splitlines() if line.strip())


__all__ = [
    "SHA1_HEADER",
    "SHA256_HEADER",
    "Outcome",
    "Verdict",
    "load_secrets",
    "sign",
    "verify",
    "verify_hex",
]
