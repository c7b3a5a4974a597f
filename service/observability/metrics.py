"""Prometheus metrics: the process's counters and histograms, and the scrape output.

Counters live in one registry per process, created on first use. With
``PROMETHEUS_MULTIPROC_DIR`` set in the environment before start (prometheus-client reads it
when imported), every process on a host writes its values to that directory and a scrape of
any of them adds them up; without it each process serves its own values (``kirim worker``
on ``KIRIM_METRICS_PORT``). Queue gauges are not counted by any process: they are read from
the database at scrape time, so they describe the whole queue whichever process answers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from service.observability.queue_stats import QueueSnapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PRIORITY = {0: "high", 1: "normal", 2: "low"}

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    accepted_messages: Counter
    accepted_recipients: Counter
    deliveries: Counter
    attempt_duration: Histogram
    webhook_deliveries: Counter
    webhook_duration: Histogram
    lease_reaps: Counter
    database_errors: Counter
    retention_pruned: Counter


@lru_cache(maxsize=1)
def get() -> Metrics:
    """This process's metrics (created on first use, never at import)."""
    r = CollectorRegistry(auto_describe=True)
    return Metrics(
        registry=r,
        accepted_messages=Counter(
            "kirim_accepted_messages", "Messages accepted (committed) by the API.", registry=r
        ),
        accepted_recipients=Counter(
            "kirim_accepted_recipients", "Recipients of accepted messages.", registry=r
        ),
        deliveries=Counter(
            "kirim_deliveries",
            "Settled recipient attempts by resulting status and SMTP status class "
            "(first digit of the enhanced code, else of the reply code; none without a reply).",
            ["status", "status_class"],
            registry=r,
        ),
        attempt_duration=Histogram(
            "kirim_attempt_duration_seconds",
            "Duration of SMTP delivery attempts (one per message and connection).",
            ["outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        ),
        webhook_deliveries=Counter(
            "kirim_webhook_attempts",
            "Webhook attempts by result: succeeded, retrying, failed, cancelled.",
            ["result"],
            registry=r,
        ),
        webhook_duration=Histogram(
            "kirim_webhook_duration_seconds",
            "Latency of webhook HTTP requests.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        ),
        lease_reaps=Counter(
            "kirim_lease_reaped_recipients",
            "Recipients returned to the queue because their worker's lease expired.",
            registry=r,
        ),
        database_errors=Counter(
            "kirim_database_errors",
            "Database errors seen by this process (unavailable: connection lost, locked, "
            "timed out; other: anything else).",
            ["kind"],
            registry=r,
        ),
        retention_pruned=Counter(
            "kirim_retention_pruned",
            "Rows removed (or bodies cleared) by retention, by kind.",
            ["kind"],
            registry=r,
        ),
    )


def _queue_families(snap: QueueSnapshot) -> list[GaugeMetricFamily]:
    depth = GaugeMetricFamily(
        "kirim_queue_recipients",
        "Recipients waiting for delivery by priority; state due (may be sent now) or "
        "waiting (deferred or scheduled for later).",
        labels=["priority", "state"],
    )
    age = GaugeMetricFamily(
        "kirim_queue_oldest_due_age_seconds",
        "How long the oldest due recipient of each priority has been due (0 when none).",
        labels=["priority"],
    )
    for prio, row in sorted(snap.by_priority.items()):
        name = PRIORITY.get(prio, str(prio))
        depth.add_metric([name, "due"], row.due)
        depth.add_metric([name, "waiting"], row.waiting)
        age.add_metric([name], row.oldest_due_age)
    sending = GaugeMetricFamily(
        "kirim_recipients_sending", "Recipients leased to a worker right now."
    )
    sending.add_metric([], snap.sending)
    webhooks = GaugeMetricFamily(
        "kirim_webhook_queue", "Webhook deliveries waiting to be attempted (pending)."
    )
    webhooks.add_metric([], snap.webhooks_pending)
    pauses = GaugeMetricFamily(
        "kirim_delivery_pauses", "Active delivery pauses by kind.", labels=["kind"]
    )
    for kind in ("tenant", "domain"):
        pauses.add_metric([kind], snap.pauses.get(kind, 0))
    up = GaugeMetricFamily("kirim_queue_stats_up", "1 if the queue gauges could be read.")
    up.add_metric([], 1)
    return [depth, age, sending, webhooks, pauses, up]


class _Families:
    def __init__(self, families: list[GaugeMetricFamily]) -> None:
        self._families = families

    def collect(self) -> list[GaugeMetricFamily]:
        return self._families


def render(snapshot: QueueSnapshot | None) -> bytes:
    """The scrape body: process (or host-wide multiprocess) counters plus queue gauges."""
    m = get()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = m.registry
    body = generate_latest(registry)
    queue = CollectorRegistry(auto_describe=False)
    if snapshot is not None:
        queue.register(_Families(_queue_families(snapshot)))
    else:
        down = GaugeMetricFamily("kirim_queue_stats_up", "1 if the queue gauges could be read.")
        down.add_metric([], 0)
        queue.register(_Families([down]))
    return body + generate_latest(queue)
