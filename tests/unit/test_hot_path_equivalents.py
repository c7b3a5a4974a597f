"""Faster forms on the accept path give exactly what the plain forms give."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from service.domain import ids
from service.domain.addresses import parse_address
from service.domain.mime import _date


def _ulid_reference(value: int) -> str:
    out = []
    for _ in range(26):
        out.append(ids._ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def test_ulid_matches_five_bits_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    randoms = [0, 2**80 - 1, 1, 2**79] + [rng.getrandbits(80) for _ in range(3000)]
    for i, bits in enumerate(randoms):
        ms = [0, 2**48 - 1][i] if i < 2 else rng.randrange(2**48)
        monkeypatch.setattr(ids.os, "urandom", lambda n, b=bits: b.to_bytes(n, "big"))
        assert ids.ulid(ms / 1000) == _ulid_reference((int(ms / 1000 * 1000) << 80) | bits)
    assert ids.is_id(ids.new_id("msg"), "msg")


def test_date_header_matches_the_standard_library() -> None:
    rng = random.Random(11)
    zones = [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))]
    for _ in range(3000):
        when = datetime.fromtimestamp(rng.uniform(0, 4e9), rng.choice(zones))
        assert _date(when) == format_datetime(when)
    naive = datetime(2030, 1, 2, 3, 4, 5)
    assert _date(naive) == format_datetime(naive)


def test_remembered_addresses_answer_as_the_first_time() -> None:
    good = parse_address("Ann <Ann@Example.COM>")
    assert parse_address("Ann <Ann@Example.COM>") == good
    assert good.email == "Ann@example.com" and good.name == "Ann"
    messages = []
    for _ in range(2):
        with pytest.raises(ValueError) as err:
            parse_address("ann@@example.com")
        messages.append(str(err.value))
    assert messages[0] == messages[1] and messages[0]
