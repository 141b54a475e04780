"""
The forge adapters of :mod:`ghhook.forges`, as pure functions: headers and
the raw body of each forge's documented example (tests/fixtures/forges, see
HEADERS.md there) in, a forge, a verdict and forge-neutral values out. And
the ``forge`` and ``repository`` keys of the config file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from ghhook.decision import Ignore, Pong
from ghhook.delivery import BadDelivery, Push
from ghhook.forges import FORGES, Headers, adapter, recognise
from ghhook.forges.gitlab import sign as gitlab_sign
from ghhook.payloads import encode, push_payload
from ghhook.signature import Outcome
from tests.test_config import BLOG, HEAD, Host, host, repositories  # noqa: F401

FIXTURES = Path(__file__).parent / "fixtures" / "forges"
BEFORE, AFTER, ZERO = "1" * 40, "2" * 40, "0" * 40
SECRET = b"It's a Secret to Everybody"
#: Several secrets, as a rotation or the shared path gives them: the valid
#: verdict must name the one that signed.
SECRETS = (b"old secret", SECRET, b"another app's secret")
#: A GitLab signing token: whsec_ and the base64 of a 32-byte key.
SIGNING = b"whsec_" + base64.b64encode(b"k" * 32)
OTHER_SIGNING = b"whsec_" + base64.b64encode(b"x" * 32)
DELIVERY = "f6266f16-1bf3-46a5-9ea4-602e06ead473"
NOW = 1_700_000_000.0


def fixture(name: str) -> bytes:
    """A fixture's body, as the forge would send its bytes."""
    return (FIXTURES / name).read_bytes()


