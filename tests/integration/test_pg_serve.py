"""Two `prpgate serve` processes on one PostgreSQL database, the test FHIR server behind
them, MLLP streams to both: every message stored once, every output delivered once,
retransmits to the other instance deduplicated, one patient's results on both instances
decided as one instance would; then one instance killed with SIGKILL mid-stream while the
other takes over its senders and finishes the whole outbox.

Each test writes its figures to ``<tmp>/*-report.json`` and prints them (``pytest -s``).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hl7.client import MLLPClient

from prpgate.core.pipeline import Engine
from prpgate.ingest import ingest
from prpgate.ports import StoreBackend
from tests.conftest import FIXED_NOW, StoreSpec
from tests.fhirserver.process import FhirServer
from tests.integration.test_mllp_serve import (
    START_TIMEOUT,
    Client,
    Server,
    ack_fields,
    original,
    start_server,
)

pytestmark = [pytest.mark.pg, pytest.mark.slow]
WBC = (b"|1.6|", b"|6.0|", b"|23.4|")  # leukopenia, normal, leukocytosis: Flags go on and off
DRAIN_TIMEOUT = 120.0


def cbc(i: int, patients: int, tag: str) -> tuple[str, bytes]:
    """Message i: its own control id and order number, one of ``patients`` patients, the
    same collection time as every other (so arrival order decides between them)."""
    control = f"{tag}{i:05d}"
    raw = original(control, i % patients)
    raw = raw.replace(b"NF40046", f"NF{i:05d}".encode()).replace(b"PL40046", f"PL{i:05d}".encode())
    return control, raw.replace(b"|1.6|", WBC[i % len(WBC)])


@contextmanager
def two_instances(
    tmp_path: Path, pg_url: str, fhir: FhirServer, **env: str
) -> Iterator[list[Server]]:
    common = {
        "PRPGATE_STORE_URL": pg_url,
        "PRPGATE_FHIR_BASE_URL": fhir.base,
        "PRPGATE_DELIVERY_IDLE_POLL": "0.05",
        **env,
    }
    servers: list[Server] = []
    try:
        for name in ("a", "b"):
            servers.append(start_server(tmp_path, name=name, **common))
        yield servers
    finally:
        for s in servers:
            if s.proc.poll() is None:
                s.proc.kill()
                s.proc.wait(timeout=START_TIMEOUT)


def stream_all(streams: list[tuple[Server, list[tuple[str, bytes]]]]) -> list[Client]:
    """Pipeline each list of messages to its server, all streams at once; wait for every
    ACK (or the connection's end)."""
    clients = [Client(server.mllp_port, msgs, window=32) for server, msgs in streams]
    readers = [threading.Thread(target=c.read_until_closed) for c in clients]
    for c in clients:
        c.start()
    for r in readers:
        r.start()
    for r in readers:
        r.join(timeout=DRAIN_TIMEOUT)
    return clients


def resend(server: Server, msgs: list[tuple[str, bytes]]) -> list[tuple[str, str]]:
    """Send one by one with python-hl7's MLLPClient; (MSA-1, MSA-2) of each ACK."""
    with MLLPClient("127.0.0.1", server.mllp_port) as client:
        out = []
        for _, raw in msgs:
            ack = client.send_message(raw.decode())
            out.append(ack_fields(ack if isinstance(ack, bytes) else ack.encode()))
        return out


def wait_drained(store: StoreBackend) -> None:
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while store.outbox_stats(include_done=False).undelivered:
        assert time.monotonic() < deadline, store.outbox_stats()
        time.sleep(0.2)


def delivered_by(server: Server) -> int:
    """What the instance's worker said it delivered when it stopped (its JSON log)."""
    for line in server.log.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "delivery stopped":
            return int(event["delivered"])
    raise AssertionError(f"no 'delivery stopped' in {server.log}")


def server_view(fhir: FhirServer) -> tuple[dict[str, list[dict[str, Any]]], Counter[str]]:
    """Resources held (every version, by type/id) and writes received per identifier."""
    snap = fhir.snapshot()
    writes = Counter(
        e["identifier"] for e in snap["log"] if e["method"] in ("PUT", "POST") and e["status"] < 300
    )
    return snap["resources"], writes


def serial_outputs(
    store: StoreBackend, engine: Engine, folder: Path
) -> list[tuple[str, str, int, str]]:
    """The outputs one connection makes of the stored messages in their store order."""
    accepted = [m for m in store.list_messages(limit=100_000) if m.status == "accepted"]
    serial = StoreSpec("sqlite", f"sqlite:///{folder / 'serial.sqlite'}").open()
    try:
        for m in sorted(accepted, key=lambda m: m.id):
            with serial.session() as s:
                ingest(s, engine, m.raw, source="serial", received_at=FIXED_NOW)
        return [(o.kind, o.identifier, o.version, o.status) for o in serial.outputs()]
    finally:
        serial.close()


def test_two_serve_instances_on_one_postgres_share_the_work_exactly_once(
    tmp_path: Path, pg_url: str, engine: Engine
) -> None:
    n, patients = 400, 40
    msgs = [cbc(i, patients, "TWO") for i in range(n)]
    to_a, to_b = msgs[0::2], msgs[1::2]  # each patient's results reach both instances
    fhir = FhirServer(tmp_path)
    fhir.start()
    store = StoreSpec("postgresql", pg_url)
    try:
        with two_instances(tmp_path, pg_url, fhir) as (a, b):
            started = time.monotonic()
            clients = stream_all([(a, to_a), (b, to_b)])
            stream_seconds = time.monotonic() - started
            # a sender that lost its ACKs resends to the other instance
            again_b, again_a = resend(b, to_a[:20]), resend(a, to_b[:20])
            db = store.open()
            try:
                wait_drained(db)
                drained_seconds = time.monotonic() - started
                rows = db.list_messages(limit=100_000)
                outbox = db.outbox(limit=100_000)
                entries = db.list_outbox(limit=100_000)
                outputs = [(o.kind, o.identifier, o.version, o.status) for o in db.outputs()]
                serial = serial_outputs(db, engine, tmp_path)
            finally:
                db.close()
            time.sleep(0.5)  # a second write of some row, were there one, would land now
            resources, writes = server_view(fhir)
            assert a.stop() == 0
            assert b.stop() == 0
            by_worker = delivered_by(a), delivered_by(b)
    finally:
        fhir.stop()

    acks = [code for c in clients for _, code in c.acked]
    assert acks == ["AA"] * n
    accepted = Counter(r.control_id for r in rows if r.status == "accepted")
    assert set(accepted) == {c for c, _ in msgs}
    assert set(accepted.values()) == {1}  # every message stored once
    assert again_b == [("AA", c) for c, _ in to_a[:20]]  # the original answer again
    assert again_a == [("AA", c) for c, _ in to_b[:20]]
    duplicates = [r for r in rows if r.status == "duplicate"]
    assert len(duplicates) == 40  # retransmits to the other instance: recorded, not processed
    first_id = {r.control_id: r.id for r in rows if r.status == "accepted"}
    assert all(r.duplicate_of == first_id[r.control_id] for r in duplicates)
    # one patient's results arrived on both instances; they decided as one would
    assert outputs == serial
    # every output version delivered, once
    assert {e.state for e in entries} == {"delivered"}
    per_identifier = Counter(r.identifier for r in outbox)
    assert writes == per_identifier
    assert sum(by_worker) == len(outbox)
    assert min(by_worker) > 0  # both workers delivered
    held = {v[-1]["identifier"][0]["value"]: v for v in resources.values()}
    assert len(held) == len(resources) == len(per_identifier)  # no resource twice
    latest = {o[1]: o[3] for o in outputs}
    assert {k: v[-1]["status"] for k, v in held.items()} == latest
    report = {
        "messages": n,
        "patients": patients,
        "stream_seconds": round(stream_seconds, 2),
        "until_outbox_drained_seconds": round(drained_seconds, 2),
        "retransmits_to_other_instance": len(duplicates),
        "outbox_rows": len(outbox),
        "server_writes": sum(writes.values()),
        "delivered_by_instance": list(by_worker),
        "flag_versions": sum(1 for r in outbox if r.kind == "Flag"),
    }
    (tmp_path / "two-instances-report.json").write_text(json.dumps(report))
    print("two instances:", json.dumps(report))


def test_serve_instance_killed_mid_stream_the_other_finishes_its_outbox(
    tmp_path: Path, pg_url: str
) -> None:
    n, patients = 600, 60
    msgs = [cbc(i, patients, "KIL") for i in range(n)]
    to_a, to_b = msgs[0::2], msgs[1::2]
    fhir = FhirServer(tmp_path)
    fhir.start()
    store = StoreSpec("postgresql", pg_url)
    try:
        # a short lease: rows the killed instance had claimed come back to the other soon
        with two_instances(tmp_path, pg_url, fhir, PRPGATE_DELIVERY_LEASE="3") as (a, b):
            client_a = Client(a.mllp_port, to_a, window=32)
            client_b = Client(b.mllp_port, to_b, window=32)
            reader_b = threading.Thread(target=client_b.read_until_closed)
            client_a.start()
            client_b.start()
            reader_b.start()

            def kill_once(count: int) -> None:
                if count == 100:
                    a.proc.send_signal(signal.SIGKILL)

            client_a.read_until_closed(kill_once)
            assert a.proc.wait(timeout=START_TIMEOUT) == -signal.SIGKILL
            reader_b.join(timeout=DRAIN_TIMEOUT)
            acked_a = {c for c, code in client_a.acked if code == "AA"}
            # the load balancer sends A's senders to B: everything A did not acknowledge,
            # and some it did (a sender that lost its ACK state)
            failover = [m for m in to_a if m[0] not in acked_a]
            failover += [m for m in to_a if m[0] in sorted(acked_a)[:25]]
            retry = Client(b.mllp_port, failover, window=32)
            retry.start()
            retry.read_until_closed()
            db = store.open()
            try:
                wait_drained(db)
                rows = db.list_messages(limit=100_000)
                outbox = db.outbox(limit=100_000)
                entries = db.list_outbox(limit=100_000)
                outputs = {o.identifier: o.status for o in db.outputs()}
            finally:
                db.close()
            resources, writes = server_view(fhir)
            assert b.stop() == 0
    finally:
        fhir.stop()

    assert len(acked_a) >= 100
    assert [code for _, code in client_b.acked] == ["AA"] * len(to_b)
    assert [code for _, code in retry.acked] == ["AA"] * len(failover)
    accepted = Counter(r.control_id for r in rows if r.status == "accepted")
    assert set(accepted) == {c for c, _ in msgs}  # every message, once
    assert set(accepted.values()) == {1}
    duplicates = {r.control_id for r in rows if r.status == "duplicate"}
    resent_acked = set(sorted(acked_a)[:25])
    assert resent_acked <= duplicates  # acknowledged by A, deduplicated by B
    assert {e.state for e in entries} == {"delivered"}  # B finished A's outbox too
    per_identifier = Counter(r.identifier for r in outbox)
    held = {v[-1]["identifier"][0]["value"]: v for v in resources.values()}
    assert len(held) == len(resources) == len(per_identifier)  # no resource twice
    assert {k: v[-1]["status"] for k, v in held.items()} == outputs
    assert all(writes[k] >= per_identifier[k] for k in per_identifier)
    report = {
        "messages": n,
        "acked_by_a_before_kill": len(acked_a),
        "sent_to_a_before_kill": len(client_a.sent),
        "committed_by_a_not_acked": len(duplicates - resent_acked),
        "failover_messages_to_b": len(failover),
        "outbox_rows": len(outbox),
        "server_writes": sum(writes.values()),
        "rows_written_twice": sum(writes.values()) - len(outbox),
    }
    (tmp_path / "kill-report.json").write_text(json.dumps(report))
    print("SIGKILL one of two:", json.dumps(report))


def test_serve_on_postgres_loses_its_connections_acks_nothing_uncommitted_and_serves_on(
    tmp_path: Path, pg_url: str
) -> None:
    n = 600
    msgs = [cbc(i, 50, "CUT") for i in range(n)]
    app = str(psycopg.conninfo.conninfo_to_dict(pg_url)["application_name"])
    cuts: list[int] = []
    server = start_server(tmp_path, name="cut", PRPGATE_STORE_URL=pg_url)
    try:
        stop = threading.Event()

        def cut_connections() -> None:
            with psycopg.connect(pg_url, autocommit=True) as admin:
                while not stop.wait(0.05) and len(cuts) < 20:
                    row = admin.execute(
                        "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE application_name = %s AND pid <> pg_backend_pid()",
                        (app,),
                    ).fetchone()
                    cuts.append(int(row[0]) if row else 0)

        cutter = threading.Thread(target=cut_connections)
        cutter.start()
        try:
            (first,) = stream_all([(server, msgs)])
        finally:
            stop.set()
            cutter.join(timeout=30)
        answered = dict(first.acked)
        refused = [m for m in msgs if answered.get(m[0]) != "AA"]
        # the sender sends again what was not accepted; the instance has reconnected
        (again,) = stream_all([(server, refused)])
        db = StoreSpec("postgresql", pg_url).open()
        try:
            rows = db.list_messages(limit=100_000)
        finally:
            db.close()
        metrics = server.http("/metrics")[2].splitlines()
        store_faults = next(
            (
                float(m.split()[-1])
                for m in metrics
                if m.startswith('prpgate_mllp_faults_total{kind="store"}')
            ),
            0.0,
        )
        assert server.stop() == 0
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(timeout=START_TIMEOUT)

    assert len(first.acked) == n  # every message answered
    assert set(answered.values()) <= {"AA", "AR"}
    assert store_faults == len(refused)  # each AR is a store failure (HL7 error 207)
    assert [code for _, code in again.acked] == ["AA"] * len(refused)
    accepted = Counter(r.control_id for r in rows if r.status == "accepted")
    acked = {c for c, code in first.acked if code == "AA"}
    assert acked <= set(accepted)  # no AA for anything the store did not commit
    assert set(accepted) == {c for c, _ in msgs}
    assert set(accepted.values()) == {1}
    report = {
        "messages": n,
        "connection_cuts": len(cuts),
        "server_connections_terminated": sum(cuts),
        "answered_ar_send_again": len(refused),
        "stored_on_resend": len(refused),
    }
    (tmp_path / "cut-report.json").write_text(json.dumps(report))
    print("connections cut:", json.dumps(report))
