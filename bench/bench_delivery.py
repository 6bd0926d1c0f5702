"""Delivery throughput: outbox rows written to the test FHIR server over real HTTP.

The test FHIR server (tests/fhirserver, Starlette on uvicorn, one process) runs on a
free 127.0.0.1 port. N outputs (a DetectedIssue and a Flag per patient) are put in
a SQLite outbox (durable commits, as in production) and delivered by the worker in
client-id mode with 1 and with 8 deliveries in parallel; every row is claimed,
sent and marked delivered (two durable commits per row). Baseline in the same run:
the same number of bare httpx PUTs of the same bodies to the same server, one at a
time and 8 at a time, with no store at all.

Run: python bench/bench_delivery.py [--outputs 2000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fhirserver.process import FhirServer  # noqa: E402
from tests.fhirserver.support import resource_for  # noqa: E402

from prpgate.config import Settings  # noqa: E402
from prpgate.core.pipeline import Emitted, Outcome  # noqa: E402
from prpgate.core.state import OutputKind  # noqa: E402
from prpgate.delivery.wiring import open_worker  # noqa: E402
from prpgate.ports import MessageRecord  # noqa: E402
from prpgate.store.sqlite import SqliteStore  # noqa: E402


def _outputs(n: int, tag: str) -> list[tuple[str, str, str, str]]:
    """(kind, identifier, patient key, resource) for n outputs, two per patient."""
    out = []
    for i in range(n):
        p = i // 2
        kind = "DetectedIssue" if i % 2 == 0 else "Flag"
        ident = f"{tag}-{kind[0]}{i:07d}"
        status = "final" if kind == "DetectedIssue" else "active"
        out.append(
            (kind, ident, f"urn:oid:1.2.3|B{p:07d}", resource_for(kind, ident, status, f"B{p:07d}"))
        )
    return out


def _fill(path: Path, outputs: list[tuple[str, str, str, str]]) -> SqliteStore:
    db = SqliteStore(path)
    with db.session() as s:
        mid = s.add_message(
            MessageRecord(
                received_at=datetime.now(UTC).isoformat(),
                source="bench",
                raw=b"MSH|",
                content_hash="bench",
                sending_application="B",
                sending_facility="B",
                control_id="B1",
                message_type="ORU^R01",
                version="2.5.1",
                status="accepted",
                ack_code="AA",
                errors="[]",
                summary="{}",
            )
        )
        emitted = tuple(
            Emitted(ident, OutputKind(kind), pk, "r", "rk", "s", res, 1, "created")
            for kind, ident, pk, res in outputs
        )
        s.apply(mid, Outcome(decisions=(), emitted=emitted, explanation=()))
    return db


def _worker_run(server: FhirServer, work: Path, n: int, parallel: int) -> float:
    path = work / f"outbox-{parallel}.sqlite"
    db = _fill(path, _outputs(n, f"w{parallel}"))
    settings = Settings(store=path, fhir_base_url=server.base, delivery_parallel=parallel)

    async def go() -> int:
        async with open_worker(settings, db) as worker:
            stats = await worker.run_once()
            return stats.delivered

    t0 = time.perf_counter()
    delivered = asyncio.run(go())
    elapsed = time.perf_counter() - t0
    assert delivered == n, (delivered, n)
    assert db.outbox_stats().counts == {"delivered": n}
    db.close()
    return n / elapsed


def _bare_run(server: FhirServer, n: int, parallel: int) -> float:
    outputs = _outputs(n, f"b{parallel}")

    async def go() -> None:
        sem = asyncio.Semaphore(parallel)
        async with httpx.AsyncClient(
            base_url=server.base + "/", limits=httpx.Limits(max_connections=parallel * 2)
        ) as client:

            async def put(kind: str, res: str) -> None:
                rid = json.loads(res)["id"]
                async with sem:
                    r = await client.put(
                        f"{kind}/{rid}",
                        content=res.encode(),
                        headers={"Content-Type": "application/fhir+json"},
                    )
                    r.raise_for_status()

            await asyncio.gather(*(put(kind, res) for kind, _, _, res in outputs))

    t0 = time.perf_counter()
    asyncio.run(go())
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--outputs", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="500 outputs")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    n = 500 if args.quick else args.outputs
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        server = FhirServer(work, persist=False)
        server.start()
        try:
            rows = []
            for parallel in (1, 8):
                worker = _worker_run(server, work, n, parallel)
                bare = _bare_run(server, n, parallel)
                rows.append((parallel, worker, bare))
            if args.json:
                figures = {"outputs": n}
                for parallel, worker, bare in rows:
                    figures[f"p{parallel}_worker_per_s"] = worker
                    figures[f"p{parallel}_bare_httpx_per_s"] = bare
                print(json.dumps(figures))
                return
            print(
                f"delivery: {n} outputs to the test FHIR server (uvicorn, 127.0.0.1), client-id PUT"
            )
            head = ("parallel", "worker outputs/s", "bare httpx PUT/s", "worker/bare")
            print(f"{head[0]:>8}  {head[1]:>17}  {head[2]:>17}  {head[3]:>11}")
            for parallel, worker, bare in rows:
                print(f"{parallel:>8}  {worker:>17,.0f}  {bare:>17,.0f}  {worker / bare:>11.2f}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