def fixture_json(name: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(fixture(name))
    return payload


def lookup(headers: Mapping[str, str]) -> Headers:
    """A request's headers as the adapters read them: any case, bytes, first value."""
    folded = {name.lower(): value.encode("utf-8") for name, value in headers.items()}
    return lambda name: folded.get(name.lower())


def hex_hmac(secret: bytes, body: bytes, algorithm: str = "sha256") -> str:
    return hmac.new(secret, body, algorithm).hexdigest()


def headers_of(
    forge: str,
    body: bytes,
    secret: bytes = SECRET,
    event: str = "push",
    delivery: str = DELIVERY,
) -> dict[str, str]:
    """
    The headers ``forge`` sends with ``body``, written out from HEADERS.md
    (not from :mod:`ghhook.payloads`, so that the two are checked against
    each other). ``event`` is ghhook's: ``push``, ``ping`` or ``tag``.
    """
    sha256 = hex_hmac(secret, body)
    json_type = {"Content-Type": "application/json"}
    if forge == "github":
        return {
            **json_type,
            "User-Agent": "GitHub-Hookshot/044aadd",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery,
            "X-GitHub-Hook-ID": "292430182",
            "X-Hub-Signature": "sha1=" + hex_hmac(secret, body, "sha1"),
            "X-Hub-Signature-256": "sha256=" + sha256,
        }
    if forge in ("gitea", "forgejo"):
        # Gitea sends Gogs' and GitHub's headers too; Forgejo sends Gitea's as well.
        family = ["Gitea", "Gogs"] + (["Forgejo"] if forge == "forgejo" else [])
        headers = {
            **json_type,
            "X-GitHub-Delivery": delivery,
            "X-GitHub-Event": event,
            "X-GitHub-Event-Type": event,
            "X-Hub-Signature": "sha1=" + hex_hmac(secret, body, "sha1"),
            "X-Hub-Signature-256": "sha256=" + sha256,
        }
        for title in family:
            headers[f"X-{title}-Delivery"] = delivery
            headers[f"X-{title}-Event"] = event
            headers[f"X-{title}-Event-Type"] = event
            headers[f"X-{title}-Signature"] = sha256
        return headers
    if forge == "gogs":
        return {
            **json_type,
            "X-Gogs-Delivery": delivery,
            "X-Gogs-Event": event,
            "X-Gogs-Signature": sha256,
        }
    if forge == "gitlab":
        return {
            **json_type,
            "User-Agent": "GitLab/17.1.0-pre",
            "Idempotency-Key": delivery,
            "X-Gitlab-Event": "Tag Push Hook" if event == "tag" else "Push Hook",
            "X-Gitlab-Webhook-UUID": "3c5c0404-c866-44bc-a5f6-452bb1bfc76e",
            "X-Gitlab-Instance": "https://gitlab.example.com",
            "X-Gitlab-Event-UUID": "9cebe914-4827-408f-b014-cfa23a47a35f",
            "X-Gitlab-Token": secret.decode(),
        }
    if forge == "bitbucket":
        return {
            **json_type,
            "User-Agent": "Bitbucket-Webhooks/2.0",
            "X-Event-Key": "repo:push",
            "X-Hook-UUID": "cb8e6d1f-36a1-4bd9-a9f4-1c6c0a6a2a3b",
            "X-Request-UUID": delivery,
            "X-Attempt-Number": "1",
            "X-Hub-Signature": "sha256=" + sha256,
        }
    if forge == "bitbucket-server":
        return {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Atlassian HttpClient 2.0.0 / Bitbucket-6.5.2 (6005002) / Default",
            "X-Event-Key": "diagnostics:ping" if event == "ping" else "repo:refs_changed",
            "X-Request-Id": delivery,
            "X-Hub-Signature": "sha256=" + sha256,
        }
    raise AssertionError(forge)


def gitlab_signed(
    body: bytes,
    secret: bytes = SIGNING,
    timestamp: int = int(NOW),
    webhook_id: str = DELIVERY,
) -> dict[str, str]:
    """GitLab's headers with a signing token (Standard Webhooks) in place of the token."""
    headers = headers_of("gitlab", body)
    del headers["X-Gitlab-Token"]
    headers["webhook-id"] = webhook_id
    headers["webhook-timestamp"] = str(timestamp)
    headers["webhook-signature"] = gitlab_sign(webhook_id, timestamp, body, secret)
    return headers


#: Each forge's push of main from 1111… to 2222…: its fixture, and the push ghhook reads.
PUSHES = {
    "github": (
        encode(push_payload(AFTER, before=BEFORE, repository="me/app", message="Deploy me")),
        Push(
            ref="refs/heads/main",
            before=BEFORE,
            after=AFTER,
            repository="me/app",
            deleted=False,
            pusher="ghhook",
            message="Deploy me",
            forced=False,
        ),
    ),
    **{
        forge: (
            fixture(f"{forge}-push.json"),
            Push(
                ref="refs/heads/main",
                before=BEFORE,
                after=AFTER,
                repository="me/app",
                deleted=False,
                pusher="me",
                message="Deploy me",
                forced=None,
            ),
        )
        for forge in ("gitea", "forgejo", "gogs")
    },
    "gitlab": (
        fixture("gitlab-push.json"),
        Push(
            ref="refs/heads/main",
            before=BEFORE,
            after=AFTER,
            repository="group/sub/app",
            deleted=False,
            pusher="jsmith",
            message="Deploy me",
            forced=None,
        ),
    ),
    "bitbucket": (
        fixture("bitbucket-push.json"),
        Push(
            ref="refs/heads/main",
            before=BEFORE,
            after=AFTER,
            repository="me/app",
            deleted=False,
            pusher="me",
            message="Deploy me",
            forced=False,
        ),
    ),
    "bitbucket-server": (
        fixture("bitbucket-server-refs-changed.json"),
        Push(
            ref="refs/heads/main",
            before=BEFORE,
            after=AFTER,
            repository="PROJ/app",
            deleted=False,
            pusher="admin",
            message=None,
            forced=None,
        ),
    ),
}
#: The header each forge's adapter reads the signature or token from.
CREDENTIAL = {
    "github": "X-Hub-Signature-256",
    "gitea": "X-Gitea-Signature",
    "forgejo": "X-Forgejo-Signature",
    "gogs": "X-Gogs-Signature",
    "gitlab": "X-Gitlab-Token",
    "bitbucket": "X-Hub-Signature",
    "bitbucket-server": "X-Hub-Signature",
}
#: Every header that carries a credential, whichever forge sends it.
CREDENTIALS = {
    "X-Hub-Signature",
    "X-Hub-Signature-256",
    "X-Gitea-Signature",
    "X-Forgejo-Signature",
    "X-Gogs-Signature",
    "X-Gitlab-Token",
    "webhook-signature",
    "webhook-id",
    "webhook-timestamp",
}


def without_credentials(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name not in CREDENTIALS}


def test_every_forge_is_covered() -> None:
    assert set(PUSHES) == set(FORGES) == set(CREDENTIAL)


# --- Recognition -------------------------------------------------------------------


@pytest.mark.parametrize("forge", FORGES)
def test_each_forges_headers_are_recognised_as_that_forge(forge: str) -> None:
    """Forgejo's carry Gitea's, Gogs' and GitHub's; Gitea's carry Gogs' and GitHub's."""
    body, _ = PUSHES[forge]
    found = recognise(lookup(headers_of(forge, body)))
    assert found is not None and found.name == forge
    assert found is adapter(forge)


def test_forgejo_headers_carry_the_others_and_still_read_as_forgejo() -> None:
    headers = headers_of("forgejo", fixture("forgejo-push.json"))
    for other in ("gitea", "gogs", "github"):
        assert adapter(other).recognises(lookup(headers)), f"{other}'s headers are there too"
    found = recognise(lookup(headers))
    assert found is not None and found.name == "forgejo"


@pytest.mark.parametrize(
    ("headers", "forge"),
    [
        pytest.param({"X-Event-Key": "repo:push", "X-Request-UUID": "u"}, "bitbucket", id="cloud"),
        pytest.param({"X-Event-Key": "repo:push", "X-Hook-UUID": "u"}, "bitbucket", id="hook"),
        pytest.param(
            {"X-Event-Key": "repo:refs_changed", "X-Request-Id": "u"},
            "bitbucket-server",
            id="data-center",
        ),
        pytest.param({"X-Gogs-Event": "push"}, "gogs", id="gogs-alone"),
        pytest.param({"Content-Type": "application/json"}, None, id="no-forge"),
        pytest.param({"X-Hub-Signature-256": "sha256=00"}, None, id="signature-alone"),
    ],
)
def test_recognition_by_the_event_header(headers: dict[str, str], forge: str | None) -> None:
    found = recognise(lookup(headers))
    assert (found.name if found is not None else None) == forge


# --- Authentication ----------------------------------------------------------------


@pytest.mark.parametrize("forge", FORGES)
def test_a_valid_signature_names_the_secret_that_signed_among_several(forge: str) -> None:
    body, _ = PUSHES[forge]
    verdict = adapter(forge).authenticate(lookup(headers_of(forge, body)), body, SECRETS, NOW)
    assert verdict.outcome is Outcome.VALID
    assert verdict.secret == SECRET
    assert SECRET.decode() not in verdict.reason and SECRET not in repr(verdict).encode()


@pytest.mark.parametrize("forge", FORGES)
def test_a_delivery_without_credentials_is_missing_and_names_the_header(forge: str) -> None:
    body, _ = PUSHES[forge]
    headers = without_credentials(headers_of(forge, body))
    verdict = adapter(forge).authenticate(lookup(headers), body, SECRETS, NOW)
    assert verdict.outcome is Outcome.MISSING
    assert CREDENTIAL[forge] in verdict.reason
    assert verdict.secret is None


@pytest.mark.parametrize("forge", FORGES)
def test_a_delivery_signed_with_another_secret_is_a_mismatch(forge: str) -> None:
    body, _ = PUSHES[forge]
    headers = headers_of(forge, body, secret=b"not the secret")
    verdict = adapter(forge).authenticate(lookup(headers), body, SECRETS, NOW)
    assert verdict.outcome is Outcome.MISMATCH
    assert verdict.secret is None


@pytest.mark.parametrize("forge", [f for f in FORGES if f != "gitlab"])
def test_a_changed_body_is_a_mismatch(forge: str) -> None:
    """(A GitLab secret token does not sign the body; its signing token is tested below.)"""
    body, _ = PUSHES[forge]
    verdict = adapter(forge).authenticate(
        lookup(headers_of(forge, body)), body + b" ", SECRETS, NOW
    )
    assert verdict.outcome is Outcome.MISMATCH


@pytest.mark.parametrize(
    ("forge", "value"),
    [
        ("github", "sha256=nothex"),
        ("github", "md5=" + "0" * 32),
        ("gitea", "sha256=" + "0" * 64),
        ("gitea", "zz" * 32),
        ("forgejo", "0" * 40),
        ("gogs", "sha256=" + "0" * 64),
        ("bitbucket", "0" * 64),
        ("bitbucket", "sha1=" + "0" * 40),
        ("bitbucket-server", "sha256=xyz"),
    ],
)
def test_a_signature_out_of_shape_is_malformed(forge: str, value: str) -> None:
    body, _ = PUSHES[forge]
    headers = headers_of(forge, body)
    headers[CREDENTIAL[forge]] = value
    verdict = adapter(forge).authenticate(lookup(headers), body, SECRETS, NOW)
    assert verdict.outcome is Outcome.MALFORMED
    assert CREDENTIAL[forge] in verdict.reason


@pytest.mark.parametrize("forge", ["gitea", "forgejo"])
def test_the_empty_signature_of_a_hook_without_secret_is_missing(forge: str) -> None:
    """HEADERS.md: with no secret, X-<Forge>-Signature is sent as the empty string."""
    body, _ = PUSHES[forge]
    headers = headers_of(forge, body)
    for name in CREDENTIALS & set(headers):
        headers[name] = headers[name].partition("=")[0] + "=" if "=" in headers[name] else ""
    verdict = adapter(forge).authenticate(lookup(headers), body, SECRETS, NOW)
    assert verdict.outcome is Outcome.MISSING
    assert CREDENTIAL[forge] in verdict.reason


def test_a_gitea_family_adapter_checks_its_own_signature_header() -> None:
    """A Forgejo delivery whose Gitea signature is right but whose Forgejo one is wrong."""
    body = fixture("forgejo-push.json")
    headers = headers_of("forgejo", body)
    headers["X-Forgejo-Signature"] = hex_hmac(b"not the secret", body)
    verdict = adapter("forgejo").authenticate(lookup(headers), body, SECRETS, NOW)
    assert verdict.outcome is Outcome.MISMATCH


@pytest.mark.parametrize(
    ("token", "outcome"),
    [
        (SECRET, Outcome.VALID),
        (b"old secret", Outcome.VALID),
        (b"It's a Secret to Everybod", Outcome.MISMATCH),
        (SECRET + b"!", Outcome.MISMATCH),
        (b"", Outcome.MISMATCH),
    ],
)
def test_the_gitlab_token_is_compared_whole(token: bytes, outcome: Outcome) -> None:
    body = fixture("gitlab-push.json")
    headers = headers_of("gitlab", body, secret=token)
    verdict = adapter("gitlab").authenticate(lookup(headers), body, SECRETS, NOW)
    assert verdict.outcome is outcome
    assert verdict.secret == (token if outcome is Outcome.VALID else None)


# --- GitLab signing tokens (Standard Webhooks) --------------------------------------


def signing_verdict(headers: Mapping[str, str], body: bytes, now: float = NOW) -> Any:
    secrets = (b"a plain token", OTHER_SIGNING, SIGNING)
    return adapter("gitlab").authenticate(lookup(headers), body, secrets, now)


def test_a_gitlab_signature_is_valid_and_names_its_signing_token() -> None:
    body = fixture("gitlab-push.json")
    verdict = signing_verdict(gitlab_signed(body), body)
    assert verdict.outcome is Outcome.VALID and verdict.secret == SIGNING


def test_the_gitlab_signature_matches_the_standard_webhooks_recipe() -> None:
    """Recomputed here from the spec, so that sign() and the check cannot share a mistake."""
    body = fixture("gitlab-push.json")
    key = base64.b64decode(SIGNING[len(b"whsec_") :])
    signed = f"{DELIVERY}.{int(NOW)}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert gitlab_sign(DELIVERY, int(NOW), body, SIGNING) == "v1," + expected


@pytest.mark.parametrize("skew", [-300, 0, 299, 300])
def test_a_gitlab_signature_within_five_minutes_is_valid(skew: int) -> None:
    body = fixture("gitlab-push.json")
    verdict = signing_verdict(gitlab_signed(body, timestamp=int(NOW) + skew), body)
    assert verdict.outcome is Outcome.VALID


@pytest.mark.parametrize("skew", [-360, 360])
def test_a_gitlab_signature_six_minutes_off_is_refused(skew: int) -> None:
    body = fixture("gitlab-push.json")
    verdict = signing_verdict(gitlab_signed(body, timestamp=int(NOW) + skew), body)
    assert verdict.outcome is Outcome.MISMATCH
    assert "webhook-timestamp" in verdict.reason and verdict.secret is None


def test_a_gitlab_signature_with_another_key_is_refused() -> None:
    body = fixture("gitlab-push.json")
    signed = gitlab_signed(body, secret=b"whsec_" + base64.b64encode(b"z" * 32))
    verdict = signing_verdict(signed, body)
    assert verdict.outcome is Outcome.MISMATCH and verdict.secret is None


def test_a_gitlab_signature_over_another_id_is_refused() -> None:
    body = fixture("gitlab-push.json")
    headers = gitlab_signed(body)
    headers["webhook-id"] = "another-id"
    assert signing_verdict(headers, body).outcome is Outcome.MISMATCH


def test_one_matching_signature_among_several_is_enough() -> None:
    body = fixture("gitlab-push.json")
    headers = gitlab_signed(body)
    stale = gitlab_sign(DELIVERY, int(NOW), body, b"whsec_" + base64.b64encode(b"old" * 11))
    headers["webhook-signature"] = f"{stale} v2,bm90IHRoaXM= {headers['webhook-signature']}"
    verdict = signing_verdict(headers, body)
    assert verdict.outcome is Outcome.VALID and verdict.secret == SIGNING


@pytest.mark.parametrize(
    ("drop", "change"),
    [
        pytest.param("webhook-id", {}, id="no-webhook-id"),
        pytest.param("webhook-timestamp", {}, id="no-timestamp"),
        pytest.param(None, {"webhook-timestamp": "yesterday"}, id="timestamp-not-a-number"),
        pytest.param(None, {"webhook-signature": "v1,not base64!"}, id="not-base64"),
        pytest.param(None, {"webhook-signature": "v2,AAAA"}, id="no-v1"),
    ],
)
def test_a_gitlab_signature_without_its_parts_is_malformed(
    drop: str | None, change: dict[str, str]
) -> None:
    body = fixture("gitlab-push.json")
    headers = {**gitlab_signed(body), **change}
    if drop is not None:
        del headers[drop]
    assert signing_verdict(headers, body).outcome is Outcome.MALFORMED


def test_a_gitlab_token_is_checked_when_the_app_holds_no_signing_token() -> None:
    """A hook with both a secret token and a signing token sends both; ghhook knows the token."""
    body = fixture("gitlab-push.json")
    headers = {**gitlab_signed(body), "X-Gitlab-Token": SECRET.decode()}
    verdict = adapter("gitlab").authenticate(lookup(headers), body, (SECRET,), NOW)
    assert verdict.outcome is Outcome.VALID and verdict.secret == SECRET


def test_a_gitlab_signature_is_not_checked_against_plain_tokens() -> None:
    body = fixture("gitlab-push.json")
    headers = gitlab_signed(body)
    verdict = adapter("gitlab").authenticate(lookup(headers), body, (SECRET,), NOW)
    assert verdict.outcome is Outcome.MISMATCH


# --- Reading -----------------------------------------------------------------------


@pytest.mark.parametrize("forge", FORGES)
def test_a_push_is_read_into_the_forge_neutral_push(forge: str) -> None:
    body, push = PUSHES[forge]
    read = adapter(forge).read(lookup(headers_of(forge, body)), body)
    assert read.event == "push"
    assert read.delivery == DELIVERY
    assert read.what == (push,)


def test_a_push_says_whether_it_may_have_rewound() -> None:
    """None (the forge does not say) must be taken as maybe: the engine then always pulls."""
    for forge, (_, push) in PUSHES.items():
        assert push.may_rewind is (forge not in ("github", "bitbucket")), forge


def test_bitbucket_cloud_reads_forced_from_the_change() -> None:
    payload = fixture_json("bitbucket-push.json")
    payload["push"]["changes"][0]["forced"] = True
    body = encode(payload)
    read = adapter("bitbucket").read(lookup(headers_of("bitbucket", body)), body)
    assert isinstance(read.what, tuple) and read.what[0].forced is True


def changed(forge: str, how: str) -> tuple[bytes, str]:
    """A push of ``forge`` made a tag push (``tag``) or a deletion (``delete``): body, event."""
    if forge == "gitlab":
        if how == "tag":
            return fixture("gitlab-tag-push.json"), "tag"
        payload = fixture_json("gitlab-push.json")
        payload.update(after=ZERO, checkout_sha=None, commits=[], total_commits_count=0)
        return encode(payload), "push"
    if forge == "bitbucket":
        if how == "delete":
            return fixture("bitbucket-delete.json"), "push"
        payload = fixture_json("bitbucket-push.json")
        for side in ("new", "old"):
            payload["push"]["changes"][0][side].update(type="tag", name="v1.0.0")
        return encode(payload), "push"
    if forge == "bitbucket-server":
        payload = fixture_json("bitbucket-server-refs-changed.json")
        (change,) = payload["changes"]
        if how == "tag":
            change.update(refId="refs/tags/v1.0.0", ref={"id": "refs/tags/v1.0.0", "type": "TAG"})
        else:
            change.update(toHash=ZERO, type="DELETE")
        return encode(payload), "push"
    if forge == "github":
        payload = push_payload(AFTER, before=BEFORE, repository="me/app")
    else:
        payload = fixture_json(f"{forge}-push.json")
    if how == "tag":
        payload["ref"] = "refs/tags/v1.0.0"
    else:
        payload.update(after=ZERO, commits=[], head_commit=None)
    return encode(payload), "push"


@pytest.mark.parametrize("forge", FORGES)
@pytest.mark.parametrize(
    ("how", "reason"), [("tag", "tag push 'refs/tags/v1.0.0'"), ("delete", "'main' was deleted")]
)
def test_tag_pushes_and_deletions_are_ignored(forge: str, how: str, reason: str) -> None:
    body, event = changed(forge, how)
    read = adapter(forge).read(lookup(headers_of(forge, body, event=event)), body)
    assert read.event == "push"
    assert isinstance(read.what, Ignore) and reason in read.what.reason


def test_a_bitbucket_push_of_two_branches_is_two_pushes() -> None:
    body = fixture("bitbucket-push-two-branches.json")
    read = adapter("bitbucket").read(lookup(headers_of("bitbucket", body)), body)
    assert isinstance(read.what, tuple)
    assert [(p.ref, p.before, p.after, p.deleted) for p in read.what] == [
        ("refs/heads/main", BEFORE, AFTER, False),
        ("refs/heads/feature", "3" * 40, "4" * 40, False),
    ]
    assert {p.repository for p in read.what} == {"me/app"}


def test_a_bitbucket_push_that_deletes_a_branch_beside_a_live_one_keeps_the_live_one() -> None:
    payload = fixture_json("bitbucket-push-two-branches.json")
    (deletion,) = fixture_json("bitbucket-delete.json")["push"]["changes"]
    payload["push"]["changes"][0] = deletion
    body = encode(payload)
    read = adapter("bitbucket").read(lookup(headers_of("bitbucket", body)), body)
    assert isinstance(read.what, tuple)
    assert [p.ref for p in read.what] == ["refs/heads/feature"]


def test_a_bitbucket_data_center_test_connection_is_a_ping() -> None:
    body = fixture("bitbucket-server-ping.json")
    headers = headers_of("bitbucket-server", body, event="ping")
    read = adapter("bitbucket-server").read(lookup(headers), body)
    assert read.event == "ping" and read.delivery == DELIVERY
    assert read.what == Pong(zen=None, hook_id=None)


def test_a_bitbucket_data_center_ping_is_a_ping_whatever_its_body() -> None:
    """HEADERS.md: the ping's body is undocumented; accept diagnostics:ping whatever it is."""
    headers = headers_of("bitbucket-server", b"", event="ping")
    read = adapter("bitbucket-server").read(lookup(headers), b"")
    assert read.what == Pong(zen=None, hook_id=None)


@pytest.mark.parametrize("forge", ["gitea", "forgejo", "gogs"])
def test_a_form_encoded_gitea_delivery_asks_for_json(forge: str) -> None:
    body = urlencode({"payload": fixture(f"{forge}-push.json").decode()}).encode()
    headers = headers_of(forge, body)
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    verdict = adapter(forge).authenticate(lookup(headers), body, SECRETS, NOW)
    assert verdict.valid, "the form is signed like JSON; only reading it fails"
    with pytest.raises(BadDelivery, match="choose application/json") as raised:
        adapter(forge).read(lookup(headers), body)
    assert adapter(forge).title in str(raised.value)


@pytest.mark.parametrize("forge", ["gitea", "forgejo"])
def test_the_test_delivery_button_is_a_ping(forge: str) -> None:
    """Gitea's Test Delivery: a push whose before and after are both the zero sha."""
    payload = fixture_json(f"{forge}-push.json")
    payload.update(before=ZERO, after=ZERO)
    body = encode(payload)
    read = adapter(forge).read(lookup(headers_of(forge, body)), body)
    assert read.event == "ping" and isinstance(read.what, Pong)


@pytest.mark.parametrize(
    ("forge", "event", "fragment"),
    [
        ("github", "issues", "only push does"),
        ("gitea", "issues", "only push does"),
        ("gitlab", "Merge Request Hook", "only Push Hook does"),
        ("bitbucket", "pullrequest:created", "only repo:push does"),
        ("bitbucket-server", "pr:opened", "only repo:refs_changed does"),
    ],
)
def test_other_events_are_ignored_naming_the_forges_push_event(
    forge: str, event: str, fragment: str
) -> None:
    body = b"{}"
    headers = headers_of(forge, body)
    for name in ("X-GitHub-Event", "X-Gitea-Event", "X-Gitlab-Event", "X-Event-Key"):
        if name in headers:
            headers[name] = event
    read = adapter(forge).read(lookup(headers), body)
    assert isinstance(read.what, Ignore) and fragment in read.what.reason


# --- Delivery ids ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("forge", "header"),
    [
        ("github", "X-GitHub-Delivery"),
        ("gitea", "X-Gitea-Delivery"),
        ("forgejo", "X-Forgejo-Delivery"),
        ("gogs", "X-Gogs-Delivery"),
        ("gitlab", "Idempotency-Key"),
        ("bitbucket", "X-Request-UUID"),
        ("bitbucket-server", "X-Request-Id"),
    ],
)
def test_each_forge_names_the_delivery_in_its_own_header(forge: str, header: str) -> None:
    headers = headers_of(forge, b"{}")
    for name in headers:
        if name.lower().endswith(("delivery", "uuid", "-id", "idempotency-key")):
            headers[name] = "not-this-one"
    headers[header] = "this-one"
    assert adapter(forge).delivery_id(lookup(headers)) == "this-one"


