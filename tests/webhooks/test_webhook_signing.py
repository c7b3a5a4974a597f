from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from service.webhooks import signing

BODY = b'{"type":"message.sent","data":{"id":"msg_1","to":"b@example.com","note":"caf\xc3\xa9"}}'


def test_new_secret_is_whsec_base64_of_32_random_bytes() -> None:
    first, second = signing.new_secret(), signing.new_secret()
    assert first.startswith("whsec_")
    assert len(base64.b64decode(first.removeprefix("whsec_"), validate=True)) == 32
    assert first != second
    assert len(signing.decode_secret(first)) == 32


def test_headers_verify_with_standardwebhooks() -> None:
    secret = signing.new_secret()
    now = int(time.time())
    headers = signing.headers([secret], "evt_abc123", now, BODY)
    assert headers["webhook-id"] == "evt_abc123"
    assert headers["webhook-timestamp"] == str(now)
    assert headers["content-type"] == "application/json"
    assert Webhook(secret).verify(BODY, headers)["data"]["note"] == "café"


def test_signature_matches_the_reference_signer() -> None:
    secret = signing.new_secret()
    ts = 1_700_000_000
    expected = Webhook(secret).sign("evt_1", datetime.fromtimestamp(ts, UTC), BODY.decode())
    assert signing.sign(secret, "evt_1", ts, BODY) == expected


def test_rotation_emits_one_well_formed_entry_per_secret_and_both_verify() -> None:
    old, new, other = signing.new_secret(), signing.new_secret(), signing.new_secret()
    headers = signing.headers([old, new], "evt_rot", int(time.time()), BODY)
    entries = headers["webhook-signature"].split(" ")
    assert len(entries) == 2
    for entry in entries:
        version, value = entry.split(",")
        assert version == "v1"
        assert len(base64.b64decode(value, validate=True)) == 32
    assert Webhook(old).verify(BODY, headers)
    assert Webhook(new).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(BODY, headers)


def test_tampered_body_fails() -> None:
    secret = signing.new_secret()
    headers = signing.headers([secret], "evt_t", int(time.time()), BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b"msg_1", b"msg_2"), headers)


def test_tampered_timestamp_or_id_fails() -> None:
    secret = signing.new_secret()
    now = int(time.time())
    headers = signing.headers([secret], "evt_t", now, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, {**headers, "webhook-timestamp": str(now - 1)})
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, {**headers, "webhook-id": "evt_u"})


def test_stale_timestamp_is_refused_by_the_receiver() -> None:
    secret = signing.new_secret()
    headers = signing.headers([secret], "evt_old", int(time.time()) - 3600, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, headers)


def test_secret_without_prefix_signs_identically() -> None:
    secret = signing.new_secret()
    bare = secret.removeprefix("whsec_")
    assert signing.sign(secret, "e", 5, b"x") == signing.sign(bare, "e", 5, b"x")


@pytest.mark.parametrize(
    "secret",
    ["whsec_not*base64", "whsec_" + base64.b64encode(b"short").decode(), ""],
)
def test_bad_secrets_are_refused(secret: str) -> None:
    with pytest.raises(signing.InvalidSecret):
        signing.sign(secret, "evt", 1, b"{}")


@pytest.mark.parametrize(
    ("msg_id", "timestamp"),
    [("evt.1", 1), ("", 1), ("evt 1", 1), ("evt", -1), ("evt", 1.5), ("evt", True)],
)
def test_bad_id_or_timestamp_is_refused(msg_id: str, timestamp: int) -> None:
    with pytest.raises(ValueError):
        signing.sign(signing.new_secret(), msg_id, timestamp, b"{}")


def test_secrets_must_be_a_non_empty_sequence() -> None:
    with pytest.raises(ValueError):
        signing.signature_header([], "evt", 1, b"{}")
    with pytest.raises(ValueError):
        signing.signature_header(signing.new_secret(), "evt", 1, b"{}")
