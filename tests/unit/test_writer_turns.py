"""Processes sharing a SQLite file take turns at the write lock: the shared waiting slots."""

from __future__ import annotations

import struct
import time
from pathlib import Path

from service.db.writer_turns import SLOTS, STALE, WriterTurns


def test_a_waiting_process_is_seen_by_the_others_until_it_is_done(tmp_path: Path) -> None:
    path = tmp_path / "turns"
    api, worker = WriterTurns(path, pid=1001), WriterTurns(path, pid=1002)
    assert not api.others_waiting() and not worker.others_waiting()
    api.waiting()
    assert worker.others_waiting()
    assert not api.others_waiting()  # its own claim does not make it stand back
    api.done()
    assert not worker.others_waiting()


def test_a_claim_not_refreshed_counts_as_gone(tmp_path: Path) -> None:
    path = tmp_path / "turns"
    dead, live = WriterTurns(path, pid=2001), WriterTurns(path, pid=2002)
    dead.waiting()
    # As if the process was killed while waiting: its last try is older than STALE.
    offset = (2001 % SLOTS) * struct.calcsize("<Id")
    struct.pack_into("<Id", dead._map, offset, 2001, time.monotonic() - STALE - 0.1)
    assert not live.others_waiting()


def test_processes_sharing_a_slot_never_clear_each_others_claim(tmp_path: Path) -> None:
    path = tmp_path / "turns"
    first, second = WriterTurns(path, pid=7), WriterTurns(path, pid=7 + SLOTS)
    observer = WriterTurns(path, pid=9)
    first.waiting()
    second.waiting()  # takes the slot over
    first.done()  # the slot is not first's any more: left alone
    assert observer.others_waiting()
    second.done()
    assert not observer.others_waiting()


def test_an_unusable_directory_turns_the_feature_off(tmp_path: Path) -> None:
    assert WriterTurns.for_directory(None) is None
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)  # not private: another user could plant or read the file
    assert WriterTurns.for_directory(shared) is None
    private = tmp_path / "private"
    turns = WriterTurns.for_directory(private)
    assert turns is not None
    assert (private / "writer-turns").stat().st_mode & 0o077 == 0
    turns.close()
