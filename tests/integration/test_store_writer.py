"""The serve process's StoreWriter on SQLite files on disk: where a batch's statements
run, group commits, a failing message or commit isolated, reads between batches, and
the event loop kept free while another writer holds the store."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from prpgate.core.pipeline import AckCode, Engine
from prpgate.errors import StoreError
from prpgate.ingest import Ingested
from prpgate.ports import StoreSession
from prpgate.serve import ServeMetrics
from prpgate.store.sqlite import SqliteStore
from prpgate.store_writer import StoreWriter
from tests.integration.test_mllp import message, run

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


class Wrapped:
    """A store that is not SqliteStore itself (as the fault-injecting wrappers)."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner

    @contextlib.contextmanager
    def session(self) -> Iterator[StoreSession]:
        with self.inner.session() as s:
            yield s

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def traced(store: SqliteStore) -> list[tuple[int, str]]:
    """(thread id, statement) of every statement the store's connection runs."""
    seen: list[tuple[int, str]] = []
    store._db.set_trace_callback(lambda sql: seen.append((threading.get_ident(), sql)))
    return seen


async def submit_all(writer: StoreWriter, ids: list[str]) -> list[Ingested | BaseException]:
    futs = [writer.submit(message(c), source="test", received_at=NOW) for c in ids]
    return list(await asyncio.gather(*futs, return_exceptions=True))


def stored(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [r[0] for r in db.execute("SELECT control_id FROM messages ORDER BY id")]
    finally:
        db.close()


def test_sqlite_statements_run_on_the_loop_and_the_commit_on_the_worker_thread(
    tmp_path: Path, engine: Engine
) -> None:
    store = SqliteStore(tmp_path / "s.sqlite")
    seen = traced(store)

    async def scenario() -> None:
        loop_thread = threading.get_ident()
        writer = StoreWriter(store, engine)
        await writer.start()
        try:
            out = await submit_all(writer, [f"LOOP{i}" for i in range(6)])
        finally:
            await writer.stop()
        assert all(isinstance(o, Ingested) and o.ack is AckCode.AA for o in out)
        inserts = {t for t, sql in seen if sql.startswith("INSERT INTO messages")}
        commits = {t for t, sql in seen if sql == "COMMIT"}
        assert inserts == {loop_thread}
        assert commits
        assert loop_thread not in commits

    run(scenario())
    assert stored(tmp_path / "s.sqlite") == [f"LOOP{i}" for i in range(6)]


def test_any_other_store_runs_its_transactions_on_the_worker_thread(
    tmp_path: Path, engine: Engine
) -> None:
    inner = SqliteStore(tmp_path / "s.sqlite")
    seen = traced(inner)

    async def scenario() -> None:
        loop_thread = threading.get_ident()
        writer = StoreWriter(Wrapped(inner), engine)  # type: ignore[arg-type]
        await writer.start()
        try:
            out = await submit_all(writer, ["W1", "W2"])
        finally:
            await writer.stop()
        assert all(isinstance(o, Ingested) for o in out)
        inserts = {t for t, sql in seen if sql.startswith("INSERT INTO messages")}
        assert inserts
        assert loop_thread not in inserts

    run(scenario())


def test_messages_queued_together_share_one_commit(tmp_path: Path, engine: Engine) -> None:
    store = SqliteStore(tmp_path / "s.sqlite")
    seen = traced(store)

    async def scenario() -> None:
        writer = StoreWriter(store, engine)
        # queued before the writer runs: one batch, one transaction
        futs = [writer.submit(message(f"GRP{i}"), source="t", received_at=NOW) for i in range(20)]
        await writer.start()
        try:
            await asyncio.gather(*futs)
        finally:
            await writer.stop()

    run(scenario())
    assert sum(1 for _, sql in seen if sql == "COMMIT") == 1
    assert len(stored(tmp_path / "s.sqlite")) == 20


def test_a_message_sqlite_refuses_fails_alone(tmp_path: Path, engine: Engine) -> None:
    store = SqliteStore(tmp_path / "s.sqlite")
    store._db.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON messages WHEN NEW.control_id = 'POISON'"
        " BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END"
    )

    async def scenario() -> None:
        writer = StoreWriter(store, engine)
        futs = [
            writer.submit(message(c), source="t", received_at=NOW) for c in ("OK1", "POISON", "OK2")
        ]
        await writer.start()
        try:
            out = await asyncio.gather(*futs, return_exceptions=True)
        finally:
            await writer.stop()
        assert isinstance(out[0], Ingested)
        assert isinstance(out[2], Ingested)
        assert isinstance(out[1], StoreError)
        assert "refused by a test trigger" in str(out[1])

    run(scenario())
    assert stored(tmp_path / "s.sqlite") == ["OK1", "OK2"]


