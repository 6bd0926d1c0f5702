"""One MLLP worker process of ``serve`` (started by ``serve_workers``, never by hand).

``python -m prpgate.serve_worker INDEX CONTROL_FD CONNECTIONS_FD`` with serve's
pickled settings on standard input: serves the connections serve passes it on
CONNECTIONS_FD (reads, commits and acknowledges exactly as serve's own listener does)
and answers serve on the control socket (``ready`` once it can serve, its metrics on
request). It stops, as serve does on SIGTERM, when serve closes either socket (serve
stopped or died) or on SIGTERM/SIGINT.

Exit code 0 after a clean stop, 2 when it cannot start (configuration, mappings or
store; the log says which).
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import signal
import socket
import sys

import structlog

from prpgate.config import Settings
from prpgate.engine import end_startup
from prpgate.errors import ConfigError, MappingError, StoreError
from prpgate.listeners.mllp import MllpListener
from prpgate.logs import configure_logging
from prpgate.serve import (
    ServeMetrics,
    StoreWriter,
    SystemClock,
    mllp_config,
    switch_interval,
    tls_context,
    warmed_engine,
)
from prpgate.store.factory import open_store

__all__ = ["main", "run_worker"]

_log = structlog.get_logger("prpgate.serve")


async def run_worker(settings: Settings, control_fd: int, connections_fd: int) -> None:
    """Serve the connections serve passes until it closes the sockets or a signal comes."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reader, control = await asyncio.open_connection(sock=socket.socket(fileno=control_fd))
    connections = socket.socket(fileno=connections_fd)
    connections.setblocking(False)
    with switch_interval(settings.gil_switch_interval_ms):
        tls = tls_context(settings)
        engine = warmed_engine(settings)
        metrics = ServeMetrics()
        writer = StoreWriter(
            open_store(settings, long_running=True),
            engine,
            max_batch=settings.commit_batch,
            metrics=metrics,
        )
        await writer.start()
        listener = MllpListener(
            mllp_config(settings, engine, tls), writer, clock=SystemClock(), events=metrics
        )
        answering: asyncio.Task[None] | None = None
        try:
            loop.add_reader(connections.fileno(), _receive, connections, listener, stop)
            end_startup()
            control.write(b"ready\n")
            await control.drain()
            answering = asyncio.create_task(_answer(reader, control, metrics, stop))
            await stop.wait()
            _log.info("stopping", grace=settings.shutdown_grace)
        finally:
            loop.remove_reader(connections.fileno())
            connections.close()
            await listener.stop(settings.shutdown_grace)
            await writer.stop()
            if answering is not None:
                answering.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await answering
            control.close()
            _log.info("stopped")


def _receive(connections: socket.socket, listener: MllpListener, stop: asyncio.Event) -> None:
    """A connection socket from serve: serve it. End of file: serve stopped or died."""
    try:
        data, fds, _, _ = socket.recv_fds(connections, 1, 8)
    except BlockingIOError:
        return
    except OSError:
        data, fds = b"", []
    for fd in fds:
        listener.adopt(socket.socket(fileno=fd))
    if not data and not fds:
        asyncio.get_running_loop().remove_reader(connections.fileno())
        stop.set()


async def _answer(
    reader: asyncio.StreamReader,
    control: asyncio.StreamWriter,
    metrics: ServeMetrics,
    stop: asyncio.Event,
) -> None:
    """Answer serve's requests; set ``stop`` when serve closes the socket (or dies)."""
    try:
        while line := await reader.readline():
            if line == b"metrics\n":
                text = metrics.render()
                control.write(b"%d\n" % len(text) + text)
                await control.drain()
    except OSError:
        pass  # the socket broke: serve is gone
    stop.set()


def _settings_from_stdin() -> Settings:
    value = pickle.loads(sys.stdin.buffer.read())  # noqa: S301 - written by serve, our parent
    if not isinstance(value, Settings):
        raise ConfigError("standard input holds no settings")
    return value


def main(argv: list[str] | None = None) -> int:
    """Run one worker; the exit code (see the module's description)."""
    index, control_fd, connections_fd = (int(a) for a in (argv or sys.argv[1:]))
    settings = _settings_from_stdin()
    configure_logging(fmt=settings.log_format, level=settings.log_level, log_phi=settings.log_phi)
    structlog.contextvars.bind_contextvars(worker=index)
    try:
        asyncio.run(run_worker(settings, control_fd, connections_fd))
    except (ConfigError, MappingError, StoreError) as exc:
        _log.error("mllp worker cannot run", error=str(exc))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
