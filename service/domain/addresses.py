"""Parsing and validating addresses given as ``a@example.com`` or ``Name <a@example.com>``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES

from service.domain.headers import unsafe_text_reason

# A display name, optionally quoted, then an address in angle brackets.
_NAME_ADDR = re.compile(r'^\s*(?:"(?P<qname>[^"]*)"|(?P<name>[^<>"]*?))\s*<(?P<addr>[^<>]*)>\s*$')


@dataclass(slots=True, init=False)  # a value, not frozen: see service/native.py
class Address:
    """A validated mailbox: ``email`` is what goes on the envelope."""

    email: str
    name: str | None = None
    smtputf8: bool = False  # the local part is not ASCII: needs SMTPUTF8 upstream

    def __init__(
        self,
        email: str,
        name: str | None = None,
        smtputf8: bool = False,
    ) -> None:
        self.email = email
        self.name = name
        self.smtputf8 = smtputf8


# Parsing is a pure function of the string and email_validator is slow (tens of
# microseconds an address), while senders and many recipients repeat: outcomes of recent
# short strings are kept, refusals too. Bounded by entries and by the length of each key.
_MEMO: dict[str, Address | str] = {}
_MEMO_ENTRIES = 8192
_MEMO_KEY_CHARS = 512


def parse_address(raw: str) -> Address:
    """Parse and validate one address; raises ``ValueError`` with a user-facing reason."""
    known = _MEMO.get(raw)
    if known is None:
        try:
            known = _parse(raw)
        except ValueError as exc:
            known = str(exc)
        if len(raw) <= _MEMO_KEY_CHARS:
            if len(_MEMO) >= _MEMO_ENTRIES:
                _MEMO.clear()
            _MEMO[raw] = known
    if isinstance(known, str):
        raise ValueError(known)
    return known


def _parse(raw: str) -> Address:
    reason = unsafe_text_reason(raw)
    if reason:
        raise ValueError(reason)
    m = _NAME_ADDR.match(raw)
    if m:
        name = (m.group("qname") if m.group("qname") is not None else m.group("name")).strip()
        addr = m.group("addr").strip()
    else:
        name, addr = "", raw.strip()
    if not addr:
        raise ValueError("the address is empty")
    if any(c in addr for c in ' <>(),;:\\"[]') and "@" in addr and "[" not in addr.split("@")[-1]:
        raise ValueError("the address contains characters that are not allowed")
    email, smtputf8 = _checked(addr)
    local, _, domain = email.rpartition("@")
    # RFC 5321 §4.5.3.1: local part ≤ 64 octets, domain ≤ 255, path ≤ 256 with brackets.
    if len(local.encode()) > 64:
        raise ValueError("the local part is longer than 64 octets")
    if len(domain.encode()) > 255 or len(email.encode()) > 254:
        raise ValueError("the address is too long")
    # Runs of whitespace in a display name collapse to one space, as mail readers show it.
    name = " ".join(name.split())
    return Address(email=email, name=name or None, smtputf8=smtputf8)


def _checked(addr: str) -> tuple[str, bool]:
    """(envelope address, needs SMTPUTF8) as email_validator normalises ``addr``."""
    simple = _simple(addr)
    if simple is not None:
        return simple, False
    return _validated(addr)


def _validated(addr: str) -> tuple[str, bool]:
    try:
        checked = validate_email(
            addr, check_deliverability=False, allow_smtputf8=True, allow_quoted_local=False
        )
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    ascii_email = checked.ascii_email
    return (ascii_email if ascii_email else checked.normalized), ascii_email is None


# The everyday shape, for which email_validator's answer is known without running it
# (about 70 microseconds): an ASCII dot-atom of letters, digits and _ + - before the @; a
# domain of at least two letter-digit-hyphen labels (no "--", so no punycode or reserved
# label forms) ending in an alphabetic TLD. It accepts these, lowercasing only the domain,
# unless the local part is a role name it lowercases or the domain is special-use; lengths
# at its limits and everything else go through it (tests compare both on random input).
_SIMPLE = re.compile(
    r"(?P<local>[A-Za-z0-9_+-]{1,64}(?:\.[A-Za-z0-9_+-]{1,64})*)@"
    r"(?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63})"
)
_ROLE_NAMES = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)


def _simple(addr: str) -> str | None:
    """``addr`` normalised as email_validator would, if it has the everyday shape."""
    m = _SIMPLE.fullmatch(addr)
    if m is None or len(addr) > 254:
        return None
    local, domain = m.group("local"), m.group("domain").lower()
    if len(local) > 64 or len(domain) > 253 or "--" in domain:
        return None
    if local.lower() in _ROLE_NAMES:
        return None
    for special in SPECIAL_USE_DOMAIN_NAMES:
        if domain == special or domain.endswith("." + special):
            return None
    return f"{local}@{domain}"


def unique_by_email(addresses: list[Address]) -> list[Address]:
    """Drop repeated mailboxes, keeping the first.

    Compared case-insensitively: local parts are case-sensitive in theory, but no mail
    system in use treats Ann@ and ann@ as two people, and a double send is worse.
    """
    seen: set[str] = set()
    out: list[Address] = []
    for a in addresses:
        key = a.email.lower()
        if key not in seen:
            seen.add(key)
            out.append(a)
    return out
