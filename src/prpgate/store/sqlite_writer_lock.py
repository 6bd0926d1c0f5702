"""A lock that hands SQLite's write lock from one process to the next without sleeping.

When several processes write one store file (``serve`` with ``mllp_workers`` > 1), a
writer that finds the database locked waits in SQLite's busy handler, which sleeps
1, 2, 5, 10 ms and more between attempts: a commit that takes half a millisecond
would then delay the other process's acknowledgments by many milliseconds. Writers
that first take this lock (``flock`` on ``<store>.writer-lock``, exclusive, blocking)
queue in the kernel instead and start the moment the previous writer releases it.
The wait releases the GIL, so the process's listener thread runs meanwhile.

The lock file holds nothing; SQLite's own locking still guarantees consistency
(a writer that does not take this lock only waits longer). A separate file, not the
database itself: closing any descriptor of the database file would drop the POSIX
locks SQLite holds on it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

__all__ = ["WriterLock", "lock_path"]


def lock_path(store_path: Path) -> Path:
    """The lock file beside a store file."""
    return store_path.with_name(store_path.name + ".writer-lock")


class WriterLock:
    """An exclusive ``flock`` on the store's lock file, held around each write transaction.

    Raises OSError when the lock file cannot be opened (at construction).
    """

    def __init__(self, store_path: Path) -> None:
        self.path = lock_path(store_path)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def acquire(self) -> None:
        """Wait for the lock and keep it until ``release``; taking it again while this
        descriptor holds it succeeds at once (the store's next transaction does, and
        releases it at its end). A writer that forms its batch only once it has its turn
        lets every message that arrived meanwhile share that batch's commit."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def try_acquire(self) -> bool:
        """Take the lock if no other process holds it (True), without waiting. Taking it
        again while this descriptor holds it succeeds at once."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def release(self) -> None:
        """Let the next process's writer go (``acquire``/``try_acquire`` took the lock)."""
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Release the file descriptor (and with it any lock still held)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
