"""Core statements rendered once per dialect and run with plain tuples.

``conn.execute(stmt, params)`` walks the statement for its cache key on every call, then
builds a dict per row and runs every value through ``construct_params``: in the delivery
worker's settle that per-row work cost more than SQLite itself. A ``PlainStatement``
renders its statement once per dialect (and per length of an IN list, rounded up to a
power of two), keeps Core's bind processors, and hands the driver tuples through
``driver_sql.run``, so error wrapping and the transaction stay SQLAlchemy's. Result rows
come back as tuples converted as Core would convert them.

Binds without a value are the per-call parameters, named by their keys; binds with a
value are fixed when the statement is built, so build it once (a module constant or a
cached function), never per call. An expanding bind must be an IN list: it is padded by
repeating its last value. A paramstyle other than qmark or numeric_dollar, or a result
type the driver would hand back unconverted, takes the Core path.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import JSON, Boolean, Float, Integer, LargeBinary, String, TypeDecorator
from sqlalchemy.sql.expression import Executable

from service.db import driver_sql

_Convert = Callable[[Any], Any] | None
# Per driver parameter: (key, index in an IN list or -1, converter, fixed value); a key of
# None means the fixed value.
_Slots = tuple[tuple[str | None, int, _Convert, Any], ...]


class _Slot:
    """Placeholder for a per-call value while a statement's parameters are laid out."""

    __slots__ = ("index", "key")

    def __init__(self, key: str, index: int = -1) -> None:
        self.key, self.index = key, index


class _Plan:
    __slots__ = ("results", "slots", "sql")

    def __init__(
        self,
        sql: str,
        slots: _Slots,
        results: tuple[_Convert, ...] | None,
    ) -> None:
        self.sql = sql
        self.slots = slots
        self.results = results  # per result column; None: no result columns

    def values(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        out = []
        for key, index, convert, fixed in self.slots:
            if key is None:
                out.append(fixed)
                continue
            value = params[key]
            if index >= 0:
                value = value[min(index, len(value) - 1)]
            out.append(value if convert is None else convert(value))
        return tuple(out)

    def rows(self, raw: Sequence[Any]) -> list[tuple[Any, ...]]:
        converted = [(i, f) for i, f in enumerate(self.results or ()) if f is not None]
        if not converted:
            return [tuple(r) for r in raw]
        out = []
        for r in raw:
            row = list(r)
            for i, f in converted:
                if row[i] is not None:
                    row[i] = f(row[i])
            out.append(tuple(row))
        return out


class PlainStatement:
    """``stmt`` (a SELECT, or an INSERT/UPDATE/DELETE with or without RETURNING) run
    without Core's per-call and per-row parameter work."""

    def __init__(self, stmt: Executable) -> None:
        self.stmt = stmt
        self._compiled: dict[str, tuple[Any, tuple[str, ...]]] = {}  # and its IN lists
        self._plans: dict[tuple[str, tuple[int, ...]], _Plan | None] = {}

    async def rows(self, conn: Any, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run once on ``conn`` (an AsyncConnection); the result rows as tuples."""
        plan = self._plan(conn.dialect, params)
        if plan is None:
            return [tuple(r) for r in (await conn.execute(self.stmt, dict(params))).all()]
        rows = await driver_sql.run(conn, plan.sql, plan.values(params))
        return plan.rows(rows) if plan.results is not None and rows is not None else []

    async def executemany(self, conn: Any, rows: Sequence[Mapping[str, Any]]) -> int:
        """Run once per parameter set in ``rows`` (no IN lists), in one driver call; the
        rows changed in all, where the driver counts them (SQLite's does)."""
        if not rows:
            return 0
        plan = self._plan(conn.dialect, {})
        if plan is None:
            return (await conn.execute(self.stmt, [dict(r) for r in rows])).rowcount
        values = [plan.values(r) for r in rows]
        return await driver_sql.run_many_counted(conn, plan.sql, values)

    def _plan(self, dialect: Any, params: Mapping[str, Any]) -> _Plan | None:
        style = f"{dialect.name}:{dialect.driver}:{dialect.paramstyle}"
        if style not in self._compiled:
            compiled = self.stmt.compile(dialect=dialect)  # type: ignore[attr-defined]
            lists = tuple(b.key for b in compiled.binds.values() if b.expanding)
            self._compiled[style] = compiled, lists
        compiled, expanding = self._compiled[style]
        lengths = tuple(padded_length(len(params[k])) if k in params else 1 for k in expanding)
        key = (style, lengths)
        if key not in self._plans:
            shape = dict(zip(expanding, lengths, strict=True))
            self._plans[key] = _build(self.stmt, dialect, compiled, shape)
        return self._plans[key]


def padded_length(n: int) -> int:
    """``n`` rounded up to a power of two: varying lengths (IN lists, tenants per claim
    round) then need only a handful of statement shapes, each built and compiled once."""
    return 1 << max(0, n - 1).bit_length()


def _build(stmt: Any, dialect: Any, compiled: Any, lengths: dict[str, int]) -> _Plan | None:
    if dialect.paramstyle not in ("qmark", "numeric_dollar"):
        return None
    columns = list(getattr(stmt, "exported_columns", ()) or ())
    results = _result_converters(columns, dialect) if columns else None
    if columns and results is None:
        return None
    layout: dict[str, Any] = {}
    for bind in compiled.binds.values():
        if bind.expanding:
            layout[bind.key] = [_Slot(bind.key, i) for i in range(lengths.get(bind.key, 1))]
        elif bind.required:
            layout[bind.key] = _Slot(bind.key)
    state = compiled.construct_expanded_state(layout)
    if state.positiontup is None:
        return None
    # Core's own bind processors: those of the compiled binds, and those of IN list items.
    escaped = compiled.escaped_bind_names
    processors = {escaped.get(k, k): f for k, f in compiled._bind_processors.items()}
    processors.update(state.processors)
    if not dialect.supports_native_boolean:
        for key, bind in compiled.binds.items():
            name = escaped.get(key, key)
            if isinstance(bind.type, Boolean) and processors.get(name) is not None:
                processors[name] = _bool_to_int
    slots: list[tuple[str | None, int, _Convert, Any]] = []
    for name in state.positiontup:
        value = state.parameters[name]
        convert = processors.get(name)
        if isinstance(value, _Slot):
            slots.append((value.key, value.index, convert, None))
        else:
            slots.append((None, -1, None, value if convert is None else convert(value)))
    return _Plan(state.statement, tuple(slots), results)


def _result_converters(columns: list[Any], dialect: Any) -> tuple[_Convert, ...] | None:
    """What Core does to each result column; None when that depends on the column types
    the driver reports at run time."""
    if dialect.name == "sqlite":
        # SQLite's conversions do not depend on the cursor's column types.
        return tuple(_sqlite_result(c.type, dialect) for c in columns)
    if dialect.driver != "asyncpg":
        return None
    # asyncpg hands these back as Core would (its JSON codec decodes JSON).
    for c in columns:
        t = c.type
        if isinstance(t, TypeDecorator):
            if type(t).process_result_value is not TypeDecorator.process_result_value:
                return None
            t = t.impl_instance
        if isinstance(t, Float) and t.asdecimal:
            return None
        if not isinstance(t, String | Integer | Float | Boolean | LargeBinary | JSON):
            return None
    return tuple(None for _ in columns)


# Core's converters for two types, as compiled functions: Core's own run as interpreted
# Python, two calls deep, for every JSON column of every row a claim reads and every flag a
# settle writes. They do what Core's do (tests/unit/test_plain_statement.py compares them).
_STRICT_BOOLS = frozenset([None, True, False])


def _bool_to_int(value: Any) -> Any:
    """Boolean's bind processor where the database has no boolean type (SQLite)."""
    if value not in _STRICT_BOOLS:
        if not isinstance(value, int):
            raise TypeError(f"Not a boolean value: {value!r}")
        raise ValueError(f"Value {value!r} is not None, True, or False")
    return None if value is None else int(value)


class _JsonResult:
    """JSON's result processor on SQLite: the dialect's deserialiser, and a number that
    SQLite hands back as a number (``json_extract``) as it is."""

    __slots__ = ("deserialize",)

    def __init__(self, deserialize: Callable[[Any], Any]) -> None:
        self.deserialize = deserialize

    def __call__(self, value: Any) -> Any:
        if value is None:
            return None
        try:
            return self.deserialize(value)
        except TypeError:
            if isinstance(value, numbers.Number):
                return value
            raise


def _sqlite_result(type_: Any, dialect: Any) -> _Convert:
    core = type_._cached_result_processor(dialect, None)
    if (
        core is not None
        and type(type_) is JSON
        and type_._str_impl.result_processor(dialect, None) is None
    ):
        return _JsonResult(dialect._json_deserializer or json.loads)
    return core
