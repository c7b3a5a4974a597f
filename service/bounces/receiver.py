"""Optional inbound SMTP receiver for bounce reports (an aiosmtpd handler).

Point the bounce domain's MX (or a relay's transport) at it. Each message is handed to
``on_report(raw, rcpt_tos)``; True answers 250, False or an exception answers 451 so the
sending MTA keeps the report and retries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from aiosmtpd.smtp import SMTP, Envelope, Session

log = logging.getLogger(__name__)

OnReport = Callable[[bytes, list[str]], Awaitable[bool]]


class BounceReceiver:
    def __init__(self, on_report: OnReport, accept_domains: Sequence[str] = ()) -> None:
        self._on_report = on_report
        self._domains = {d.lower().rstrip(".") for d in accept_domains}

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        domain = address.rpartition("@")[2].lower().rstrip(".")
        if self._domains and domain not in self._domains:
            return "550 5.1.2 Not a bounce address here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        data = raw if isinstance(raw, bytes) else raw.encode()
        try:
            accepted = await self._on_report(data, list(envelope.rcpt_tos))
        except Exception:
            log.exception("bounce report handler failed")
            accepted = False
        if accepted:
            return "250 2.0.0 Report accepted"
        return "451 4.3.0 Report not processed, try again later"


async def serve_receiver(
    on_report: OnReport,
    *,
    host: str = "127.0.0.1",
    port: int = 2526,
    accept_domains: Sequence[str] = (),
    data_size_limit: int = 10 * 1024 * 1024,
    server_hostname: str | None = None,
) -> asyncio.Server:
    """Listen in the running event loop, so ``on_report`` shares it (and its DB engine).

    The caller stops it with ``server.close(); await server.wait_closed()``.
    """
    handler = BounceReceiver(on_report, accept_domains)
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: SMTP(
            handler,
            data_size_limit=data_size_limit,
            decode_data=False,
            hostname=server_hostname,
        ),
        host=host,
        port=port,
    )
