"""A long-running SQLite store checkpoints its WAL from a background thread."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from prpgate.config import Settings
from prpgate.core.pipeline import Engine
from prpgate.store.factory import open_store
from prpgate.store.sqlite import SqliteStore
from prpgate.store.sqlite_checkpoint import QUIET_CHECKS, WAL_SIZE_LIMIT, idle_io_priority
from tests.conftest import ingest_cbcs, stored_messages, wait_for


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
        ingest_cbcs(store, engine, 400, "CK")  # several thousand pages: past the usual 1000
        checkpointer = store._checkpointer
        assert checkpointer is not None
        wait_for("two checkpoints", lambda: checkpointer.checkpoints >= 2, 15)
    finally:
        store.close()
    # after the last checkpoint on close, every frame of the WAL is in the database
    log, done = _wal_frames(path)
    assert log == done
    assert stored_messages(path) == 400


def test_a_store_without_background_checkpoints_checkpoints_in_its_commits(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "store.sqlite")
    try:
        assert store._checkpointer is None
        assert store._db.execute("PRAGMA wal_autocheckpoint").fetchone() == (1000,)
    finally:
        store.close()


def test_a_long_running_store_truncates_its_wal_once_the_load_pauses(
    tmp_path: Path, engine: Engine
) -> None:
    path = tmp_path / "store.sqlite"
    wal = path.with_name(path.name + "-wal")
    store = SqliteStore(path, background_checkpoints=True)
    try:
        checkpointer = store._checkpointer
        assert checkpointer is not None
        assert checkpointer.wal_limit == WAL_SIZE_LIMIT
        # the writer's own connection never cuts the file back inside a commit
        assert store._db.execute("PRAGMA journal_size_limit").fetchone() == (-1,)
        # the same mechanism with a limit and an interval this test can pass quickly
        small = 256 * 1024
        checkpointer.wal_limit = small
        checkpointer._interval = 0.1
        # commits back to back (the WAL only grows) until more checkpoints have run than
        # the quiet stretch a truncation waits for; a slow machine only takes longer
        written = _write_steadily(
            store,
            engine,
            lambda n: n >= 50 and checkpointer.checkpoints >= QUIET_CHECKS + 2,
            "G",
            pause=0.0,
        )
        # none of those checkpoints truncated under the writes
        assert checkpointer.truncations == 0
        assert wal.stat().st_size > 4 * small
        # a pause: the checkpointer catches up, truncates
        wait_for("a truncation", lambda: checkpointer.truncations > 0, 15)
        assert checkpointer.truncations == 1
        assert wal.stat().st_size == 0
        ingest_cbcs(store, engine, 1, "AFTER")  # the store writes on into the emptied WAL
    finally:
        store.close()
    assert stored_messages(path) == written + 1


def _write_steadily(
    store: SqliteStore,
    engine: Engine,
    until: Callable[[int], bool],
    tag: str,
    *,
    pause: float = 0.002,
) -> int:
    """Commit batches of five CBCs ``pause`` s apart (2 ms: as a serving store's writer
    does under a steady load; 0: back to back), until ``until(messages so far)`` (at most
    60 s); returns how many messages were committed."""
    started = time.monotonic()
    written = 0
    while not until(written):
        assert time.monotonic() - started < 60, "the condition never came"
        ingest_cbcs(store, engine, 5, f"{tag}{written:06d}-")
        written += 5
        if pause:
            time.sleep(pause)
    return written


def test_under_unbroken_load_the_wal_is_started_afresh_at_its_limit(
    tmp_path: Path, engine: Engine
) -> None:
    limit = 256 * 1024
    sizes: dict[str, int] = {}
    counts: dict[str, int] = {}
    for name, restart in (("restarting", limit), ("growing", 0)):
        path = tmp_path / f"{name}.sqlite"
        wal = path.with_name(path.name + "-wal")
        store = SqliteStore(path, background_checkpoints=True, wal_restart=restart)
        try:
            checkpointer = store._checkpointer
            assert checkpointer is not None
            assert checkpointer.restart_at == restart
            checkpointer._interval = 0.05
            if restart:  # until the WAL was started afresh eight times
                counts[name] = _write_steadily(
                    store, engine, lambda _n, c=checkpointer: c.restarts >= 8, "R"
                )
            else:  # as many messages, the same way, with no restarts
                counts[name] = _write_steadily(
                    store, engine, lambda n: n >= counts["restarting"], "G"
                )
                assert checkpointer.restarts == 0
            assert checkpointer.truncations == 0  # the load never paused long enough
            sizes[name] = wal.stat().st_size
        finally:
            store.close()
        # nothing lost, nothing broken
        assert stored_messages(path) == counts[name]
        db = sqlite3.connect(str(path))
        try:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        finally:
            db.close()
    # the restarted WAL was written from its start again; the other one only grew
    assert sizes["restarting"] * 2 < sizes["growing"], sizes


def test_a_reader_of_the_wal_holds_up_a_restart_but_not_the_commits(
    tmp_path: Path, engine: Engine
) -> None:
    path = tmp_path / "store.sqlite"
    store = SqliteStore(path, background_checkpoints=True, wal_restart=64 * 1024)
    reader = sqlite3.connect(str(path), isolation_level=None)
    try:
        checkpointer = store._checkpointer
        assert checkpointer is not None
        # before the first checkpoint (1 s after the start): frames in the WAL, and a
        # reader whose snapshot needs them (a FHIR search in the middle of its read)
        ingest_cbcs(store, engine, 20, "A")
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM messages").fetchone() == (20,)
        checkpointer._interval = 0.05
        passes = checkpointer.checkpoints
        batches = 0
        while checkpointer.checkpoints < passes + 10:  # each pass tries a RESTART
            ingest_cbcs(store, engine, 5, f"B{batches:04d}-")
            batches += 1
        # no restart under the reader, and the commits went on: a RESTART that waited
        # out the store's 10 s busy timeout for the reader would have held them all
        assert checkpointer.restarts == 0
        assert batches >= 20
        reader.execute("COMMIT")  # the search ends: the next passes restart the WAL
        wait_for("a restart", lambda: checkpointer.restarts >= 1, 15)
    finally:
        reader.close()
        store.close()
    assert stored_messages(path) == 20 + 5 * batches


def test_a_serving_store_restarts_its_wal_at_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = open_store(Settings(store=tmp_path / "a.sqlite"), long_running=True)
    monkeypatch.setenv("PRPGATE_SQLITE_WAL_RESTART_MB", "3")
    three = open_store(Settings(store=tmp_path / "b.sqlite"), long_running=True)
    monkeypatch.setenv("PRPGATE_SQLITE_WAL_RESTART_MB", "0")
    off = open_store(Settings(store=tmp_path / "c.sqlite"), long_running=True)
    try:
        limits = []
        for store in (default, three, off):
            assert isinstance(store, SqliteStore)
            assert store._checkpointer is not None
            limits.append(store._checkpointer.restart_at)
    finally:
        for store in (default, three, off):
            store.close()
    assert limits == [1024 * 1024 * 1024, 3 * 1024 * 1024, 0]


def test_a_wal_the_writer_holds_is_not_truncated_under_it(tmp_path: Path, engine: Engine) -> None:
    path = tmp_path / "store.sqlite"
    store = SqliteStore(path, background_checkpoints=True)
    other = sqlite3.connect(str(path), isolation_level=None)
    try:
        checkpointer = store._checkpointer
        assert checkpointer is not None
        checkpointer.wal_limit = 0
        checkpointer._interval = 0.05
        ingest_cbcs(store, engine, 20, "H")
        other.execute("BEGIN IMMEDIATE")  # another writer holds the store
        seen = checkpointer.checkpoints
        # the checkpointer goes on without waiting for the store, and truncates nothing
        wait_for(
            "checkpoints while the store is held",
            lambda: checkpointer.checkpoints >= seen + 2 * QUIET_CHECKS,
            15,
        )
        truncated = checkpointer.truncations
        time.sleep(0.3)
        assert checkpointer.truncations == truncated
        other.execute("ROLLBACK")
        # the store free again: truncated
        wait_for("a truncation", lambda: checkpointer.truncations > truncated, 15)
    finally:
        other.close()
        store.close()
    assert stored_messages(path) == 20


def test_the_checkpoint_thread_does_its_disk_io_in_the_idle_class() -> None:
    if not hasattr(psutil, "IOPRIO_CLASS_IDLE"):
        pytest.skip("this platform has no disk I/O priority classes (Linux only)")
    seen: list[object] = []

    def probe() -> None:
        seen.append(idle_io_priority())
        seen.append(psutil.Process(threading.get_native_id()).ionice().ioclass)

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    assert seen == [True, psutil.IOPRIO_CLASS_IDLE]
    # only that thread: the process's other threads keep their priority
    assert psutil.Process().ionice().ioclass != psutil.IOPRIO_CLASS_IDLE
