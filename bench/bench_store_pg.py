"""MLLP messages/s with durable ACKs: `prpgate serve` on PostgreSQL with one instance and
with two instances sharing one database, beside `prpgate serve` on SQLite (one instance),
measured in the same run on the same kind of messages; and the store writer's work alone
(ingest in batches of 256, no sockets) on each backend.

PostgreSQL: PRPGATE_BENCH_PG_DSN (or PRPGATE_TEST_PG_DSN) names a server; without one a
throwaway cluster is started with .ci/pg-cluster and stopped at the end. Every run gets a
fresh schema (PostgreSQL) or file (SQLite). The client is bench_mllp's minimal pipelining
client (window 32 per connection); client, servers and PostgreSQL share the machine's
cores, so on a small machine the figures are a floor and two instances compete with each
other and with the database for the same cores.

Run: python bench/bench_store_pg.py [--quick] [--messages N] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg

from bench_mllp import WINDOW, drive, messages  # same folder: the same client
from processes import serve_command, start, stop
from prpgate.config import Settings
from prpgate.engine import build_engine
from prpgate.ingest import ingest
from prpgate.store.factory import open_store

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def postgres() -> Iterator[str]:
    """A server DSN: the one named in the environment, or a throwaway cluster."""
    dsn = os.environ.get("PRPGATE_BENCH_PG_DSN") or os.environ.get("PRPGATE_TEST_PG_DSN")
    if dsn:
        yield dsn
        return
    folder = tempfile.mkdtemp(prefix="prpgate-bench-pg.", dir="/tmp")
    cluster = str(ROOT / ".ci" / "pg-cluster")
    try:
        out = subprocess.run(
            [cluster, "start", folder], capture_output=True, text=True, check=True, timeout=300
        )
        yield out.stdout.strip()
    finally:
        subprocess.run([cluster, "stop", folder], check=False, timeout=120)


def fresh_schema(dsn: str) -> str:
    """A store URL on a new, empty schema of the server."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"'.encode())
    options = quote(f"-c search_path={schema}", safe="")
    return f"{dsn}{'&' if '?' in dsn else '?'}options={options}"


def serve(
    url: str, base: Path, name: str, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], int]:
    ready = base / f"{name}.json"
    return start(serve_command(ready), ready, {**env, "PRPGATE_STORE_URL": url})


