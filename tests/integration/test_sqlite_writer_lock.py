"""The SQLite writer lock: processes writing one store file take turns through it."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

from prpgate.config import Settings
from prpgate.engine import build_engine
from prpgate.serve import ServeMetrics, StoreWriter
from prpgate.store.factory import open_store
from prpgate.store.sqlite import SqliteStore
from prpgate.store.sqlite_writer_lock import WriterLock, lock_path
from tests.conftest import FIXTURES, MAPPINGS

TIMEOUT = 30.0


def free(path: Path) -> bool:
    """Whether nobody holds the lock file (tried without waiting, from a descriptor of
    our own)."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def test_a_second_writer_waits_until_the_first_releases(tmp_path: Path) -> None:
    first, second = WriterLock(tmp_path / "s.sqlite"), WriterLock(tmp_path / "s.sqlite")
    entered = threading.Event()

    def take() -> None:
        second.acquire()
        entered.set()
        second.release()

    first.acquire()
    t = threading.Thread(target=take, daemon=True)
    t.start()
    assert not entered.wait(0.3)  # blocked while the first holds it
    first.release()
    assert entered.wait(TIMEOUT)
    t.join(TIMEOUT)
    assert free(first.path)
    first.close()
    second.close()


def test_acquire_keeps_the_lock_for_the_next_taker_whose_release_frees_it(
    tmp_path: Path,
) -> None:
    lock = WriterLock(tmp_path / "s.sqlite")
    lock.acquire()
    assert not free(lock.path)
    lock.acquire()  # the store's next transaction takes it again: at once
    assert lock.try_acquire()
    assert not free(lock.path)
    lock.release()
    assert free(lock.path)
    lock.close()


def test_open_store_takes_the_lock_only_with_several_mllp_workers(tmp_path: Path) -> None:
    one = open_store(Settings(store=tmp_path / "a.sqlite", mappings=MAPPINGS))
    two = open_store(Settings(store=tmp_path / "b.sqlite", mappings=MAPPINGS, mllp_workers=2))
    assert isinstance(one, SqliteStore)
    assert isinstance(two, SqliteStore)
    assert one.writer_turn is None
    assert two.writer_turn is not None
    assert not lock_path(tmp_path / "a.sqlite").exists()
    assert lock_path(tmp_path / "b.sqlite").exists()
    one.close()
    two.close()


WRITER = """
import sys
from datetime import UTC, datetime
from prpgate.config import Settings
from prpgate.engine import build_engine
from prpgate.serve import ServeMetrics, StoreWriter
from prpgate.engine import build_engine
from prpgate.ingest import ingest
from prpgate.store.sqlite import SqliteStore
store_path, mappings, tag, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
engine = build_engine(Settings(mappings=mappings))
store = SqliteStore(store_path, writer_lock=True)
tpl = open(sys.argv[5], "rb").read()
for i in range(n):
    raw = tpl.replace(b"PRPFX0036", f"{tag}{i:05d}".encode())
    with store.session() as session:
        ingest(session, engine, raw, source="test", received_at=datetime.now(UTC))
store.close()
"""


def test_two_processes_writing_one_store_lose_nothing(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    SqliteStore(store).close()  # created (and migrated) before both start
    template = FIXTURES / "v24_cbc.hl7"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(store), str(MAPPINGS), tag, "150", str(template)],
            stderr=subprocess.PIPE,
        )
        for tag in ("PA", "PB")
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    db = sqlite3.connect(store)
    try:
        ids = [r[0] for r in db.execute("SELECT control_id FROM messages WHERE status='accepted'")]
    finally:
        db.close()
    assert sorted(ids) == sorted(f"{t}{i:05d}" for t in ("PA", "PB") for i in range(150))


def test_the_store_writer_gathers_its_batch_once_it_has_its_turn(tmp_path: Path) -> None:
    """Messages that arrive while another process holds the store share one commit."""
    path = tmp_path / "s.sqlite"
    other_process = WriterLock(path)  # its own open file: as another process's writer
    engine = build_engine(Settings(mappings=MAPPINGS))
    metrics = ServeMetrics()
    template = (FIXTURES / "v24_cbc.hl7").read_bytes()

    async def scenario() -> list[int]:
        writer = StoreWriter(SqliteStore(path, writer_lock=True), engine, metrics=metrics)
        await writer.start()
        try:
            other_process.acquire()
            try:
                futures = []
                for i in range(5):
                    raw = template.replace(b"PRPFX0036", f"TURN{i:04d}".encode())
                    now = datetime.now(UTC)
                    futures.append(writer.submit(raw, source="test", received_at=now))
                    await asyncio.sleep(0.05)  # each alone would have been a batch of one
                assert not any(f.done() for f in futures)  # waiting for the turn
            finally:
                other_process.release()
            done = await asyncio.wait_for(asyncio.gather(*futures), TIMEOUT)
            return [d.message_id for d in done]
        finally:
            await writer.stop()

    ids = asyncio.run(scenario())
    assert len(set(ids)) == 5
    batches = {
        s.name: s.value
        for m in metrics.batch_size.collect()
        for s in m.samples
        if s.name.endswith(("_count", "_sum"))
    }
    assert batches == {
        "prpgate_store_batch_messages_count": 1,  # one commit ...
        "prpgate_store_batch_messages_sum": 5,  # ... of all five
    }
    other_process.close()
