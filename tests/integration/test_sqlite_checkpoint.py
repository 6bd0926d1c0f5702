"""A long-running SQLite store checkpoints its WAL from a background thread."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from prpgate.core.pipeline import Engine
from prpgate.ingest import ingest
from prpgate.store.sqlite import SqliteStore
from prpgate.store.sqlite_checkpoint import WAL_SIZE_LIMIT
from tests.conftest import FIXED_NOW, load


def _fill(store: SqliteStore, engine: Engine, count: int, tag: str) -> None:
    template = load("cbc_high_wbc.hl7")
    with store.session() as session:
        for i in range(count):
            raw = template.replace(b"PRPFX0002", f"{tag}{i:06d}".encode())
            ingest(session, engine, raw, source="test", received_at=FIXED_NOW)


def _wal_frames(path: Path) -> tuple[int, int]:
    """(frames in the WAL, frames checkpointed), asked of a connection of our own."""
    db = sqlite3.connect(str(path), isolation_level=None)
    try:
        _, log, done = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(log), int(done)
    finally:
        db.close()


def test_background_checkpoints_keep_commits_free_of_checkpoints(
    tmp_path: Path, engine: Engine
) -> None:
    path = tmp_path / "store.sqlite"
    store = SqliteStore(path, background_checkpoints=True)
    try:
        # the committing connection never checkpoints by itself
        assert store._db.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        _fill(store, engine, 400, "CK")  # several thousand pages: past the usual 1000
        checkpointer = store._checkpointer
        assert checkpointer is not None
        deadline = time.monotonic() + 15
        while checkpointer.checkpoints < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert checkpointer.checkpoints >= 2
    finally:
        store.close()
    # after the last checkpoint on close, every frame of the WAL is in the database
    log, done = _wal_frames(path)
    assert log == done
    reopened = SqliteStore(path)
    try:
        assert len(reopened.list_messages(limit=1000)) == 400
    finally:
        reopened.close()


def test_a_store_without_background_checkpoints_checkpoints_in_its_commits(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "store.sqlite")
    try:
        assert store._checkpointer is None
        assert store._db.execute("PRAGMA wal_autocheckpoint").fetchone() == (1000,)
    finally:
        store.close()


def test_a_long_running_store_cuts_its_wal_back_once_the_load_pauses(
    tmp_path: Path, engine: Engine
) -> None:
    path = tmp_path / "store.sqlite"
    wal = path.with_name(path.name + "-wal")
    store = SqliteStore(path, background_checkpoints=True)
    try:
        limit = store._db.execute("PRAGMA journal_size_limit").fetchone()[0]
        assert limit == WAL_SIZE_LIMIT
        # the same mechanism with a limit this test can pass quickly
        small = 256 * 1024
        store._db.execute(f"PRAGMA journal_size_limit={small}")
        for batch in range(40):  # commits back to back: the WAL only grows
            _fill(store, engine, 5, f"G{batch:02d}-")
        assert wal.stat().st_size > 4 * small
        checkpointer = store._checkpointer
        assert checkpointer is not None
        seen = checkpointer.checkpoints
        deadline = time.monotonic() + 15  # a pause: the checkpointer catches up
        while checkpointer.checkpoints < seen + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert checkpointer.checkpoints >= seen + 2
        _fill(store, engine, 1, "AFTER")  # starts the WAL afresh, cut back to the limit
        assert wal.stat().st_size <= small
    finally:
        store.close()
    reopened = SqliteStore(path)
    try:
        assert len(reopened.list_messages(limit=1000)) == 201
    finally:
        reopened.close()
