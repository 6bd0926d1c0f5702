"""``prpgate serve``: the long-running process.

In each serve process, one store writer (``store_writer``) owns the store: messages
that arrive together, on any connection, share one transaction and one fsync (group
commit), and a message's future resolves only after its batch has committed durably;
the listener acknowledges only then.

Beside the MLLP listener, a small asyncio HTTP server answers ``GET /healthz``
(process up), ``GET /readyz`` (store reachable, listener bound) and ``GET /metrics``
(Prometheus text format). SIGTERM or SIGINT: stop accepting, answer what is in
flight, close the store.

With ``mllp_workers`` > 1, this process's listener deals MLLP connections out to
itself and to worker processes, each with its own store writer (``serve_workers``,
``serve_worker``); this process keeps the HTTP endpoints, the FHIR listener and the
delivery worker, and its ``/metrics`` adds up every process's figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any, cast

import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from prpgate.config import Settings
from prpgate.core.pipeline import Disposition, Engine
from prpgate.delivery.wiring import open_worker
from prpgate.engine import build_engine
from prpgate.errors import ConfigError, StoreError
from prpgate.ingest import Ingested
from prpgate.listeners.fhir_wiring import fhir_listener
from prpgate.listeners.mllp import MllpConfig, MllpListener
from prpgate.metrics_merge import merge_expositions
from prpgate.ports import Clock, OutboxStats, Store, StoreBackend
from prpgate.serve_workers import WorkerPool
from prpgate.store.factory import open_store, store_location
from prpgate.store_reader import StoreReader
from prpgate.store_writer import StoreWriter
from prpgate.warmup import warm_up

__all__ = [
    "HealthServer",
    "ServeMetrics",
    "StoreWriter",
    "SystemClock",
    "mllp_config",
    "open_reader",
    "serve",
    "switch_interval",
    "tls_context",
    "warmed_engine",
]

_log = structlog.get_logger("prpgate.serve")

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class SystemClock:
    """The Clock port on the system clock (UTC)."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        return datetime.now(UTC)


