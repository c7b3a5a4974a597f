"""Prometheus scrape endpoint."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.observability import metrics

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    summary="Prometheus metrics: counters of this process (or host) and queue gauges",
    response_class=Response,
    responses={200: {"content": {metrics.CONTENT_TYPE: {}}}},
)
async def scrape(request: Request) -> Response:
    ops = request.app.state.operations
    try:
        snapshot = await ops.queue.get()
    except Exception:
        snapshot = None  # kirim_queue_stats_up 0 tells the scraper why gauges are missing
    return Response(metrics.render(snapshot), media_type=metrics.CONTENT_TYPE)
