"""An ASGI app served by uvicorn inside an already running event loop.

``uvicorn.Server.serve`` installs its own signal handlers and ends the process on a
bind error; prpgate's ``serve`` owns the signals and reports a port in use as a
configuration error. So the socket is bound here, handed to uvicorn's ``startup``,
and stopping is ``should_exit`` plus uvicorn's own graceful ``shutdown`` (requests in
flight finish first).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from pathlib import Path
from typing import Any

import uvicorn

from prpgate.errors import ConfigError

__all__ = ["AsgiServer"]


class AsgiServer:
    """One ASGI app on one TCP socket (TLS when ``tls_cert`` and ``tls_key`` are set)."""

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        *,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        max_concurrency: int | None = None,
        keep_alive: float = 30.0,
        shutdown_grace: float = 10.0,
    ) -> None:
        if (tls_cert is None) != (tls_key is None):
            raise ConfigError("a TLS certificate and its key must be set together")
        self._config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,
            ssl_certfile=str(tls_cert) if tls_cert else None,
            ssl_keyfile=str(tls_key) if tls_key else None,
            limit_concurrency=max_concurrency,
            timeout_keep_alive=int(keep_alive),
            timeout_graceful_shutdown=int(shutdown_grace) or None,
        )
        self._host, self._port = host, port
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port."""
        assert self._socket is not None, "the server is not started"
        return int(self._socket.getsockname()[1])

    @property
    def tls(self) -> ssl.SSLContext | None:
        """The TLS context once started (None without TLS)."""
        return self._config.ssl if self._config.loaded else None

    @property
    def is_serving(self) -> bool:
        """True between start and stop."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Bind and serve. Raises ConfigError for TLS files that cannot be loaded and
        OSError for an address that cannot be bound."""
        try:
            self._config.load()
        except (OSError, ValueError) as exc:
            raise ConfigError(f"TLS files cannot be loaded: {exc}") from exc
        if self._config.ssl is not None:  # TLS 1.2 at least, whatever the platform's default
            self._config.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        # proto IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on
        # sockets that say they are TCP, and accepted sockets inherit the listener's
        # proto. With Nagle on, an answer written in two parts waits for the client's
        # delayed ACK (40 ms per request on a kept-alive connection).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._port))
            sock.listen(self._config.backlog)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._socket = sock
        self._server = uvicorn.Server(self._config)
        # what uvicorn's own serve() sets up before startup (lifespan is "off")
        self._server.lifespan = self._config.lifespan_class(self._config)
        await self._server.startup(sockets=[self._socket])
        self._task = asyncio.create_task(self._server.main_loop(), name="prpgate-asgi")

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish, close the socket."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if server.started:
            await server.shutdown(sockets=[self._socket] if self._socket else None)
        if self._socket is not None:
            self._socket.close()