class ServeMetrics:
    """Prometheus metrics of one serve process (its own registry); ListenerEvents too."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.received = Counter(
            "prpgate_mllp_frames_received", "Complete MLLP frames received.", registry=r
        )
        self.messages = Counter(
            "prpgate_messages",
            "Messages committed, by message type and disposition.",
            ["type", "disposition"],
            registry=r,
        )
        self.acks = Counter("prpgate_acks", "Acknowledgments sent, by MSA-1.", ["code"], registry=r)
        self.ack_latency = Histogram(
            "prpgate_ack_latency_seconds",
            "From a frame's arrival to its acknowledgment being written.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.connections = Gauge(
            "prpgate_mllp_connections_open", "Open MLLP connections.", registry=r
        )
        self.faults = Counter(
            "prpgate_mllp_faults",
            "Framing faults and store failures, by kind.",
            ["kind"],
            registry=r,
        )
        self.commit_latency = Histogram(
            "prpgate_store_commit_seconds",
            "Time to run and durably commit one batch.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "prpgate_store_batch_messages",
            "Messages per group commit.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.outbox_depth = Gauge(
            "prpgate_outbox_depth",
            "Outbox rows not yet delivered (pending, retry, in flight).",
            registry=r,
        )
        self.outbox_oldest_age = Gauge(
            "prpgate_outbox_oldest_undelivered_seconds",
            "Age of the oldest undelivered outbox row (0 when none).",
            registry=r,
        )
        self.duplicates = Counter(
            "prpgate_duplicates", "Retransmits answered with the original ACK.", registry=r
        )
        self.reuses = Counter(
            "prpgate_control_id_reuses",
            "Messages whose (MSH-3, MSH-4, MSH-10) was seen before with other content.",
            registry=r,
        )

    def render(self) -> bytes:
        """The metrics in Prometheus text format."""
        return generate_latest(self.registry)

    def connection_opened(self) -> None:
        """A connection was accepted."""
        self.connections.inc()

    def connection_closed(self) -> None:
        """A connection ended."""
        self.connections.dec()

    def frame_received(self) -> None:
        """A complete frame arrived."""
        self.received.inc()

    def processed(self, item: Ingested) -> None:
        """A message was committed."""
        h = item.reading.header
        typ = "^".join(p for p in (h.message_type, h.trigger_event) if p) if h else ""
        self.messages.labels(typ or "unknown", item.disposition.value).inc()
        if item.disposition is Disposition.DUPLICATE:
            self.duplicates.inc()
        if item.reuse_of is not None:
            self.reuses.inc()

    def fault(self, kind: str) -> None:
        """A framing fault or store failure."""
        self.faults.labels(kind).inc()

    def acked(self, code: str, seconds: float) -> None:
        """An acknowledgment was written."""
        self.acks.labels(code).inc()
        self.ack_latency.observe(seconds)


# /readyz says "not ready" this long after a failed commit (unless one succeeds meanwhile)
_UNREADY_AFTER_FAILED_COMMIT = 30.0


# ------------------------------------------------------------------- HTTP


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


class HealthServer:
    """A minimal HTTP/1.1 server for /healthz, /readyz and /metrics (one request per
    connection; request head at most 16 KiB, read within 5 s)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ready: Callable[[], Awaitable[tuple[bool, dict[str, Any]]]],
        metrics: Callable[[], Awaitable[bytes]],
    ) -> None:
        self._host, self._port = host, port
        self._ready = ready
        self._metrics = metrics
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port."""
        assert self._server is not None, "the HTTP server is not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind and serve."""
        self._server = await asyncio.start_server(self._handle, self._host, self._port, limit=16384)
        _log.info("http listening", host=self._host, port=self.port)

    async def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            line = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            status, ctype, body = await self._route(line)
            writer.write(
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("latin-1")
                + body
            )
            await asyncio.wait_for(writer.drain(), 5.0)
        except (ConnectionError, TimeoutError):
            pass
        except Exception:  # top of a connection handler
            _log.exception("http request failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _route(self, line: list[str]) -> tuple[int, str, bytes]:
        if len(line) != 3 or not line[2].startswith("HTTP/"):
            return 400, "text/plain", b"bad request\n"
        method, target = line[0], line[1].split("?", 1)[0]
        if target not in ("/healthz", "/readyz", "/metrics"):
            return 404, "text/plain", b"not found\n"
        if method != "GET":
            return 405, "text/plain", b"method not allowed\n"
        if target == "/healthz":
            return 200, "application/json", b'{"status":"ok"}\n'
        if target == "/metrics":
            return 200, CONTENT_TYPE_LATEST, await self._metrics()
        ok, detail = await self._ready()
        body = json.dumps({"status": "ready" if ok else "not ready", **detail}).encode() + b"\n"
        return (200 if ok else 503), "application/json", body


# --------------------------------------------------------------- the process


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The listener's TLS context from settings, or None without a certificate.

    Raises ConfigError for a certificate without a key (or the reverse), a client CA
    without a server certificate, or files that cannot be loaded.
    """
    cert, key, ca = settings.mllp_tls_cert, settings.mllp_tls_key, settings.mllp_tls_client_ca
    if cert is None and key is None:
        if ca is not None:
            raise ConfigError("mllp_tls_client_ca needs mllp_tls_cert and mllp_tls_key")
        return None
    if cert is None or key is None:
        raise ConfigError("mllp_tls_cert and mllp_tls_key must be set together")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
        if ca is not None:
            ctx.load_verify_locations(cafile=ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"TLS files cannot be loaded: {exc}") from exc
    return ctx


async def _refresh_outbox(reader: StoreReader, metrics: ServeMetrics) -> None:
    """Set the outbox gauges from the store at scrape time (the worker may run in this
    process or another, so only the store knows the depth). Counting a large backlog
    takes a while: on the reader's connection, not between the writer's batches."""
    try:
        stats = await reader.call(_outbox_stats, timeout=10.0)
    except StoreError:
        return  # the store is unreachable: /readyz says so; keep the last values
    metrics.outbox_depth.set(stats.undelivered)
    age = 0.0
    if stats.oldest_undelivered:
        oldest = datetime.fromisoformat(stats.oldest_undelivered)
        if oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)
        age = max(0.0, (datetime.now(UTC) - oldest).total_seconds())
    metrics.outbox_oldest_age.set(age)


def _outbox_stats(store: Store) -> OutboxStats:
    # the reader's store comes from open_store: a StoreBackend, outbox included
    return cast(StoreBackend, store).outbox_stats(include_done=False)


def open_reader(settings: Settings) -> StoreReader:
    """The serve process's ``StoreReader``: one connection of its own (never a pool,
    never the writer lock), opened at its first read, at the schema the writer migrated."""
    own = settings.model_copy(update={"store_pool_size": 1, "mllp_workers": 1})
    return StoreReader(lambda: open_store(own, migrate=False))


async def serve(
    settings: Settings,
    *,
    engine: Engine | None = None,
    clock: Clock | None = None,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[dict[str, int]], None] | None = None,
    handle_signals: bool = True,
) -> None:
    """Run the MLLP listener, the store writer and the HTTP endpoints until ``stop``
    is set (or SIGTERM/SIGINT when ``handle_signals``).

    ``on_ready`` receives the bound ports (``mllp_port``, ``http_port``, 0 when HTTP
    is off) once everything listens. Raises ConfigError (TLS files, a port in use),
    MappingError (mappings) or StoreError (the store cannot be opened).

    While it serves, the interpreter's thread switch interval is
    ``gil_switch_interval_ms``: the store writer's thread (on PostgreSQL it runs whole
    batches; on SQLite only the waits and COMMITs) and the checkpointer run beside the
    loop's thread, and with CPython's 5 ms default an ACK could wait that long for the GIL.
    """
    with switch_interval(settings.gil_switch_interval_ms):
        await _serve(settings, engine, clock, stop, on_ready, handle_signals)


@contextlib.contextmanager
def switch_interval(ms: float) -> Iterator[None]:
    """The interpreter's thread switch interval is ``ms`` inside the block, the process's
    own again after it (tests serve in-process)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(ms / 1000)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def warmed_engine(settings: Settings, engine: Engine | None = None) -> Engine:
    """``engine`` (or one built from settings), warmed up: the first real message pays
    no first-time costs."""
    engine = engine or build_engine(settings)
    started = time.perf_counter()
    warmed = warm_up(engine)
    _log.info(
        "warmed up",
        units=warmed.units,
        messages=warmed.messages,
        outputs=len(warmed.outputs),
        ms=round((time.perf_counter() - started) * 1000, 1),
    )
    return engine


