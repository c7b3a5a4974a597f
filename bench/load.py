"""HTTP load against Kirim's API: one POST per message, batches, and a paced trickle."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import httpx

from bench import raw_http

SENDER = "bench@example.com"
RECIPIENT = "rcpt@example.com"
# About the size of smtp-source's ``-l 512`` body, so both systems carry similar bytes.
TEXT = ("Kirim benchmark message body. " * 18)[:512]
BATCH_SIZE = 500
BATCH_PATH = "/v1/messages/batch"
BATCH_TIMEOUT = 60.0  # seconds, as the httpx client had
T = TypeVar("T")


def spread(targets: Sequence[T], count: int) -> list[T]:
    """What each of ``count`` connections (or senders) uses: ``targets`` in turn, so each
    API process of a layout gets an even share."""
    if not targets:
        raise ValueError("nothing to spread the load over")
    return [targets[i % len(targets)] for i in range(count)]


def message(index: int) -> dict[str, Any]:
    return {"from": SENDER, "to": [RECIPIENT], "subject": f"bench {index}", "text": TEXT}


@dataclass
class LoadOutcome:
    started: float = 0.0  # monotonic time of the first request
    finished: float = 0.0  # monotonic time the last response arrived
    ids: list[str] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    first_failure: str = ""

    def fail(self, kind: str, detail: str) -> None:
        self.failures[kind] += 1
        if not self.first_failure:
            self.first_failure = f"{kind}: {detail[:300]}"

    @property
    def accept_rate(self) -> float:
        elapsed = self.finished - self.started
        return len(self.ids) / elapsed if elapsed > 0 else 0.0


def client(base_url: str, api_key: str, connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {api_key}"},
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        timeout=httpx.Timeout(60.0),
        trust_env=False,
    )


def _batch_ids(payload: Any) -> list[str]:
    """Message ids out of a batch response, whichever list key the API uses."""
    items: Any = payload
    if isinstance(payload, dict):
        items = next((v for v in payload.values() if isinstance(v, list)), [])
    return [str(item["id"]) for item in items if isinstance(item, dict) and "id" in item]


def batch_requests(api_key: str, count: int) -> list[bytes]:
    """Each batch request after its prefix, the body as httpx's ``json=`` wrote it."""
    requests = []
    for start in range(0, count, BATCH_SIZE):
        body = {"messages": [message(i) for i in range(start, min(count, start + BATCH_SIZE))]}
        encoded = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        requests.append(raw_http.request_rest(api_key, encoded.encode()))
    return requests


async def post_batches(
    host: str,
    ports: Sequence[int],
    api_key: str,
    count: int,
    concurrency: int,
) -> LoadOutcome | None:
    """``count`` messages in POST /v1/messages/batch requests of 500 from up to
    ``concurrency`` senders, each on a keep-alive connection of its own, dealt round-robin
    over the API ``ports``; None if there is no such endpoint. A batch that fails (no
    whole answer within ``BATCH_TIMEOUT``) counts one failure; its sender goes on with the
    next on a new connection."""
    requests = batch_requests(api_key, count)
    prefixes = {port: raw_http.request_prefix(host, port, BATCH_PATH) for port in ports}
    outcome = LoadOutcome()
    batches = iter(range(len(requests)))
    missing = False

    async def sender(port: int) -> None:
        nonlocal missing
        connection: raw_http.Connection | None = None
        try:
            for batch in batches:
                try:
                    async with asyncio.timeout(BATCH_TIMEOUT):
                        if connection is None or connection.closed:  # as httpx's pool would
                            connection = await raw_http.connect(host, port)
                        answer = connection.request(prefixes[port] + requests[batch])
                        status, body = await answer
                except (OSError, asyncio.IncompleteReadError) as error:  # TimeoutError too
                    outcome.fail(type(error).__name__, str(error))
                    if connection is not None:
                        connection.close()
                        connection = None
                    continue
                if status in (404, 405):
                    missing = True
                    return
                if status not in (200, 201, 202, 207):
                    outcome.fail(str(status), body.decode(errors="replace"))
                    continue
                outcome.ids.extend(_batch_ids(json.loads(body)))
        finally:
            if connection is not None:
                connection.close()

    outcome.started = time.monotonic()
    senders = spread(ports, min(concurrency, len(requests)))
    await asyncio.gather(*(sender(port) for port in senders))
    outcome.finished = time.monotonic()
    return None if missing else outcome


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def sent_time(detail: dict[str, Any]) -> datetime | None:
    """When the last recipient of a message got its 2xx, from GET /v1/messages/{id}."""
    times = [_time(r.get("sent_at")) for r in detail.get("recipients", []) if isinstance(r, dict)]
    found = [t for t in times if t is not None]
    if not found:
        for event in detail.get("events", []):
            if isinstance(event, dict) and event.get("type") == "message.sent":
                stamp = _time(event.get("created_at") or event.get("timestamp"))
                if stamp is not None:
                    found.append(stamp)
    return max(found) if found else None


async def api_latencies(
    http: httpx.AsyncClient, ids: list[str], sample: int, concurrency: int
) -> list[float]:
    """created_at → sent time in seconds for a random sample of messages."""
    chosen = random.sample(ids, min(sample, len(ids)))
    latencies: list[float] = []
    pending = iter(chosen)

    async def worker() -> None:
        for message_id in pending:
            try:
                response = await http.get(f"/v1/messages/{message_id}")
            except httpx.HTTPError:
                continue
            if response.status_code != 200:
                continue
            detail = response.json()
            created, sent = _time(detail.get("created_at")), sent_time(detail)
            if created is not None and sent is not None:
                latencies.append((sent - created).total_seconds())

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies
