"""SQLite's allocation counters are off in a tuned process, and SQLite still works there.

Each case runs in a fresh interpreter: the setting is process-wide and may only be changed
before a connection opens, which this test process has long done.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from service.db.sqlite_library import loaded_library

_CHILD = """
import ctypes, json, sqlite3, sys
from service.db import sqlite_library

tuned = sqlite_library.tune() if sys.argv[1] == "tune" else None
lib = ctypes.CDLL(sqlite_library.loaded_library())
lib.sqlite3_memory_used.restype = ctypes.c_int64
conn = sqlite3.connect(sys.argv[2], isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER)")
conn.execute("CREATE INDEX t_n ON t (n)")
conn.execute("BEGIN IMMEDIATE")
conn.executemany("INSERT INTO t VALUES (?, ?)", [(f"id{i}", i) for i in range(2000)])
conn.execute("COMMIT")
total = conn.execute("SELECT count(*), sum(n) FROM t WHERE n >= 1000").fetchone()
print(json.dumps({"tuned": tuned, "used": lib.sqlite3_memory_used(), "total": total,
                  "again": sqlite_library.tune() if tuned else None}))
"""


def _child(tmp_path: Path, mode: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, str(tmp_path / f"{mode}.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_a_tuned_process_counts_no_allocations_and_reads_what_it_wrote(tmp_path: Path) -> None:
    tuned = _child(tmp_path, "tune")
    plain = _child(tmp_path, "plain")
    assert tuned["tuned"] is True
    assert tuned["again"] is True  # a second call changes nothing and says so
    assert tuned["used"] == 0
    assert isinstance(plain["used"], int) and plain["used"] > 0  # counted by default
    assert tuned["total"] == plain["total"] == [1000, sum(range(1000, 2000))]


def test_the_library_is_found_only_where_it_is_mapped(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    maps.write_text(
        "7f00-7f01 r-xp 00000000 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
        "7f02-7f03 rw-p 00000000 00:00 0 \n"
    )
    assert loaded_library(maps) is None
    maps.write_text(
        "7f00-7f01 r-xp 00000000 08:01 1 /usr/lib/x86_64-linux-gnu/libsqlite3.so.0.8.6\n"
    )
    assert loaded_library(maps) == "/usr/lib/x86_64-linux-gnu/libsqlite3.so.0.8.6"
    assert loaded_library(tmp_path / "absent") is None
