"""The SMTP transport: pooled, TLS-enforcing, per-recipient results, never raising.

Usage::

    transport = SmtpTransport(SmtpTarget.parse(url), SmtpTimeouts())
    result = await transport.send(Outgoing(mail_from, recipients, data))
    await transport.aclose()

Up to ``pool_size`` sessions run at once; a session is reused for the next transaction
(with PIPELINING where the upstream offers it, see ``smtp_transaction``). A session
that broke, or sat idle longer than ``idle_timeout``, is closed instead of reused.

With PIPELINING a session goes back to the pool as soon as a message's body is written:
the next transaction then follows the final dot in the same write, while the send before
it waits for the dot's reply. ``Outgoing.on_handoff`` tells the caller when that happens,
so that it can start its next send (a session is busy again at once, instead of idle for
a round trip per message).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable

from service.delivery.slots import ReleaseOnce
from service.delivery.smtp_reply import local_reply
from service.delivery.smtp_session import (
    Offers,
    Session,
    SessionError,
    build_tls_context,
    open_session,
)
from service.delivery.smtp_transaction import Envelope, Progress, SessionBroken, run_transactions
from service.delivery.smtp_url import SmtpTarget, SmtpTimeouts, TlsMode
from service.delivery.transport import Outcome, Outgoing, SendResult, Stage

log = logging.getLogger(__name__)


class SmtpTransport:
    def __init__(
        self,
        target: SmtpTarget,
        timeouts: SmtpTimeouts | None = None,
        *,
        pool_size: int = 10,
        local_hostname: str = "kirim.localhost",
        max_rcpt_per_transaction: int = 100,
        tls_context: ssl.SSLContext | None = None,
        idle_timeout: float = 60.0,
        handoff: bool = True,
    ) -> None:
        """``handoff=False`` keeps each session until its dot's reply (for comparison)."""
        if pool_size < 1 or max_rcpt_per_transaction < 1:
            raise ValueError("pool_size and max_rcpt_per_transaction must be at least 1")
        self.target = target
        self.timeouts = timeouts or SmtpTimeouts()
        self.local_hostname = local_hostname
        self.max_rcpt = max_rcpt_per_transaction
        self.idle_timeout = idle_timeout
        self._handoff_on = handoff
        self._tls_context = tls_context or build_tls_context(target.verify)
        self._slots = asyncio.Semaphore(pool_size)
        self._idle: deque[Session] = deque()
        self._closed = False
        self.connections_opened = 0

    async def send(self, job: Outgoing) -> SendResult:
        if self._closed:
            raise RuntimeError("SmtpTransport is closed")
        started = time.monotonic()
        progress = Progress(job)
        recipients = list(dict.fromkeys(job.recipients))
        extra: dict[str, str] = {}
        if recipients:
            await self._slots.acquire()
            slot = ReleaseOnce(self._slots)
            try:
                await self._deliver(progress, recipients, extra, slot, job.on_handoff)
            finally:
                slot.release()
        results = tuple(progress.results[r] for r in recipients)
        return SendResult(results, time.monotonic() - started, progress.reached, extra)

    async def aclose(self) -> None:
        """Close idle sessions; sessions in use are closed when their send finishes."""
        self._closed = True
        idle = list(self._idle)
        self._idle.clear()
        await asyncio.gather(*(s.close() for s in idle), return_exceptions=True)

    async def _deliver(
        self,
        progress: Progress,
        recipients: list[str],
        extra: dict[str, str],
        slot: ReleaseOnce,
        on_handoff: Callable[[], None] | None,
    ) -> None:
        force_new = False
        while True:
            try:
                session, reused = await self._checkout(force_new)
            except SessionError as unopened:  # not ``exc``: compiled, one name has one type
                progress.reach(unopened.stage)
                progress.decide(recipients, Outcome.TEMPORARY, unopened.stage, unopened.reply)
                return
            progress.reach(self._setup_stage())
            extra["connection"] = "reused" if reused else "new"
            if session.tls_version:
                extra["tls"] = session.tls_version
            try:
                handoff = self._handoff(session, slot, on_handoff)
                await self._send_on(session, progress, recipients, reused, handoff)
            except SessionBroken as exc:
                await session.close(quit_timeout=0)
                if exc.no_reply_at_first_mail and reused and not progress.results:
                    log.info("reused SMTP connection was stale; retrying on a new one")
                    force_new = True
                    continue
                progress.reach(exc.stage)
                progress.decide(recipients, Outcome.TEMPORARY, exc.stage, exc.reply)
                return
            except BaseException:
                # Unexpected errors and cancellation: never put a session in an
                # unknown state back into the pool.
                session.wire.close()
                raise
            if not slot.released:  # else the handoff checked it in already
                self._checkin(session)
            return

    def _handoff(
        self,
        session: Session,
        slot: ReleaseOnce,
        on_handoff: Callable[[], None] | None,
    ) -> Callable[[], None]:
        """Back to the pool while this send waits for its dot's reply (see the module)."""

        def handoff() -> None:
            if not slot.released:
                self._checkin(session)
                slot.release()
                if on_handoff is not None:
                    on_handoff()

        return handoff

    async def _send_on(
        self,
        session: Session,
        progress: Progress,
        recipients: list[str],
        reused: bool,
        handoff: Callable[[], None],
    ) -> None:
        envelope = self._envelope(session.offers, progress, recipients)
        pending = progress.undecided(recipients)
        if pending and envelope is not None:
            await run_transactions(
                session.wire,
                progress,
                pending,
                envelope,
                self.timeouts,
                self.max_rcpt,
                reused=reused,
                handoff=handoff if envelope.pipelining and self._handoff_on else None,
            )
            session.transactions += 1

    def _envelope(
        self, offers: Offers, progress: Progress, recipients: list[str]
    ) -> Envelope | None:
        """MAIL parameters; decides locally what the upstream cannot take (RFC 6531, 1870)."""
        job = progress.job
        options: list[str] = []
        non_ascii = [r for r in recipients if not r.isascii()]
        needs_utf8 = job.smtputf8 or not job.mail_from.isascii()
        if offers.smtputf8:
            if needs_utf8 or non_ascii:
                options.append("SMTPUTF8")
        elif needs_utf8 or non_ascii:
            reply = local_reply(
                "message needs SMTPUTF8 (RFC 6531) but the upstream does not offer it", "5.6.7"
            )
            progress.decide(
                recipients if needs_utf8 else non_ascii, Outcome.PERMANENT, Stage.MAIL, reply
            )
            if needs_utf8:
                return None
        if job.eight_bit and offers.eight_bit_mime:
            options.append("BODY=8BITMIME")
        if offers.size:
            limit = offers.size_limit
            if limit and len(job.data) > limit:
                reply = local_reply(
                    f"message size {len(job.data)} exceeds the upstream limit {limit}", "5.3.4"
                )
                progress.decide(recipients, Outcome.PERMANENT, Stage.MAIL, reply)
                return None
            options.append(f"SIZE={len(job.data)}")
        encoding = "utf-8" if "SMTPUTF8" in options else "ascii"
        return Envelope(tuple(options), encoding, offers.pipelining)

    async def _checkout(self, force_new: bool) -> tuple[Session, bool]:
        now = time.monotonic()
        while self._idle and not force_new:
            session = self._idle.pop()
            if session.connected and now - session.last_used < self.idle_timeout:
                return session, True
            await session.close(quit_timeout=0 if not session.connected else 1.0)
        session = await open_session(
            self.target,
            self.timeouts,
            local_hostname=self.local_hostname,
            tls_context=self._tls_context,
        )
        self.connections_opened += 1
        return session, False

    def _checkin(self, session: Session) -> None:
        session.last_used = time.monotonic()
        if self._closed or not session.connected:
            session.wire.close()
            return
        self._idle.append(session)

    def _setup_stage(self) -> Stage:
        if self.target.has_credentials:
            return Stage.AUTH
        if self.target.tls is TlsMode.NONE:
            return Stage.HELO
        return Stage.TLS
