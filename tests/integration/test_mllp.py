"""The MLLP listener over real sockets on 127.0.0.1 (port 0), committing into SQLite in tmp_path.

Each test runs its own event loop (``asyncio.run``) under an overall timeout, and every
socket read in the helpers has a timeout, so a fault shows as a failure, not a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sqlite3
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from prpgate.core.ack import AcceptCode, Ack
from prpgate.core.mllp import CR, END_BLOCK, START_BLOCK, Deframer, Frame, frame
from prpgate.core.pipeline import AckCode, Engine
from prpgate.errors import StoreError
from prpgate.ingest import Ingested
from prpgate.listeners.mllp import MllpConfig, MllpListener
from prpgate.ports import MessageRecord, StoreSession
from prpgate.serve import ServeMetrics, StoreWriter
from prpgate.store.sqlite import SqliteStore
from tests.conftest import FixedClock, load
from tests.unit.test_ack import strict

TEST_TIMEOUT = 20.0
READ_TIMEOUT = 10.0

# v2.3 fixture: no MSH-15/16, so it is answered in original mode (AA/AE/AR)
ORIGINAL = load("v23_cbc.hl7").replace(b"\n", b"\r")


def message(control_id: str, *, mrn: str = "ZQ79999", template: bytes = ORIGINAL) -> bytes:
    """The v2.3 CBC fixture with a new MSH-10 (and MRN): original-mode acknowledgments."""
    return template.replace(b"PRPFX0034", control_id.encode()).replace(b"ZQ70034", mrn.encode())


def run(coro: Awaitable[None]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(coro, TEST_TIMEOUT)

    asyncio.run(bounded())


@dataclass
class Events:
    """ListenerEvents that counts what the listener reports."""

    frames: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    acks: Counter[str] = field(default_factory=Counter)
    opened: int = 0
    closed: int = 0
    items: list[Ingested] = field(default_factory=list)

    def connection_opened(self) -> None:
        self.opened += 1

    def connection_closed(self) -> None:
        self.closed += 1

    def frame_received(self) -> None:
        self.frames += 1

    def processed(self, item: Ingested) -> None:
        self.items.append(item)

    def fault(self, kind: str) -> None:
        self.faults[kind] += 1

    def acked(self, code: str, seconds: float) -> None:
        self.acks[code] += 1


@dataclass
class Harness:
    listener: MllpListener
    writer: StoreWriter
    events: Events
    metrics: ServeMetrics
    store_path: Path

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.listener.port)

    def rows(self) -> list[sqlite3.Row]:
        """The stored messages, read through a second connection (what is committed)."""
        db = sqlite3.connect(self.store_path)
        db.row_factory = sqlite3.Row
        try:
            return list(db.execute("SELECT * FROM messages ORDER BY id"))
        finally:
            db.close()


@contextlib.asynccontextmanager
async def harness(
    tmp_path: Path,
    engine: Engine,
    *,
    store: Any = None,
    **config: Any,
) -> AsyncIterator[Harness]:
    path = tmp_path / "store.sqlite"
    db = store if store is not None else SqliteStore(path)
    metrics = ServeMetrics()
    writer = StoreWriter(db, engine, metrics=metrics, max_batch=config.pop("max_batch", 256))
    events = Events()
    cfg = MllpConfig(host="127.0.0.1", port=0, **config)
    listener = MllpListener(cfg, writer, clock=FixedClock(), events=events)
    await writer.start()
    await listener.start()
    try:
        yield Harness(listener, writer, events, metrics, path)
    finally:
        await listener.stop(5.0)
        await writer.stop()


async def read_frames(reader: asyncio.StreamReader, n: int) -> list[bytes]:
    """Read until ``n`` MLLP frames arrived (or fail after READ_TIMEOUT per read)."""
    d = Deframer(1 << 20)
    out: list[bytes] = []
    while len(out) < n:
        data = await asyncio.wait_for(reader.read(65536), READ_TIMEOUT)
        assert data, f"connection closed after {len(out)} of {n} frames"
        out += [e.data for e in d.feed(data) if isinstance(e, Frame)]
    assert len(out) == n
    return out


def msa(ack: bytes) -> list[str]:
    line = next(s for s in ack.split(b"\r") if s.startswith(b"MSA"))
    return line.decode().split("|")


def err(ack: bytes) -> list[str]:
    line = next(s for s in ack.split(b"\r") if s.startswith(b"ERR"))
    return line.decode().split("|")


def as_ack(data: bytes) -> Ack:
    code = msa(data)[1]
    kind = AckCode(code) if code in AckCode.__members__ else AcceptCode(code)
    return Ack(kind, "", msa(data)[2], data)


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    while True:
        data = await asyncio.wait_for(reader.read(65536), READ_TIMEOUT)
        if not data:
            return True


# ----------------------------------------------------------------- the tests


def test_mllp_one_message_aa_after_commit(tmp_path: Path, engine: Engine) -> None:
    async def scenario() -> None:
        async with harness(tmp_path, engine) as h:
            reader, writer = await h.connect()
            writer.write(frame(message("ONE1")))
            [ack] = await read_frames(reader, 1)
            # the ACK is sent only after the commit: a second connection sees the row
            rows = h.rows()
            assert [(r["control_id"], r["status"]) for r in rows] == [("ONE1", "accepted")]
            assert msa(ack)[1:3] == ["AA", "ONE1"]
            strict(as_ack(ack))
            writer.close()

    run(scenario())


def test_mllp_every_ack_follows_its_durable_commit(tmp_path: Path, engine: Engine) -> None:
    async def scenario() -> None:
        async with harness(tmp_path, engine) as h:
            reader, writer = await h.connect()
            writer.write(b"".join(frame(message(f"DUR{i:03d}")) for i in range(30)))
            d = Deframer(1 << 20)
            seen = 0
            while seen < 30:
                data = await asyncio.wait_for(reader.read(65536), READ_TIMEOUT)
                assert data
                for e in d.feed(data):
                    assert isinstance(e, Frame)
                    stored = {r["control_id"] for r in h.rows()}
                    assert msa(e.data)[2] in stored
                    seen += 1
            writer.close()

    run(scenario())


def test_mllp_pipelined_messages_answered_in_order(tmp_path: Path, engine: Engine) -> None:
    async def scenario() -> None:
        async with harness(tmp_path, engine) as h:
            reader, writer = await h.connect()
            ids = [f"PIPE{i:03d}" for i in range(60)]
            writer.write(b"".join(frame(message(c)) for c in ids))  # several messages per read
            acks = await read_frames(reader, len(ids))
            assert [msa(a)[2] for a in acks] == ids
            assert {msa(a)[1] for a in acks} == {"AA"}
            writer.close()

    run(scenario())


def test_mllp_message_split_across_many_reads(tmp_path: Path, engine: Engine) -> None:
    async def scenario() -> None:
        async with harness(tmp_path, engine) as h:
            reader, writer = await h.connect()
            data = frame(message("SPLIT1"))
            for i in range(0, len(data), 7):
                writer.write(data[i : i + 7])
                await writer.drain()
                await asyncio.sleep(0)
            [ack] = await read_frames(reader, 1)
            assert msa(ack)[1:3] == ["AA", "SPLIT1"]
            writer.close()

    run(scenario())


def test_mllp_trailer_split_across_two_reads(tmp_path: Path, engine: Engine) -> None:
    async def scenario() -> None:
        async with harness(tmp_path, engine) as h:
            reader, writer = await h.connect()
            writer.write(START_BLOCK + message("TRAIL1") + END_BLOCK)
            await writer.drain()
            [ack] = await read_frames(reader, 1)  # answered at <FS>, before the <CR>
            assert msa(ack)[2] == "TRAIL1"
            writer.write(CR)
            writer.write(frame(message("TRAIL2")))
            [ack2] = await read_frames(reader, 1)
            assert msa(ack2)[2] == "TRAIL2"
            assert h.events.faults == Counter()  # the late <CR> is not stray data
            writer.close()

    run(scenario())


def test_mllp_nuls_and_stray_line_feeds_between_frames(tmp_path: Path, engine: Engine) -> None:
    async def scenario() -> None:
        async with harness(tmp_path, engine) as h:
            reader, writer = await h.connect()
            writer.write(
                b"\x00\n"
                + frame(message("PAD1"))
                + b"\n\x00\x00\r\n"
                + frame(message("PAD2"))
                + b"\n"
            )
            acks = await read_frames(reader, 2)
            assert [msa(a)[2] for a in acks] == ["PAD1", "PAD2"]
            assert h.events.faults == Counter()
            writer.close()

    run(scenario())


def test_mllp_oversize_rejected_with_err_and_connection_kept(
    tmp_path: Path, engine: Engine
) -> None:
    async def scenario() -> None:
        async with harness(tmp_path, engine, max_message_bytes=4000, keep_bytes=512) as h:
            reader, writer = await h.connect()
            big = message("BIG1") + b"NTE|1||" + b"x" * 20_000 + b"\r"
            writer.write(frame(big) + frame(message("SMALL1")))
            acks = await read_frames(reader, 2)
            assert msa(acks[0])[1:3] == ["AR", "BIG1"]
            e = err(acks[0])
            assert e[1].startswith("^^^207&")  # v2.3: ERR-1 with table 0357 code 207
            assert "limit is 4000 bytes" in msa(acks[0])[3]
            strict(as_ack(acks[0]))
            assert msa(acks[1])[1:3] == ["AA", "SMALL1"]
            rows = h.rows()
            assert rows[0]["status"] == "rejected"
            assert rows[0]["ack_code"] == "AR"
            assert len(rows[0]["raw"]) == 512  # the head, kept for inspection
            assert f"{len(big)} bytes" in json.loads(rows[0]["errors"])[0]["reason"]
            assert rows[1]["control_id"] == "SMALL1"
            writer.close()

    run(scenario())


def test_mllp_idle_connection_closed(tmp_path: Path, engine: Engine) -> None:
    async def scenario() -> None:
        async with harness(tmp_path, engine, idle_timeout=0.2) as h:
            reader, writer = await h.connect()
            writer.write(frame(message("IDLE1")))
            await read_frames(reader, 1)
            assert await closed_by_server(reader)
            writer.close()
            assert h.events.closed == 1

    run(scenario())


def test_mllp_idle_close_inside_a_frame_records_it(tmp_path: Path, engine: Engine) -> None:
    async def scenario() -> None:
        async with harness(tmp_path, engine, idle_timeout=0.2) as h:
            reader, writer = await h.connect()
            writer.write(START_BLOCK + message("HALF1")[:100])
            assert await closed_by_server(reader)
            writer.close()
            assert h.events.faults == Counter({"truncated": 1})
        [row] = h.rows()
        assert row["raw"] == message("HALF1")[:100]
        assert row["status"] == "rejected"

    run(scenario())


def test_mllp_tcp_keepalive_on_accepted_sockets(tmp_path: Path, engine: Engine) -> None:
    async def scenario() -> None:
        async with harness(tmp_path, engine, keepalive_idle=42) as h:
            reader, writer = await h.connect()
            writer.write(frame(message("KA1")))
            await read_frames(reader, 1)
            [sock] = h.listener.connection_sockets()
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            if hasattr(socket, "TCP_KEEPIDLE"):
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 42
            writer.close()

    run(scenario())


def test_mllp_stray_data_logged_stored_not_answered(tmp_path: Path, engine: Engine) -> None:
    async def scenario() -> None:
        async with harness(tmp_path, engine) as h:
            reader, writer = await h.connect()
            junk = b"GET / HTTP/1.0\r\n\r\n"
            with structlog.testing.capture_logs() as logs:
                writer.write(junk + frame(message("AFTER1")))
                [ack] = await read_frames(reader, 1)
            assert msa(ack)[2] == "AFTER1"  # the stray bytes got no answer
            assert h.events.faults == Counter({"stray": 1})
            fault_logs = [e for e in logs if e["event"] == "mllp framing fault"]
            assert fault_logs[0]["fault"] == "stray"
            assert fault_logs[0]["bytes"] == len(junk)
            writer.close()
        rows = h.rows()
        stray = [r for r in rows if r["raw"] == junk]
        assert len(stray) == 1
        assert stray[0]["status"] == "rejected"
        assert stray[0]["control_id"] == ""  # never matches a retransmit key

    run(scenario())


def test_mllp_peer_closing_mid_message_is_stored_without_phi_in_logs(
    tmp_path: Path, engine: Engine
) -> None:
    raw = load("bad/truncated.hl7")

    async def scenario() -> None:
        async with harness(tmp_path, engine) as h:
            _, writer = await h.connect()
            with structlog.testing.capture_logs() as logs:
                writer.write(START_BLOCK + raw)  # no <FS><CR>
                await writer.drain()
                writer.close()
                await writer.wait_closed()
                for _ in range(200):
                    if h.events.closed:
                        break
                    await asyncio.sleep(0.01)
            assert h.events.faults == Counter({"truncated": 1})
            text = json.dumps(logs, default=str)
            for phi in ("Ottercliff", "Melisande", "ZQ70067", "19531210"):
                assert phi not in text
        rows = h.rows()
        assert [r["raw"] for r in rows] == [raw]
        assert "ended inside a frame" in rows[0]["errors"]
        assert rows[0]["ack_code"] == ""

    run(scenario())


def test_mllp_missing_end_block_before_next_frame(tmp_path: Path, engine: Engine) -> None:
    async def scenario() -> None:
        async with harness(tmp_path, engine) as h:
            reader, writer = await h.connect()
            writer.write(START_BLOCK + message("LOST1") + frame(message("NEXT1")))
            [ack] = await read_frames(reader, 1)
            assert msa(ack)[2] == "NEXT1"
            assert h.events.faults == Counter({"unterminated": 1})
            writer.close()
        statuses = [(r["control_id"], r["status"]) for r in h.rows()]
        assert statuses == [("", "rejected"), ("NEXT1", "accepted")]

    run(scenario())


def test_mllp_bytes_invalid_in_charset_rejected_with_err(tmp_path: Path, engine: Engine) -> None:
    async def scenario() -> None:
        async with harness(tmp_path, engine) as h:
            reader, writer = await h.connect()
            bad = message("CHAR1").replace(b"Inchcombe", b"Inch\xffcombe")  # not UTF-8
            writer.write(frame(bad))
            [ack] = await read_frames(reader, 1)
            assert msa(ack)[1:3] == ["AR", "CHAR1"]
            assert "102&Data type error" in err(ack)[1]
            strict(as_ack(ack))
            writer.close()
        [row] = h.rows()
        assert row["raw"] == bad
        assert row["status"] == "rejected"

    run(scenario())


def test_mllp_retransmit_gets_original_ack_and_is_not_processed_twice(
    tmp_path: Path, engine: Engine
) -> None:
    async def scenario() -> None:
        async with harness(tmp_path, engine) as h:
            reader, writer = await h.connect()
            m = message("RTX1")
            reused = message("RTX1", mrn="ZQ79998")  # same key, other content
            writer.write(frame(m) + frame(m) + frame(reused))
            acks = await read_frames(reader, 3)
            assert [msa(a)[1:3] for a in acks] == [["AA", "RTX1"]] * 3
            writer.close()
        rows = h.rows()
        assert [r["status"] for r in rows] == ["accepted", "duplicate", "accepted"]
        assert rows[1]["duplicate_of"] == rows[0]["id"]
        assert rows[2]["reuse_of"] == rows[0]["id"]
        assert [i.disposition.value for i in h.events.items] == [r["status"] for r in rows]
        assert [i.reuse_of for i in h.events.items] == [None, None, rows[0]["id"]]

    run(scenario())


def test_mllp_enhanced_mode_accept_then_application_ack(tmp_path: Path, engine: Engine) -> None:
    base = load("cbc_normal.hl7")  # MSH-15/16 AL/NE

    async def scenario() -> None:
        async with harness(tmp_path, engine) as h:
            reader, writer = await h.connect()
            al_ne = base
            al_al = base.replace(b"|AL|NE", b"|AL|AL").replace(b"PRPFX0001", b"ENH2")
            writer.write(frame(al_ne) + frame(al_al))
            acks = await read_frames(reader, 3)
            assert [msa(a)[1:3] for a in acks] == [
                ["CA", "PRPFX0001"],
                ["CA", "ENH2"],
                ["AA", "ENH2"],
            ]
            for a in acks:
                strict(as_ack(a))
            writer.close()

    run(scenario())


def test_mllp_enhanced_acks_off_answers_original_mode(tmp_path: Path, engine: Engine) -> None:
    async def scenario() -> None:
        async with harness(tmp_path, engine, enhanced_acks=False) as h:
            reader, writer = await h.connect()
            writer.write(frame(load("cbc_normal.hl7")))
            [ack] = await read_frames(reader, 1)
            assert msa(ack)[1] == "AA"
            writer.close()

    run(scenario())


class FailingStore:
    """A SqliteStore whose transactions fail while ``failing`` is set."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.failing = True

    @contextlib.contextmanager
    def session(self) -> Iterator[StoreSession]:
        if self.failing:
            raise StoreError("disk full")
        with self.inner.session() as s:
            yield s

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_mllp_store_failure_answers_ar_or_ce_so_sender_retries(
    tmp_path: Path, engine: Engine
) -> None:
    async def scenario() -> None:
        store = FailingStore(SqliteStore(tmp_path / "store.sqlite"))
        async with harness(tmp_path, engine, store=store) as h:
            reader, writer = await h.connect()
            writer.write(frame(message("FAIL1")) + frame(load("cbc_normal.hl7")))
            acks = await read_frames(reader, 2)
            assert msa(acks[0])[1:3] == ["AR", "FAIL1"]
            assert "207&Application internal error" in err(acks[0])[1]
            assert msa(acks[1])[1] == "CE"
            assert err(acks[1])[3].startswith("207^")
            store.failing = False
            writer.write(frame(message("FAIL1")))  # the retry is accepted
            [ack] = await read_frames(reader, 1)
            assert msa(ack)[1:3] == ["AA", "FAIL1"]
            assert h.events.faults == Counter({"store": 2})
            writer.close()

    run(scenario())