@pytest.mark.parametrize(
    ("drop", "expected"),
    [
        ((), DELIVERY),
        (("Idempotency-Key",), "3c5c0404-c866-44bc-a5f6-452bb1bfc76e"),
        (("Idempotency-Key", "X-Gitlab-Webhook-UUID"), "9cebe914-4827-408f-b014-cfa23a47a35f"),
        (("Idempotency-Key", "X-Gitlab-Webhook-UUID", "X-Gitlab-Event-UUID"), None),
    ],
)
def test_gitlab_prefers_the_idempotency_key_that_retries_keep(
    drop: tuple[str, ...], expected: str | None
) -> None:
    headers = headers_of("gitlab", b"{}")
    for name in drop:
        del headers[name]
    assert adapter("gitlab").delivery_id(lookup(headers)) == expected


# --- The config file ---------------------------------------------------------------


def test_a_gitlab_app_takes_a_repository_in_a_subgroup(host: Host) -> None:  # noqa: F811
    settings = host.load(HEAD + BLOG + 'forge = "gitlab"\nrepository = "group/sub/app"\n')
    (app,) = settings.apps
    assert (app.forge, app.repository) == ("gitlab", "group/sub/app")


def test_an_app_without_forge_is_github(host: Host) -> None:  # noqa: F811
    (app,) = host.load(HEAD + BLOG + 'repository = "me/blog"\n').apps
    assert (app.forge, app.repository) == ("github", "me/blog")


