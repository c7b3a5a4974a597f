from __future__ import annotations

import pytest

from service.bounces.classify import BounceCategory as C
from service.bounces.classify import classify, find_enhanced_code


@pytest.mark.parametrize(
    ("status", "diagnostic", "expected"),
    [
        ("5.1.1", "550 5.1.1 <a@b.example>: Recipient address rejected", C.MAILBOX_UNKNOWN),
        ("5.1.10", "550 5.1.10 RESOLVER.ADR.RecipientNotFound", C.MAILBOX_UNKNOWN),
        (None, "550 User unknown", C.MAILBOX_UNKNOWN),
        ("5.0.0", "550 5.0.0 no such user here", C.MAILBOX_UNKNOWN),
        ("5.2.2", "552 5.2.2 Mailbox full", C.MAILBOX_FULL),
        ("4.2.2", "452 4.2.2 Over quota", C.MAILBOX_FULL),
        (None, "452 mailbox is over quota", C.MAILBOX_FULL),
        ("5.1.2", "Host or domain name not found", C.DOMAIN_UNKNOWN),
        ("5.4.4", "Host not found", C.DOMAIN_UNKNOWN),
        ("5.0.0", "Name service error for name=x.example type=MX", C.DOMAIN_UNKNOWN),
        ("5.7.1", "554 5.7.1 Message rejected due to policy", C.POLICY_BLOCK),
        ("5.7.1", "554 5.7.1 blocked using zen.spamhaus.org", C.SPAM_BLOCK),
        ("5.7.0", "550 5.7.0 poor sender reputation", C.SPAM_BLOCK),
        (None, "550 Message blocked", C.POLICY_BLOCK),
        ("5.5.0", "550 listed in spamhaus", C.SPAM_BLOCK),
        ("5.3.4", "552 5.3.4 Message too big", C.MESSAGE_TOO_LARGE),
        ("4.3.4", "452 4.3.4 message size exceeds limit", C.MESSAGE_TOO_LARGE),
        ("5.2.3", "552 5.2.3 exceeds size", C.MESSAGE_TOO_LARGE),
        ("4.4.1", "connect to mx: Connection timed out", C.TRANSIENT),
        ("4.7.1", "451 4.7.1 Greylisted, try later", C.TRANSIENT),
        (None, "421 Service not available", C.TRANSIENT),
        ("5.2.1", "550 5.2.1 mailbox disabled for a while", C.OTHER),
        (None, None, C.OTHER),
        (None, "something odd happened", C.OTHER),
    ],
)
def test_classify_table(status: str | None, diagnostic: str | None, expected: C) -> None:
    assert classify(status, diagnostic) is expected


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("550 5.1.1 user unknown", "5.1.1"),
        ("Remote host said: (#5.1.1)", "5.1.1"),
        ("host 192.0.2.44 said 550", None),
        ("version 2.5.4.4 of something", None),
        ("451 4.3.0 try later.", "4.3.0"),
        ("550 5.1.10 RESOLVER", "5.1.10"),
        (None, None),
    ],
)
def test_find_enhanced_code(text: str | None, code: str | None) -> None:
    assert find_enhanced_code(text) == code
