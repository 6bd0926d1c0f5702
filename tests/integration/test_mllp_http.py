"""The health and metrics HTTP endpoint of ``prpgate serve``, in process, on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
from typing import Any

from prpgate.serve import HealthServer, ServeMetrics
from tests.integration.test_mllp import READ_TIMEOUT, run


async def request(port: int, raw: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    data = await asyncio.wait_for(reader.read(), READ_TIMEOUT)
    writer.close()
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def server(ready: bool) -> HealthServer:
    async def probe() -> tuple[bool, dict[str, Any]]:
        return ready, {"store": ready, "mllp": True}

    metrics = ServeMetrics()

    async def render() -> bytes:
        return metrics.render()

    return HealthServer("127.0.0.1", 0, ready=probe, metrics=render)


def test_health_http_routes_and_errors() -> None:
    async def scenario() -> None:
        http = server(ready=True)
        await http.start()
        try:
            port = http.port
            assert await request(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") == (
                200,
                b'{"status":"ok"}\n',
            )
            status, body = await request(port, b"GET /readyz HTTP/1.1\r\n\r\n")
            assert status == 200
            assert b'"ready"' in body
            status, body = await request(port, b"GET /metrics?x=1 HTTP/1.1\r\n\r\n")
            assert status == 200
            assert b"prpgate_acks_total" in body
            assert (await request(port, b"POST /healthz HTTP/1.1\r\n\r\n"))[0] == 405
            assert (await request(port, b"GET /other HTTP/1.1\r\n\r\n"))[0] == 404
            assert (await request(port, b"nonsense\r\n\r\n"))[0] == 400
        finally:
            await http.stop()

    run(scenario())


def test_health_http_not_ready_is_503() -> None:
    async def scenario() -> None:
        http = server(ready=False)
        await http.start()
        try:
            status, body = await request(http.port, b"GET /readyz HTTP/1.1\r\n\r\n")
            assert status == 503
            assert b'"not ready"' in body
        finally:
            await http.stop()

    run(scenario())


def test_health_http_oversized_request_head_is_dropped() -> None:
    async def scenario() -> None:
        http = server(ready=True)
        await http.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", http.port)
            writer.write(b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 40_000 + b"\r\n\r\n")
            try:
                data = await asyncio.wait_for(reader.read(), READ_TIMEOUT)
            except ConnectionResetError:
                data = b""
            assert data == b""  # closed without an answer, nothing buffered without bound
            writer.close()
        finally:
            await http.stop()

    run(scenario())
