"""parse -> match -> apply -> decision, over a real Dovecot mailbox."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence

import pytest

from service.bounces.mailbox import ImapMailbox, open_mailbox
from service.bounces.parse import BounceReport, ReportKind
from service.bounces.pipeline import BounceProcessor, Decision, Match, process_item
from tests.bounces.conftest import (
    BASE,
    MESSAGE_ID,
    ORIGINAL_MESSAGE_ID,
    RECIPIENT_ID,
    SECRET,
    fixture_bytes,
)
from tests.bounces.servers import Dovecot

TOKEN_MATCH = Match(MESSAGE_ID, RECIPIENT_ID, "token")
OTHER_SECRET = b"rotated-out-secret"


def _without_token(raw: bytes) -> bytes:
    """The same report, but the MTA stripped every trace of our return path."""
    lines = [
        line
        for line in raw.split(b"\n")
        if b"bounces+" not in line or line.lower().startswith(b"message-id")
    ]
    return b"\n".join(lines)


class Recorder:
    def __init__(self, fail_times: int = 0) -> None:
        self.applied: list[tuple[BounceReport, tuple[Match, ...]]] = []
        self.fail_times = fail_times
        self.lookups: list[tuple[str, tuple[str, ...]]] = []

    async def apply(self, report: BounceReport, matches: Sequence[Match]) -> None:
        if self.fail_times:
            self.fail_times -= 1
            raise RuntimeError("database unavailable")
        self.applied.append((report, tuple(matches)))

    async def lookup(self, message_id: str, addresses: Sequence[str]) -> Sequence[Match]:
        self.lookups.append((message_id, tuple(addresses)))
        if message_id == ORIGINAL_MESSAGE_ID:
            return [Match(MESSAGE_ID, RECIPIENT_ID, "message_id")]
        return []


@pytest.mark.parametrize(
    "name", ["postfix_dsn.eml", "arf_complaint.eml", "qmail.eml", "exim.eml", "gmail.eml"]
)
async def test_token_match(name: str) -> None:
    recorder = Recorder()
    outcome = await process_item(
        fixture_bytes(name), apply=recorder.apply, base=BASE, secrets=[SECRET]
    )
    assert outcome.decision is Decision.DONE
    assert outcome.matches == (TOKEN_MATCH,)
    assert recorder.applied == [(outcome.report, (TOKEN_MATCH,))]


async def test_old_secret_still_matches_during_rotation() -> None:
    recorder = Recorder()
    outcome = await process_item(
        fixture_bytes("qmail.eml"), apply=recorder.apply, base=BASE, secrets=[OTHER_SECRET, SECRET]
    )
    assert outcome.matches == (TOKEN_MATCH,)


async def test_message_id_fallback_and_unmatched() -> None:
    recorder = Recorder()
    raw = _without_token(fixture_bytes("postfix_dsn.eml"))
    outcome = await process_item(
        raw, apply=recorder.apply, base=BASE, secrets=[SECRET], lookup=recorder.lookup
    )
    assert outcome.decision is Decision.DONE
    assert outcome.matches == (Match(MESSAGE_ID, RECIPIENT_ID, "message_id"),)
    assert recorder.lookups == [(ORIGINAL_MESSAGE_ID, ("nosuchuser@remote.kirim.test",))]

    # gmail's bounce quotes no original Message-ID: without the token nothing matches.
    outcome = await process_item(
        _without_token(fixture_bytes("gmail.eml")),
        apply=recorder.apply,
        base=BASE,
        secrets=[SECRET],
        lookup=recorder.lookup,
    )
    assert outcome.decision is Decision.UNMATCHED
    assert len(recorder.applied) == 1


async def test_forged_and_foreign_tokens_do_not_match() -> None:
    recorder = Recorder()
    for secrets in ([OTHER_SECRET], []):
        outcome = await process_item(
            fixture_bytes("exim.eml"), apply=recorder.apply, base=BASE, secrets=secrets
        )
        assert outcome.decision is Decision.UNMATCHED
    outcome = await process_item(
        fixture_bytes("exim.eml"),
        apply=recorder.apply,
        base=BASE,
        secrets=[SECRET],
        envelope_rcpts=["bounces+aaaaaaaaaaaaaaaaaaaaaaaa@mail.example.com"],
    )
    assert outcome.matches == (TOKEN_MATCH,)  # the genuine one in the headers still counts
    assert recorder.applied and recorder.lookups == []


async def test_unparseable() -> None:
    recorder = Recorder()
    outcome = await process_item(
        fixture_bytes("autoreply.eml"), apply=recorder.apply, base=BASE, secrets=[SECRET]
    )
    assert outcome.decision is Decision.UNPARSEABLE
    assert outcome.report.kind is ReportKind.UNKNOWN
    assert recorder.applied == []


@pytest.mark.slow
@pytest.mark.parametrize(("scheme", "query"), [("imap", "?tls=none"), ("pop3s", "")])
async def test_drain_mailbox_with_crash_between_apply_and_done(
    dovecot: Dovecot, client_tls: ssl.SSLContext, scheme: str, query: str
) -> None:
    for name in ("postfix_dsn.eml", "autoreply.eml", "dsn_delayed.eml"):
        dovecot.deliver(fixture_bytes(name))
    dovecot.deliver(_without_token(fixture_bytes("gmail.eml")))
    recorder = Recorder(fail_times=1)  # the first apply fails (e.g. database down)
    processor = BounceProcessor(apply=recorder.apply, base=BASE, secrets=[SECRET])
    mailbox = open_mailbox(dovecot.url(scheme, query), ssl_context=client_tls)
    try:
        first = await processor.drain(mailbox)
        assert processor.counts == {"error": 1, "done": 1, "unparseable": 1, "unmatched": 1}
        assert len(first) == 3
        second = await processor.drain(mailbox)  # the failed one comes back
        assert [o.decision for o in second] == [Decision.DONE]
        assert await processor.drain(mailbox) == []
    finally:
        await mailbox.close()
    assert processor.counts == {"error": 1, "done": 2, "unparseable": 1, "unmatched": 1}
    applied_ids = sorted(r.report_message_id or "" for r, _ in recorder.applied)
    assert applied_ids == sorted(
        [
            "<20261128013715.C75CA20C512@relay.kirim.test>",
            "<20241112100000.4XyZ1q2w3e@relay.example.net>",
        ]
    )


@pytest.mark.slow
async def test_report_seen_again_after_crash_before_done_exposes_same_id(
    dovecot: Dovecot, client_tls: ssl.SSLContext
) -> None:
    dovecot.deliver(fixture_bytes("arf_complaint.eml"))
    seen: list[str | None] = []

    async def apply(report: BounceReport, matches: Sequence[Match]) -> None:
        seen.append(report.report_message_id)

    processor = BounceProcessor(apply=apply, base=BASE, secrets=[SECRET])
    crashed = open_mailbox(dovecot.url("imaps"), ssl_context=client_tls)
    [item] = await crashed.fetch()
    await processor.process(item.raw)  # applied, then the process "dies" before done()
    await crashed.close()

    mailbox = open_mailbox(dovecot.url("imaps"), ssl_context=client_tls)
    try:
        await processor.drain(mailbox)
    finally:
        await mailbox.close()
    assert seen == ["<arf-20241113-0001@isp.example.net>"] * 2  # the integrator dedupes on it
    assert dovecot.messages() == [] and len(dovecot.messages("Processed")) == 1


@pytest.mark.slow
async def test_imap_without_move_uses_copy_and_expunge(
    dovecot: Dovecot, client_tls: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = ImapMailbox._connect

    def connect_without_move(self: ImapMailbox):  # type: ignore[no-untyped-def]
        conn = original(self)
        conn.capabilities = tuple(c for c in conn.capabilities if c != "MOVE")
        return conn

    monkeypatch.setattr(ImapMailbox, "_connect", connect_without_move)
    dovecot.deliver(fixture_bytes("qmail.eml"))
    dovecot.deliver(fixture_bytes("exim.eml"))
    mailbox = open_mailbox(dovecot.url("imap", "?tls=none"), ssl_context=client_tls)
    try:
        first, second = await mailbox.fetch()
        await mailbox.done(first)
        await mailbox.set_aside(second)
        assert await mailbox.fetch() == []
    finally:
        await mailbox.close()
    assert len(dovecot.messages("Processed")) == 1
    assert len(dovecot.messages("Unmatched")) == 1
    assert dovecot.messages() == []


@pytest.mark.slow
async def test_poll_loop_stops(dovecot: Dovecot, client_tls: ssl.SSLContext) -> None:
    recorder = Recorder()
    processor = BounceProcessor(apply=recorder.apply, base=BASE, secrets=[SECRET])
    mailbox = open_mailbox(dovecot.url("imaps"), ssl_context=client_tls)
    stop = asyncio.Event()
    task = asyncio.create_task(processor.poll(mailbox, interval=0.1, stop=stop))
    try:
        await asyncio.sleep(0.3)
        dovecot.deliver(fixture_bytes("qmail.eml"))
        for _ in range(100):
            if recorder.applied:
                break
            await asyncio.sleep(0.05)
        assert len(recorder.applied) == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)
        await mailbox.close()
