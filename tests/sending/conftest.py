"""Helpers for the sending API tests."""

from __future__ import annotations

from typing import Any

from tests.support.app import LiveApp


def msg(to: str, **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"from": "shop@example.com", "to": [to], "subject": "s", "text": "t"}
    body.update(kw)
    return body


async def statuses(app: LiveApp, mid: str) -> dict[str, str]:
    return {r["email"]: r["status"] for r in (await app.get(mid))["recipients"]}
