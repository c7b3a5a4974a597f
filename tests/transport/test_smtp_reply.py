"""Reply parsing and sanitising (replies are untrusted text that reaches the API)."""

from __future__ import annotations

from service.delivery.smtp_reply import clean_text, outcome_of, parse_enhanced, server_reply
from service.delivery.transport import Outcome


def test_enhanced_code_is_parsed_from_the_text() -> None:
    assert parse_enhanced("5.1.1 <a@b>: user unknown") == "5.1.1"
    assert parse_enhanced("  4.7.0 try later") == "4.7.0"
    assert parse_enhanced("Ok queued as 5.1.1") is None
    assert parse_enhanced("5.1.1x nope") is None
    assert parse_enhanced("") is None


def test_text_is_truncated_and_stripped_of_controls() -> None:
    text = clean_text("bad\x1b[31m\x00line\r\nnext\u2028" + "x" * 2000)
    assert len(text) <= 500
    assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in text)
    assert text.startswith("bad [31m line next x")


def test_classification_uses_the_basic_code_only() -> None:
    assert outcome_of(250) is Outcome.ACCEPTED
    assert outcome_of(451) is Outcome.TEMPORARY
    assert outcome_of(550) is Outcome.PERMANENT
    assert outcome_of(600) is Outcome.TEMPORARY
    reply = server_reply(550, "4.2.2 mailbox full")  # disagreeing codes: 550 decides
    assert (reply.code, reply.enhanced) == (550, "4.2.2")
    odd = server_reply(600, "what")
    assert odd.code is None and "600" in odd.text
