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

This module accepts connections (at most ``max_connections``, and
``max_connections_per_peer`` from one address), runs each one and stops the listener;
the reading side is ``mllp_reader``, the answering side ``mllp_responder``, the settings
and the listener's ports ``mllp_ports``, the records of refused input ``mllp_records``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import secrets
import socket
from collections.abc import Callable

import structlog

from prpgate.listeners.mllp_ports import Committer, ListenerEvents, MllpConfig, NullEvents
from prpgate.listeners.mllp_reader import END, Connection, MllpReader, Pending
from prpgate.listeners.mllp_records import fault_record
from prpgate.listeners.mllp_responder import MllpResponder
from prpgate.ports import Clock

__all__ = [
    "Committer",
    "Dispatch",
    "ListenerEvents",
    "MllpConfig",
    "MllpListener",
    "NullEvents",
    "fault_record",
]

_log = structlog.get_logger("prpgate.mllp")

_BACKLOG = 128
# offered each accepted connection's socket; True: another process serves it
Dispatch = Callable[[socket.socket], bool]


class MllpListener(MllpReader, MllpResponder):
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
        self._sock: socket.socket | None = None  # when accepting with a dispatcher
        self._acceptor: asyncio.Task[None] | None = None
        self._adopting: set[asyncio.Task[None]] = set()
        self._connections: set[Connection] = set()
        self._per_peer: collections.Counter[str] = collections.Counter()  # open, by address
        self._handlers: set[asyncio.Task[None]] = set()
        self._ack_prefix = "A" + secrets.token_hex(4).upper()
        self._ack_seq = itertools.count(1)
        self._closing = False

    @property
    def port(self) -> int:
        """The bound TCP port (useful when configured as 0)."""
        if self._sock is not None:
            return int(self._sock.getsockname()[1])
        assert self._server is not None, "the listener is not started"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def is_serving(self) -> bool:
        """Bound and accepting connections."""
        if self._acceptor is not None:
            return not self._acceptor.done()
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

    async def start(self, dispatch: Dispatch | None = None) -> None:
        """Bind and start accepting connections.

        With ``dispatch``, the listener accepts itself and offers each new connection's
        socket to ``dispatch`` first: when it returns True another process has taken the
        connection over (``serve``'s MLLP workers); otherwise this listener serves it.
        """
        cfg = self._cfg
        if dispatch is None:
            self._server = await asyncio.start_server(
                self._handle,
                cfg.host,
                cfg.port,
                ssl=cfg.ssl,
                ssl_handshake_timeout=cfg.handshake_timeout if cfg.ssl else None,
                limit=cfg.read_size,
                reuse_address=True,
            )
        else:
            family, *_, address = socket.getaddrinfo(
                cfg.host, cfg.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
            self._sock = socket.create_server(address, family=family, backlog=_BACKLOG)
            self._sock.setblocking(False)
            self._acceptor = asyncio.create_task(self._accept(self._sock, dispatch))
        _log.info("mllp listening", host=cfg.host, port=self.port, tls=cfg.ssl is not None)

    def adopt(self, conn: socket.socket) -> None:
        """Serve a connection another process accepted (TLS: the handshake happens here)."""
        if self._closing:
            conn.close()
            return
        task = asyncio.create_task(self._adopt(conn))
        self._adopting.add(task)
        task.add_done_callback(self._adopting.discard)

    async def _accept(self, sock: socket.socket, dispatch: Dispatch) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as exc:  # out of descriptors, a connection reset before accept
                _log.warning("mllp accept failed", error=str(exc))
                await asyncio.sleep(0.1)
                continue
            try:
                taken = dispatch(conn)
            except Exception:  # the dispatcher failed (a bug): serve the connection here
                _log.exception("mllp dispatch failed")
                taken = False
            if not taken:
                self.adopt(conn)

    async def _adopt(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        cfg = self._cfg
        if conn.family in (socket.AF_INET, socket.AF_INET6):
            # asyncio sets it only for sockets it knows to be TCP; without it an ACK
            # waits for the peer's delayed acknowledgment (Nagle): milliseconds
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = asyncio.StreamReader(limit=cfg.read_size)
        protocol = asyncio.StreamReaderProtocol(reader, self._handle)
        try:
            await loop.connect_accepted_socket(
                lambda: protocol,
                conn,
                ssl=cfg.ssl,
                ssl_handshake_timeout=cfg.handshake_timeout if cfg.ssl else None,
            )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            _log.warning("mllp connection not established", error=str(exc))
            conn.close()

    async def stop(self, grace: float) -> None:
        """Stop accepting, stop reading, answer what is in flight, then close.

        Connections still busy after ``grace`` seconds are closed at once (their
        unanswered messages are not acknowledged; the sender will retransmit).
        """
        self._closing = True
        if self._server is not None:
            self._server.close()
        if self._acceptor is not None:
            self._acceptor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._acceptor
        if self._sock is not None:
            self._sock.close()
        for task in list(self._adopting):
            task.cancel()  # a TLS handshake still running: the connection is dropped
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
        conn = Connection(peer=peer, source=f"mllp:{peer}", writer=writer)
        self._connections.add(conn)
        self._events.connection_opened()
        _log.info("mllp connection opened", peer=peer)
        pending: asyncio.Queue[Pending | object] = asyncio.Queue(maxsize=self._cfg.in_flight)
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
            await pending.put(END)
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
