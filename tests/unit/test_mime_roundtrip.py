"""Randomised round trip: whatever the draft, the standard parser reads back the same content."""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest

from service.domain.envelope import AttachmentIn, compose
from service.domain.mime import build_mime

ALPHABET = "abcXYZ 019 .,;:()<>@\"'\\-_=?+ éüß漢字✓🙂\t"


def _rand_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(n))


def _rand_body(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(1, 12)):
        kind = rng.random()
        if kind < 0.2:
            lines.append(rng.choice([".", "..", ".x", "From me", ""]))
        elif kind < 0.3:
            lines.append("y" * rng.randint(900, 3000))
        else:
            lines.append(_rand_text(rng, rng.randint(0, 120)))
    return "\n".join(lines)


def _safe_name(text: str) -> str:
    return "".join(c for c in text if c not in '/\\"')


@pytest.mark.parametrize("seed", range(60))
def test_round_trip(seed: int) -> None:
    rng = random.Random(seed)
    subject = _rand_text(rng, rng.randint(0, 300)).replace("\t", " ")
    name = _rand_text(rng, rng.randint(1, 40)).replace("\t", " ").strip() or "N"
    text = _rand_body(rng) if rng.random() < 0.8 else None
    html = "<p>" + _rand_body(rng) + "</p>" if (text is None or rng.random() < 0.5) else None
    blobs = [
        bytes(rng.randrange(256) for _ in range(rng.randint(0, 3000)))
        for _ in range(rng.randint(0, 3))
    ]
    atts = [
        AttachmentIn(
            f"f{i} {_safe_name(_rand_text(rng, 5))}.bin",
            base64.b64encode(b).decode(),
            "application/octet-stream",
            f"cid{i}" if rng.random() < 0.3 else None,
        )
        for i, b in enumerate(blobs)
    ]
    draft = compose(
        sender=f'"{name.replace(chr(92), "").replace(chr(34), "")}" <sender@example.com>',
        to=[f"to{i}@example.com" for i in range(rng.randint(1, 30))],
        subject=subject,
        text=text,
        html=html,
        headers={"X-Rand": _rand_text(rng, 50).replace("\t", " ")},
        attachments=atts,
    )
    raw = build_mime(draft, message_id="<r@kirim.test>", date=datetime(2026, 1, 1, tzinfo=UTC))

    assert b"\n" not in raw.replace(b"\r\n", b"") and b"\r" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()

    m = message_from_bytes(raw, policy=policy.default)
    assert isinstance(m, EmailMessage)
    assert m["Subject"] == subject
    shown = m["From"].addresses[0].display_name
    assert draft.sender.name is not None
    if len(draft.sender.name.encode()) <= 45:
        assert shown == draft.sender.name
    else:
        # Python's phrase parser puts a space between adjacent encoded words, which RFC 2047
        # says to drop; compare what both readings agree on.
        assert shown.replace(" ", "") == draft.sender.name.replace(" ", "")
    assert [a.addr_spec for a in m["To"].addresses] == [a.email for a in draft.to]
    assert m["X-Rand"] == draft.headers[0][1]
    if text is not None:
        part = m.get_body(preferencelist=("plain",))
        assert part is not None
        assert part.get_content().replace("\r\n", "\n").rstrip("\n") == text.replace(
            "\r", ""
        ).rstrip("\n")
    if html is not None:
        part = m.get_body(preferencelist=("html",))
        assert part is not None
        assert part.get_content().replace("\r\n", "\n").rstrip("\n") == html.rstrip("\n")
    got = sorted(p.get_content() for p in m.walk() if p.get_content_maintype() == "application")
    assert got == sorted(blobs)
