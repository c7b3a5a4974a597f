"""Map an enhanced status code (RFC 3463) and diagnostic text to a bounce category.

The code decides when it is specific; generic codes (x.0.0, 5.5.x …) and missing codes
fall back to well-known phrases in the diagnostic text. Any remaining 4.x.x is transient.
"""

from __future__ import annotations

import re
from enum import StrEnum


class BounceCategory(StrEnum):
    MAILBOX_UNKNOWN = "mailbox_unknown"
    MAILBOX_FULL = "mailbox_full"
    DOMAIN_UNKNOWN = "domain_unknown"
    POLICY_BLOCK = "policy_block"
    SPAM_BLOCK = "spam_block"
    MESSAGE_TOO_LARGE = "message_too_large"
    TRANSIENT = "transient"
    COMPLAINT = "complaint"
    OTHER = "other"


ENHANCED_CODE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
_BASIC_CODE = re.compile(r"(?<!\d)([245])\d\d(?=[\s-]|$)")

# (class or None for any, subject, detail) -> category; checked in order.
_CODE_RULES: tuple[tuple[str | None, str, str | None, BounceCategory], ...] = (
    ("5", "1", "1", BounceCategory.MAILBOX_UNKNOWN),
    ("5", "1", "10", BounceCategory.MAILBOX_UNKNOWN),
    ("5", "1", "6", BounceCategory.MAILBOX_UNKNOWN),
    (None, "2", "2", BounceCategory.MAILBOX_FULL),
    ("5", "1", "2", BounceCategory.DOMAIN_UNKNOWN),
    ("5", "4", "4", BounceCategory.DOMAIN_UNKNOWN),
    (None, "3", "4", BounceCategory.MESSAGE_TOO_LARGE),
    ("5", "2", "3", BounceCategory.MESSAGE_TOO_LARGE),
    ("5", "7", None, BounceCategory.POLICY_BLOCK),
)


def _phrases(*words: str) -> re.Pattern[str]:
    return re.compile("|".join(words), re.IGNORECASE)


_SPAM_TEXT = _phrases(
    r"spam",
    r"spamhaus",
    r"reputation",
    r"\brbl\b",
    r"dnsbl",
    r"block ?list",
    r"black ?list",
    r"junk",
    r"barracuda",
    r"spamcop",
)
_TEXT_RULES: tuple[tuple[re.Pattern[str], BounceCategory], ...] = (
    (
        _phrases(
            r"user unknown",
            r"unknown user",
            r"no such (user|mailbox|recipient)",
            r"user (does not|doesn't) exist",
            r"mailbox (does not|doesn't) exist",
            r"address (does not|doesn't) exist",
            r"address not found",
            r"couldn't be found",
            r"recipient not found",
            r"recipnotfound",
            r"invalid recipient",
            r"no mailbox here",
            r"unknown (local|recipient|mailbox)",
            r"account (is )?(disabled|does not exist)",
        ),
        BounceCategory.MAILBOX_UNKNOWN,
    ),
    (
        _phrases(
            r"quota", r"mailbox (is )?full", r"insufficient (system )?storage", r"over ?limit"
        ),
        BounceCategory.MAILBOX_FULL,
    ),
    (
        _phrases(
            r"host not found",
            r"host or domain name not found",
            r"domain not found",
            r"no mx",
            r"nxdomain",
            r"name service error",
            r"unrouteable",
            r"domain (does not|doesn't) exist",
        ),
        BounceCategory.DOMAIN_UNKNOWN,
    ),
    (
        _phrases(r"too (large|big)", r"size (limit|exceeds)", r"exceeds .*size", r"message size"),
        BounceCategory.MESSAGE_TOO_LARGE,
    ),
    (
        _phrases(r"blocked", r"policy", r"denied", r"not (authorized|permitted)", r"refused"),
        BounceCategory.POLICY_BLOCK,
    ),
)


def find_enhanced_code(text: str | None) -> str | None:
    """The first RFC 3463 code (``5.1.1``) in text, or None."""
    if not text:
        return None
    match = ENHANCED_CODE.search(text)
    return ".".join(match.groups()) if match else None


def _status_class(status: str | None, diagnostic: str | None) -> str | None:
    if status:
        return status[0]
    match = _BASIC_CODE.search(diagnostic or "")
    return match.group(1) if match else None


def classify(status: str | None, diagnostic: str | None = None) -> BounceCategory:
    """Categorise one recipient's failure from its status code and diagnostic text."""
    code = find_enhanced_code(status) or find_enhanced_code(diagnostic)
    text = diagnostic or ""
    if code:
        klass, subject, detail = code.split(".")
        for rule_class, rule_subject, rule_detail, category in _CODE_RULES:
            if (rule_class in (None, klass) and rule_subject == subject) and (
                rule_detail in (None, detail)
            ):
                if category is BounceCategory.POLICY_BLOCK and _SPAM_TEXT.search(text):
                    return BounceCategory.SPAM_BLOCK
                return category
    if _status_class(code, text) == "4":
        if _TEXT_RULES[1][0].search(text):
            return BounceCategory.MAILBOX_FULL
        return BounceCategory.TRANSIENT
    if _SPAM_TEXT.search(text):
        return BounceCategory.SPAM_BLOCK
    for pattern, category in _TEXT_RULES:
        if pattern.search(text):
            return category
    return BounceCategory.OTHER
