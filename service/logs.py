"""Logging set-up for the CLI entry points."""

from __future__ import annotations

import logging


def setup(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # Protocol-level debug logs could carry AUTH lines; keep them quiet.
    logging.getLogger("aiosmtplib").setLevel(logging.WARNING)
    logging.getLogger("mail.log").setLevel(logging.WARNING)
