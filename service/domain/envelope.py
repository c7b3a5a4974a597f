"""From a send request to a validated draft: every check that decides 4xx vs 202.

Pure code: no I/O, no framework. Every problem is collected as a ``FieldError`` so the
client learns about all of them at once, and nothing is stored unless there are none.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from service.domain.addresses import Address, parse_address, unique_by_email
from service.domain.errors import FieldError, InvalidRequest
from service.domain.headers import MAX_HEADER_VALUE, header_name_reason, unsafe_text_reason

_MIME_TYPE = re.compile(
    r"^[a-zA-Z0-9][a-zA-Z0-9!#$&^_.+-]{0,63}/[a-zA-Z0-9][a-zA-Z0-9!#$&^_.+-]{0,63}$"
)
_CONTENT_ID = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.@-]{1,200}$")
_TAG = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Limits:
    max_recipients: int = 50
    max_attachment_bytes: int = 7 * 1024 * 1024
    max_attachments: int = 20
    max_body_chars: int = 2 * 1024 * 1024
    max_headers: int = 50
    max_tags: int = 20
    max_metadata: int = 50
    max_subject_chars: int = 998 - 10


@dataclass(slots=True)  # a value, not frozen: see service/native.py
class AttachmentIn:
    filename: str
    content: str  # base64
    content_type: str | None = None
    content_id: str | None = None


@dataclass(slots=True)  # a value, not frozen: see service/native.py
class Attachment:
    filename: str
    data: bytes
    content_type: str
    content_id: str | None = None


@dataclass(slots=True, init=False)  # a value, not frozen: see service/native.py
class Recipient:
    address: Address
    kind: str  # to | cc | bcc

    def __init__(
        self,
        address: Address,
        kind: str,
    ) -> None:
        self.address = address
        self.kind = kind


@dataclass(slots=True, init=False)  # a value, not frozen: see service/native.py
class Draft:
    """A send request that passed every check: ready to become MIME bytes and rows."""

    sender: Address
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    subject: str
    text: str | None
    html: str | None
    headers: tuple[tuple[str, str], ...] = ()
    attachments: tuple[Attachment, ...] = ()
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __init__(
        self,
        sender: Address,
        to: tuple[Address, ...],
        cc: tuple[Address, ...],
        bcc: tuple[Address, ...],
        reply_to: tuple[Address, ...],
        subject: str,
        text: str | None,
        html: str | None,
        headers: tuple[tuple[str, str], ...] = (),
        attachments: tuple[Attachment, ...] = (),
        tags: tuple[str, ...] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.sender = sender
        self.to = to
        self.cc = cc
        self.bcc = bcc
        self.reply_to = reply_to
        self.subject = subject
        self.text = text
        self.html = html
        self.headers = headers
        self.attachments = attachments
        self.tags = tags
        self.metadata = {} if metadata is None else metadata

    @property
    def recipients(self) -> list[Recipient]:
        """Envelope recipients, each mailbox once, in to/cc/bcc order."""
        seen = unique_by_email([*self.to, *self.cc, *self.bcc])
        kinds = {
            id(a): k
            for k, group in (("bcc", self.bcc), ("cc", self.cc), ("to", self.to))
            for a in group
        }
        return [Recipient(address=a, kind=kinds[id(a)]) for a in seen]

    @property
    def smtputf8(self) -> bool:
        # Over the address lists as given: the same answer as over ``recipients``, without
        # building them (a hot-path property, asked twice per message).
        if self.sender.smtputf8:
            return True
        return any(a.smtputf8 for group in (self.to, self.cc, self.bcc) for a in group)


def compose(
    *,
    sender: str,
    to: Sequence[str],
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    reply_to: Sequence[str] = (),
    subject: str,
    text: str | None = None,
    html: str | None = None,
    headers: Mapping[str, str] | None = None,
    attachments: Sequence[AttachmentIn] = (),
    tags: Sequence[str] = (),
    metadata: Mapping[str, str] | None = None,
    limits: Limits = Limits(),
) -> Draft:
    """Validate a send request; raises ``InvalidRequest`` listing every bad field."""
    errors: list[FieldError] = []

    def addr(raw: str, loc: tuple[str | int, ...]) -> Address | None:
        try:
            return parse_address(raw)
        except ValueError as exc:
            errors.append(FieldError(loc, f"invalid address: {exc}"))
            return None

    def addr_list(values: Sequence[str], name: str) -> tuple[Address, ...]:
        parsed = [addr(v, (name, i)) for i, v in enumerate(values)]
        return tuple(a for a in parsed if a is not None)

    from_addr = addr(sender, ("from",))
    to_addrs = addr_list(to, "to")
    cc_addrs = addr_list(cc, "cc")
    bcc_addrs = addr_list(bcc, "bcc")
    reply_addrs = addr_list(reply_to, "reply_to")
    if not (to or cc or bcc):
        errors.append(FieldError(("to",), "at least one recipient is required"))
    count = len(unique_by_email([*to_addrs, *cc_addrs, *bcc_addrs]))
    if count > limits.max_recipients:
        errors.append(
            FieldError(
                ("to",), f"at most {limits.max_recipients} recipients per message, got {count}"
            )
        )

    reason = unsafe_text_reason(subject)
    if reason:
        errors.append(FieldError(("subject",), reason))
    elif len(subject) > limits.max_subject_chars:
        errors.append(FieldError(("subject",), f"at most {limits.max_subject_chars} characters"))

    if text is None and html is None:
        errors.append(FieldError(("text",), "text or html is required"))
    for name, body in (("text", text), ("html", html)):
        if body is not None and len(body) > limits.max_body_chars:
            errors.append(FieldError((name,), f"at most {limits.max_body_chars} characters"))
        if body is not None and "\x00" in body:
            errors.append(FieldError((name,), "NUL characters are not allowed"))

    header_items = _check_headers(headers or {}, limits, errors)
    files = _check_attachments(attachments, limits, errors)
    tag_list = _check_tags(tags, limits, errors)
    meta = _check_metadata(metadata or {}, limits, errors)

    if errors or from_addr is None:
        raise InvalidRequest(errors)
    return Draft(
        sender=from_addr,
        to=to_addrs,
        cc=cc_addrs,
        bcc=bcc_addrs,
        reply_to=reply_addrs,
        subject=subject,
        text=text,
        html=html,
        headers=header_items,
        attachments=files,
        tags=tag_list,
        metadata=meta,
    )


def _check_headers(
    headers: Mapping[str, str], limits: Limits, errors: list[FieldError]
) -> tuple[tuple[str, str], ...]:
    if len(headers) > limits.max_headers:
        errors.append(FieldError(("headers",), f"at most {limits.max_headers} headers"))
        return ()
    out: list[tuple[str, str]] = []
    for name, value in headers.items():
        reason = header_name_reason(name) or unsafe_text_reason(value)
        if reason is None and len(value) > MAX_HEADER_VALUE:
            reason = f"header values are limited to {MAX_HEADER_VALUE} characters"
        if reason:
            errors.append(FieldError(("headers", name), reason))
        else:
            out.append((name, value))
    return tuple(out)


def _check_attachments(
    attachments: Sequence[AttachmentIn], limits: Limits, errors: list[FieldError]
) -> tuple[Attachment, ...]:
    if len(attachments) > limits.max_attachments:
        errors.append(FieldError(("attachments",), f"at most {limits.max_attachments} attachments"))
        return ()
    out: list[Attachment] = []
    total = 0
    for i, a in enumerate(attachments):
        loc: tuple[str | int, ...] = ("attachments", i)
        problem = unsafe_text_reason(a.filename)
        if problem is None and (not a.filename or any(c in a.filename for c in '/\\"')):
            problem = "filenames must be non-empty and contain no slashes or quotes"
        if problem is None and len(a.filename) > 255:
            problem = "filenames are limited to 255 characters"
        if problem:
            errors.append(FieldError((*loc, "filename"), problem))
        ctype = a.content_type or "application/octet-stream"
        if not _MIME_TYPE.match(ctype):
            errors.append(FieldError((*loc, "content_type"), "must be a plain type/subtype"))
        if a.content_id is not None and not _CONTENT_ID.match(a.content_id):
            errors.append(FieldError((*loc, "content_id"), "invalid content id"))
        # Cheap size check before decoding, so a huge string costs nothing more.
        if len(a.content) * 3 // 4 > limits.max_attachment_bytes + 3:
            errors.append(FieldError((*loc, "content"), "attachment too large"))
            continue
        try:
            data = base64.b64decode(a.content, validate=True)
            # Only the canonical encoding: stray padding or bits hint at a broken encoder.
            if base64.b64encode(data).decode("ascii") != a.content:
                raise ValueError("not canonical")
        except (binascii.Error, ValueError):
            errors.append(FieldError((*loc, "content"), "must be valid, padded base64"))
            continue
        total += len(data)
        out.append(Attachment(a.filename, data, ctype.lower(), a.content_id))
    if total > limits.max_attachment_bytes:
        errors.append(
            FieldError(("attachments",), f"decoded size above {limits.max_attachment_bytes} bytes")
        )
    return tuple(out)


def _check_tags(tags: Sequence[str], limits: Limits, errors: list[FieldError]) -> tuple[str, ...]:
    if len(tags) > limits.max_tags:
        errors.append(FieldError(("tags",), f"at most {limits.max_tags} tags"))
        return ()
    for i, t in enumerate(tags):
        if not _TAG.match(t):
            errors.append(
                FieldError(("tags", i), "tags are 1-64 characters of A-Z a-z 0-9 _ . : -")
            )
    return tuple(dict.fromkeys(tags))


def _check_metadata(
    metadata: Mapping[str, str], limits: Limits, errors: list[FieldError]
) -> dict[str, str]:
    if len(metadata) > limits.max_metadata:
        errors.append(FieldError(("metadata",), f"at most {limits.max_metadata} keys"))
        return {}
    for k, v in metadata.items():
        if not _TAG.match(k):
            errors.append(
                FieldError(("metadata", k), "keys are 1-64 characters of A-Z a-z 0-9 _ . : -")
            )
        elif len(v) > 500:
            errors.append(FieldError(("metadata", k), "values are limited to 500 characters"))
    return dict(metadata)
