"""Reads of a serve process that must neither wait for the store writer nor hold it up.

The store writer (``store_writer``) runs its reads between batches: a read waits for the
batch being committed, and every message that arrives meanwhile waits for the read.
That suits a cheap check of the writer itself (``/readyz``). It does not suit reads
whose cost grows with the store: the outbox gauges a Prometheus scrape refreshes count
every undelivered row (tens of milliseconds for 30 000 rows, while the clinic's FHIR
server is down), and a FHIR search can match many rows. Scraped every second under
1 000 msgs/s, the count alone put dozens of ACKs a second over 50 ms.

A ``StoreReader`` runs such reads on a connection and a thread of its own, opened on
first use. On SQLite (WAL) a reader and the writer do not block each other, and SQLite
releases the GIL while a statement runs; on PostgreSQL the reader has a connection of
its own. A read sees every commit that finished before it started.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from prpgate.errors import StoreError
from prpgate.ports import Store

__all__ = ["StoreReader", "store_answer"]

T = TypeVar("T")


async def store_answer(work: Awaitable[T], *, timeout: float, failed: str) -> T:
    """``work``'s result within ``timeout`` seconds, for a read of the store (this
    module's, or the store writer's between batches). Raises StoreError: on a timeout,
    as it was, or ``<failed>: ...`` chained to any other failure."""
    try:
        return await asyncio.wait_for(work, timeout)
    except TimeoutError as exc:
        raise StoreError(f"the store did not answer within {timeout} s") from exc
    except StoreError:
        raise
    except Exception as exc:  # any failure of the read: report, chained
        raise StoreError(f"{failed}: {exc}") from exc


class StoreReader:
    """Runs ``fn(store)`` on its own thread and store, opened by ``open_store`` on the
    first call (on that thread) and closed by ``close``."""

    def __init__(self, open_store: Callable[[], Store]) -> None:
        self._open = open_store
        self._store: Store | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prpgate-reader")
        self._closed = False

    async def call(self, fn: Callable[[Store], T], *, timeout: float = 10.0) -> T:
        """``fn(store)``'s result. Raises StoreError when the store cannot be opened,
        ``fn`` fails, or it takes longer than ``timeout`` seconds (the thread finishes it
        before it runs the next read)."""
        if self._closed:
            raise StoreError("the store reader is closed")
        work = asyncio.get_running_loop().run_in_executor(self._executor, self._run, fn)
        return await store_answer(work, timeout=timeout, failed="store read failed")

    def _run(self, fn: Callable[[Store], T]) -> T:
        if self._store is None:
            self._store = self._open()
        return fn(self._store)

    async def close(self) -> None:
        """Close the store (after the read in progress, if any) and the thread."""
        if self._closed:
            return
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)

    def _close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
