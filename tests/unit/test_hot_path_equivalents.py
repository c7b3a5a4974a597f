"""Faster forms on the accept path give exactly what the plain forms give."""

from __future__ import annotations

import os
import random
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from service.db.engine import bind_plain_values_directly
from service.domain import addresses, headers, ids
from service.domain.addresses import parse_address
from service.domain.mime import _date


def _ulid_reference(value: int) -> str:
    out = []
    for _ in range(26):
        out.append(ids._ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def test_ulid_matches_five_bits_at_a_time() -> None:
    rng = random.Random(7)
    randoms = [0, 2**80 - 1, 1, 2**79] + [rng.getrandbits(80) for _ in range(3000)]
    for i, bits in enumerate(randoms):
        ms = [0, 2**48 - 1][i] if i < 2 else rng.randrange(2**48)
        if i % 3 == 0:
            ms = rng.randrange(2**48)  # a new millisecond, and below the same one again
        assert ids.ulid(ms / 1000, bits) == _ulid_reference((int(ms / 1000 * 1000) << 80) | bits)
    assert ids.is_id(ids.new_id("msg"), "msg")


def test_ulids_of_one_millisecond_differ_in_their_random_part() -> None:
    made = [ids.ulid(1000.0) for _ in range(3000)]  # more than one pool of random bytes
    assert len(set(made)) == len(made)
    assert {u[:10] for u in made} == {ids.ulid(1000.0, 0)[:10]}


def test_a_forked_child_does_not_repeat_its_parent_s_random_bytes() -> None:
    ids.ulid()  # the parent holds a pool
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, then leave at once
        os.write(write, ids.ulid(1000.0).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert child != ids.ulid(1000.0)


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


def _random_address(rng: random.Random) -> str:
    local_chars = "abcXYZ019_+-." + ("!#$%&'*/=?^`{|}~" if rng.random() < 0.1 else "")
    domain_chars = "abcdexyzABCXN0129-"
    if rng.random() < 0.1:
        local = rng.choice(["postmaster", "Info", "SALES", "abuse", "www"])
    else:
        local = "".join(rng.choice(local_chars) for _ in range(rng.choice([1, 3, 8, 63, 64, 65])))
    labels = []
    for _ in range(rng.choice([1, 2, 2, 3, 5])):
        size = rng.choice([1, 2, 5, 12, 62, 63, 64])
        label = "".join(rng.choice(domain_chars) for _ in range(size))
        if rng.random() < 0.6:  # mostly well-formed: hyphens inside only
            label = label.replace("-", "") or "a"
            if size > 2 and rng.random() < 0.5:
                label = label[0] + "-" + label[1:]
        labels.append(label)
    tld = rng.choice(["com", "ORG", "io", "c", "123", "x1", "local", "test", "localhost", "arpa"])
    if rng.random() < 0.05:
        labels[0] = "xn--" + labels[0]
    domain = ".".join([*labels, tld])
    if rng.random() < 0.05:
        domain = domain.replace(".", "..", 1)
    return f"{local}@{domain}"


def test_simple_addresses_get_email_validators_answer() -> None:
    rng = random.Random(5)
    fast = 0
    for _ in range(20_000):
        address = _random_address(rng)
        simple = addresses._simple(address)
        if simple is None:
            continue
        fast += 1
        assert addresses._validated(address) == (simple, False), address
    for address in ("ann@example.com", "A.B+tag@Mail.Example.COM", "x_y-z@a-b.c0.io"):
        assert addresses._simple(address) == addresses._validated(address)[0]
    assert fast > 1_500  # the shapes above reach the fast path often enough to mean something


def test_printable_text_check_matches_the_character_walk() -> None:
    rng = random.Random(3)
    pool = "ab Z9~\t\r\n\x00\x7f\x85\u2028\u2029\u00a0\u200b\u3000é😀=?"
    samples = ["", "plain subject", "=?utf-8?q?a=0Ab?=", "tab\there"]
    samples += ["".join(rng.choice(pool) for _ in range(rng.randrange(1, 12))) for _ in range(5000)]
    for text in samples:
        assert headers.unsafe_text_reason(text) == headers._walk(text), repr(text)


def test_none_bytes_and_bool_bind_through_adapters_as_they_would_without() -> None:
    plain = sqlite3.connect(":memory:")
    row = plain.execute("SELECT ?, typeof(?), ?, typeof(?), ?, typeof(?)",
                        (None, None, b"x", b"x", True, True)).fetchone()  # fmt: skip
    bind_plain_values_directly()
    protocol = sqlite3.PrepareProtocol
    assert all((kind, protocol) in sqlite3.adapters for kind in (type(None), bytes, bool))
    # Registering one for a base type would send every value through the registry.
    assert not any((kind, protocol) in sqlite3.adapters for kind in (int, float, str))
    adapted = sqlite3.connect(":memory:")
    assert adapted.execute("SELECT ?, typeof(?), ?, typeof(?), ?, typeof(?)",
                           (None, None, b"x", b"x", True, True)).fetchone() == row  # fmt: skip
    assert row == (None, "null", b"x", "blob", 1, "integer")
