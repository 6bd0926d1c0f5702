"""Syncing a file through a descriptor the process already has open (``borrowed_fd``):
real files, the real ``/proc/self/fd``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from prpgate.store.borrowed_fd import BorrowedDescriptor

PROC_FDS = Path("/proc/self/fd")
needs_proc = pytest.mark.skipif(
    not PROC_FDS.is_dir(), reason="no /proc/self/fd here: descriptors cannot be borrowed"
)


def _open_descriptors() -> int:
    return len(os.listdir(PROC_FDS))


@needs_proc
def test_datasync_borrows_the_open_descriptor_and_opens_none(tmp_path: Path) -> None:
    path = tmp_path / "db"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"x" * 8192)
        borrowed = BorrowedDescriptor(path)
        assert borrowed.fd() == fd
        before = _open_descriptors()
        assert borrowed.datasync() is True
        assert _open_descriptors() == before  # nothing opened, nothing left open
        os.fstat(fd)  # the owner's descriptor is still open
    finally:
        os.close(fd)


@needs_proc
def test_a_file_nobody_has_open_is_not_synced(tmp_path: Path) -> None:
    path = tmp_path / "db"
    path.write_bytes(b"x")
    before = _open_descriptors()
    borrowed = BorrowedDescriptor(path)
    assert borrowed.fd() is None
    assert borrowed.datasync() is False
    assert _open_descriptors() == before


@needs_proc
def test_a_descriptor_that_now_names_another_file_is_not_used(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    fd_a = os.open(a, os.O_RDWR | os.O_CREAT, 0o600)
    borrowed = BorrowedDescriptor(a)
    assert borrowed.fd() == fd_a
    os.close(fd_a)
    fd_b = os.open(b, os.O_RDWR | os.O_CREAT, 0o600)  # most likely the same number
    try:
        assert borrowed.fd() is None
        assert borrowed.datasync() is False
    finally:
        os.close(fd_b)


def test_without_a_descriptor_folder_nothing_is_synced(tmp_path: Path) -> None:
    path = tmp_path / "db"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        borrowed = BorrowedDescriptor(path, descriptors=tmp_path / "no-such-folder")
        assert borrowed.fd() is None
        assert borrowed.datasync() is False
    finally:
        os.close(fd)


def test_a_missing_file_is_not_synced(tmp_path: Path) -> None:
    borrowed = BorrowedDescriptor(tmp_path / "gone")
    assert borrowed.fd() is None
    assert borrowed.datasync() is False
