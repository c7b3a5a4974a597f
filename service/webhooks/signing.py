"""Standard Webhooks (v1, HMAC-SHA256) signing.

The signed content is ``{msg_id}.{timestamp}.{body}`` over the exact bytes sent. The
``webhook-id`` stays the same on every retry (receivers dedupe on it); the timestamp and
signature are fresh per attempt. Several secrets give several ``v1,`` entries so a
receiver keeps verifying while the secret rotates.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
# The spec asks for 24 to 64 random bytes.
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
CONTENT_TYPE = "application/json"


class InvalidSecret(ValueError):
    """A signing secret that is not ``whsec_`` + base64 of 24..64 bytes."""


def new_secret() -> str:
    """A fresh signing secret, shown to the endpoint owner once."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def decode_secret(secret: str) -> bytes:
    """The raw key bytes of a ``whsec_`` secret (the prefix is optional, as in the spec)."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidSecret("webhook secret is not valid base64") from exc
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise InvalidSecret(
            f"webhook secret must hold {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, "
            f"got {len(key)}"
        )
    return key


def _check_parts(msg_id: str, timestamp: int) -> None:
    # A '.' in the id would make "id.timestamp.body" ambiguous.
    if not msg_id or "." in msg_id or any(c.isspace() for c in msg_id):
        raise ValueError("webhook id must be non-empty without '.' or whitespace")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
        raise ValueError("webhook timestamp must be a non-negative integer (Unix seconds)")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One signature entry: ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``."""
    _check_parts(msg_id, timestamp)
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(decode_secret(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one space-separated entry per active secret."""
    if isinstance(secrets, str) or not secrets:
        raise ValueError("at least one webhook secret is required (a sequence, not a str)")
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets)


def headers(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """All headers of one signed webhook attempt."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, msg_id, timestamp, body),
        "content-type": CONTENT_TYPE,
    }
