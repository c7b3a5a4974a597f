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

    # SQLite's BEGIN goes straight to the driver (service.db.sqlite_inline), past the
    # statement events; it is a round trip all the same, so it counts as one.
    hooks = [("before_cursor_execute", on_execute)]
    if db.is_sqlite:
        hooks.append(("begin", on_execute))
    engines = {id(e): e for e in (db.writer, db.reader)}.values()
    for e in engines:
        for name, hook in hooks:
            event.listen(e.sync_engine, name, hook)
    try:
        yield counts
    finally:
        for e in engines:
            for name, hook in hooks:
                event.remove(e.sync_engine, name, hook)
