"""Small file systems the store-fault tests can fill or make read-only: a size-limited
tmpfs and a read-only bind mount (``mount`` needs root or CAP_SYS_ADMIN; without it the
tests skip saying so). Every mount is undone, lazily if a process still holds it."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["fill", "read_only", "small_tmpfs"]


def _mount(*args: str) -> None:
    proc = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount ({' '.join(args)}): {proc.stderr.strip()} (needs root)")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30, check=False)


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``4m``) mounted at ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield path
    finally:
        _umount(path)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """``path`` bind-mounted onto itself, read-only (root cannot write there either)."""
    _mount("--bind", str(path), str(path))
    try:
        _mount("-o", "remount,bind,ro", str(path))
        yield path
    finally:
        _umount(path)


def fill(folder: Path) -> Path:
    """Write a file in ``folder`` until the file system is full; the file's path."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):  # the last partial block
        fd = os.open(filler, os.O_WRONLY | os.O_APPEND)
        try:
            while True:
                os.write(fd, b"\0" * 512)
        finally:
            os.close(fd)
    return filler
