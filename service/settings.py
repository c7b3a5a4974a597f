"""Service settings, read from ``KIRIM_*`` environment variables.

Settings are built once by the entry point (CLI) and passed down; nothing reads the
environment at import time.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KIRIM_", extra="ignore")

    database_url: SecretStr = Field(
        default=SecretStr("sqlite:///./kirim.db"),
        description="Database URL: sqlite:///path.db (default) or postgresql://user:pass@host/db.",
    )
    smtp_url: SecretStr = Field(
        default=SecretStr("smtp://127.0.0.1:25?tls=none"),
        description=(
            "Upstream relay: smtp://[user:pass@]host:port?tls=none|starttls|opportunistic"
            "|implicit&verify=true|false, or smtps://host:465 for implicit TLS."
        ),
    )
    retry_min_delay: float = Field(
        default=300.0, gt=0, description="First retry delay after a temporary failure (s)."
    )
    retry_max_delay: float = Field(
        default=4000.0, gt=0, description="Longest delay between two attempts (s)."
    )
    queue_lifetime: float = Field(
        default=5 * 24 * 3600.0,
        gt=0,
        description="How long a recipient is retried before it fails as expired (s).",
    )
    lease_seconds: float = Field(
        default=900.0,
        gt=0,
        description=(
            "How long a worker owns claimed recipients before they return to the queue (s)."
        ),
    )
    smtp_pool_size: int = Field(
        default=16, ge=1, le=1000, description="Concurrent SMTP connections per worker process."
    )
    smtp_local_hostname: str = Field(default="kirim.localhost", description="Name sent in EHLO.")
    smtp_max_recipients: int = Field(
        default=100, ge=1, le=1000, description="Most RCPT commands in one SMTP transaction."
    )
    smtp_timeout_scale: float = Field(
        default=1.0,
        gt=0,
        description="Multiplies every RFC 5321 SMTP phase timeout (tests scale it down).",
    )
    worker_batch_size: int = Field(
        default=1024,
        ge=1,
        le=10000,
        description=(
            "Most recipients a worker claims at once. It claims about a quarter second"
            " of its recent sending (at least 256), so other tenants' new mail waits little."
        ),
    )
    worker_body_budget_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024 * 1024,
        description=(
            "Most message bytes a worker holds in memory for the mail it claimed; a claim"
            " whose bodies are larger is loaded and sent in parts."
        ),
    )
    worker_poll_interval: float = Field(
        default=1.0,
        gt=0,
        description="Fallback poll interval of an idle worker when no wake-up arrives (s).",
    )
    serve_worker_processes: int = Field(
        default=1,
        ge=0,
        le=64,
        description=(
            "Delivery worker processes `kirim serve` starts beside its API process, so API and"
            " delivery each use a core; 0 delivers inside the API process."
        ),
    )
    serve_idle_delivery: bool = Field(
        default=True,
        description=(
            "`kirim serve` with delivery processes: its API process delivers too while it"
            " serves no request and accepted mail waits unclaimed (after a burst of batches)."
        ),
    )
    message_id_domain: str = Field(
        default="kirim.localhost", description="Domain part of generated Message-ID headers."
    )
    max_body_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=1024,
        description="Largest accepted request body in bytes (413 above it).",
    )
    max_recipients: int = Field(
        default=50,
        ge=1,
        le=1000,
        description="Most recipients (to+cc+bcc) in one message; at most 1000.",
    )
    max_attachment_bytes: int = Field(
        default=7 * 1024 * 1024,
        ge=0,
        description="Largest total decoded size of a message's attachments in bytes.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level."
    )
    fault_injection: str = Field(
        default="",
        description=(
            "TESTING ONLY: name of a crash point (e.g. after_smtp_before_settle) at which the "
            "process kills itself. Never set in production."
        ),
    )
    webhook_retry_delays: str = Field(
        default="5,300,1800,7200,18000,36000,36000",
        description=(
            "Seconds between webhook attempts after the immediate first one, comma-separated "
            "(each gets +-20% jitter); a delivery fails after the last."
        ),
    )
    webhook_allowed_networks: str = Field(
        default="",
        description=(
            "CIDRs (comma-separated) that webhooks may reach although private or loopback, "
            "e.g. 10.0.0.0/8 or 127.0.0.0/8; empty allows public addresses only."
        ),
    )
    webhook_timeout: float = Field(
        default=15.0, gt=0, le=300, description="Total time allowed for one webhook attempt (s)."
    )
    webhook_concurrency_per_endpoint: int = Field(
        default=4,
        ge=1,
        le=1000,
        description="Most webhook requests in flight to one endpoint, across all processes.",
    )
    webhook_disable_after: float = Field(
        default=5 * 24 * 3600.0,
        gt=0,
        description="An endpoint that has only failed for this long is disabled (s).",
    )
    webhook_secret_grace: float = Field(
        default=24 * 3600.0,
        ge=0,
        description="After a secret rotation the old secret keeps signing this long (s).",
    )
    webhook_lease_seconds: float = Field(
        default=120.0,
        gt=0,
        description=(
            "How long a process owns a claimed webhook delivery before it is retried by "
            "another (s); keep it above webhook_timeout."
        ),
    )

    smtp_timeout_connect: float = Field(
        default=30.0, gt=0, description="SMTP connect timeout, RFC 5321 §4.5.3.2 (s)."
    )
    smtp_timeout_greeting: float = Field(
        default=300.0, gt=0, description="Wait for the 220 greeting (s)."
    )
    smtp_timeout_command: float = Field(
        default=300.0, gt=0, description="Wait for replies to EHLO, STARTTLS, AUTH, RSET (s)."
    )
    smtp_timeout_mail: float = Field(
        default=300.0, gt=0, description="Wait for the reply to MAIL FROM (s)."
    )
    smtp_timeout_rcpt: float = Field(
        default=300.0, gt=0, description="Wait for the reply to each RCPT TO (s)."
    )
    smtp_timeout_data: float = Field(
        default=120.0, gt=0, description="Wait for the 354 reply to DATA (s)."
    )
    smtp_timeout_data_block: float = Field(
        default=180.0, gt=0, description="Longest wait for one block of the body to be sent (s)."
    )
    smtp_timeout_final_dot: float = Field(
        default=600.0,
        gt=0,
        description=(
            "Wait for the reply after the final dot (s); shorter values cause duplicate "
            "deliveries (RFC 1047). All SMTP timeouts are multiplied by smtp_timeout_scale."
        ),
    )
    shutdown_grace: float = Field(
        default=30.0,
        ge=0,
        description=(
            "On SIGTERM, how long in-flight SMTP sessions may finish before they are cut off "
            "and their recipients returned to the queue (s)."
        ),
    )
    database_busy_timeout_ms: int = Field(
        default=5000,
        ge=0,
        le=600_000,
        description=(
            "SQLite: how long a write waits for a lock before the request answers 503 (ms)."
        ),
    )

    database_pool_size: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="PostgreSQL: connections each process keeps open in its pool.",
    )
    database_max_overflow: int = Field(
        default=10,
        ge=0,
        le=1000,
        description="PostgreSQL: extra connections a process may open under load, beyond the pool.",
    )
    database_statement_timeout_ms: int = Field(
        default=30_000,
        ge=0,
        le=3_600_000,
        description="PostgreSQL: longest a statement may run before it is cancelled (ms; 0 off).",
    )
    database_connect_timeout_ms: int = Field(
        default=10_000,
        ge=100,
        le=600_000,
        description="PostgreSQL: longest wait for a new connection; accepts answer 503 after (ms).",
    )

    idempotency_ttl: float = Field(
        default=24 * 3600.0,
        gt=0,
        description=(
            "How long an Idempotency-Key and its response are kept (s); keep it at least "
            "24 hours in production."
        ),
    )
    api_key_cache_seconds: float = Field(
        default=2.0,
        ge=0,
        le=300,
        description=(
            "How long a process trusts an API key it has looked up before reading it again "
            "(s). Revoking through this process's API takes effect at once; a key revoked "
            "elsewhere (another process, kirim keys revoke) stops working within this time. "
            "0 reads the key on every request."
        ),
    )
    rate_limit_per_key: str = Field(
        default="0",
        description=(
            "Requests per second allowed to one API key, as RATE or RATE,BURST "
            "(e.g. 50,100); 0 turns the limit off."
        ),
    )
    rate_limit_per_tenant: str = Field(
        default="0",
        description=(
            "Requests per second allowed to all keys of one tenant together, as RATE or "
            "RATE,BURST; 0 turns the limit off."
        ),
    )
    batch_max: int = Field(
        default=500,
        ge=1,
        le=10_000,
        description="Most messages in one POST /v1/messages/batch request.",
    )
    batch_concurrency: int = Field(
        default=4,
        ge=0,
        le=1_000,
        description=(
            "Batch requests (POST /v1/messages/batch) an API process reads and accepts at "
            "once; more wait their turn unread, which bounds memory under many concurrent "
            "batches. 0: no limit."
        ),
    )
    max_json_depth: int = Field(
        default=32,
        ge=2,
        le=1000,
        description="Deepest nesting of arrays and objects accepted in a JSON body (400 above).",
    )
    max_attachments: int = Field(
        default=20, ge=0, le=1000, description="Most attachments in one message."
    )
    max_headers: int = Field(
        default=50, ge=0, le=1000, description="Most custom headers in one message."
    )

    log_format: Literal["json", "text"] = Field(
        default="json",
        description="Log lines as JSON objects (default) or text (the default of kirim dev).",
    )
    log_recipients: Literal["hash", "plain"] = Field(
        default="hash",
        description=(
            "Recipient addresses in logs: a short SHA-256 (find one with kirim admin hash) "
            "or the plain address."
        ),
    )
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="kirim worker: serve /metrics on this port (0 off; the API serves /metrics).",
    )
    retain_bodies: float = Field(
        default=7 * 24 * 3600.0,
        ge=0,
        description=(
            "Clear message bodies this long after acceptance, once delivery ended (s; 0 keeps)."
        ),
    )
    retain_attempts: float = Field(
        default=30 * 24 * 3600.0,
        ge=0,
        description=(
            "Delete SMTP attempt records of finished messages after this long (s; 0 keeps)."
        ),
    )
    retain_events: float = Field(
        default=30 * 24 * 3600.0,
        ge=0,
        description="Delete events of finished messages after this long (s; 0 keeps).",
    )
    retain_webhook_deliveries: float = Field(
        default=30 * 24 * 3600.0,
        ge=0,
        description=(
            "Delete finished webhook deliveries and their attempts after this long (s; 0 keeps)."
        ),
    )
    retention_interval: float = Field(
        default=600.0, gt=0, description="How often the worker process runs retention (s)."
    )
    retention_batch_size: int = Field(
        default=500, ge=1, le=100_000, description="Rows changed per retention transaction."
    )
    return_path: str = Field(
        default="",
        description=(
            "Bounce address, e.g. bounces@mail.example.com: MAIL FROM becomes a signed"
            " per-recipient bounces+<token>@… so reports match exactly (empty: the sender)."
        ),
    )
    return_path_secret: SecretStr = Field(
        default=SecretStr(""),
        validate_default=True,
        description=(
            "HMAC key signing return-path tokens; required with return_path. Several,"
            " comma-separated, verify; the first signs (rotation)."
        ),
    )
    bounce_mailbox_url: SecretStr = Field(
        default=SecretStr(""),
        description=(
            "Mailbox the worker reads bounce reports from: imaps://user:pass@host[:993]/INBOX,"
            " imap://…?tls=starttls|none, pop3s://… or pop3://… (empty: off)."
        ),
    )
    bounce_poll_interval: float = Field(
        default=60.0, gt=0, description="How often the worker polls the bounce mailbox (s)."
    )
    bounce_processed_folder: str = Field(
        default="Processed", description="IMAP folder applied bounce reports are moved to."
    )
    bounce_unmatched_folder: str = Field(
        default="Unmatched",
        description="IMAP folder for reports that match no message or cannot be parsed.",
    )

    @field_validator("retry_max_delay")
    @classmethod
    def _max_not_below_min(cls, v: float, info: object) -> float:
        data = getattr(info, "data", {})
        if "retry_min_delay" in data and v < data["retry_min_delay"]:
            raise ValueError("retry_max_delay must not be below retry_min_delay")
        return v

    @field_validator("webhook_retry_delays")
    @classmethod
    def _webhook_delays_parse(cls, v: str) -> str:
        from service.webhooks.schedule import parse_delays

        parse_delays(v)
        return v

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _webhook_networks_parse(cls, v: str) -> str:
        from service.webhooks.ssrf import parse_networks

        parse_networks(v)
        return v

    @field_validator("rate_limit_per_key", "rate_limit_per_tenant")
    @classmethod
    def _rate_parse(cls, v: str) -> str:
        from service.ratelimit import parse_rate

        parse_rate(v)
        return v

    @field_validator("return_path_secret")
    @classmethod
    def _return_path_needs_secret(cls, v: SecretStr, info: object) -> SecretStr:
        data = getattr(info, "data", {})
        base = str(data.get("return_path") or "")
        if not base:
            return v
        from service.bounces.return_path import check_base

        check_base(base)
        if not [s for s in v.get_secret_value().split(",") if s.strip()]:
            raise ValueError("return_path_secret is required when return_path is set")
        return v

    @property
    def return_path_secrets(self) -> list[bytes]:
        """Signing key first, then keys still accepted for tokens minted before a rotation."""
        raw = self.return_path_secret.get_secret_value().split(",")
        return [s.strip().encode() for s in raw if s.strip()]

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.get_secret_value().startswith("sqlite")


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, with explicit overrides on top."""
    return Settings(**overrides)  # type: ignore[arg-type]
