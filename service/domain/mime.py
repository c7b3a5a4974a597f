"""Building the exact RFC 5322 bytes of a message, once, at accept time.

The same bytes go out on every attempt, so the Message-ID and Date are fixed here.
"""

from __future__ import annotations

from datetime import datetime
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8
from email.utils import format_datetime

from service.domain.addresses import Address
from service.domain.envelope import Draft


def make_message_id(local: str, domain: str) -> str:
    return f"<{local}@{domain}>"


def _header_address(a: Address) -> HeaderAddress:
    local, _, domain = a.email.rpartition("@")
    return HeaderAddress(display_name=a.name or "", username=local, domain=domain)


def build_mime(draft: Draft, *, message_id: str, date: datetime) -> bytes:
    """Serialise ``draft`` with CRLF line endings, ≤ 998-octet lines, ready for DATA."""
    msg = EmailMessage()
    msg["From"] = _header_address(draft.sender)
    if draft.to:
        msg["To"] = [_header_address(a) for a in draft.to]
    if draft.cc:
        msg["Cc"] = [_header_address(a) for a in draft.cc]
    if draft.reply_to:
        msg["Reply-To"] = [_header_address(a) for a in draft.reply_to]
    msg["Subject"] = draft.subject
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = message_id
    for name, value in draft.headers:
        msg[name] = value

    inline = [a for a in draft.attachments if a.content_id]
    files = [a for a in draft.attachments if not a.content_id]
    if draft.text is not None:
        msg.set_content(draft.text, cte=_cte(draft.text))
        if draft.html is not None:
            msg.add_alternative(draft.html, subtype="html", cte=_cte(draft.html))
    else:
        assert draft.html is not None
        msg.set_content(draft.html, subtype="html", cte=_cte(draft.html))

    if inline and draft.html is not None:
        html_part: EmailMessage = msg if draft.text is None else msg.get_payload()[-1]  # type: ignore[index,assignment]
        for a in inline:
            maintype, _, subtype = a.content_type.partition("/")
            html_part.add_related(
                a.data,
                maintype=maintype,
                subtype=subtype,
                cid=f"<{a.content_id}>",
                filename=a.filename,
                disposition="inline",
            )
    else:
        files = list(draft.attachments)

    for a in files:
        maintype, _, subtype = a.content_type.partition("/")
        msg.add_attachment(a.data, maintype=maintype, subtype=subtype, filename=a.filename)

    policy = SMTPUTF8 if draft.smtputf8 else SMTP
    return msg.as_bytes(policy=policy)


def _cte(body: str) -> str:
    """7bit for short-lined ASCII; quoted-printable otherwise (keeps lines ≤ 76, 8-bit safe)."""
    if (
        body.isascii()
        and all(len(line) <= 900 for line in body.splitlines())
        and "\r" not in body.replace("\r\n", "")
    ):
        return "7bit"
    return "quoted-printable"
