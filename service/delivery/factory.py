"""Building the delivery side of a process from settings."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from service.db.engine import Database
from service.delivery.smtp_url import SmtpTimeouts
from service.delivery.transport import Transport
from service.delivery.worker import Worker, WorkerOptions
from service.domain.retry import RetryPolicy
from service.settings import Settings


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        min_delay=settings.retry_min_delay,
        max_delay=settings.retry_max_delay,
        lifetime=settings.queue_lifetime,
    )


def smtp_transport(settings: Settings) -> Transport:
    from service.delivery.smtp import SmtpTransport
    from service.delivery.smtp_url import SmtpTarget

    target = SmtpTarget.parse(settings.smtp_url.get_secret_value())
    timeouts = smtp_timeouts(settings)
    return SmtpTransport(
        target,
        timeouts,
        pool_size=settings.smtp_pool_size,
        local_hostname=settings.smtp_local_hostname,
        max_rcpt_per_transaction=settings.smtp_max_recipients,
    )


def smtp_timeouts(settings: Settings) -> SmtpTimeouts:
    """The per-phase RFC 5321 timeouts from settings, times the test scale factor."""
    return SmtpTimeouts(
        connect=settings.smtp_timeout_connect,
        greeting=settings.smtp_timeout_greeting,
        command=settings.smtp_timeout_command,
        mail=settings.smtp_timeout_mail,
        rcpt=settings.smtp_timeout_rcpt,
        data=settings.smtp_timeout_data,
        data_block=settings.smtp_timeout_data_block,
        final_dot=settings.smtp_timeout_final_dot,
    ).scaled(settings.smtp_timeout_scale)


def build_worker(
    settings: Settings,
    db: Database,
    transport: Transport,
    *,
    gate: Callable[[], Awaitable[float]] | None = None,
) -> Worker:
    """The delivery worker of a process; with ``gate``, a helper that claims only when the
    gate allows and leaves reaping expired leases to the full workers."""
    return Worker(
        db,
        transport,
        policy=retry_policy(settings),
        gate=gate,
        options=WorkerOptions(
            lease_seconds=settings.lease_seconds,
            batch_size=settings.worker_batch_size,
            body_budget=settings.worker_body_budget_bytes,
            poll_interval=settings.worker_poll_interval,
            shutdown_grace=settings.shutdown_grace,
            concurrency=settings.smtp_pool_size,
            fault_injection=settings.fault_injection,
            return_path=settings.return_path,
            return_path_secret=(settings.return_path_secrets or [b""])[0],
            reap_leases=gate is None,
        ),
    )
