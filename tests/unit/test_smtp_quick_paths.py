"""Quick paths on the SMTP hot path agree with the general code they stand in for."""

from __future__ import annotations

import random

import pytest
from aiosmtplib.email import parse_address
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from service.delivery.smtp_transaction import _PLAIN_ADDRESS, bare_address, wire_payload

ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
LDH = "abcXYZ019-"


def _atom(rng: random.Random, alphabet: str) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))


def test_every_quickly_accepted_address_is_left_unchanged_by_the_parser() -> None:
    rng = random.Random(11)
    for _ in range(20_000):
        local = ".".join(_atom(rng, ATEXT) for _ in range(rng.randint(1, 3)))
        domain = ".".join(_atom(rng, LDH) for _ in range(rng.randint(1, 3)))
        address = f"{local}@{domain}"
        assert _PLAIN_ADDRESS.fullmatch(address), address
        assert parse_address(address) == address, address


@pytest.mark.parametrize(
    "address",
    [
        "x\r\nRCPT TO:<other@host>",
        "Name <a@b.example>",
        "a@b.example>",
        "a@b.example\n",
        "a b@c.example",
        "a@b.example (comment)",
    ],
)
def test_injections_and_display_forms_are_refused(address: str) -> None:
    with pytest.raises(ValueError):
        bare_address(address)


def test_wire_payload_matches_the_full_normalisation() -> None:
    """The quick paths of ``wire_payload`` give the bytes the regex route would."""
    rng = random.Random(5)
    pieces = [b"\r\n", b"\n", b"\r", b".", b"..", b"text", b" ", b"\r\n.", b"\xff"]
    for _ in range(20_000):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 10)))
        slow = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(data))
        if not slow.endswith(b"\r\n"):
            slow += b"\r\n"
        assert wire_payload(data) == slow, data