def mllp_config(settings: Settings, engine: Engine, tls: ssl.SSLContext | None) -> MllpConfig:
    """The MLLP listener's configuration from settings."""
    return MllpConfig(
        host=settings.mllp_host,
        port=settings.mllp_port,
        max_message_bytes=settings.max_message_bytes,
        idle_timeout=settings.mllp_idle_timeout,
        in_flight=settings.mllp_in_flight,
        max_connections=settings.mllp_max_connections,
        max_connections_per_peer=settings.mllp_max_connections_per_peer,
        keepalive_idle=settings.mllp_keepalive_idle,
        write_timeout=settings.mllp_write_timeout,
        enhanced_acks=settings.mllp_enhanced_acks,
        charset_overrides=engine.charset_overrides,
        ssl=tls,
    )


async def _serve(
    settings: Settings,
    engine: Engine | None,
    clock: Clock | None,
    stop: asyncio.Event | None,
    on_ready: Callable[[dict[str, int]], None] | None,
    handle_signals: bool,
) -> None:
    tls = tls_context(settings)
    engine = warmed_engine(settings, engine)
    clock = clock or SystemClock()
    stop = stop or asyncio.Event()
    metrics = ServeMetrics()
    store = open_store(settings, long_running=True)
    writer = StoreWriter(store, engine, max_batch=settings.commit_batch, metrics=metrics)
    await writer.start()
    reader = open_reader(settings)
    listener = MllpListener(mllp_config(settings, engine, tls), writer, clock=clock, events=metrics)
    workers = WorkerPool(settings)

    async def ready() -> tuple[bool, dict[str, Any]]:
        detail: dict[str, Any] = {"mllp": listener.is_serving}
        if fhir is not None:
            detail["fhir_http"] = fhir.is_serving
        try:
            await writer.call(lambda s: s.list_messages(limit=1), timeout=5.0)
            detail["store"] = True
        except StoreError as exc:
            detail["store"] = False
            detail["error"] = exc.args[0]
        failing = writer.failing
        if failing is not None and time.monotonic() - failing[0] < _UNREADY_AFTER_FAILED_COMMIT:
            # the store answers reads but the last commit failed (a full disk): not ready
            # for a while, then ready again to try (no traffic would ever clear it)
            detail["store"] = False
            detail["error"] = f"the last commit failed: {failing[1]}"
        serving = detail["mllp"] and detail.get("fhir_http", True)
        if workers.expected:
            detail["mllp_workers"] = {"expected": workers.expected, "running": workers.running}
            serving = serving and workers.running == workers.expected
        return bool(serving and detail["store"]), detail

    async def render_metrics() -> bytes:
        await _refresh_outbox(reader, metrics)
        if not workers.expected:
            return metrics.render()
        return merge_expositions([metrics.render(), *await workers.metrics()])

    http = HealthServer(settings.http_host, settings.http_port, ready=ready, metrics=render_metrics)
    fhir = fhir_listener(
        settings,
        engine,
        writer,
        reader=reader,
        clock=clock,
        events=metrics,
        registry=metrics.registry,
    )
    delivery = _start_delivery(settings, stop) if settings.fhir_base_url else None
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
    try:
        await _refresh_outbox(reader, metrics)
        try:
            await workers.start()
            await listener.start(workers.dispatch if workers.expected else None)
            if settings.http_enabled:
                await http.start()
            if fhir is not None:
                await fhir.start()
        except OSError as exc:
            raise ConfigError(f"cannot listen: {exc}") from exc
        for sig in signals:
            loop.add_signal_handler(sig, stop.set)
        ports = {
            "mllp_port": listener.port,
            "http_port": http.port if settings.http_enabled else 0,
            "fhir_http_port": fhir.port if fhir is not None else 0,
        }
        _log.info("serving", **ports, store=store_location(settings).display)
        if on_ready is not None:
            on_ready(ports)
        await stop.wait()
        _log.info("stopping", grace=settings.shutdown_grace)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await http.stop()
        if fhir is not None:
            await fhir.stop()  # requests in flight are answered: before the writer stops
        await reader.close()
        await asyncio.gather(
            workers.stop(settings.shutdown_grace), listener.stop(settings.shutdown_grace)
        )
        await writer.stop()
        if delivery is not None:
            stop.set()  # the worker finishes the writes it has in flight, then returns
            await delivery
        _log.info("stopped")


def _start_delivery(settings: Settings, stop: asyncio.Event) -> asyncio.Task[None]:
    """Run the outbox worker beside the listener, on its own store connection (SQLite's
    WAL lets it read and mark rows while the writer commits; on PostgreSQL its own pool)."""

    async def deliver() -> None:
        try:
            async with open_worker(settings) as worker:
                stats = await worker.run(stop)
                _log.info("delivery stopped", delivered=stats.delivered)
        except Exception:  # top of a worker: log with context, never take serve down
            _log.exception("delivery worker failed")

    return asyncio.create_task(deliver(), name="prpgate-delivery")