def run_instances(
    urls: list[str], base: Path, env: dict[str, str], msgs: list[bytes], conns: int, tag: str
) -> dict[str, float]:
    """Start one serve per URL (all on the same store when the URLs are equal), share the
    messages and connections between them, and drive them at once."""
    procs = []
    try:
        for i, url in enumerate(urls):
            procs.append(serve(url, base, f"{tag}{i}", env))
        k = len(procs)
        shares = [msgs[i::k] for i in range(k)]

        async def all_at_once() -> list[dict[str, float]]:
            each = max(1, conns // k)
            ports = [port for _, port in procs]
            return await asyncio.gather(
                *(drive(port, share, each, None) for port, share in zip(ports, shares, strict=True))
            )

        t0 = time.perf_counter()
        parts = asyncio.run(all_at_once())
        seconds = time.perf_counter() - t0
    finally:
        for proc, _ in procs:
            stop(proc)
    return {
        "msgs_per_s": len(msgs) / seconds,
        "p50_ms": max(p["p50_ms"] for p in parts),
        "p99_ms": max(p["p99_ms"] for p in parts),
        "n": len(msgs),
    }


def ingest_alone(url: str, msgs: list[bytes], batch: int = 256) -> float:
    """msgs/s of the store writer's work alone on a backend: durable batches, no sockets."""
    settings = Settings(store_url=url, mappings=ROOT / "mappings")
    engine = build_engine(settings)
    store = open_store(settings)
    now = datetime.now(UTC)
    try:
        t0 = time.perf_counter()
        for first in range(0, len(msgs), batch):
            with store.session() as session:
                for raw in msgs[first : first + batch]:
                    ingest(session, engine, raw, source="bench", received_at=now)
        return len(msgs) / (time.perf_counter() - t0)
    finally:
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="3 000 messages per run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    n = 3_000 if args.quick else args.messages
    env = {
        **os.environ,
        "PRPGATE_LOG_LEVEL": "error",
        "PRPGATE_MAPPINGS": str(ROOT / "mappings"),
        "PRPGATE_DURABLE": "true",
    }
    env.pop("PRPGATE_STORE_URL", None)
    rows: dict[str, dict[str, float]] = {}
    alone: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="prpgate-bench-store-") as tmp, postgres() as dsn:
        base = Path(tmp)
        for conns in (1, 8):
            sqlite = f"sqlite:///{base / f'serve-{conns}.sqlite'}"
            rows[f"sqlite_1x_c{conns}"] = run_instances(
                [sqlite], base, env, messages(n, f"S{conns}"), conns, f"s{conns}"
            )
            one = fresh_schema(dsn)
            rows[f"pg_1x_c{conns}"] = run_instances(
                [one], base, env, messages(n, f"P{conns}"), conns, f"p{conns}"
            )
            two = fresh_schema(dsn)
            rows[f"pg_2x_c{max(conns, 2)}"] = run_instances(
                [two, two], base, env, messages(n, f"Q{conns}"), max(conns, 2), f"q{conns}"
            )
        alone["sqlite"] = ingest_alone(f"sqlite:///{base / 'alone.sqlite'}", messages(n, "A"))
        alone["postgresql"] = ingest_alone(fresh_schema(dsn), messages(n, "B"))
    figures: dict[str, Any] = {"messages": n, "window": WINDOW}
    for key, vals in rows.items():
        for k, v in vals.items():
            figures[f"{key}_{k}"] = v
    for backend, v in alone.items():
        figures[f"ingest_alone_{backend}_msgs_per_s"] = v
    for c in ("c1", "c8"):
        figures[f"ratio_{c}_pg1_over_sqlite"] = (
            rows[f"pg_1x_{c}"]["msgs_per_s"] / rows[f"sqlite_1x_{c}"]["msgs_per_s"]
        )
    figures["ratio_pg2_c2_over_pg1_c1"] = (
        rows["pg_2x_c2"]["msgs_per_s"] / rows["pg_1x_c1"]["msgs_per_s"]
    )
    figures["ratio_pg2_c8_over_pg1_c8"] = (
        rows["pg_2x_c8"]["msgs_per_s"] / rows["pg_1x_c8"]["msgs_per_s"]
    )
    figures["ratio_pg2_c8_over_sqlite_c8"] = (
        rows["pg_2x_c8"]["msgs_per_s"] / rows["sqlite_1x_c8"]["msgs_per_s"]
    )
    if args.json:
        print(json.dumps(figures))
        return 0
    print(f"Store backends, MLLP, durable ACK, CBC ORU^R01, {n:,} messages a row, window {WINDOW}")
    print(f"  {'store':<44}{'conns':>6}{'msgs/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
    labels = {
        "sqlite_1x": "SQLite, one instance (baseline)",
        "pg_1x": "PostgreSQL, one instance",
        "pg_2x": "PostgreSQL, two instances, one database",
    }
    for key, r in rows.items():
        label, conns = key.rsplit("_c", 1)
        print(
            f"  {labels[label]:<44}{conns:>6}{r['msgs_per_s']:>10,.0f}"
            f"{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
        )
    for backend, v in alone.items():
        print(f"  {'ingest alone, no sockets: ' + backend:<44}{'-':>6}{v:>10,.0f}")
    print(
        f"  PostgreSQL/SQLite, one instance: {figures['ratio_c1_pg1_over_sqlite']:.2f} (1 conn),"
        f" {figures['ratio_c8_pg1_over_sqlite']:.2f} (8 conns); two instances/one:"
        f" {figures['ratio_pg2_c2_over_pg1_c1']:.2f} (1 conn each),"
        f" {figures['ratio_pg2_c8_over_pg1_c8']:.2f} (4 conns each);"
        f" two PostgreSQL instances/SQLite: {figures['ratio_pg2_c8_over_sqlite_c8']:.2f}"
        " (8 conns)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
