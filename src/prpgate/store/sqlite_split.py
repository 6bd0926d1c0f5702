"""A SQLite write transaction in three steps the caller may run on different threads.

``serve``'s store writer runs a batch's statements on the event loop's thread and only
the waits on a thread of its own: taking SQLite's write lock when another connection
holds it, and the COMMIT, whose fsync is most of a batch's time. With the statements on
a second thread, the two threads traded the GIL around every statement and a batch took
about twice its CPU time under load (``bench/bench_mllp.py``); on one thread the
statements run at their own speed and the loop still reads and acknowledges while the
COMMIT syncs.

Steps: ``try_begin`` (never waits) or ``begin`` (waits as the store's busy timeout
allows), then ``run`` (the statements; rolled back on failure), then ``commit`` or
``rollback``. Each step's failure is a StoreError worded as ``SqliteStore.session``'s.
``SqliteStore``'s own transactions (``session``, the outbox) are the same steps taken in a
row on one thread (``SqliteOutboxMixin._write_tx``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from prpgate.errors import StoreError
from prpgate.store.sqlite_session import SqliteSession
from prpgate.store.sqlite_writer_lock import WriterLock

__all__ = [
    "BRIEF_WAIT_MS",
    "BUSY_TIMEOUT_MS",
    "WAIT_FOR_WRITERS",
    "SplitTransaction",
    "not_waiting",
]

T = TypeVar("T")

BUSY_TIMEOUT_MS = 10_000  # a store connection's wait for another writer
WAIT_FOR_WRITERS = f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}"  # a store connection's setting
_NO_WAIT = "PRAGMA busy_timeout=0"
# A wait that holds other writers up meanwhile (a RESTART checkpoint waiting for the WAL's
# readers), so it must stay short: a caller that is still busy after it tries again later.
BRIEF_WAIT_MS = 20
_BRIEF_WAIT = f"PRAGMA busy_timeout={BRIEF_WAIT_MS}"
_SQLITE_BUSY = 5  # SQLite's primary result code for "database is locked"


@contextmanager
def not_waiting(db: sqlite3.Connection, *, briefly: bool = False) -> Iterator[None]:
    """Statements in the block fail at once (SQLITE_BUSY) where another connection holds
    what they need, instead of waiting (``briefly``: after waiting at most
    ``BRIEF_WAIT_MS``); the store's busy timeout is back after it."""
    db.execute(_BRIEF_WAIT if briefly else _NO_WAIT)
    try:
        yield
    finally:
        db.execute(WAIT_FOR_WRITERS)


class SplitTransaction:
    """One BEGIN IMMEDIATE ... COMMIT on a store's connection, step by step.

    Only one step runs at a time and the steps run in order; the store's writer lock,
    when there is one, is held from the beginning to the commit or rollback.
    """

    def __init__(self, db: sqlite3.Connection, lock: WriterLock | None) -> None:
        self._db = db
        self._lock = lock
        self._open = False

    def try_begin(self) -> bool:
        """BEGIN IMMEDIATE if no other writer holds the store: True when the transaction is
        open, False when another connection or process has the write lock (``begin`` on a
        thread that may wait, then). Raises StoreError when SQLite fails otherwise."""
        if self._lock is not None and not self._lock.try_acquire():
            return False
        try:
            with not_waiting(self._db):
                self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            if self._lock is not None:
                self._lock.release()
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF == _SQLITE_BUSY:
                return False
            raise StoreError(f"cannot begin a transaction: {exc}") from exc
        self._open = True
        return True

    def begin(self) -> None:
        """BEGIN IMMEDIATE, waiting for other writers (the writer lock, then SQLite's busy
        timeout). Raises StoreError when the store stays locked or fails."""
        if self._lock is not None:
            self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            if self._lock is not None:
                self._lock.release()
            raise StoreError(f"cannot begin a transaction: {exc}") from exc
        self._open = True

    @contextmanager
    def writing(self, what: str = "write failed") -> Iterator[sqlite3.Connection]:
        """The open transaction's connection for a block of statements. On any failure
        the transaction is rolled back; a SQLite error is raised as StoreError
        ``<what>: ...``, anything else as it is."""
        if not self._open:
            raise StoreError("no transaction is open")
        try:
            yield self._db
        except sqlite3.Error as exc:
            self.rollback()
            raise StoreError(f"{what}: {exc}") from exc
        except BaseException:
            self.rollback()
            raise

    def run(self, body: Callable[[SqliteSession], T]) -> T:
        """``body(session)`` and the rows the session holds back, in the open transaction
        (``writing``: a failure rolls back and reads ``write failed: ...``)."""
        with self.writing() as db:
            session = SqliteSession(db)
            out = body(session)
            session.flush()
        return out

    def commit(self) -> None:
        """COMMIT: the durable sync (call it off the event loop). On failure the
        transaction is rolled back and StoreError ``commit failed: ...`` raised."""
        if not self._open:
            raise StoreError("no transaction is open")
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self.rollback()
            raise StoreError(f"commit failed: {exc}") from exc
        self._end()

    def rollback(self) -> None:
        """Undo the transaction (nothing to undo when SQLite already rolled it back, after
        a full disk or an I/O error) and release the writer lock."""
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        finally:
            self._end()

    def _end(self) -> None:
        if self._open and self._lock is not None:
            self._lock.release()
        self._open = False
