"""Call back after any commit that queued webhook deliveries (``outbox.mark_pending``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import event

from service.webhooks.outbox import PENDING_FLAG


class PendingCommitHook:
    """Watches an engine's commits; ``callback`` runs for those that queued deliveries."""

    def __init__(self, engine: Any, callback: Callable[[], None]) -> None:
        self._engine = engine
        self._callback = callback
        self._on = False

    def _commit(self, conn: Any) -> None:
        if not conn.invalidated and conn.info.pop(PENDING_FLAG, False):
            self._callback()

    def _rollback(self, conn: Any) -> None:
        # A connection lost mid-transaction (database restart) is invalidated: touching its
        # info would raise inside SQLAlchemy's rollback and end the process. Its flag goes
        # with it.
        if not conn.invalidated:
            conn.info.pop(PENDING_FLAG, None)

    def attach(self) -> None:
        if not self._on:
            event.listen(self._engine, "commit", self._commit)
            event.listen(self._engine, "rollback", self._rollback)
            self._on = True

    def detach(self) -> None:
        if self._on:
            event.remove(self._engine, "commit", self._commit)
            event.remove(self._engine, "rollback", self._rollback)
            self._on = False
