"""FHIR over HTTP: requests/s and latency of ``POST /fhir/Observation`` (a CBC WBC
Observation; 10% with a finding) to `prpgate serve` with durable commits, beside the
same requests to a bare echo ASGI endpoint under the same server (uvicorn, started the
same way by prpgate.listeners.asgi_server), measured in the same run.

Both run as their own process. The client (this process) keeps 1 or 8 HTTP/1.1
keep-alive connections, one request in flight on each, and times every request from
its first byte sent to the last byte of the answer. The ratio to the echo endpoint is
what prpgate's own work costs (parse, validate, map, evaluate, commit), the HTTP
server's cost being the same on both sides. The client shares the machine's cores.

Run: python bench/bench_fhir_http.py [--quick] [--requests N] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from processes import serve_command, start, stop, until_terminated
from prpgate.listeners.asgi_server import AsgiServer

ROOT = Path(__file__).resolve().parent.parent
ABNORMAL_SHARE = 10  # per hundred requests
NORMAL = ("6.2", "7.9", "5.4", "9.8", "4.6")
ABNORMAL = ("23.5", "13.1", "2.8", "1.4")


def observations(n: int, tag: str) -> list[bytes]:
    """n WBC Observations with their own identifiers and patients (10% abnormal)."""
    out = []
    for i in range(n):
        pool = ABNORMAL if i % 100 < ABNORMAL_SHARE else NORMAL
        obs = {
            "resourceType": "Observation",
            "identifier": [{"system": "urn:bench:obs", "value": f"{tag}-{i}"}],
            "status": "final",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "laboratory",
                        }
                    ]
                }
            ],
            "code": {
                "coding": [
                    {
                        "system": "http://loinc.org",
                        "code": "6690-2",
                        "display": "Leukocytes [#/volume] in Blood by Automated count",
                    }
                ]
            },
            "subject": {"identifier": {"system": "urn:bench:mrn", "value": f"{tag}{i:07d}"}},
            "effectiveDateTime": "2026-01-10T08:00:00+01:00",
            "valueQuantity": {
                "value": float(pool[i % len(pool)]),
                "unit": "10*9/L",
                "system": "http://unitsofmeasure.org",
                "code": "10*9/L",
            },
            "referenceRange": [{"low": {"value": 4.0}, "high": {"value": 11.0}}],
        }
        out.append(json.dumps(obs).encode())
    return out


def request(body: bytes) -> bytes:
    head = (
        "POST /fhir/Observation HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/fhir+json\r\nAccept: application/fhir+json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_answer(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if b"transfer-encoding: chunked" in head.lower():
        raise SystemExit("chunked answers are not read by this client")
    if length:
        await reader.readexactly(length)
    return status


async def _connection(port: int, reqs: list[bytes], latencies: list[float]) -> dict[int, int]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    statuses: dict[int, int] = {}
    try:
        for r in reqs:
            t0 = time.perf_counter()
            writer.write(r)
            status = await _read_answer(reader)
            latencies.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()
    return statuses


async def drive(port: int, bodies: list[bytes], conns: int) -> dict[str, Any]:
    """Send every body once over ``conns`` connections; rate, latency, statuses."""
    reqs = [request(b) for b in bodies]
    latencies: list[float] = []
    t0 = time.perf_counter()
    parts = await asyncio.gather(
        *(_connection(port, reqs[i::conns], latencies) for i in range(conns))
    )
    seconds = time.perf_counter() - t0
    statuses: dict[int, int] = {}
    for p in parts:
        for k, v in p.items():
            statuses[k] = statuses.get(k, 0) + v
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "requests_per_s": len(reqs) / seconds,
        "p50_ms": cuts[49] * 1000,
        "p99_ms": cuts[98] * 1000,
        "statuses": statuses,
    }


async def _echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The baseline: a bare ASGI endpoint that reads the body and sends it back."""
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [
                (b"content-type", b"application/fhir+json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def echo_server(ready: Path) -> None:
    server = AsgiServer(_echo_app, "127.0.0.1", 0)
    await server.start()
    ready.write_text(json.dumps({"fhir_http_port": server.port}))
    await until_terminated()
    await server.stop()


def measure(label: str, cmd: list[str], ready: Path, env: dict[str, str], n: int) -> dict[str, Any]:
    proc, port = start(cmd, ready, env, port="fhir_http_port")
    try:
        out = {}
        for conns in (1, 8):
            bodies = observations(n, f"{label[:2].upper()}{conns}")
            asyncio.run(drive(port, bodies[: min(50, n)], conns))  # warm-up: caches, pages
            out[str(conns)] = asyncio.run(drive(port, bodies[min(50, n) :], conns))
        return out
    finally:
        stop(proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1 000 requests per row")
    parser.add_argument("--requests", type=int, default=None, help="requests per row")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--echo-server", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_server:
        asyncio.run(echo_server(args.echo_server))
        return 0
    n = args.requests or (1_000 if args.quick else 5_000)
    with tempfile.TemporaryDirectory(prefix="prpgate-bench-fhir-") as tmp:
        base = Path(tmp)
        env = {
            **os.environ,
            "PRPGATE_MAPPINGS": str(ROOT / "mappings"),
            "PRPGATE_LOG_LEVEL": "warning",
        }
        echo = measure(
            "echo",
            [sys.executable, __file__, "--echo-server", str(base / "echo.json")],
            base / "echo.json",
            env,
            n,
        )
        prpgate = measure(
            "prpgate",
            serve_command(
                base / "serve.json", "--store", str(base / "store.sqlite"), "--fhir-port", "0"
            ),
            base / "serve.json",
            env,
            n,
        )
    if args.json:
        print(json.dumps({"requests": n, "echo": echo, "prpgate": prpgate}, indent=2))
        return 0
    print(f"FHIR HTTP: POST /fhir/Observation, a CBC WBC Observation, {n} requests per row")
    print(f"{'':44}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}")
    for conns in ("1", "8"):
        e, p = echo[conns], prpgate[conns]
        print(
            f"  bare echo ASGI endpoint, {conns} client(s){'':<10}"
            f"{e['requests_per_s']:9.0f}{e['p50_ms']:9.2f}{e['p99_ms']:9.2f}"
        )
        print(
            f"  prpgate serve, durable commit, {conns} client(s){'':<4}"
            f"{p['requests_per_s']:9.0f}{p['p50_ms']:9.2f}{p['p99_ms']:9.2f}"
            f"   ratio {p['requests_per_s'] / e['requests_per_s']:.2f}x of echo"
            f"   statuses {p['statuses']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
