"""The response for a request whose Idempotency-Key was seen before: the first answer again."""

from __future__ import annotations

from starlette.responses import Response

from service import idempotency


def replayed(replay: idempotency.Replay) -> Response:
    return Response(
        replay.body,
        status_code=replay.status,
        media_type="application/json",
        headers={idempotency.REPLAYED_HEADER: "true"},
    )
