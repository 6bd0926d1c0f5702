"""Disk blocks reserved past a file's end, on real files: the SQLite store's WAL keeps a
reserve while a server writes, and the file's size and content never change for it."""

from __future__ import annotations

import ctypes
import errno
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog

from prpgate.config import Settings
from prpgate.core.pipeline import Engine
from prpgate.store.disk_reserve import DiskReserve
from prpgate.store.factory import open_store
from prpgate.store.sqlite import SqliteStore
from tests.conftest import ingest_cbcs, stored_messages, wait_for

MIB = 1024 * 1024


def _ahead(path: Path) -> int:
    """Bytes of disk the file has past its end."""
    stat = path.stat()
    return stat.st_blocks * 512 - stat.st_size


def _reserving(path: Path, size: int) -> DiskReserve:
    reserve = DiskReserve(path, size)
    if not reserve.supported:
        pytest.skip("this platform cannot reserve disk past a file's end (Linux fallocate)")
    return reserve


def _probe(tmp_path: Path) -> None:
    """Skip where the file system under tmp_path refuses the reservation (tmpfs and ext4
    take it; some network and FUSE file systems do not)."""
    probe = tmp_path / "probe"
    probe.write_bytes(b"x")
    reserve = _reserving(probe, MIB)
    reserve.refresh()
    if not reserve.supported:
        pytest.skip(f"the file system under {tmp_path} cannot reserve disk past a file's end")
    probe.unlink()


def test_a_reserve_is_disk_past_the_end_the_size_and_content_unchanged(tmp_path: Path) -> None:
    _probe(tmp_path)
    path = tmp_path / "grows.bin"
    content = os.urandom(10_000)
    path.write_bytes(content)
    reserve = _reserving(path, 4 * MIB)
    assert reserve.refresh() == 4 * MIB
    assert path.stat().st_size == len(content)
    assert path.read_bytes() == content
    assert _ahead(path) >= 4 * MIB
    # more than half of it left: nothing to do
    assert reserve.refresh() == 0
    with path.open("ab") as file:  # appends use up the reserve ...
        file.write(b"y" * (3 * MIB))
    assert _ahead(path) < 2 * MIB
    assert reserve.refresh() == 4 * MIB  # ... and the next refresh tops it up
    assert _ahead(path) >= 4 * MIB
    assert path.stat().st_size == len(content) + 3 * MIB
    assert reserve.reserved == 8 * MIB


def test_a_file_cut_back_gets_its_reserve_again(tmp_path: Path) -> None:
    _probe(tmp_path)
    path = tmp_path / "cut.bin"
    path.write_bytes(b"z" * 5000)
    reserve = _reserving(path, 2 * MIB)
    reserve.refresh()
    os.truncate(path, 5000)  # a cut to its own size (as SQLite's) releases the reserve
    if _ahead(path) >= MIB:
        pytest.skip("this file system keeps blocks past the end through a truncate")
    assert reserve.refresh() == 2 * MIB
    assert _ahead(path) >= 2 * MIB
    assert path.read_bytes() == b"z" * 5000


def test_no_file_no_reserve_and_none_created(tmp_path: Path) -> None:
    path = tmp_path / "absent-wal"
    reserve = DiskReserve(path, MIB)
    assert reserve.refresh() == 0
    assert not path.exists()


def test_a_reserve_of_zero_is_off(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x")
    reserve = DiskReserve(path, 0)
    assert not reserve.supported
    assert reserve.refresh() == 0
    assert _ahead(path) < MIB


def _refusing(err: int) -> Callable[[int, int, int, int], int]:
    def fallocate(fd: int, mode: int, offset: int, length: int) -> int:
        ctypes.set_errno(err)
        return -1

    return fallocate


def test_a_file_system_that_cannot_reserve_turns_the_reserve_off(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x")
    reserve = _reserving(path, MIB)
    reserve._fallocate = _refusing(errno.EOPNOTSUPP)
    with structlog.testing.capture_logs() as logs:
        assert reserve.refresh() == 0
    assert not reserve.supported
    assert [e["event"] for e in logs] == ["disk reserve not supported here"]
    assert reserve.refresh() == 0  # not tried again
    assert path.read_bytes() == b"x"


def test_a_full_disk_is_logged_once_and_tried_again(tmp_path: Path) -> None:
    _probe(tmp_path)
    path = tmp_path / "f"
    path.write_bytes(b"x")
    reserve = _reserving(path, MIB)
    real = reserve._fallocate
    reserve._fallocate = _refusing(errno.ENOSPC)
    with structlog.testing.capture_logs() as logs:
        assert reserve.refresh() == 0
        assert reserve.refresh() == 0  # tried again, not logged again
    assert reserve.supported
    assert [(e["event"], e["error"]) for e in logs] == [
        ("disk reserve refused", os.strerror(errno.ENOSPC))
    ]
    assert reserve.reserved == 0
    assert real is not None
    reserve._fallocate = real  # space again: reserved, and a later refusal is logged anew
    assert reserve.refresh() == MIB
    os.truncate(path, 1)
    reserve._fallocate = _refusing(errno.ENOSPC)
    with structlog.testing.capture_logs() as logs:
        assert reserve.refresh() == 0
    assert [e["event"] for e in logs] == ["disk reserve refused"]


def test_a_file_it_cannot_open_is_logged_not_raised(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    reserve = _reserving(folder, MIB)  # a folder: os.open for writing fails (EISDIR)
    with structlog.testing.capture_logs() as logs:
        assert reserve.refresh() == 0
    assert reserve.supported
    assert [(e["event"], e["error"]) for e in logs] == [
        ("disk reserve refused", os.strerror(errno.EISDIR))
    ]


def test_a_serving_store_keeps_its_wal_reserve_from_the_setting(
    tmp_path: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    _probe(tmp_path)
    path = tmp_path / "store.sqlite"
    wal = path.with_name(path.name + "-wal")
    monkeypatch.setenv("PRPGATE_SQLITE_WAL_RESERVE_MB", "1")
    store = open_store(Settings(store=path), long_running=True)
    assert isinstance(store, SqliteStore)
    try:
        checkpointer = store._checkpointer
        assert checkpointer is not None
        assert checkpointer.reserve.size == MIB
        ingest_cbcs(store, engine, 50, "R")
        # topped up to 1 MiB whenever less than half is left
        wait_for("the WAL's reserve", lambda: _ahead(wal) >= MIB // 2, 15)
        first = checkpointer.reserve.reserved
        assert first >= MIB
        size = wal.stat().st_size
        ingest_cbcs(store, engine, 300, "S")  # more than the reserve: the file grows through it
        assert wal.stat().st_size > size + MIB
        wait_for("the reserve topped up again", lambda: _ahead(wal) >= MIB // 2, 15)
        assert checkpointer.reserve.reserved > first
    finally:
        store.close()
    # the file's content is SQLite's alone: every message there, the database intact
    db = sqlite3.connect(str(path))
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        db.close()
    assert stored_messages(path) == 350


def test_stores_opened_for_one_off_commands_reserve_nothing(tmp_path: Path) -> None:
    store = open_store(Settings(store=tmp_path / "store.sqlite"))
    try:
        assert isinstance(store, SqliteStore)
        assert store._checkpointer is None
    finally:
        store.close()
