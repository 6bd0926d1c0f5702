"""A bare durable MLLP server, the baseline for what a durable ACK costs on this machine:
every frame is stored in SQLite (WAL, ``synchronous=FULL``, 1 KiB pages as prpgate's
stores) and acknowledged only after its commit; frames that arrive together, on any
connection, share one commit, made on a thread of its own. Nothing is parsed, mapped or
evaluated, and SQLite checkpoints the WAL itself (its default, every 1 000 pages), so
the gap between this server and `prpgate serve` is prpgate's work per message.

Run from bench_mllp (``--durable-echo-server``), as its own process, until SIGTERM.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from processes import listen_until_terminated

_Pending = tuple[bytes, asyncio.Future[None]]


class DurableFrames:
    """Group commit of frames into one SQLite table: ``store`` resolves after the commit
    that holds the frame."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in ("page_size=1024", "journal_mode=WAL", "synchronous=FULL"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.execute("CREATE TABLE IF NOT EXISTS frames (id INTEGER PRIMARY KEY, raw BLOB)")
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="durable-echo")
        self._queued: list[_Pending] = []
        self._wake = asyncio.Event()

    def store(self, raw: bytes) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append((raw, fut))
        self._wake.set()
        return fut

    def _commit(self, rows: list[tuple[bytes]]) -> None:
        self._db.execute("BEGIN")
        self._db.executemany("INSERT INTO frames (raw) VALUES (?)", rows)
        self._db.execute("COMMIT")

    async def run(self) -> None:
        """Commit what is queued, batch after batch, until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._queued = self._queued, []
            if not batch:
                continue
            await loop.run_in_executor(self._thread, self._commit, [(r,) for r, _ in batch])
            for _, fut in batch:
                fut.set_result(None)
            if self._queued:
                self._wake.set()


async def durable_echo_server(ready_file: Path, db: Path, ack: Callable[[bytes], bytes]) -> None:
    """Answer every frame with ``ack`` of it once the frame is durably stored, in the
    order the frames came on each connection, until SIGTERM."""
    frames = DurableFrames(db)
    committer = asyncio.create_task(frames.run())

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        owed: asyncio.Queue[_Pending | None] = asyncio.Queue()

        async def respond() -> None:
            while (item := await owed.get()) is not None:
                await item[1]
                writer.write(ack(item[0]))

        responder = asyncio.create_task(respond())
        try:
            while True:
                raw = await reader.readuntil(b"\x1c\r")
                owed.put_nowait((raw, frames.store(raw)))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            owed.put_nowait(None)
            await responder
            writer.close()

    await listen_until_terminated(answer, ready_file)
    committer.cancel()
