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
        description="How long a worker owns claimed recipients before they return to the queue (s).",
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
        default=256, ge=1, le=10000, description="Most recipients a worker claims at once."
    )
    worker_poll_interval: float = Field(
        default=1.0,
        gt=0,
        description="Fallback poll interval of an idle worker when no wake-up arrives (s).",
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
        default=50, ge=1, le=10000, description="Most recipients (to+cc+bcc) in one message."
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

    @field_validator("retry_max_delay")
    @classmethod
    def _max_not_below_min(cls, v: float, info: object) -> float:
        data = getattr(info, "data", {})
        if "retry_min_delay" in data and v < data["retry_min_delay"]:
            raise ValueError("retry_max_delay must not be below retry_min_delay")
        return v

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.get_secret_value().startswith("sqlite")


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, with explicit overrides on top."""
    return Settings(**overrides)  # type: ignore[arg-type]
