"""Disk blocks reserved ahead of a growing file's end, its size unchanged.

Under load that never pauses, a SQLite store's WAL file grows by every commit (20-35 KB
a message; 60-75 KB with 4 KiB pages), and each commit's sync then allocates the file's
new blocks through the file system's journal, which every other sync on the disk also
goes through. On ext4 that was behind the rare commits of 20-60 ms after a long burst
(``sqlite_checkpoint``). A ``DiskReserve`` keeps ``size`` bytes of blocks allocated past
the file's end, so appends land in blocks the file already has: Linux ``fallocate`` with
``FALLOC_FL_KEEP_SIZE``, which leaves the file's size, and so everything SQLite reads,
unchanged. Python's ``os.posix_fallocate`` always grows the size, so the call goes
through ctypes.

The reserve is released by whatever cuts the file back (a truncating checkpoint, SQLite
removing the WAL on close); ``refresh`` puts it back while the file exists. Where the
platform or the file system cannot reserve, ``refresh`` reserves nothing and says so once
(``supported``); a refusal for want of space is logged once until a reservation succeeds
again. ``refresh`` never raises: the store works on without a reserve.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import sys
from collections.abc import Callable
from pathlib import Path

import structlog

__all__ = ["DiskReserve"]

_KEEP_SIZE = 0x01  # FALLOC_FL_KEEP_SIZE, linux/falloc.h
_log = structlog.get_logger("prpgate.store")


def _linux_fallocate() -> Callable[[int, int, int, int], int] | None:
    """libc's fallocate(2), or None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        call = libc.fallocate
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    call.restype = ctypes.c_int
    fallocate: Callable[[int, int, int, int], int] = call
    return fallocate


class DiskReserve:
    """Keeps ``size`` bytes of disk reserved past the end of the file at ``path``.

    ``refresh`` tops the reserve up to ``size`` once less than half of it is left; it
    never creates the file and never changes its size or content. The file is opened for
    each refresh and closed again: do not use it on a file the process holds POSIX locks
    on (a SQLite database file; its WAL file carries none), since closing any descriptor
    of a file drops the process's locks on it.
    """

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self.reserved = 0  # bytes requested by the refreshes that reserved
        self._fallocate = _linux_fallocate() if size > 0 else None
        self._refused = False  # the last attempt was refused (logged once per streak)

    @property
    def supported(self) -> bool:
        """Whether refreshes reserve: a size above 0, on Linux, on a file system that has
        not refused a reservation as unsupported."""
        return self._fallocate is not None

    def refresh(self) -> int:
        """Reserve up to ``size`` bytes past the file's end when less than half of it is
        left; returns the bytes requested (0: enough left, no file, or not supported)."""
        if self._fallocate is None:
            return 0
        try:
            fd = os.open(self.path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return 0
        except OSError as exc:
            self._failed(exc.errno or 0)
            return 0
        try:
            stat = os.fstat(fd)
            ahead = stat.st_blocks * 512 - stat.st_size
            if ahead >= self.size // 2:
                return 0
            if self._fallocate(fd, _KEEP_SIZE, stat.st_size, self.size) != 0:
                self._failed(ctypes.get_errno())
                return 0
        except OSError as exc:
            self._failed(exc.errno or 0)
            return 0
        finally:
            os.close(fd)
        self._refused = False
        self.reserved += self.size
        return self.size

    def _failed(self, err: int) -> None:
        """A refused reservation: stop trying where the file system cannot reserve;
        anything else (a full disk, a quota) is logged once and tried again at the next
        refresh, the store working on without a reserve, its appends allocating as
        they go."""
        if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            self._fallocate = None
            _log.info("disk reserve not supported here", path=str(self.path), errno=err)
        elif not self._refused:
            self._refused = True
            _log.warning("disk reserve refused", path=str(self.path), error=os.strerror(err))
