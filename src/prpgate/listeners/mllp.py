"""The MLLP listener: asyncio TCP (optionally TLS) server, one reader and one responder per
connection, every message committed through a ``Committer`` before it is acknowledged.

Per connection:

* the reader reads at most ``read_size`` bytes at a time with the idle timeout,
  feeds the deframer, and submits each complete frame to the committer in
  arrival order; it puts the pending answer on a queue bounded by ``in_flight``,
  so when the store falls behind the reader stops reading (TCP backpressure)
  instead of buffering without bound;
* the responder takes pending answers in order, waits for each commit, and writes
  the acknowledgments the sender asked for (``core.ack.plan``), so pipelined
  messages are answered in the order they came.

Framing faults (stray bytes, a frame cut short by the next ``<VT>`` or by the peer
closing) are logged without message content, their bytes recorded in the store
(with empty retransmit keys, so they never count as an earlier copy of a message),
and not answered, as the MLLP specification says. An oversize frame is recorded
(its head) and answered AR/CR with an ERR segment; the connection stays usable. A
frame holding FHIR JSON or an HTTP request instead of HL7 v2 is recorded and answered
AR/CR too (HL7 error 100), never processed (``mllp_not_hl7``).
A committer failure is answered AR (original mode) or CE (enhanced mode), HL7
error 207, so the sender retries.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import secrets
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import structlog

from prpgate.core.ack import AcceptCode, Ack, AckContext, build_ack, plan, read_context
from prpgate.core.mllp import Deframer, Fault, FaultKind, Frame, frame
from prpgate.core.pipeline import AckCode, ErrorInfo, content_hash
from prpgate.errors import StoreError
from prpgate.ingest import Ingested
from prpgate.listeners.mllp_not_hl7 import not_hl7, not_hl7_record
from prpgate.ports import Clock, MessageRecord

__all__ = [
    "Committer",
    "ListenerEvents",
    "MllpConfig",
    "MllpListener",
    "NullEvents",
    "fault_record",
]

_log = structlog.get_logger("prpgate.mllp")

_FAULT_REASON = {
    FaultKind.STRAY: "MLLP framing: bytes outside a frame (before <VT>); dropped, not answered",
    FaultKind.UNTERMINATED: "MLLP framing: frame without <FS><CR> before the next <VT>;"
    " dropped, not answered",
    FaultKind.TRUNCATED: "MLLP framing: the connection ended inside a frame (peer closed,"
    " idle timeout or read error); dropped",
    FaultKind.OVERSIZE: "message larger than the limit; rejected",
}


class Committer(Protocol):
    """Where the listener sends work: one writer that owns the store.

    Both methods enqueue at once (so the order of calls is the order of commits)
    and return a future that resolves after the durable commit, or fails with
    StoreError when the work could not be committed.
    """

    def submit(self, raw: bytes, *, source: str, received_at: datetime) -> asyncio.Future[Ingested]:
        """Ingest one message (dedup, record, evaluate) and commit it."""
        ...

    def submit_record(self, record: MessageRecord) -> asyncio.Future[int]:
        """Record an input that is not a message (a framing fault) and commit it."""
        ...


class ListenerEvents(Protocol):
    """What the listener reports, for metrics."""

    def connection_opened(self) -> None:
        """A connection was accepted."""
        ...

    def connection_closed(self) -> None:
        """A connection ended."""
        ...

    def frame_received(self) -> None:
        """A complete frame arrived."""
        ...

    def processed(self, item: Ingested) -> None:
        """A message was committed with this outcome."""
        ...

    def fault(self, kind: str) -> None:
        """A framing fault (``FaultKind`` value), a store failure (``"store"``) or a
        connection refused over the per-peer limit (``"peer_limit"``)."""
        ...

    def acked(self, code: str, seconds: float) -> None:
        """An acknowledgment was written, ``seconds`` after its frame arrived."""
        ...


class NullEvents:
    """ListenerEvents that records nothing."""

    def connection_opened(self) -> None:
        """Ignored."""

    def connection_closed(self) -> None:
        """Ignored."""

    def frame_received(self) -> None:
        """Ignored."""

    def processed(self, item: Ingested) -> None:
        """Ignored."""

    def fault(self, kind: str) -> None:
        """Ignored."""

    def acked(self, code: str, seconds: float) -> None:
        """Ignored."""


@dataclass(frozen=True, slots=True)
class MllpConfig:
    """Listener settings (the shell builds them from ``Settings``)."""

    host: str = "127.0.0.1"
    port: int = 2575
    max_message_bytes: int = 4 * 1024 * 1024
    idle_timeout: float = 900.0
    in_flight: int = 32
    max_connections: int = 200
    max_connections_per_peer: int = 20
    keepalive_idle: int = 60
    write_timeout: float = 30.0
    enhanced_acks: bool = True
    charset_overrides: Mapping[str, str] = field(default_factory=dict)
    ssl: ssl.SSLContext | None = None
    handshake_timeout: float = 10.0
    read_size: int = 65536
    keep_bytes: int = 65536


def fault_record(
    fault: Fault, *, source: str, received_at: datetime, answered: str = ""
) -> MessageRecord:
    """The store record of a framing fault: its bytes (head), why, and no retransmit key.

    ``answered`` is the MSA-1 code sent back (``""`` when not answered).
    """
    ctx = read_context(fault.data)
    reason = f"{_FAULT_REASON[fault.kind]} ({fault.size} bytes"
    if fault.kind is FaultKind.OVERSIZE:
        reason += f", {len(fault.data)} kept"
    if ctx.control_id:
        reason += f"; MSH-10 {ctx.control_id}"
    reason += ")"
    code = 207 if fault.kind is FaultKind.OVERSIZE else 100
    errors = [{"code": code, "location": "message", "reason": reason}]
    return MessageRecord(
        received_at=received_at.isoformat(),
        source=source,
        raw=fault.data,
        content_hash=content_hash(fault.data),
        sending_application="",
        sending_facility="",
        control_id="",
        message_type="",
        version="",
        status="rejected",
        ack_code=answered,
        errors=json.dumps(errors, ensure_ascii=False),
        summary=json.dumps({"framing": fault.kind.value, "bytes": fault.size}),
    )


@dataclass(slots=True)
class _Pending:
    """One answer owed to the sender, in arrival order."""

    ctx: AckContext
    raw: bytes
    arrived: float
    refusal: ErrorInfo | None = None  # answered AR/CR unprocessed: oversize, not HL7
    future: asyncio.Future[Ingested] | asyncio.Future[int] | None = None


@dataclass(slots=True, eq=False)  # identity: connections live in a set
class _Connection:
    peer: str
    source: str
    writer: asyncio.StreamWriter
    reader_task: asyncio.Task[None] | None = None
    reading: bool = False
    outstanding: int = 0
    broken: bool = False
    messages: int = 0


_END = object()
_POSITIVE = frozenset({AckCode.AA, AcceptCode.CA})


class MllpListener:
    """An MLLP server bound to ``config.host``/``config.port``; ``start`` then ``stop``."""

    def __init__(
        self,
        config: MllpConfig,
        committer: Committer,
        *,
        clock: Clock,
        events: ListenerEvents | None = None,
    ) -> None:
        self._cfg = config
        self._committer = committer
        self._clock = clock
        self._events: ListenerEvents = events or NullEvents()
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._per_peer: collections.Counter[str] = collections.Counter()  # open, by address
        self._handlers: set[asyncio.Task[None]] = set()
        self._ack_prefix = "A" + secrets.token_hex(4).upper()
        self._ack_seq = itertools.count(1)
        self._closing = False

    @property
    def port(self) -> int:
        """The bound TCP port (useful when configured as 0)."""
        assert self._server is not None, "the listener is not started"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def is_serving(self) -> bool:
        """Bound and accepting connections."""
        return self._server is not None and self._server.is_serving()

    @property
    def open_connections(self) -> int:
        """Connections currently open."""
        return len(self._connections)

    def connection_sockets(self) -> list[socket.socket]:
        """The open connections' sockets (for inspection: keep-alive options)."""
        out = []
        for conn in self._connections:
            sock = conn.writer.get_extra_info("socket")
            if sock is not None:
                out.append(sock)
        return out

    async def start(self) -> None:
        """Bind and start accepting connections."""
        cfg = self._cfg
        self._server = await asyncio.start_server(
            self._handle,
            cfg.host,
            cfg.port,
            ssl=cfg.ssl,
            ssl_handshake_timeout=cfg.handshake_timeout if cfg.ssl else None,
            limit=cfg.read_size,
            reuse_address=True,
        )
        _log.info("mllp listening", host=cfg.host, port=self.port, tls=cfg.ssl is not None)

    async def stop(self, grace: float) -> None:
        """Stop accepting, stop reading, answer what is in flight, then close.

        Connections still busy after ``grace`` seconds are closed at once (their
        unanswered messages are not acknowledged; the sender will retransmit).
        """
        self._closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            if conn.reader_task is not None and conn.reading:
                conn.reader_task.cancel()
        if self._handlers:
            _, late = await asyncio.wait(set(self._handlers), timeout=grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=1.0)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)
        _log.info("mllp stopped")

    # ------------------------------------------------------------ connection

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve_connection(reader, writer)
        except asyncio.CancelledError:
            # stop() after the grace period: end quietly (asyncio's stream callback
            # would report a cancelled handler as an error)
            _log.info("mllp connection cancelled")
        except Exception:  # the top of a connection handler: log, let the others go on
            _log.exception("mllp connection failed")
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), timeout=1.0)

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if peername else "unknown"
        if self._closing or len(self._connections) >= self._cfg.max_connections:
            _log.warning("mllp connection refused", peer=peer, open=len(self._connections))
            return
        host = str(peername[0]) if peername else "unknown"
        if self._per_peer[host] >= self._cfg.max_connections_per_peer:
            _log.warning(
                "mllp connection refused",
                peer=peer,
                reason="per-peer limit",
                open_from_peer=self._per_peer[host],
            )
            self._events.fault("peer_limit")
            return
        self._per_peer[host] += 1
        try:
            await self._serve_admitted(reader, writer, peer)
        finally:
            self._per_peer[host] -= 1
            if not self._per_peer[host]:
                del self._per_peer[host]

    async def _serve_admitted(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        self._set_keepalive(writer)
        conn = _Connection(peer=peer, source=f"mllp:{peer}", writer=writer)
        self._connections.add(conn)
        self._events.connection_opened()
        _log.info("mllp connection opened", peer=peer)
        pending: asyncio.Queue[_Pending | object] = asyncio.Queue(maxsize=self._cfg.in_flight)
        responder = asyncio.create_task(self._respond(conn, pending))
        conn.reader_task = asyncio.create_task(self._read(conn, reader, pending))
        try:
            await asyncio.wait({conn.reader_task})
            failed = None if conn.reader_task.cancelled() else conn.reader_task.exception()
            if failed is not None:  # a bug: say so (the type only: no message content)
                _log.error("mllp reader failed", peer=peer, error=type(failed).__name__)
                self._events.fault("reader")
            if responder.done():
                return
            await pending.put(_END)
            await asyncio.wait({responder})
            if self._closing and not conn.broken:
                await self._linger(reader, writer)
        finally:
            conn.reader_task.cancel()
            responder.cancel()
            self._connections.discard(conn)
            self._events.connection_closed()
            _log.info("mllp connection closed", peer=peer, messages=conn.messages)

    @staticmethod
    async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Shutting down: half-close, then discard what the peer still sends (briefly).

        Closing a socket with unread input makes the kernel send a reset, which can
        destroy acknowledgments the peer has not read yet.
        """
        with contextlib.suppress(OSError, RuntimeError, TimeoutError):
            if writer.can_write_eof():
                writer.write_eof()
            async with asyncio.timeout(1.0):
                while await reader.read(65536):
                    pass

    def _set_keepalive(self, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is None:
            return
        idle = self._cfg.keepalive_idle
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if hasattr(socket, "TCP_KEEPIDLE"):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, idle // 6))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 6)

    async def _read(
        self,
        conn: _Connection,
        reader: asyncio.StreamReader,
        pending: asyncio.Queue[_Pending | object],
    ) -> None:
        cfg = self._cfg
        deframer = Deframer(cfg.max_message_bytes, keep_bytes=cfg.keep_bytes)
        while not conn.broken and not self._closing:
            conn.reading = True  # only a reader waiting for bytes is cancelled by stop()
            try:
                # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow the
                # cancellation stop() sends when a read completes at the same moment
                async with asyncio.timeout(cfg.idle_timeout):
                    data = await reader.read(cfg.read_size)
            except TimeoutError:
                if conn.outstanding == 0:
                    _log.info("mllp idle timeout", peer=conn.peer, seconds=cfg.idle_timeout)
                    data = b""
                else:
                    continue
            except (ConnectionError, ssl.SSLError) as exc:
                _log.info("mllp read failed", peer=conn.peer, error=type(exc).__name__)
                data = b""
            finally:
                conn.reading = False
            if not data:  # end of stream, idle or broken: a frame cut short is a fault
                await self._dispatch(conn, deframer.finish(), pending)
                break
            # frames already received are answered, even when stopping
            await self._dispatch(conn, deframer.feed(data), pending)

    async def _dispatch(
        self,
        conn: _Connection,
        events: list[Frame | Fault],
        pending: asyncio.Queue[_Pending | object],
    ) -> None:
        for event in events:
            now = self._clock.now()
            arrived = time.perf_counter()
            if isinstance(event, Frame):
                self._events.frame_received()
                conn.messages += 1
                ctx = read_context(
                    event.data,
                    charset_overrides=self._cfg.charset_overrides,
                    enhanced=self._cfg.enhanced_acks,
                )
                refusal = not_hl7(event.data)
                if refusal is not None:  # FHIR JSON over MLLP: refused, never processed
                    self._events.fault("not-hl7")
                    _log.warning("mllp frame is not HL7 v2", peer=conn.peer, bytes=len(event.data))
                    answer = plan(ctx, AckCode.AR, committed=True)
                    record = not_hl7_record(
                        event.data,
                        refusal,
                        source=conn.source,
                        received_at=now,
                        answered=answer[0].value if answer else "",
                    )
                    item = _Pending(ctx, event.data, arrived, refusal=refusal)
                    await pending.put(item)
                    item.future = self._committer.submit_record(record)
                    conn.outstanding += 1
                    continue
                item = _Pending(ctx, event.data, arrived)
                # queue the answer first, then submit: a reader stopped while waiting
                # for room has submitted nothing it will not answer
                await pending.put(item)
                item.future = self._committer.submit(
                    event.data, source=conn.source, received_at=now
                )
                conn.outstanding += 1
                continue
            self._events.fault(event.kind.value)
            _log.warning(
                "mllp framing fault",
                peer=conn.peer,
                fault=event.kind.value,
                bytes=event.size,
            )
            if event.kind is FaultKind.OVERSIZE:
                ctx = read_context(
                    event.data,
                    charset_overrides=self._cfg.charset_overrides,
                    enhanced=self._cfg.enhanced_acks,
                )
                answer = plan(ctx, AckCode.AR, committed=True)
                record = fault_record(
                    event,
                    source=conn.source,
                    received_at=now,
                    answered=answer[0].value if answer else "",
                )
                limit = self._cfg.max_message_bytes
                item = _Pending(
                    ctx,
                    event.data,
                    arrived,
                    refusal=ErrorInfo(
                        207, "message", f"message is {event.size} bytes; the limit is {limit} bytes"
                    ),
                )
                await pending.put(item)
                item.future = self._committer.submit_record(record)
                conn.outstanding += 1
            else:
                rec = fault_record(event, source=conn.source, received_at=now)
                self._committer.submit_record(rec).add_done_callback(_log_record_failure)

    async def _respond(self, conn: _Connection, pending: asyncio.Queue[_Pending | object]) -> None:
        while True:
            item = await pending.get()
            if item is _END:
                return
            assert isinstance(item, _Pending)
            try:
                acks = await self._answer(item)
            except Exception:  # a worker iteration: log, drop the connection, keep draining
                _log.exception("mllp could not answer a message", peer=conn.peer)
                acks = []
                conn.broken = True
                if conn.reader_task is not None:
                    conn.reader_task.cancel()
            finally:
                conn.outstanding -= 1
            if conn.broken or not acks:
                continue
            try:
                conn.writer.write(b"".join(frame(a.data) for a in acks))
                async with asyncio.timeout(self._cfg.write_timeout):
                    await conn.writer.drain()
            except (ConnectionError, TimeoutError, ssl.SSLError) as exc:
                _log.info("mllp write failed", peer=conn.peer, error=type(exc).__name__)
                conn.broken = True
                if conn.reader_task is not None:
                    conn.reader_task.cancel()
                continue
            elapsed = time.perf_counter() - item.arrived
            for a in acks:
                self._events.acked(a.code.value, elapsed)

    async def _answer(self, item: _Pending) -> list[Ack]:
        """Wait for the commit, then build the acknowledgments the sender asked for."""
        assert item.future is not None
        if item.refusal is not None:
            committed = True
            try:
                await item.future
            except StoreError:
                committed = False
                self._events.fault("store")
            now = self._clock.now()  # MSH-7 of the ACK: after the commit
            errors: tuple[ErrorInfo, ...] = (item.refusal,)
            codes = plan(item.ctx, AckCode.AR, committed=committed)
            return [self._build(item, c, errors, now) for c in codes]
        try:
            result = await item.future
        except StoreError as exc:
            now = self._clock.now()
            self._events.fault("store")
            _log.error("store failed; answering so the sender retries", error=exc.args[0])
            errors = (ErrorInfo(207, "message", "the message could not be stored; send again"),)
            codes = plan(item.ctx, AckCode.AR, committed=False)
            return [self._build(item, c, errors, now) for c in codes]
        assert isinstance(result, Ingested)
        now = self._clock.now()
        self._events.processed(result)
        self._log_result(result)
        codes = plan(item.ctx, result.ack, committed=True)
        return [self._build(item, c, () if c in _POSITIVE else result.errors, now) for c in codes]

    def _build(
        self,
        item: _Pending,
        code: AckCode | AcceptCode,
        errors: tuple[ErrorInfo, ...],
        now: datetime,
    ) -> Ack:
        control = f"{self._ack_prefix}{next(self._ack_seq):010d}"
        return build_ack(item.ctx, code, errors, raw=item.raw, control_id=control, now=now)

    @staticmethod
    def _log_result(result: Ingested) -> None:
        h = result.reading.header
        fields = {
            "control_id": h.control_id if h else "",
            "facility": h.sending_facility if h else "",
            "disposition": result.disposition.value,
            "ack": result.ack.value,
        }
        if result.reuse_of is not None:
            fields["reuse_of"] = str(result.reuse_of)
        if result.disposition.value in ("accepted", "duplicate"):
            _log.debug("message", **fields)
        else:
            codes = ",".join(str(e.code) for e in result.errors)
            _log.info("message not accepted", errors=codes, **fields)


def _log_record_failure(fut: asyncio.Future[int]) -> None:
    if fut.cancelled():
        return
    exc = fut.exception()
    if exc is not None:
        _log.error("could not record a framing fault", error=str(exc))
