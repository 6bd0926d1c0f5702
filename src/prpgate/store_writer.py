"""The store writer of a serve process: one owner of the store, group commits.

Every use of the store by the listeners goes through one queue: messages and records
to commit, and reads (``call``) between batches. Call order is commit order. Messages
that arrive together, on any connection, share one transaction and one fsync: while
one batch commits, the next gathers, so latency stays one fsync at low load and
throughput grows with load. A message's future resolves only after its batch has
committed durably; the listener acknowledges only then.

Where the store's statements run:

* SQLite (``SqliteStore``): on the event loop's thread, in a ``SplitTransaction``;
  only the waits (another writer's lock) and the COMMIT, whose fsync is most of a
  batch's time, go to the writer's worker thread. The loop reads and acknowledges
  while the COMMIT syncs, and the statements do not trade the GIL with the loop
  statement by statement.
* Any other store (PostgreSQL: a network round trip per statement): the whole
  transaction on the worker thread.

A batch that fails is retried one message per transaction on the worker thread, so
one bad message cannot take its neighbours down with it.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from prpgate.core.pipeline import Engine, Reading, read
from prpgate.errors import StoreConflictError, StoreError
from prpgate.ingest import Ingested, ingest
from prpgate.ports import MessageRecord, Store, StoreSession
from prpgate.store.sqlite import SqliteStore
from prpgate.store_reader import store_answer

if TYPE_CHECKING:
    from prpgate.serve import ServeMetrics

__all__ = ["StoreWriter"]

_log = structlog.get_logger("prpgate.serve")
T = TypeVar("T")

_CONFLICT_RETRIES = 8  # runs of one message that lost a race, before answering "send again"


@dataclass(slots=True)
class _Job:
    future: asyncio.Future[Any]
    raw: bytes = b""
    source: str = ""
    received_at: datetime | None = None
    record: MessageRecord | None = None
    reading: Reading | None = None
    call: Callable[[Store], Any] | None = None  # a read between batches (``StoreWriter.call``)


class StoreWriter:
    """The one owner of the store: group commits, one batch at a time.

    ``submit``/``submit_record`` enqueue immediately (call order is commit order) and
    return a future resolved after the durable commit, or failed with StoreError.
    """

    def __init__(
        self,
        store: Store,
        engine: Engine,
        *,
        max_batch: int = 256,
        metrics: ServeMetrics | None = None,
    ) -> None:
        self._store = store
        self._engine = engine
        self._max_batch = max_batch
        self._metrics = metrics
        # jobs in call order; None: stop. Appended and taken on the loop's thread
        self._jobs: collections.deque[_Job | None] = collections.deque()
        self._pending = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prpgate-store")
        # a SQLite store that several processes write offers a turn (SqliteStore.writer_turn)
        self._turn: Callable[[], None] | None = getattr(store, "writer_turn", None)
        # the store itself, not a wrapper: its statements may run on the loop's thread
        self._split = store if type(store) is SqliteStore else None
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        # the last commit that failed, while no commit has succeeded since: (when, why)
        self.failing: tuple[float, str] | None = None

    async def start(self) -> None:
        """Start the writer task."""
        self._task = asyncio.create_task(self._run(), name="prpgate-store-writer")

    async def stop(self) -> None:
        """Commit what is queued, then close the store and the worker thread."""
        if self._stopped:
            return
        self._stopped = True
        self._jobs.append(None)
        self._pending.set()
        if self._task is not None:
            await self._task
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._store.close)
        self._executor.shutdown(wait=True)

    def submit(self, raw: bytes, *, source: str, received_at: datetime) -> asyncio.Future[Ingested]:
        """Ingest one message in the next batch; resolves after its commit.

        The message is read (parsed and mapped: no store needed) here, while the worker
        thread commits earlier ones: SQLite releases the GIL while it syncs, so the two
        overlap.
        """
        fut: asyncio.Future[Ingested] = asyncio.get_running_loop().create_future()
        reading = read(raw, self._engine) if not self._stopped else None
        self._enqueue(_Job(fut, raw=raw, source=source, received_at=received_at, reading=reading))
        return fut

    def submit_record(self, record: MessageRecord) -> asyncio.Future[int]:
        """Record one input that is not a message; resolves to its id after the commit."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._enqueue(_Job(fut, record=record))
        return fut

    async def call(self, fn: Callable[[Store], T], *, timeout: float = 10.0) -> T:
        """Run ``fn(store)`` on the worker thread between batches (reads: readiness,
        counts). Raises StoreError when it fails or takes longer than ``timeout`` seconds.
        """
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._enqueue(_Job(fut, call=fn))
        return await store_answer(fut, timeout=timeout, failed="store call failed")

    def _enqueue(self, job: _Job) -> None:
        if self._stopped:
            job.future.set_exception(StoreError("the store writer is shutting down"))
            return
        self._jobs.append(job)
        self._pending.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = False
        while not stop:
            await self._pending.wait()
            self._pending.clear()
            if not self._jobs:
                continue
            head = self._jobs[0]
            if head is not None and head.call is not None:
                self._jobs.popleft()
                batch = [head]
                outcomes = [await loop.run_in_executor(self._executor, self._call, head)]
            else:
                if self._turn is not None:
                    # several processes write the store: wait for its turn, then gather
                    # (what arrived meanwhile shares the commit)
                    await loop.run_in_executor(self._executor, self._take_turn)
                batch, stop = self._take()
                if not batch:  # only the stop marker: the turn ends when the store closes
                    continue
                if self._split is not None:
                    outcomes = await self._commit_split(self._split, batch)
                else:
                    outcomes = await loop.run_in_executor(self._executor, self._commit, batch)
            if self._jobs:
                self._pending.set()  # more arrived meanwhile: the next batch at once
            for job, out in zip(batch, outcomes, strict=True):
                if job.future.done():
                    continue
                if isinstance(out, BaseException):
                    job.future.set_exception(out)
                else:
                    job.future.set_result(out)
            # the listeners write these acknowledgments before the next batch's
            # statements hold the loop
            await asyncio.sleep(0)

    def _take_turn(self) -> None:
        assert self._turn is not None
        try:
            self._turn()
        except OSError as exc:  # the transaction's own wait for the lock reports it too
            _log.error("store writer lock failed", error=str(exc))

    def _take(self) -> tuple[list[_Job], bool]:
        """Up to ``max_batch`` queued messages and records, up to the next read or the
        stop marker: (batch, stop)."""
        batch: list[_Job] = []
        jobs = self._jobs
        while len(batch) < self._max_batch and jobs:
            job = jobs[0]
            if job is None:
                jobs.popleft()
                return batch, True
            if job.call is not None:
                break
            jobs.popleft()
            batch.append(job)
        return batch, False

    async def _commit_split(self, store: SqliteStore, batch: list[_Job]) -> list[object]:
        """One transaction for the batch: statements here, waits and COMMIT on the worker
        thread. On any failure the batch runs again on the worker thread, message by
        message (``_commit``), which reports what fails."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        tx = store.split_transaction()
        try:
            if not tx.try_begin():  # another writer holds the store: wait off the loop
                await loop.run_in_executor(self._executor, tx.begin)
            outcomes = tx.run(lambda session: [self._apply(session, job) for job in batch])
            await loop.run_in_executor(self._executor, tx.commit)
        except Exception:  # the batch failed: each message alone, failures reported there
            return [
                (await loop.run_in_executor(self._executor, self._commit, [job]))[0]
                for job in batch
            ]
        self._committed(started, len(batch))
        return outcomes

    def _commit(self, batch: list[_Job], conflicts: int = 0) -> list[object]:
        """On the worker thread: one transaction for the batch; isolate on failure. A
        message alone that lost a race with another instance (StoreConflictError) runs
        again."""
        started = time.perf_counter()
        try:
            with self._store.session() as session:
                outcomes = [self._apply(session, job) for job in batch]
        except Exception as exc:  # one worker iteration: the batch's failure is reported
            if len(batch) > 1:
                return [self._commit([job])[0] for job in batch]
            if isinstance(exc, StoreConflictError) and conflicts < _CONFLICT_RETRIES:
                time.sleep(0.005 * (conflicts + 1))  # the winner commits meanwhile
                return self._commit(batch, conflicts + 1)
            _log.error("store commit failed", error=str(exc), kind=type(exc).__name__)
            self.failing = (time.monotonic(), str(exc))
            if isinstance(exc, StoreError):
                return [exc]
            err = StoreError(f"could not commit: {type(exc).__name__}: {exc}")
            err.__cause__ = exc
            return [err]
        self._committed(started, len(batch))
        return outcomes

    def _committed(self, started: float, size: int) -> None:
        self.failing = None
        if self._metrics is not None:
            self._metrics.commit_latency.observe(time.perf_counter() - started)
            self._metrics.batch_size.observe(size)

    def _call(self, job: _Job) -> object:
        """On the worker thread: a read's result, or the exception it raised."""
        assert job.call is not None
        try:
            return job.call(self._store)
        except Exception as exc:  # handed to the caller's future
            return exc

    def _apply(self, session: StoreSession, job: _Job) -> object:
        if job.record is not None:
            return session.add_message(job.record)
        assert job.received_at is not None
        return ingest(
            session,
            self._engine,
            job.raw,
            source=job.source,
            received_at=job.received_at,
            reading=job.reading,
        )
