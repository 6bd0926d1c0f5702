"""SplitTransaction: a SQLite write transaction taken step by step, on a store file on
disk, against a second connection and a second writer-lock descriptor."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from prpgate.errors import StoreError
from prpgate.store.sqlite import SqliteStore
from prpgate.store.sqlite_session import SqliteSession
from prpgate.store.sqlite_split import BUSY_TIMEOUT_MS
from prpgate.store.sqlite_writer_lock import WriterLock
from tests.integration.test_sqlite_writer_lock import free

TIMEOUT = 30.0


def count(path: Path, table: str = "messages") -> int:
    """Rows a second connection sees (committed rows only)."""
    db = sqlite3.connect(path)
    try:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608 - fixed names
    finally:
        db.close()


def add_message(session: SqliteSession, control_id: str) -> int:
    """One bare message row through the session (what ingest records first)."""
    return int(
        session._db.execute(
            "INSERT INTO messages (received_at, source, sending_application, sending_facility,"
            " control_id, content_hash, message_type, version, status, ack_code, errors,"
            " summary, raw) VALUES ('2026-01-01T00:00:00+00:00', 'test', 'LAB', 'FAC', ?, ?,"
            " 'ORU^R01', '2.5.1', 'accepted', 'AA', '[]', '{}', x'00')",
            (control_id, control_id),
        ).lastrowid
        or 0
    )


def test_rows_are_visible_to_others_only_after_commit(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite")
    tx = store.split_transaction()
    assert tx.try_begin()
    mid = tx.run(lambda s: add_message(s, "ONE"))
    assert mid > 0
    assert count(store.path) == 0  # written, not committed
    tx.commit()
    assert count(store.path) == 1
    # the connection is out of its transaction: the next one begins
    tx2 = store.split_transaction()
    assert tx2.try_begin()
    tx2.rollback()
    store.close()


def test_try_begin_does_not_wait_for_another_connections_write_lock(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite")
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the store
    tx = store.split_transaction()
    assert store._db.execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_TIMEOUT_MS
    assert tx.try_begin() is False  # at once, not after the 10 s busy timeout
    # a busy timeout of 0 was only for the attempt: a waiting begin waits again
    assert store._db.execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_TIMEOUT_MS
    began = threading.Event()

    def wait_and_begin() -> None:
        tx.begin()
        began.set()

    t = threading.Thread(target=wait_and_begin, daemon=True)
    t.start()
    assert not began.wait(0.3)  # waits while the other connection writes
    other.execute("COMMIT")
    assert began.wait(TIMEOUT)
    t.join(TIMEOUT)
    tx.run(lambda s: add_message(s, "AFTER"))
    tx.commit()
    assert count(store.path) == 1
    other.close()
    store.close()


def test_try_begin_does_not_wait_for_another_process_writer_lock(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite", writer_lock=True)
    other = WriterLock(store.path)  # its own descriptor: as another process's writer
    other.acquire()
    tx = store.split_transaction()
    assert tx.try_begin() is False
    assert not store._db.in_transaction
    other.release()
    assert tx.try_begin()
    assert not free(other.path)  # held from the beginning ...
    tx.run(lambda s: add_message(s, "LOCKED"))
    tx.commit()
    assert free(other.path)  # ... to the commit
    other.close()
    store.close()


def test_a_failing_statement_rolls_back_and_reads_write_failed(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite", writer_lock=True)
    tx = store.split_transaction()
    assert tx.try_begin()

    def body(s: SqliteSession) -> None:
        add_message(s, "KEPT?")
        s._db.execute("INSERT INTO no_such_table VALUES (1)")

    with pytest.raises(StoreError, match=r"^write failed: no such table"):
        tx.run(body)
    assert not store._db.in_transaction
    assert store._lock is not None
    assert free(store._lock.path)
    assert count(store.path) == 0
    store.close()


def test_an_error_that_is_not_sqlite_rolls_back_and_is_raised_as_it_is(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite")
    tx = store.split_transaction()
    assert tx.try_begin()

    def body(s: SqliteSession) -> None:
        add_message(s, "GONE")
        raise KeyError("bug")

    with pytest.raises(KeyError):
        tx.run(body)
    assert not store._db.in_transaction
    assert count(store.path) == 0
    store.close()


def test_a_commit_that_fails_rolls_back_and_reads_commit_failed(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite")
    # a deferred foreign key is checked at COMMIT: the commit itself fails
    store._db.executescript(
        "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
        "CREATE TABLE child (ref INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);"
    )
    tx = store.split_transaction()
    assert tx.try_begin()

    def body(s: SqliteSession) -> None:
        add_message(s, "LATE")
        s._db.execute("INSERT INTO child VALUES (42)")

    tx.run(body)  # accepted until the commit
    with pytest.raises(StoreError, match=r"^commit failed: FOREIGN KEY"):
        tx.commit()
    assert not store._db.in_transaction
    assert count(store.path) == 0
    store.close()


def test_steps_out_of_order_are_refused(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite")
    tx = store.split_transaction()
    with pytest.raises(StoreError, match="no transaction is open"):
        tx.run(lambda s: add_message(s, "EARLY"))
    with pytest.raises(StoreError, match="no transaction is open"):
        tx.commit()
    assert count(store.path) == 0
    store.close()
