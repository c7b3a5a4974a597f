"""The response for a request whose Idempotency-Key was seen before: the first answer again."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from starlette.responses import Response

from service import idempotency
from service.api.runtime import Runtime
from service.db.accepts import NewMessage


def replayed(replay: idempotency.Replay) -> Response:
    return Response(
        replay.body,
        status_code=replay.status,
        media_type="application/json",
        headers={idempotency.REPLAYED_HEADER: "true"},
    )


async def commit_or_replay(
    rt: Runtime, claim: idempotency.Claim, rows: NewMessage
) -> Response | None:
    """Commit ``rows`` (with the key's row); the first answer if another process stored
    this Idempotency-Key first, else None."""
    try:
        await rt.committer.submit(rows)
    except IntegrityError:
        replay = await claim.resolve_conflict()
        if replay is None:
            raise
        return replayed(replay)
    return None