class GatedStore:
    """A SqliteStore whose transactions wait for ``gate``; counts transactions."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.sessions = 0

    @contextlib.contextmanager
    def session(self) -> Iterator[StoreSession]:
        assert self.gate.wait(READ_TIMEOUT)
        self.sessions += 1
        with self.inner.session() as s:
            yield s

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def wait_for(condition: Callable[[], bool]) -> None:
    for _ in range(int(READ_TIMEOUT * 100)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


def test_mllp_group_commit_shares_one_transaction_across_connections(
    tmp_path: Path, engine: Engine
) -> None:
    async def scenario() -> None:
        store = GatedStore(SqliteStore(tmp_path / "store.sqlite"))
        async with harness(tmp_path, engine, store=store) as h:
            conns = [await h.connect() for _ in range(4)]
            for n, (_, w) in enumerate(conns):
                w.write(b"".join(frame(message(f"G{n}-{i}")) for i in range(5)))
            await wait_for(lambda: h.events.frames == 20)
            store.gate.set()  # every message is queued: they commit together
            for n, (r, _) in enumerate(conns):
                acks = await read_frames(r, 5)
                assert [msa(a)[2] for a in acks] == [f"G{n}-{i}" for i in range(5)]
            assert store.sessions <= 2  # 20 messages, at most one started before the rest queued
            for _, w in conns:
                w.close()

    run(scenario())


class HeldCommitter:
    """A Committer whose commits complete only when released; counts submissions."""

    def __init__(self, inner: StoreWriter) -> None:
        self.inner = inner
        self.submitted = 0
        self.held: list[tuple[asyncio.Future[Ingested], asyncio.Future[Ingested]]] = []

    def submit(self, raw: bytes, *, source: str, received_at: datetime) -> asyncio.Future[Ingested]:
        self.submitted += 1
        real = self.inner.submit(raw, source=source, received_at=received_at)
        outer: asyncio.Future[Ingested] = asyncio.get_running_loop().create_future()
        self.held.append((real, outer))
        return outer

    def submit_record(self, record: MessageRecord) -> asyncio.Future[int]:
        return self.inner.submit_record(record)

    async def release(self) -> None:
        while self.held:
            real, outer = self.held.pop(0)
            outer.set_result(await real)


def test_mllp_in_flight_limit_stops_reading(tmp_path: Path, engine: Engine) -> None:
    async def scenario() -> None:
        db = SqliteStore(tmp_path / "store.sqlite")
        writer = StoreWriter(db, engine)
        held = HeldCommitter(writer)
        listener = MllpListener(
            MllpConfig(host="127.0.0.1", port=0, in_flight=4), held, clock=FixedClock()
        )
        await writer.start()
        await listener.start()
        try:
            reader, w = await asyncio.open_connection("127.0.0.1", listener.port)
            ids = [f"BP{i:03d}" for i in range(40)]
            w.write(b"".join(frame(message(c)) for c in ids))
            # one being answered + in_flight queued; nothing more is read or submitted
            await wait_for(lambda: held.submitted == 5)
            await asyncio.sleep(0.2)
            assert held.submitted == 5
            releaser = asyncio.create_task(_release_all(held, len(ids)))
            acks = await read_frames(reader, len(ids))
            await releaser
            assert [msa(a)[2] for a in acks] == ids
            w.close()
        finally:
            await listener.stop(5.0)
            await writer.stop()

    run(scenario())


async def _release_all(held: HeldCommitter, total: int) -> None:
    while held.submitted < total or held.held:
        if held.held:
            await held.release()
        else:
            await asyncio.sleep(0.005)


def test_mllp_stop_answers_in_flight_then_closes(tmp_path: Path, engine: Engine) -> None:
    async def scenario() -> None:
        store = GatedStore(SqliteStore(tmp_path / "store.sqlite"))
        h_ctx = harness(tmp_path, engine, store=store)
        h = await h_ctx.__aenter__()
        try:
            reader, writer = await h.connect()
            writer.write(b"".join(frame(message(f"STOP{i}")) for i in range(10)))
            await wait_for(lambda: h.events.frames == 10)
            stopping = asyncio.create_task(h.listener.stop(5.0))
            await asyncio.sleep(0)
            assert not h.listener.is_serving  # no new connections from here on
            store.gate.set()
            acks = await read_frames(reader, 10)
            assert [msa(a)[1] for a in acks] == ["AA"] * 10
            assert await closed_by_server(reader)
            await stopping
            writer.close()
        finally:
            await h_ctx.__aexit__(None, None, None)
        assert len(h.rows()) == 10

    run(scenario())


def test_mllp_many_connections_at_once(tmp_path: Path, engine: Engine) -> None:
    async def scenario() -> None:
        async with harness(tmp_path, engine) as h:

            async def client(n: int) -> list[str]:
                r, w = await h.connect()
                ids = [f"C{n}-{i}" for i in range(10)]
                w.write(b"".join(frame(message(c, mrn=f"ZQ8{n:04d}")) for c in ids))
                acks = await read_frames(r, len(ids))
                w.close()
                assert [msa(a)[2] for a in acks] == ids
                return [msa(a)[1] for a in acks]

            results = await asyncio.gather(*(client(n) for n in range(12)))
            assert all(codes == ["AA"] * 10 for codes in results)
        assert len(h.rows()) == 120

    run(scenario())


class PoisonSession:
    """A store session that fails on one control id, as a bug or a bad row would."""

    def __init__(self, inner: StoreSession) -> None:
        self.inner = inner

    def add_message(self, record: MessageRecord) -> int:
        if record.control_id == "POISON":
            raise sqlite3.OperationalError("simulated failure on one message")
        return self.inner.add_message(record)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class PoisonStore(GatedStore):
    @contextlib.contextmanager
    def session(self) -> Iterator[StoreSession]:
        with super().session() as s:
            yield PoisonSession(s)  # type: ignore[misc]


def test_mllp_one_bad_message_does_not_fail_its_batch(tmp_path: Path, engine: Engine) -> None:
    async def scenario() -> None:
        store = PoisonStore(SqliteStore(tmp_path / "store.sqlite"))
        async with harness(tmp_path, engine, store=store) as h:
            reader, writer = await h.connect()
            ids = ["OK1", "POISON", "OK2", "OK3"]
            writer.write(b"".join(frame(message(c)) for c in ids))
            await wait_for(lambda: h.events.frames == 4)
            store.gate.set()
            acks = await read_frames(reader, 4)
            assert [msa(a)[1:3] for a in acks] == [
                ["AA", "OK1"],
                ["AR", "POISON"],
                ["AA", "OK2"],
                ["AA", "OK3"],
            ]
            writer.close()
        assert [r["control_id"] for r in h.rows()] == ["OK1", "OK2", "OK3"]

    run(scenario())


def test_mllp_connections_over_the_limit_are_refused(tmp_path: Path, engine: Engine) -> None:
    async def scenario() -> None:
        async with harness(tmp_path, engine, max_connections=1) as h:
            r1, w1 = await h.connect()
            w1.write(frame(message("LIM1")))
            await read_frames(r1, 1)
            r2, w2 = await h.connect()
            assert await closed_by_server(r2)
            w1.write(frame(message("LIM2")))
            [ack] = await read_frames(r1, 1)  # the first connection is unaffected
            assert msa(ack)[2] == "LIM2"
            w1.close()
            w2.close()

    run(scenario())


def test_mllp_dispatch_mode_serves_what_the_dispatcher_leaves_and_survives_its_failure(
    tmp_path: Path, engine: Engine
) -> None:
    """With a dispatcher, the listener accepts by itself; a connection the dispatcher does
    not take (or fails on) is served here, and accepting goes on."""
    offered: list[int] = []

    def dispatch(conn: socket.socket) -> bool:
        offered.append(conn.fileno())
        if len(offered) == 1:
            raise RuntimeError("a dispatcher bug")
        return False

    async def scenario() -> None:
        db = SqliteStore(tmp_path / "store.sqlite")
        writer = StoreWriter(db, engine)
        listener = MllpListener(MllpConfig(host="127.0.0.1", port=0), writer, clock=FixedClock())
        await writer.start()
        await listener.start(dispatch)
        acks = []
        try:
            for control in ("DSP1", "DSP2"):
                reader, w = await asyncio.open_connection("127.0.0.1", listener.port)
                w.write(frame(message(control)))
                await w.drain()
                acks += await read_frames(reader, 1)
                w.close()
            assert listener.is_serving
        finally:
            await listener.stop(5.0)
            await writer.stop()
        assert len(offered) == 2
        assert [msa(a)[:3] for a in acks] == [["MSA", "AA", "DSP1"], ["MSA", "AA", "DSP2"]]

    run(scenario())
