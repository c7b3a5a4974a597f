"""From raw report bytes to a decision: parse -> match -> apply.

Matching tries the signed return-path token first (it names one recipient exactly), then
the original Message-ID through a lookup supplied by the integrator. ``apply`` is the
integrator's transaction (record events, suppress addresses); it must be idempotent on
``report.report_message_id`` because a crash between ``apply`` and the mailbox's
``done`` delivers the same report again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from service.bounces.mailbox import Mailbox, MailboxError
from service.bounces.parse import BounceReport, ReportKind, parse_report
from service.bounces.return_path import parse_return_path

log = logging.getLogger(__name__)


class Decision(StrEnum):
    DONE = "done"
    UNMATCHED = "unmatched"
    UNPARSEABLE = "unparseable"


@dataclass(frozen=True)
class Match:
    message_id: str
    recipient_id: str
    via: Literal["token", "message_id"]


@dataclass(frozen=True)
class Outcome:
    decision: Decision
    report: BounceReport
    matches: tuple[Match, ...] = ()


# (original RFC 5322 Message-ID, failed recipient addresses) -> our recipients
LookupFn = Callable[[str, Sequence[str]], Awaitable[Sequence[Match]]]
ApplyFn = Callable[[BounceReport, Sequence[Match]], Awaitable[None]]


def match_tokens(
    addresses: Iterable[str], base: str, secrets: Sequence[bytes]
) -> tuple[Match, ...]:
    """Matches for every address carrying a genuine token (any of the secrets)."""
    found: list[Match] = []
    for address in addresses:
        for secret in secrets:
            ids = parse_return_path(address, base, secret)
            if ids is not None:
                match = Match(ids[0], ids[1], "token")
                if match not in found:
                    found.append(match)
                break
    return tuple(found)


async def process_item(
    raw: bytes,
    *,
    apply: ApplyFn,
    base: str,
    secrets: Sequence[bytes],
    lookup: LookupFn | None = None,
    envelope_rcpts: Sequence[str] = (),
) -> Outcome:
    """Parse, match and apply one report. Exceptions from ``apply`` propagate."""
    report = parse_report(raw)
    if report.kind is ReportKind.UNKNOWN and not report.recipients:
        return Outcome(Decision.UNPARSEABLE, report)
    matches = match_tokens([*envelope_rcpts, *report.envelope_addresses], base, secrets)
    if not matches and lookup is not None and report.original_message_id:
        addresses = [r.address for r in report.recipients]
        matches = tuple(await lookup(report.original_message_id, addresses))
    if not matches:
        return Outcome(Decision.UNMATCHED, report)
    await apply(report, matches)
    return Outcome(Decision.DONE, report, matches)


@dataclass
class BounceProcessor:
    """Drains mailboxes through ``process_item`` and counts decisions."""

    apply: ApplyFn
    base: str
    secrets: Sequence[bytes]
    lookup: LookupFn | None = None
    counts: Counter[str] = field(default_factory=Counter)

    async def process(self, raw: bytes, envelope_rcpts: Sequence[str] = ()) -> Outcome:
        outcome = await process_item(
            raw,
            apply=self.apply,
            base=self.base,
            secrets=self.secrets,
            lookup=self.lookup,
            envelope_rcpts=envelope_rcpts,
        )
        self.counts[outcome.decision.value] += 1
        return outcome

    async def drain(self, mailbox: Mailbox) -> list[Outcome]:
        """Process one batch. A failing ``apply`` leaves its item for the next poll."""
        outcomes = []
        for item in await mailbox.fetch():
            try:
                outcome = await self.process(item.raw)
            except Exception:
                self.counts["error"] += 1
                log.exception("bounce report %s not applied; will retry", item.handle)
                continue
            if outcome.decision is Decision.DONE:
                await mailbox.done(item)
            else:
                log.warning(
                    "bounce report %s is %s; set aside",
                    outcome.report.report_message_id or item.handle,
                    outcome.decision.value,
                )
                await mailbox.set_aside(item)
            outcomes.append(outcome)
        return outcomes

    async def poll(self, mailbox: Mailbox, interval: float, stop: asyncio.Event) -> None:
        """Drain every ``interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            try:
                await self.drain(mailbox)
            except MailboxError as exc:
                self.counts["mailbox_error"] += 1
                log.warning("bounce mailbox poll failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
