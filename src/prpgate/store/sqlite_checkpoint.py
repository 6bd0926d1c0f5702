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
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import structlog

__all__ = ["WAL_SIZE_LIMIT", "Checkpointer", "limit_wal"]

# Under a load that never pauses the checkpointer copies frames but never catches up with
# the end of the WAL, so SQLite cannot start it afresh and the file grows (about 60-75 KB
# per message at 1 000 msgs/s); at the first pause it starts afresh, and keeps the file at
# its largest size unless a limit makes it cut it back.
WAL_SIZE_LIMIT = 64 * 1024 * 1024
_LIMIT_WAL = f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}"


def limit_wal(db: sqlite3.Connection) -> None:
    """Make the writer's connection cut the WAL file back to ``WAL_SIZE_LIMIT`` bytes
    whenever it starts the log afresh (``PRAGMA journal_size_limit``)."""
    db.execute(_LIMIT_WAL)


_log = structlog.get_logger("prpgate.store")


class Checkpointer:
    """A daemon thread running ``PRAGMA wal_checkpoint(PASSIVE)`` every ``interval`` s.

    ``start`` opens its connection; ``stop`` ends the thread after one last passive
    checkpoint and closes it. A failing checkpoint is logged and tried again at the
    next interval (the WAL only grows meanwhile; nothing is lost).
    """

    def __init__(self, path: Path, *, interval: float = 1.0) -> None:
        self._path = path
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.checkpoints = 0

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
        try:
            db = sqlite3.connect(str(self._path), isolation_level=None, timeout=10.0)
        except sqlite3.Error as exc:
            _log.error("checkpoint connection failed", error=str(exc))
            return
        try:
            while True:
                stopping = self._stop.wait(self._interval)
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except sqlite3.Error as exc:  # a worker iteration: log, try again later
                    _log.warning("wal checkpoint failed", error=str(exc))
                if stopping:
                    return
        finally:
            db.close()
