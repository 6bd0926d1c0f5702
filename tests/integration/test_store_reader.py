"""``StoreReader``: reads on a connection and thread of their own, so they neither wait
for the store writer nor hold it up. Real SQLite files; the writer is held up by a
second connection holding SQLite's write lock, the way a long batch or another process
would; ``serve`` in process for the scrape and the FHIR search."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from prpgate.config import Settings
from prpgate.core.mllp import frame
from prpgate.core.pipeline import Engine
from prpgate.errors import StoreError
from prpgate.ports import Store, StoreBackend
from prpgate.serve import serve
from prpgate.store.sqlite import SqliteStore
from prpgate.store_reader import StoreReader
from prpgate.store_writer import StoreWriter
from tests.conftest import MAPPINGS
from tests.integration.test_mllp import READ_TIMEOUT, message, msa, read_frames, run

MRN_SYSTEM = "urn:oid:2.16.840.1.113883.3.9999.2"
# fewer seconds than SQLite's busy timeout (10 s), which the held-up writer waits out
CLIENT_TIMEOUT = 8.0


def high_wbc(control_id: str, mrn: str = "ZQ79999") -> bytes:
    """The v2.3 CBC with a high leukocyte count: a DetectedIssue and a Flag to deliver."""
    return message(control_id, mrn=mrn).replace(b"|6.4|", b"|23.4|", 1)


def undelivered(store: Store) -> int:
    return store_backend(store).outbox_stats(include_done=False).undelivered


def store_backend(store: Store) -> StoreBackend:
    assert isinstance(store, SqliteStore)
    return store


def hold_write_lock(path: Path) -> sqlite3.Connection:
    """A connection holding the store's write lock until it rolls back."""
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    return db


def test_a_read_answers_while_the_writer_waits_for_the_write_lock(
    tmp_path: Path, engine: Engine
) -> None:
    path = tmp_path / "s.sqlite"

    async def scenario() -> None:
        writer = StoreWriter(SqliteStore(path), engine)
        await writer.start()
        reader = StoreReader(lambda: SqliteStore(path, migrate=False))
        try:
            now = datetime.now(UTC)
            await writer.submit(high_wbc("R1"), source="test", received_at=now)
            held = hold_write_lock(path)
            try:
                second = writer.submit(high_wbc("R2", "ZQ79998"), source="test", received_at=now)
                depth = await reader.call(undelivered, timeout=CLIENT_TIMEOUT)
                # the reader answered, and the writer is still waiting for the lock
                assert not second.done()
                assert depth == 2  # the first message's DetectedIssue and Flag
            finally:
                held.rollback()
                held.close()
            result = await asyncio.wait_for(second, READ_TIMEOUT)
            assert result.ack.value == "AA"
            assert await reader.call(undelivered) == 4  # a read sees what committed before
        finally:
            await reader.close()
            await writer.stop()

    run(scenario())


def test_a_read_that_fails_is_a_store_error_with_its_cause(tmp_path: Path) -> None:
    def broken(store: Store) -> int:
        raise ValueError("no such thing")

    async def scenario() -> None:
        reader = StoreReader(lambda: SqliteStore(tmp_path / "s.sqlite"))
        try:
            with pytest.raises(StoreError, match="store read failed: no such thing") as info:
                await reader.call(broken)
            assert isinstance(info.value.__cause__, ValueError)
            assert await reader.call(undelivered) == 0  # the next read runs
        finally:
            await reader.close()

    run(scenario())


def test_a_store_that_cannot_be_opened_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")

    async def scenario() -> None:
        reader = StoreReader(lambda: SqliteStore(tmp_path / "file" / "s.sqlite"))
        with pytest.raises(StoreError, match="cannot open SQLite store"):
            await reader.call(undelivered)
        await reader.close()

    run(scenario())


def test_a_read_past_its_timeout_is_a_store_error_and_the_next_read_runs_after_it(
    tmp_path: Path,
) -> None:
    release = threading.Event()
    order: list[str] = []

    def slow(store: Store) -> int:
        release.wait(READ_TIMEOUT)
        order.append("slow")
        return 1

    def quick(store: Store) -> int:
        order.append("quick")
        return 2

    async def scenario() -> None:
        reader = StoreReader(lambda: SqliteStore(tmp_path / "s.sqlite"))
        try:
            with pytest.raises(StoreError, match=r"did not answer within 0\.2 s"):
                await reader.call(slow, timeout=0.2)
            release.set()
            assert await reader.call(quick) == 2
            assert order == ["slow", "quick"]
        finally:
            await reader.close()

    run(scenario())


def test_close_closes_the_store_and_later_reads_are_refused(tmp_path: Path) -> None:
    opened: list[SqliteStore] = []

    def open_store() -> SqliteStore:
        opened.append(SqliteStore(tmp_path / "s.sqlite"))
        return opened[-1]

    async def scenario() -> None:
        reader = StoreReader(open_store)
        assert opened == []  # opened at the first read, not before
        assert await reader.call(undelivered) == 0
        assert await reader.call(undelivered) == 0
        assert len(opened) == 1
        await reader.close()
        with pytest.raises(sqlite3.ProgrammingError):  # its connection is closed
            undelivered(opened[0])
        with pytest.raises(StoreError, match="closed"):
            await reader.call(undelivered)
        await reader.close()  # twice is harmless

    run(scenario())


# ------------------------------------------------------------ serve in process


def test_serve_answers_a_scrape_and_a_fhir_search_while_its_writer_is_held_up(
    tmp_path: Path, engine: Engine
) -> None:
    path = tmp_path / "s.sqlite"
    settings = Settings(
        store=path,
        mappings=MAPPINGS,
        mllp_port=0,
        http_port=0,
        fhir_http_enabled=True,
        fhir_http_port=0,
    )
    acks: list[list[str]] = []

    async def exchange(port: int, raw: bytes) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(frame(raw))
        acks.append(msa((await read_frames(reader, 1))[0]))
        writer.close()

    async def main() -> None:
        stop = asyncio.Event()
        bound: asyncio.Future[dict[str, int]] = asyncio.get_running_loop().create_future()
        server = asyncio.create_task(
            serve(
                settings, engine=engine, stop=stop, on_ready=bound.set_result, handle_signals=False
            )
        )
        try:
            ports = await asyncio.wait_for(bound, READ_TIMEOUT)
            await exchange(ports["mllp_port"], high_wbc("S1"))
            held = hold_write_lock(path)
            try:
                waiting = asyncio.create_task(exchange(ports["mllp_port"], high_wbc("S2")))
                async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT) as client:
                    scrape = await client.get(f"http://127.0.0.1:{ports['http_port']}/metrics")
                    search = await client.get(
                        f"http://127.0.0.1:{ports['fhir_http_port']}/fhir/DetectedIssue",
                        params={"patient.identifier": f"{MRN_SYSTEM}|ZQ79999"},
                    )
                assert not waiting.done()  # the second message still waits for the lock
            finally:
                held.rollback()
                held.close()
            await asyncio.wait_for(waiting, READ_TIMEOUT)
        finally:
            stop.set()
            await asyncio.wait_for(server, READ_TIMEOUT)
        assert scrape.status_code == 200
        assert "prpgate_outbox_depth 2.0" in scrape.text  # S1's DetectedIssue and Flag
        assert search.status_code == 200
        bundle = json.loads(search.text)
        assert bundle["type"] == "searchset"
        assert [e["resource"]["resourceType"] for e in bundle["entry"]] == ["DetectedIssue"]

    run(main())
    assert [a[1:3] for a in acks] == [["AA", "S1"], ["AA", "S2"]]
