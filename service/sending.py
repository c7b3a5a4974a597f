"""From send requests to stored rows: templates, schedule checks, suppressions.

Shared by the single send, the batch and the preview routes, so each applies exactly the
same checks. Every problem is an ``InvalidRequest`` whose field paths start at ``loc``
(``messages.3.…`` inside a batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from service.api.runtime import Runtime
from service.api.schemas import PRIORITY_VALUE, SendRequest
from service.db import suppressions
from service.db import templates as template_store
from service.db.accepts import NewMessage
from service.domain import envelope
from service.domain.errors import FieldError, InvalidRequest
from service.domain.templates import TemplateSource, render
from service.submission import Accepted, prepare, suppress

Loc = tuple[str | int, ...]


@dataclass(slots=True, init=False)  # a value, not frozen: see service/native.py
class Planned:
    """A validated request: the draft and when and how to deliver it."""

    draft: envelope.Draft
    send_at: float | None
    expires_at: float | None
    priority: int

    def __init__(
        self,
        draft: envelope.Draft,
        send_at: float | None,
        expires_at: float | None,
        priority: int,
    ) -> None:
        self.draft = draft
        self.send_at = send_at
        self.expires_at = expires_at
        self.priority = priority


@dataclass(slots=True)
class Context:
    """What checking requests of one tenant needs, loaded once per HTTP request."""

    tenant_id: str
    now: float
    limits: envelope.Limits
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)


async def load_context(
    rt: Runtime, tenant_id: str, bodies: Sequence[SendRequest], now: float
) -> Context:
    refs = [b.template for b in bodies if b.template]
    found = await template_store.get_many(rt.db, tenant_id=tenant_id, refs=refs)
    return Context(tenant_id, now, rt.limits, found)


def schedule_errors(
    send_at: float | None, expires_at: float | None, now: float, loc: Loc = ()
) -> list[FieldError]:
    errors: list[FieldError] = []
    if expires_at is not None:
        if expires_at <= now:
            errors.append(FieldError((*loc, "expires_at"), "must be in the future"))
        elif send_at is not None and expires_at <= send_at:
            errors.append(FieldError((*loc, "expires_at"), "must be after send_at"))
    return errors


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.astimezone(UTC).timestamp()


def plan(body: SendRequest, ctx: Context, loc: Loc = ()) -> Planned:
    """Check one request completely; raises ``InvalidRequest`` listing every problem."""
    send_at, expires_at = _ts(body.send_at), _ts(body.expires_at)
    errors = schedule_errors(send_at, expires_at, ctx.now, loc)
    subject, text, html = body.subject, body.text, body.html
    if body.template is not None:
        for name in ("subject", "text", "html"):
            if getattr(body, name) is not None:
                errors.append(FieldError((*loc, name), "the template supplies this field"))
        tpl = ctx.templates.get(body.template)
        if tpl is None or errors:
            text = ""  # the body's problem is already named; still check the rest
        if tpl is None:
            errors.append(FieldError((*loc, "template"), "no such template"))
        elif not errors:
            try:
                out = render(
                    TemplateSource(tpl["subject"], tpl["text"], tpl["html"]), body.variables, loc
                )
            except InvalidRequest as exc:
                errors.extend(exc.errors)
                text = ""  # the body's problem is already named; still check the rest
            else:
                subject, text, html = out.subject, out.text, out.html
    else:
        if body.variables:
            errors.append(FieldError((*loc, "variables"), "variables need a template"))
        if subject is None:
            errors.append(FieldError((*loc, "subject"), "required without a template"))
    try:
        draft = _compose(body, subject or "", text, html, ctx.limits)
    except InvalidRequest as exc:
        known = {e.loc for e in errors}
        errors.extend(
            FieldError((*loc, *e.loc), e.msg) for e in exc.errors if (*loc, *e.loc) not in known
        )
        raise InvalidRequest(errors) from None
    if errors:
        raise InvalidRequest(errors)
    return Planned(draft, send_at, expires_at, PRIORITY_VALUE[body.priority])


def _compose(
    body: SendRequest, subject: str, text: str | None, html: str | None, limits: envelope.Limits
) -> envelope.Draft:
    reply_to = [body.reply_to] if isinstance(body.reply_to, str) else body.reply_to
    return envelope.compose(
        sender=body.from_,
        to=body.to,
        cc=body.cc,
        bcc=body.bcc,
        reply_to=reply_to,
        subject=subject,
        text=text,
        html=html,
        headers=body.headers,
        attachments=[
            envelope.AttachmentIn(a.filename, a.content, a.content_type, a.content_id)
            for a in body.attachments
        ],
        tags=body.tags,
        metadata=body.metadata,
        limits=limits,
    )


def rows_for(rt: Runtime, planned: Planned, ctx: Context) -> tuple[NewMessage, Accepted]:
    return prepare(
        planned.draft,
        tenant_id=ctx.tenant_id,
        now=ctx.now,
        policy=rt.policy,
        message_id_domain=rt.settings.message_id_domain,
        send_at=planned.send_at,
        expires_at=planned.expires_at,
        priority=planned.priority,
    )


async def apply_suppressions(
    rt: Runtime, tenant_id: str, built: list[tuple[NewMessage, Accepted]]
) -> list[tuple[NewMessage, Accepted]]:
    """One SELECT for every recipient of the request; suppressed ones end at once."""
    emails = {r["email"] for item, _ in built for r in item.recipients}
    hit = await suppressions.suppressed_among(rt.db, tenant_id, emails)
    if not hit:
        return built
    return [(item, suppress(item, acc, hit)) for item, acc in built]


async def accept_one(
    rt: Runtime, body: SendRequest, *, tenant_id: str, now: float
) -> tuple[NewMessage, Accepted]:
    """The rows of one send request (checked, rendered), suppressions not yet applied: the
    caller hands them to the group commit with ``submission.suppress_later``."""
    ctx = await load_context(rt, tenant_id, [body], now)
    return rows_for(rt, plan(body, ctx), ctx)


def now_utc(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC)
