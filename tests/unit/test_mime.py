"""MIME building: the bytes are right once, so they are right on every retry."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy

import pytest

from service.domain.envelope import AttachmentIn, compose
from service.domain.mime import build_mime

DATE = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _build(**kw):  # type: ignore[no-untyped-def]
    base = {"sender": "a@example.com", "to": ["b@example.com"], "subject": "s"}
    base.update(kw)
    raw = build_mime(compose(**base), message_id="<id@kirim.test>", date=DATE)
    return raw, message_from_bytes(raw, policy=policy.default)


def _lines(raw: bytes) -> list[bytes]:
    assert b"\n" not in raw.replace(b"\r\n", b""), "bare LF in output"
    return raw.split(b"\r\n")


def test_text_only() -> None:
    _, m = _build(text="hello")
    assert m.get_content_type() == "text/plain"
    assert m.get_content().strip() == "hello"
    assert m["Message-ID"] == "<id@kirim.test>"
    assert m["Date"] == "Fri, 02 Jan 2026 03:04:05 +0000"
    assert m["MIME-Version"] == "1.0"


def test_html_only() -> None:
    _, m = _build(html="<p>x</p>")
    assert m.get_content_type() == "text/html"


def test_text_and_html_are_alternatives() -> None:
    _, m = _build(text="plain", html="<p>rich</p>")
    assert m.get_content_type() == "multipart/alternative"
    parts = [p.get_content_type() for p in m.iter_parts()]
    assert parts == ["text/plain", "text/html"]


def test_attachments_and_inline_images() -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    _, m = _build(
        text="see",
        html='<img src="cid:logo">',
        attachments=[
            AttachmentIn(
                "logo.png", __import__("base64").b64encode(png).decode(), "image/png", "logo"
            ),
            AttachmentIn("r.pdf", "JVBERg==", "application/pdf"),
        ],
    )
    assert m.get_content_type() == "multipart/mixed"
    html = m.get_body(preferencelist=("related",))
    assert html is not None and html.get_content_type() == "multipart/related"
    img = next(p for p in html.iter_parts() if p.get_content_type() == "image/png")
    assert img["Content-ID"] == "<logo>" and img.get_content() == png
    atts = {p.get_filename(): p.get_content() for p in m.iter_attachments()}
    assert atts["r.pdf"] == b"%PDF"


def test_unicode_subject_and_names_are_encoded() -> None:
    raw, m = _build(sender="Zoë Ünïcode <z@example.com>", subject="Grüße ✓", text="x")
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()
    assert m["Subject"] == "Grüße ✓"
    assert m["From"].addresses[0].display_name == "Zoë Ünïcode"


def test_idn_domains_are_punycoded() -> None:
    raw, _ = _build(to=["Ann <ann@bücher.example>"], text="x")
    assert b"xn--bcher-kva.example" in raw


@pytest.mark.parametrize("body", [".", "..", ".x\n.\n..\n", "a\n.\nb"])
def test_lines_starting_with_dots_survive(body: str) -> None:
    _, m = _build(text=body)
    assert m.get_content().replace("\r\n", "\n").rstrip("\n") == body.rstrip("\n")


def test_long_lines_are_wrapped_by_encoding() -> None:
    body = "word" * 3000 + "\n" + "é" * 2000
    raw, m = _build(text=body)
    assert max(len(line) for line in _lines(raw)) <= 998
    assert m.get_content().replace("\r\n", "\n").rstrip("\n") == body
    assert m["Content-Transfer-Encoding"] == "quoted-printable"


def test_bcc_is_never_in_headers() -> None:
    raw, m = _build(bcc=["secret@example.com"], text="x")
    assert b"secret@example.com" not in raw
    assert m["Bcc"] is None


def test_custom_headers_are_kept() -> None:
    _, m = _build(
        text="x", headers={"X-Campaign": "w", "List-Unsubscribe": "<mailto:u@example.com>"}
    )
    assert m["X-Campaign"] == "w"
    assert m["List-Unsubscribe"] == "<mailto:u@example.com>"