def test_the_old_github_repo_key_is_still_taken(host: Host) -> None:  # noqa: F811
    (app,) = host.load(HEAD + BLOG + 'github_repo = "me/blog"\n').apps
    assert (app.forge, app.repository) == ("github", "me/blog")


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        pytest.param(
            'forge = "gitlub"\n',
            "apps.blog.forge: unknown forge; did you mean 'gitlab'?",
            id="forge-misspelt",
        ),
        pytest.param(
            'repository = "noslash"\n',
            "apps.blog.repository: expected OWNER/NAME",
            id="github-noslash",
        ),
        pytest.param(
            'repository = "group/sub/app"\n',
            "apps.blog.repository: expected OWNER/NAME",
            id="github-subgroup",
        ),
        pytest.param(
            'forge = "gitlab"\nrepository = "noslash"\n',
            "apps.blog.repository: expected GROUP/PROJECT or GROUP/SUBGROUP/PROJECT",
            id="gitlab-noslash",
        ),
        pytest.param(
            'repository = "me/blog"\ngithub_repo = "me/blog"\n',
            "apps.blog.github_repo: is the old name of repository; give only repository",
            id="both-names",
        ),
    ],
)
def test_forge_and_repository_problems_are_one_line_each(
    host: Host,  # noqa: F811
    keys: str,
    problem: str,
) -> None:
    problems = host.problems(HEAD + BLOG + keys)
    assert len(problems) == 1, problems
    assert problems[0].startswith("FILE: " + problem)


def test_on_the_shared_path_a_token_still_verifies_when_another_app_signs() -> None:
    """
    Found by a review: one GitLab app with a signing token made every other
    GitLab app's deliveries (secret token and signature both sent) fail on
    the shared path. The token proves the delivery for the apps holding it.
    """
    body = fixture("gitlab-push.json")
    headers = {**gitlab_signed(body, secret=OTHER_SIGNING), "X-Gitlab-Token": SECRET.decode()}
    verdict = adapter("gitlab").authenticate(lookup(headers), body, (SECRET, SIGNING), NOW)
    assert verdict.outcome is Outcome.VALID and verdict.secret == SECRET
    forged = {**gitlab_signed(body, secret=OTHER_SIGNING), "X-Gitlab-Token": "not-it"}
    verdict = adapter("gitlab").authenticate(lookup(forged), body, (SECRET, SIGNING), NOW)
    assert verdict.outcome is Outcome.MISMATCH
