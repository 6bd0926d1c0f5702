"""WAL checkpoints off the committing thread, for a SQLite store that commits all day.

SQLite's automatic checkpoint runs inside the commit that crosses the WAL size
limit: that commit copies a thousand pages into the database file and syncs it
before it returns, and every acknowledgment waiting on it waits too (under MLLP
load that was the p99 ACK latency: 50 ms where the median was 7 ms). A
``Checkpointer`` turns the automatic checkpoint off on the store's connection and
runs passive checkpoints from its own connection and thread instead: a passive
checkpoint never blocks the writer, and SQLite releases the GIL while it copies
and syncs, so commits go on meanwhile. Durability is unchanged: a commit is durable
when its WAL frames are synced, which the committing connection still does.

Two more things keep the checkpoints out of the commits' way:

* The thread's disk I/O is in the idle class (Linux ``ioprio``, through psutil): the
  database file's sync at the end of a checkpoint writes every page the checkpoint
  copied, scattered over the file, and the commits' WAL syncs used to queue behind
  those writes. On a store of 46 000 messages that was the p99 ACK latency at
  1 000 msgs/s.
* Under a load that never pauses the checkpointer copies frames but never reaches the
  end of the WAL, so SQLite cannot start it afresh and the file grows (by 20-35 KB a
  message; 60-75 KB on a store made with 4 KiB pages). Cutting a file of hundreds of MB
  back takes 100 ms and more, and the store cannot commit meanwhile, so the checkpointer
  does it only once the store has been quiet for ``QUIET_CHECKS`` checkpoints in a row
  (the WAL caught up and unwritten): a TRUNCATE checkpoint that does not wait for the
  store. The writer's connection keeps no ``journal_size_limit``, with which the first
  commit after any pause cut the file back itself. Starting the log afresh during a load
  (a RESTART checkpoint) stalled the commits 17 ms each time, so the WAL is left to grow
  while the load lasts, up to ``restart_at`` bytes of frames (``sqlite_wal_restart_mb``,
  default 1 GiB: about 30 s at 1 000 msgs/s). Then the checkpointer starts it afresh
  with little for the writer to wait on: it syncs the database file first (through a
  descriptor SQLite has open, ``borrowed_fd``: the pages earlier checkpoints copied,
  most of them already written back by the kernel by then), runs two more passive passes
  to catch up, and then a RESTART checkpoint, which holds the commits only while it
  copies the last frames, syncs what they touched and waits for the WAL's readers (3-9
  ms measured; at most ``sqlite_split.BRIEF_WAIT_MS`` of waiting, then it is tried again
  at the next pass). The next commit writes from the start of the file, so the file stays at
  about that size however long the load lasts.
* While it grows, every commit's sync also allocated the file's new blocks, through the
  file system journal the other syncs wait on too; about one 6 s run in three at
  1 000 msgs/s had a commit of 20-60 ms and dozens of ACKs over 50 ms. The checkpointer
  keeps ``wal_reserve`` bytes of disk reserved past the WAL's end (``disk_reserve``),
  topped up after every checkpoint, so the commits append into blocks the file has.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import psutil
import structlog

from prpgate.store.borrowed_fd import BorrowedDescriptor
from prpgate.store.disk_reserve import DiskReserve
from prpgate.store.sqlite_split import BUSY_TIMEOUT_MS, not_waiting

__all__ = [
    "CATCH_UP_PASSES",
    "QUIET_CHECKS",
    "WAL_SIZE_LIMIT",
    "Checkpointer",
    "idle_io_priority",
]

# A WAL file larger than this is truncated once the store has been quiet for
# QUIET_CHECKS checkpoints in a row; under sustained load it grows by about 20-35 KB a
# message at 1 000 msgs/s (60-75 KB with 4 KiB pages: ``sqlite.PAGE_SIZE``).
WAL_SIZE_LIMIT = 64 * 1024 * 1024
QUIET_CHECKS = 5
CATCH_UP_PASSES = 2  # passive passes between the database file's sync and a RESTART

_PASSIVE = "PRAGMA wal_checkpoint(PASSIVE)"
_TRUNCATE = "PRAGMA wal_checkpoint(TRUNCATE)"
_RESTART = "PRAGMA wal_checkpoint(RESTART)"
_PAGE_SIZE = "PRAGMA page_size"


def idle_io_priority() -> bool:
    """Put the calling thread's disk I/O in the idle class: the disk serves it when
    nothing else waits. True when done; False where the platform has no such class (the
    thread then keeps the default priority)."""
    idle = getattr(psutil, "IOPRIO_CLASS_IDLE", None)
    if idle is None:
        return False
    try:
        psutil.Process(threading.get_native_id()).ionice(idle)
    except (psutil.Error, OSError, ValueError):
        return False
    return True


_log = structlog.get_logger("prpgate.store")


class Checkpointer:
    """A daemon thread running ``PRAGMA wal_checkpoint(PASSIVE)`` every ``interval`` s,
    its disk I/O in the idle class; when the store has been quiet for ``QUIET_CHECKS``
    checkpoints and its WAL file is larger than ``wal_limit`` bytes, it truncates the
    file (``truncations`` counts). Under a load that never pauses, once the WAL holds
    ``restart_at`` bytes of frames (> 0) it starts the WAL afresh (``restarts``
    counts). With ``wal_reserve`` > 0 it keeps that much disk
    reserved past the WAL's end (``reserve``; Linux).

    ``start`` opens its connection; ``stop`` ends the thread after one last passive
    checkpoint and closes it. A failing checkpoint is logged and tried again at the
    next interval (the WAL only grows meanwhile; nothing is lost).
    """

    def __init__(
        self,
        path: Path,
        *,
        interval: float = 1.0,
        wal_limit: int = WAL_SIZE_LIMIT,
        wal_reserve: int = 0,
        restart_at: int = 0,
    ) -> None:
        self._path = path
        self._database = BorrowedDescriptor(path)
        self.restart_at = restart_at
        self.restarts = 0
        self._wal = path.with_name(path.name + "-wal")
        self.reserve = DiskReserve(self._wal, wal_reserve)
        self._interval = interval
        self.wal_limit = wal_limit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.checkpoints = 0
        self.truncations = 0
        self._quiet = 0
        self._last_write: tuple[int, int] | None = None

    def start(self) -> None:
        """Start checkpointing in the background."""
        self._thread = threading.Thread(target=self._run, name="prpgate-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after one last checkpoint (waits for it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        if not idle_io_priority():
            _log.info("checkpoint thread keeps the default disk priority")
        try:
            db = sqlite3.connect(
                str(self._path), isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000
            )
        except sqlite3.Error as exc:
            _log.error("checkpoint connection failed", error=str(exc))
            return
        try:
            page_size = int(db.execute(_PAGE_SIZE).fetchone()[0])
            while True:
                self.reserve.refresh()
                stopping = self._stop.wait(self._interval)
                try:
                    _, log, done = db.execute(_PASSIVE).fetchone()
                    self.checkpoints += 1
                    if self._quiet_for(caught_up=log == done) >= QUIET_CHECKS:
                        self._truncate(db)
                    elif not stopping and 0 < self.restart_at <= log * page_size:
                        self._restart(db, log)
                except sqlite3.Error as exc:  # a worker iteration: log, try again later
                    _log.warning("wal checkpoint failed", error=str(exc))
                if stopping:
                    return
        finally:
            db.close()

    def _quiet_for(self, *, caught_up: bool) -> int:
        """How many checkpoints in a row found the WAL caught up, larger than the limit
        and unwritten since the one before (its size and modification time unchanged)."""
        try:
            stat = self._wal.stat()
            write = (stat.st_size, stat.st_mtime_ns)
        except OSError:  # no WAL file (yet)
            write = (0, 0)
        quiet = caught_up and write == self._last_write and write[0] > self.wal_limit
        self._last_write = write
        self._quiet = self._quiet + 1 if quiet else 0
        return self._quiet

    def _restart(self, db: sqlite3.Connection, frames: int) -> None:
        """Start the WAL afresh under load: sync the database file, catch up, RESTART.
        The RESTART waits up to ``sqlite_split.BRIEF_WAIT_MS`` for the writer's lock and
        for the WAL's readers, holding the commits while it waits for the readers and
        copies the last frames, so a long read (a FHIR search) cannot hold them for the
        store's busy timeout; busy, it is tried at the next pass."""
        started = time.perf_counter()
        synced = self._database.datasync()
        sync_ms = round((time.perf_counter() - started) * 1000, 1)
        for _ in range(CATCH_UP_PASSES):
            db.execute(_PASSIVE).fetchone()
        held = time.perf_counter()
        with not_waiting(db, briefly=True):
            busy, _, _ = db.execute(_RESTART).fetchone()
        if not busy:
            self.restarts += 1
            ms = round((time.perf_counter() - held) * 1000, 1)
            _log.info("wal restarted", frames=frames, synced=synced, sync_ms=sync_ms, ms=ms)

    def _truncate(self, db: sqlite3.Connection) -> None:
        """Empty the WAL file. The TRUNCATE checkpoint waits for nothing: while the
        store's writer or a reader is busy it does not truncate, and the next quiet
        checkpoint tries again."""
        size = self._last_write[0] if self._last_write else 0
        started = time.perf_counter()
        with not_waiting(db):
            busy, _, _ = db.execute(_TRUNCATE).fetchone()
        if not busy:
            self.truncations += 1
            self._quiet = 0
            ms = round((time.perf_counter() - started) * 1000, 1)
            _log.info("wal truncated", bytes=size, ms=ms)
