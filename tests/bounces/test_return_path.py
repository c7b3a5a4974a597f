from __future__ import annotations

import base64

import pytest

from service.bounces.return_path import make_return_path, parse_return_path
from tests.bounces.conftest import BASE, MESSAGE_ID, RECIPIENT_ID, SECRET


def test_round_trip_fits_local_part_limit() -> None:
    address = make_return_path(BASE, MESSAGE_ID, RECIPIENT_ID, SECRET)
    local, _, domain = address.partition("@")
    assert domain == "mail.example.com"
    assert local.startswith("bounces+")
    assert len(local) <= 64  # RFC 5321 §4.5.3.1.1
    assert address == address.lower()
    assert parse_return_path(address, BASE, SECRET) == (MESSAGE_ID, RECIPIENT_ID)


def test_survives_case_folding_and_brackets() -> None:
    address = make_return_path(BASE, MESSAGE_ID, RECIPIENT_ID, SECRET)
    assert parse_return_path(f"<{address.upper()}>", BASE.upper(), SECRET) == (
        MESSAGE_ID,
        RECIPIENT_ID,
    )


def test_recipient_from_another_millisecond_uses_long_form() -> None:
    other = "rcp_01JE0000000000000000000000"
    address = make_return_path(BASE, MESSAGE_ID, other, SECRET)
    assert parse_return_path(address, BASE, SECRET) == (MESSAGE_ID, other)


def test_distinct_recipients_get_distinct_tokens() -> None:
    first = make_return_path(BASE, MESSAGE_ID, RECIPIENT_ID, SECRET)
    second = make_return_path(BASE, MESSAGE_ID, RECIPIENT_ID[:-1] + "K", SECRET)
    assert first != second
    assert parse_return_path(second, BASE, SECRET) == (MESSAGE_ID, RECIPIENT_ID[:-1] + "K")


def test_token_for_another_secret_is_rejected() -> None:
    address = make_return_path(BASE, MESSAGE_ID, RECIPIENT_ID, b"another-secret")
    assert parse_return_path(address, BASE, SECRET) is None


def test_token_for_another_base_is_rejected() -> None:
    address = make_return_path("bounces@other.example.com", MESSAGE_ID, RECIPIENT_ID, SECRET)
    moved = address.replace("other.example.com", "mail.example.com")
    assert parse_return_path(moved, BASE, SECRET) is None


def _flip_bits(address: str, byte_index: int) -> str:
    local, _, domain = address.partition("@")
    prefix, _, token = local.partition("+")
    raw = bytearray(base64.b32decode(token.upper() + "=" * (-len(token) % 8)))
    raw[byte_index] ^= 0x01
    forged = base64.b32encode(bytes(raw)).decode().rstrip("=").lower()
    return f"{prefix}+{forged}@{domain}"


@pytest.mark.parametrize("byte_index", [0, 10, 16, 20, -1])
def test_forged_token_is_rejected(byte_index: int) -> None:
    address = make_return_path(BASE, MESSAGE_ID, RECIPIENT_ID, SECRET)
    assert parse_return_path(_flip_bits(address, byte_index), BASE, SECRET) is None


@pytest.mark.parametrize(
    "address",
    [
        "bounces@mail.example.com",
        "bounces+@mail.example.com",
        "bounces+not-base32!@mail.example.com",
        "bounces+aaaa@mail.example.com",
        "someone@mail.example.com",
        "postmaster@example.org",
        "",
        "no-at-sign",
    ],
)
def test_foreign_or_malformed_addresses_give_none(address: str) -> None:
    assert parse_return_path(address, BASE, SECRET) is None


def test_truncated_token_is_rejected() -> None:
    address = make_return_path(BASE, MESSAGE_ID, RECIPIENT_ID, SECRET)
    local, _, domain = address.partition("@")
    assert parse_return_path(f"{local[:-8]}@{domain}", BASE, SECRET) is None


@pytest.mark.parametrize(
    ("message_id", "recipient_id"),
    [
        ("01JD8Y3Q6V0WZ5K2N4P7R9T1XA", RECIPIENT_ID),
        (MESSAGE_ID, "msg_01JD8Y3Q6V7B2C3D4E5F6G7H8J"),
        ("msg_01JD8Y3Q6V0WZ5K2N4P7R9T1X", RECIPIENT_ID),
        ("msg_81JD8Y3Q6V0WZ5K2N4P7R9T1XA", RECIPIENT_ID),
        ("msg_01JD8Y3Q6V0WZ5K2N4P7R9T1XU", RECIPIENT_ID),
    ],
)
def test_bad_ids_raise(message_id: str, recipient_id: str) -> None:
    with pytest.raises(ValueError):
        make_return_path(BASE, message_id, recipient_id, SECRET)


def test_empty_secret_and_bad_base_raise() -> None:
    with pytest.raises(ValueError):
        make_return_path(BASE, MESSAGE_ID, RECIPIENT_ID, b"")
    with pytest.raises(ValueError):
        make_return_path("bounces+x@mail.example.com", MESSAGE_ID, RECIPIENT_ID, SECRET)
