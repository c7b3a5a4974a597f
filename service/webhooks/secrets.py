"""Signing secrets of an endpoint: several sign at once while a rotation overlaps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.webhooks.signing import new_secret


def current_secrets(entries: Sequence[dict[str, Any]], now: float) -> list[str]:
    """Secrets that still sign at ``now``, newest first."""
    live = [e["secret"] for e in entries if e.get("expires_at") is None or e["expires_at"] > now]
    return list(reversed(live))


def rotate(
    entries: Sequence[dict[str, Any]], now: float, grace: float
) -> tuple[str, list[dict[str, Any]]]:
    """A new secret, and the entries with every older live secret expiring after ``grace``.

    Secrets already expired are dropped, so the list stays short.
    """
    kept: list[dict[str, Any]] = []
    for e in entries:
        expires = e.get("expires_at")
        if expires is not None and expires <= now:
            continue
        until = now + grace if expires is None else min(expires, now + grace)
        if until > now:
            kept.append({"secret": e["secret"], "expires_at": until})
    secret = new_secret()
    kept.append({"secret": secret, "expires_at": None})
    return secret, kept


def first_secret() -> tuple[str, list[dict[str, Any]]]:
    secret = new_secret()
    return secret, [{"secret": secret, "expires_at": None}]
