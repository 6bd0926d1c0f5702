"""SqliteStore: the embedded default store (one file, WAL, durable commits).

Durability: WAL journal with ``synchronous=FULL``, so a committed transaction
survives power loss; a caller acknowledges a message only after ``session()``
has exited. One connection, used from one thread at a time (the listeners
funnel writes through one writer).

Page size: a new store is made with pages of ``PAGE_SIZE`` (1 KiB) instead of SQLite's
4 KiB. A commit appends to the WAL every page it changed, whole: the last page of each
table and index that grows in id order, and one page of every index the message lands in
at random (patient, result and search keys). With small batches, as under a steady load,
those pages are most of what a commit writes: 41 KB of WAL a message with 4 KiB pages
and 20 KB with 1 KiB pages, in batches of four, for the same 7-8 KB of data and a little
less CPU (512-byte pages cost more CPU than they save). In the large batches of a replay
(256 messages) the WAL is 10 against 14 KB a message and the CPU 6-13% more. Every sync,
checkpoint and writeback is that much smaller: at 1 000 msgs/s for 90 s without a pause
the p99 ACK latency was 11.3 ms (twice) against 17.1 and 24.5 ms with 4 KiB pages
(``bench/bench_mllp.py``, unbroken phase). A store made earlier keeps its page size (a
WAL database cannot change it), and works as before.

Savepoint journal in memory (``temp_store=MEMORY``): each message is ingested inside a
savepoint, and SQLite keeps the original of every page the savepoint changes (up to
about 80 on a store of a few thousand messages) in a sub-journal. Past 64 KiB that
journal moves to a temporary file SQLite creates in ``/var/tmp`` and deletes at the end
of the transaction, and every page after it is two write calls there: about seven a
message, on the event loop's thread, in batches of eight. In memory it holds one
message's pages at most (it is emptied as each savepoint is released), under 100 KB. The
connection's other temporary structures (a read's sort, the UNION of ``patient_keys``)
stay in memory too, each about the size of its read's result.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from prpgate.errors import StoreError
from prpgate.store.migrations import SCHEMA_VERSION, migrate_sqlite
from prpgate.store.sql_reads import SqlReads
from prpgate.store.sqlite_checkpoint import Checkpointer
from prpgate.store.sqlite_outbox import SqliteOutboxMixin
from prpgate.store.sqlite_session import SqliteSession
from prpgate.store.sqlite_split import SplitTransaction
from prpgate.store.sqlite_writer_lock import WriterLock

__all__ = ["PAGE_SIZE", "SCHEMA_VERSION", "SqliteSession", "SqliteStore", "patient_hash"]

PAGE_SIZE = 1024  # bytes; a new store's pages (see above)


def patient_hash(identifier_value: str) -> str:
    """SHA-256 of a patient identifier value (the MRN): lets the store find a patient's
    messages by MRN without its index holding MRNs in clear."""
    return hashlib.sha256(identifier_value.encode()).hexdigest()


class SqliteStore(SqliteOutboxMixin, SqlReads):
    """The embedded store: one SQLite file in WAL mode with durable commits.

    ``durable=False`` (synchronous=NORMAL) trades the last commits on power loss
    for speed; it exists for benchmarks that measure what fsync costs. Pending schema
    migrations are applied on open; ``migrate=False`` refuses an older store instead.
    ``writer_lock``: every write transaction first takes the store's ``WriterLock``, so
    processes writing one file hand the write lock on at once instead of sleeping in
    SQLite's busy handler (``serve`` with several MLLP workers). ``wal_reserve``: bytes
    of disk the background checkpointer keeps reserved past the WAL file's end
    (``disk_reserve``); ``wal_restart``: bytes of WAL frames after which it starts the WAL
    afresh under a load that never pauses (``sqlite_checkpoint``; 0: never).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        durable: bool = True,
        migrate: bool = True,
        background_checkpoints: bool = False,
        writer_lock: bool = False,
        wal_reserve: int = 0,
        wal_restart: int = 0,
    ) -> None:
        self.path = Path(path)
        self._checkpointer: Checkpointer | None = None
        self._lock: WriterLock | None = None
        try:
            if self.path.parent != Path():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            if writer_lock:
                self._lock = WriterLock(self.path)
            self._db = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False
            )
            self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # before WAL; new files only
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=10000")  # sqlite_split.BUSY_TIMEOUT_MS
            self._db.execute("PRAGMA temp_store=MEMORY")  # the savepoint journal (above)
            migrate_sqlite(self._db, apply=migrate)
            if background_checkpoints:
                # commits never checkpoint themselves; a thread does it (sqlite_checkpoint)
                self._db.execute("PRAGMA wal_autocheckpoint=0")
                self._checkpointer = Checkpointer(
                    self.path, wal_reserve=wal_reserve, restart_at=wal_restart
                )
                self._checkpointer.start()
        except (sqlite3.Error, OSError) as exc:
            folder = self.path.parent
            writable = not folder.is_dir() or os.access(folder, os.W_OK)
            hint = "" if writable else f" (its folder {folder} is read-only)"
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}{hint}") from exc
        except StoreError:
            self._db.close()
            raise

    @property
    def writer_turn(self) -> Callable[[], None] | None:
        """With a writer lock: a call that waits for the lock and keeps it for the next
        ``session`` (``WriterLock.acquire``); None without one."""
        return self._lock.acquire if self._lock is not None else None

    @contextmanager
    def session(self) -> Iterator[SqliteSession]:
        """A write transaction (BEGIN IMMEDIATE), committed durably on normal exit."""
        # a write that fails (disk full, I/O error, ...) reads "write failed: ..."
        with self._write_tx("write failed") as db:
            session = SqliteSession(db)
            yield session
            session.flush()

    def split_transaction(self) -> SplitTransaction:
        """A write transaction taken step by step (``sqlite_split``): the statements on
        one thread, the waits and the COMMIT on another. One at a time, like ``session``."""
        return SplitTransaction(self._db, self._lock)

    def close(self) -> None:
        """Close the connection (after the background checkpointer's last checkpoint)."""
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self._db.close()
        if self._lock is not None:
            self._lock.close()

    # --- connections for the statements both SQL stores share (SqlAccess) -----

    @contextmanager
    def _reading(self, what: str) -> Iterator[sqlite3.Connection]:
        try:
            yield self._db
        except sqlite3.Error as exc:
            raise StoreError(f"{what}: {exc}") from exc

    def _transaction(self, what: str) -> AbstractContextManager[sqlite3.Connection]:
        """A BEGIN IMMEDIATE transaction (``_outbox_tx``): its failures read ``outbox: ...``
        whatever ``what`` names, as they always have on SQLite."""
        return self._outbox_tx()

    _writing = _transaction  # one statement is a transaction of its own too

    # --- reads -------------------------------------------------------------

    def patient_keys(self, value: str) -> list[str]:
        """Patient keys whose identifier value is ``value`` (from results and outputs)."""
        suffix = f"|{value}"
        keys = {
            str(r[0])
            for r in self._db.execute(
                "SELECT DISTINCT patient_key FROM outputs UNION "
                "SELECT DISTINCT patient_key FROM results"
            )
            if str(r[0]).endswith(suffix)
        }
        return sorted(keys)
