"""Multi-row INSERTs for the accept path without per-row work in SQLAlchemy.

``conn.execute(table.insert(), rows)`` compiles from a cache, yet still runs every value
of every row through type processors and insert-default handling in Python: on a busy API
process that was a tenth of its CPU. ``insert_rows`` renders the INSERT once per dialect,
table and set of columns, and hands the driver plain tuples through ``driver_sql.run``,
so error wrapping (IntegrityError, DatabaseUnavailable) and the transaction stay
SQLAlchemy's. Values are converted as SQLAlchemy would (JSON columns
serialised with the dialect's serialiser); missing columns get their scalar defaults.
Rows of different shapes, callable defaults or an unknown paramstyle take the Core path.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import JSON, Boolean, Float, LargeBinary, Table

from service.db import driver_sql

# Per (paramstyle, table, columns): the SQL, a converter per given column (None: as is)
# and the values of defaulted columns appended to every row; None means "use Core".
_Plan = tuple[str, tuple[Callable[[Any], Any] | None, ...], tuple[Any, ...]]
_plans: dict[tuple[str, str, tuple[str, ...]], _Plan | None] = {}


async def insert_rows(conn: Any, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT ``rows`` (dicts keyed by column key) on ``conn``, an AsyncConnection."""
    if not rows:
        return
    keys = tuple(rows[0])
    dialect = conn.dialect
    plan = _plan(dialect, table, keys)
    if plan is None:
        await conn.execute(table.insert(), list(rows))
        return
    sql, converters, defaults = plan
    width = len(keys)
    # One C call takes a row's values in column order; only the few values that need a
    # conversion (JSON) are touched one by one.
    take = itemgetter(*keys) if width > 1 else lambda row: (row[keys[0]],)
    convert = [(i, f) for i, f in enumerate(converters) if f is not None]
    params: list[tuple[Any, ...]] = []
    try:
        for row in rows:
            if len(row) != width:
                raise KeyError
            values = take(row)
            if convert:
                changed = list(values)
                for i, f in convert:
                    changed[i] = f(changed[i])
                values = tuple(changed)
            params.append(values + defaults if defaults else values)
    except KeyError:  # rows of different shapes
        await conn.execute(table.insert(), list(rows))
        return
    await driver_sql.run(conn, sql, params, many=True)


def _plan(dialect: Any, table: Table, keys: tuple[str, ...]) -> _Plan | None:
    style = dialect.paramstyle
    cache_key = (f"{dialect.name}:{style}", table.name, keys)
    if cache_key not in _plans:
        _plans[cache_key] = _build(dialect, table, keys)
    return _plans[cache_key]


def _build(dialect: Any, table: Table, keys: tuple[str, ...]) -> _Plan | None:
    if dialect.paramstyle not in ("qmark", "numeric_dollar"):
        return None
    serialise = getattr(dialect, "_json_serializer", None) or json.dumps
    try:
        given = [table.c[k] for k in keys]
    except KeyError:
        return None
    defaulted = []
    for column in table.columns:
        if column.key in keys or column.default is None:
            continue
        arg = getattr(column.default, "arg", None)
        if callable(arg) or not getattr(column.default, "is_scalar", False):
            return None
        if arg is not None:
            defaulted.append((column, arg))
    columns = [*given, *(c for c, _ in defaulted)]
    if dialect.paramstyle == "qmark":
        marks = ", ".join("?" for _ in columns)
    else:
        marks = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(c.name) for c in columns)
    sql = f"INSERT INTO {quote(table.name)} ({names}) VALUES ({marks})"
    converters: list[Callable[[Any], Any] | None] = []
    for c in given:
        if isinstance(c.type, JSON):
            converters.append(serialise)
        elif isinstance(c.type, Boolean | LargeBinary | Float):
            # The drivers take bool, bytes and numbers as they are (SQLite's REAL affinity
            # stores an int in a FLOAT column as a float, as SQLAlchemy's to_float would).
            converters.append(None)
        elif c.type._cached_bind_processor(dialect) is None:
            converters.append(None)
        else:
            return None  # a type that converts values: leave it to Core
    return sql, tuple(converters), tuple(v for _, v in defaulted)
