"""Wiring bounce handling into Kirim's processes: the mailbox poller and the receiver."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Sequence

from service.bounces.apply import BounceStore
from service.bounces.mailbox import Mailbox, open_mailbox
from service.bounces.pipeline import BounceProcessor, Decision
from service.bounces.receiver import serve_receiver
from service.db.engine import Database
from service.settings import Settings

log = logging.getLogger("kirim.bounces")


def build_processor(settings: Settings, db: Database) -> BounceProcessor:
    store = BounceStore(db)
    # Without a return path no token was ever minted: match by the original Message-ID.
    return BounceProcessor(
        apply=store.apply,
        base=settings.return_path,
        secrets=settings.return_path_secrets if settings.return_path else [],
        lookup=store.lookup,
    )


def mailbox_enabled(settings: Settings) -> bool:
    return bool(settings.bounce_mailbox_url.get_secret_value())


def open_bounce_mailbox(
    settings: Settings, *, ssl_context: ssl.SSLContext | None = None
) -> Mailbox:
    """The configured mailbox; a malformed URL raises MailboxError (never echoing it)."""
    return open_mailbox(
        settings.bounce_mailbox_url.get_secret_value(),
        ssl_context=ssl_context,
        processed_folder=settings.bounce_processed_folder,
        unmatched_folder=settings.bounce_unmatched_folder,
    )


async def run_poller(
    settings: Settings,
    db: Database,
    stop: asyncio.Event,
    *,
    mailbox: Mailbox | None = None,
    processor: BounceProcessor | None = None,
) -> None:
    """Poll the bounce mailbox until ``stop``; returns at once when none is configured."""
    if not mailbox_enabled(settings):
        return
    processor = processor or build_processor(settings, db)
    mailbox = mailbox or open_bounce_mailbox(settings)
    log.info("polling bounce mailbox %r every %ss", mailbox, settings.bounce_poll_interval)
    try:
        await processor.poll(mailbox, settings.bounce_poll_interval, stop)
    finally:
        with contextlib.suppress(Exception):
            await mailbox.close()
        log.info("bounce mailbox poller stopped: %s", dict(processor.counts))


def start_poller(
    settings: Settings, db: Database, stop: asyncio.Event
) -> asyncio.Task[None] | None:
    """The poller as a task of the running loop, or None when no mailbox is configured.

    The URL is checked here, so a bad one stops the process at startup, not later.
    """
    if not mailbox_enabled(settings):
        return None
    mailbox = open_bounce_mailbox(settings)
    return asyncio.create_task(
        run_poller(settings, db, stop, mailbox=mailbox), name="bounce-poller"
    )


async def start_receiver(
    settings: Settings,
    db: Database,
    *,
    host: str,
    port: int,
    accept_domains: Sequence[str] = (),
    processor: BounceProcessor | None = None,
) -> asyncio.Server:
    """The inbound SMTP receiver; a report is answered 250 only after it is committed.

    Unmatched and unparseable reports are accepted (and counted): the sending MTA retrying
    them would not make them match.
    """
    proc = processor or build_processor(settings, db)
    if not accept_domains and settings.return_path:
        accept_domains = [settings.return_path.rpartition("@")[2]]

    async def on_report(raw: bytes, rcpt_tos: list[str]) -> bool:
        outcome = await proc.process(raw, rcpt_tos)
        if outcome.decision is not Decision.DONE:
            log.warning(
                "bounce report %s was %s", outcome.report.report_message_id, outcome.decision
            )
        return True

    return await serve_receiver(on_report, host=host, port=port, accept_domains=accept_domains)
