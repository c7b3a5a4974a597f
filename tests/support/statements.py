"""Counting the SQL statements a piece of code sends, on every engine of a Database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from service.db.engine import Database


@contextmanager
def counting(db: Database) -> Iterator[dict[str, int]]:
    counts = {"n": 0}

    def on_execute(*_: Any) -> None:
        counts["n"] += 1

    engines = {id(e): e for e in (db.writer, db.reader)}.values()
    for e in engines:
        event.listen(e.sync_engine, "before_cursor_execute", on_execute)
    try:
        yield counts
    finally:
        for e in engines:
            event.remove(e.sync_engine, "before_cursor_execute", on_execute)
