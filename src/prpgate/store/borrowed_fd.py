"""Sync a file through a descriptor this process already has open, opening none.

The checkpoint thread syncs a SQLite database file that the store's connection has open.
A descriptor of its own would have to be closed some day, and closing any descriptor of
the file drops every POSIX lock the process holds on it, SQLite's included. So it opens
none: it borrows one SQLite has open, found under ``/proc/self/fd`` and checked to still
name the file (device and inode) before each use. Should SQLite close it and the number
name another file between the check and the call, the worst is a sync of that file.
Where there is no ``/proc/self/fd`` (not Linux) or no descriptor of the file, ``datasync``
does nothing and says so once. It never raises.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog

__all__ = ["BorrowedDescriptor"]

_PROC_FDS = Path("/proc/self/fd")
_log = structlog.get_logger("prpgate.store")


class BorrowedDescriptor:
    """A descriptor of ``path`` open in this process (``fd``), used without owning it."""

    def __init__(self, path: Path, *, descriptors: Path = _PROC_FDS) -> None:
        self.path = path
        self._descriptors = descriptors
        self._fd: int | None = None
        self._said = False

    def fd(self) -> int | None:
        """A descriptor open on the file now, or None (no such descriptor, no file)."""
        try:
            want = os.stat(self.path)
        except OSError:
            return None
        if self._fd is not None and _names(self._fd, want):
            return self._fd
        self._fd = None
        try:
            entries = os.listdir(self._descriptors)
        except OSError:
            return None
        for entry in entries:
            if entry.isdigit() and _names(int(entry), want):
                self._fd = int(entry)
                break
        return self._fd

    def datasync(self) -> bool:
        """``fdatasync`` the file through a borrowed descriptor: True when it was synced.
        Never raises."""
        fd = self.fd()
        if fd is None:
            self._once("no descriptor of the file to sync through")
            return False
        try:
            os.fdatasync(fd)
        except OSError as exc:
            self._fd = None  # look again next time
            self._once("sync through a borrowed descriptor failed", error=str(exc))
            return False
        return True

    def _once(self, event: str, **detail: str) -> None:
        if not self._said:
            self._said = True
            _log.info(event, path=str(self.path), **detail)


def _names(fd: int, want: os.stat_result) -> bool:
    """Whether ``fd`` is open on the file ``want`` describes."""
    try:
        got = os.fstat(fd)
    except OSError:
        return False
    return (got.st_dev, got.st_ino) == (want.st_dev, want.st_ino)