def test_a_commit_that_fails_fails_only_its_message(tmp_path: Path, engine: Engine) -> None:
    store = SqliteStore(tmp_path / "s.sqlite")
    # a deferred foreign key fails at COMMIT, for the message that breaks it only
    store._db.executescript(
        "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
        "CREATE TABLE child (ref INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);"
        "CREATE TRIGGER late AFTER INSERT ON messages WHEN NEW.control_id = 'LATE'"
        " BEGIN INSERT INTO child VALUES (42); END;"
    )
    metrics = ServeMetrics()

    async def scenario() -> None:
        writer = StoreWriter(store, engine, metrics=metrics)
        futs = [writer.submit(message(c), source="t", received_at=NOW) for c in ("A", "B", "LATE")]
        await writer.start()
        try:
            out = await asyncio.gather(*futs, return_exceptions=True)
            assert isinstance(out[2], StoreError)
            assert str(out[2]).startswith("commit failed: FOREIGN KEY")
            assert writer.failing is not None  # the last commit failed: /readyz says so
            # the next commit that succeeds clears it
            [ok] = await submit_all(writer, ["C"])
            assert isinstance(ok, Ingested)
            assert writer.failing is None
        finally:
            await writer.stop()
        assert isinstance(out[0], Ingested)
        assert isinstance(out[1], Ingested)

    run(scenario())
    assert stored(tmp_path / "s.sqlite") == ["A", "B", "C"]


def test_reads_run_between_batches_and_their_failures_read_as_store_errors(
    tmp_path: Path, engine: Engine
) -> None:
    store = SqliteStore(tmp_path / "s.sqlite")

    def boom(_: Any) -> int:
        raise ValueError("bad read")

    async def scenario() -> None:
        writer = StoreWriter(store, engine)
        await writer.start()
        try:
            first = writer.submit(message("R1"), source="t", received_at=NOW)
            # queued after R1: it sees R1 committed
            listed = await writer.call(lambda s: [m.control_id for m in s.list_messages()])
            assert first.done()
            assert listed == ["R1"]
            with pytest.raises(StoreError, match="store call failed: bad read"):
                await writer.call(boom)
            [after] = await submit_all(writer, ["R2"])  # the writer goes on
            assert isinstance(after, Ingested)
        finally:
            await writer.stop()

    run(scenario())


def test_the_loop_runs_on_while_another_connection_holds_the_store(
    tmp_path: Path, engine: Engine
) -> None:
    store = SqliteStore(tmp_path / "s.sqlite")
    other = sqlite3.connect(store.path, isolation_level=None)

    async def scenario() -> None:
        writer = StoreWriter(store, engine)
        await writer.start()
        other.execute("BEGIN IMMEDIATE")  # e.g. a CLI command writing the same file
        try:
            fut = writer.submit(message("HELD"), source="t", received_at=NOW)
            ticks = 0
            for _ in range(20):  # the loop keeps running: the writer waits on its thread
                await asyncio.sleep(0.01)
                ticks += 1
            assert ticks == 20
            assert not fut.done()
            other.execute("COMMIT")
            result = await asyncio.wait_for(fut, 10)
            assert result.ack is AckCode.AA
        finally:
            if other.in_transaction:
                other.execute("ROLLBACK")
            await writer.stop()

    run(scenario())
    other.close()
    assert stored(tmp_path / "s.sqlite") == ["HELD"]
