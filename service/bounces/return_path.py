"""Signed per-recipient return paths (VERP): ``bounces+<token>@mail.example.com``.

The token carries the message id and recipient id (both ``<prefix>_<ULID>``) and a
truncated HMAC-SHA256, so a bounce names exactly one recipient and cannot be forged.

Layout before encoding (bytes):

    message ULID (16) | delta (1) | recipient ULID tail | MAC (8)

When the recipient ULID's 48-bit timestamp is within ±127 ms of the message's (the
usual case: both are created in one transaction) ``delta`` holds the difference and the
tail is only the 10 random bytes, giving 35 bytes = 56 base32 characters, so
``bounces+<token>`` fits the 64-octet local-part limit of RFC 5321. Otherwise ``delta``
is 0xFF and the whole 16-byte recipient ULID follows (66 characters).

The token uses lowercase RFC 4648 base32 without padding: MTAs that case-fold local parts
cannot break it. The MAC (64 bits) also covers the base address, so a token minted for
one bounce domain is not accepted for another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

MESSAGE_PREFIX = "msg_"
RECIPIENT_PREFIX = "rcp_"
DELIMITER = "+"
MAC_BYTES = 8
_FULL = 0xFF
_MAX_DELTA = 127
_ULID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ULID_DECODE = {c: i for i, c in enumerate(_ULID_ALPHABET)}
_DOMAIN_TAG = b"kirim.return-path.v1\x00"


def _ulid_to_bytes(ulid: str) -> bytes:
    text = ulid.upper()
    if len(text) != 26 or text[0] > "7":
        raise ValueError("not a ULID")
    value = 0
    for char in text:
        digit = _ULID_DECODE.get(char)
        if digit is None:
            raise ValueError("not a ULID")
        value = value * 32 + digit
    return value.to_bytes(16, "big")


def _bytes_to_ulid(raw: bytes) -> str:
    value = int.from_bytes(raw, "big")
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_ULID_ALPHABET[digit])
    return "".join(reversed(chars))


def _split_id(value: str, prefix: str) -> bytes:
    if not value.startswith(prefix):
        raise ValueError(f"id must start with {prefix!r}")
    return _ulid_to_bytes(value[len(prefix) :])


def _split_base(base: str) -> tuple[str, str]:
    local, sep, domain = base.strip().rpartition("@")
    if not sep or not local or not domain or DELIMITER in local:
        raise ValueError("base must look like local@domain without a '+' in the local part")
    return local.lower(), domain.lower()


def check_base(base: str) -> None:
    """Raise ValueError unless ``base`` can carry tokens (``local@domain``, no '+')."""
    _split_base(base)


def _mac(secret: bytes, base: str, payload: bytes) -> bytes:
    message = _DOMAIN_TAG + base.encode() + b"\x00" + payload
    return hmac.new(secret, message, hashlib.sha256).digest()[:MAC_BYTES]


def _encode_payload(message_id: str, recipient_id: str) -> bytes:
    msg = _split_id(message_id, MESSAGE_PREFIX)
    rcp = _split_id(recipient_id, RECIPIENT_PREFIX)
    delta = int.from_bytes(rcp[:6], "big") - int.from_bytes(msg[:6], "big")
    if -_MAX_DELTA <= delta <= _MAX_DELTA:
        return msg + bytes([delta + _MAX_DELTA]) + rcp[6:]
    return msg + bytes([_FULL]) + rcp


def _decode_payload(payload: bytes) -> tuple[str, str] | None:
    if len(payload) < 17:
        return None
    msg, marker, tail = payload[:16], payload[16], payload[17:]
    if marker == _FULL and len(tail) == 16:
        rcp = tail
    elif marker != _FULL and len(tail) == 10:
        stamp = int.from_bytes(msg[:6], "big") + marker - _MAX_DELTA
        if not 0 <= stamp < 2**48:
            return None
        rcp = stamp.to_bytes(6, "big") + tail
    else:
        return None
    return MESSAGE_PREFIX + _bytes_to_ulid(msg), RECIPIENT_PREFIX + _bytes_to_ulid(rcp)


def make_return_path(base: str, message_id: str, recipient_id: str, secret: bytes) -> str:
    """Return ``<local>+<token>@<domain>`` naming this message and recipient.

    Raises ValueError for a malformed base or ids that are not ``msg_``/``rcp_`` ULIDs.
    """
    if not secret:
        raise ValueError("secret must not be empty")
    local, domain = _split_base(base)
    payload = _encode_payload(message_id, recipient_id)
    token = base64.b32encode(payload + _mac(secret, f"{local}@{domain}", payload))
    return f"{local}{DELIMITER}{token.decode().rstrip('=').lower()}@{domain}"


def parse_return_path(address: str, base: str, secret: bytes) -> tuple[str, str] | None:
    """Return ``(message_id, recipient_id)`` for a genuine token, None for anything else.

    Accepts ``<...>`` brackets and any letter case. Foreign addresses, forged or truncated
    tokens and tokens signed with another secret or for another base give None.
    """
    if not secret:
        return None
    local, domain = _split_base(base)
    text = address.strip().strip("<>").strip().lower()
    addr_local, sep, addr_domain = text.rpartition("@")
    if not sep or addr_domain != domain:
        return None
    prefix = local + DELIMITER
    if not addr_local.startswith(prefix):
        return None
    token = addr_local[len(prefix) :]
    if not token or len(token) > 80:
        return None
    try:
        raw = base64.b32decode(token.upper() + "=" * (-len(token) % 8))
    except (binascii.Error, ValueError):
        return None
    if len(raw) <= MAC_BYTES:
        return None
    payload, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
    if not hmac.compare_digest(mac, _mac(secret, f"{local}@{domain}", payload)):
        return None
    return _decode_payload(payload)
