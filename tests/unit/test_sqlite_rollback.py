"""A write that fails after SQLite rolled the transaction back by itself (a full disk at
COMMIT: SQLITE_FULL) is a StoreError naming that failure, and the store serves on."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from prpgate.core.pipeline import Engine
from prpgate.errors import StoreError
from prpgate.ingest import ingest
from prpgate.store.sqlite import SqliteStore
from tests.conftest import load


class _FullAtCommit:
    """A connection whose COMMIT fails as SQLite's does on a full disk: the transaction
    is rolled back by SQLite, then the error is raised."""

    def __init__(self, db: sqlite3.Connection, failures: int) -> None:
        self._db = db
        self.failures = failures

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT" and self.failures:
            self.failures -= 1
            self._db.execute("ROLLBACK")
            raise sqlite3.OperationalError("database or disk is full")
        return self._db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def _ingest(store: SqliteStore, engine: Engine, raw: bytes) -> None:
    with store.session() as session:
        ingest(session, engine, raw, source="test", received_at=datetime.now(UTC))


def test_sqlite_commit_failing_after_sqlite_rolled_back_is_a_clear_store_error(
    tmp_path: Path, engine: Engine
) -> None:
    store = SqliteStore(tmp_path / "s.sqlite")
    real = store._db
    store._db = _FullAtCommit(real, failures=1)  # type: ignore[assignment]
    raw = load("cbc_high_wbc.hl7")
    with pytest.raises(StoreError, match="commit failed: database or disk is full"):
        _ingest(store, engine, raw)
    assert not real.in_transaction
    _ingest(store, engine, raw)  # space is back: the same message goes in, once
    assert [m.status for m in store.list_messages(limit=10)] == ["accepted"]
    store._db = real
    store.close()


def test_sqlite_outbox_commit_failing_after_sqlite_rolled_back_is_a_store_error(
    tmp_path: Path, engine: Engine
) -> None:
    store = SqliteStore(tmp_path / "s.sqlite")
    _ingest(store, engine, load("cbc_high_wbc.hl7"))
    real = store._db
    store._db = _FullAtCommit(real, failures=1)  # type: ignore[assignment]
    now = datetime.now(UTC)
    with pytest.raises(StoreError, match="database or disk is full"):
        store.retry_outbox((), now=now, all_dead=True)
    assert not real.in_transaction
    store._db = real
    store.close()
