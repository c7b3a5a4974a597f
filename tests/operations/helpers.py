"""Rows written straight to the database, for tests that need a large or old queue."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from service.db.engine import Database
from service.db.tables import messages, recipients
from service.domain.ids import new_id

ADMIN_SCOPES = ("messages:send", "messages:read", "webhooks:manage", "keys:manage", "admin")


async def insert_queue(
    db: Database,
    *,
    count: int,
    domain: str,
    status: str = "deferred",
    tenant: str = "default",
    created_at: float,
    next_attempt_at: float,
    per_message: int = 50,
) -> list[str]:
    """``count`` recipients at ``domain`` in messages of ``per_message``; returns message ids."""
    ids: list[str] = []
    made = 0
    while made < count:
        n = min(per_message, count - made)
        mid = new_id("msg", created_at)
        ids.append(mid)
        async with db.write() as conn:
            await conn.execute(
                messages.insert(),
                [
                    {
                        "id": mid,
                        "tenant_id": tenant,
                        "created_at": created_at,
                        "sender": "ops@example.org",
                        "subject": "s",
                        "message_id_header": f"<{mid}@kirim.test>",
                        "mime": b"Subject: s\r\n\r\nbody\r\n",
                        "size": 20,
                        "smtputf8": False,
                        "tags": ["t"],
                        "metadata": {"k": "v"},
                        "priority": 1,
                        "event_seq": 0,
                    }
                ],
            )
            await conn.execute(
                recipients.insert(),
                [
                    {
                        "id": new_id("rcp", created_at),
                        "message_id": mid,
                        "tenant_id": tenant,
                        "email": f"user{made + i}@{domain}",
                        "kind": "to",
                        "status": status,
                        "priority": 1,
                        "attempts": 1 if status == "deferred" else 0,
                        "created_at": created_at,
                        "updated_at": created_at,
                        "next_attempt_at": next_attempt_at,
                        "deadline": next_attempt_at + 10 * 86400,
                        "lease_lost": False,
                        "possible_duplicate": False,
                    }
                    for i in range(n)
                ],
            )
        made += n
    return ids


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, keyed by name and sorted labels."""
    r = await client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
