"""PostgreSQL with several connections at once, as several instances use it: concurrent
outbox claims, one patient's messages on two connections, a retransmit racing its
original, a busy patient inside a batch, and a connection lost mid-transaction."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from prpgate.core.pipeline import Disposition, Engine
from prpgate.errors import StoreConflictError, StoreError
from prpgate.ingest import Ingested, ingest
from prpgate.ports import Delivery, StoreBackend
from prpgate.store.retry import retry_conflicts
from tests.conftest import FIXED_NOW, StoreSpec, load
from tests.fhirserver.support import SqliteFiller, flag_json

pytestmark = pytest.mark.pg
LEASE = timedelta(minutes=5)
WAIT = 30.0


def spec(pg_url: str) -> StoreSpec:
    return StoreSpec("postgresql", pg_url)


def same_patient_cbc(n: int, wbc: str, mrn: str = "ZC00001") -> bytes:
    """The high-WBC CBC with its own control id and order number, the same patient and
    collection time as every other one, and the WBC value given (ties on time are
    decided by arrival: the store's message id)."""
    raw = load("cbc_high_wbc.hl7")
    raw = raw.replace(b"PRPFX0002", f"CONC{n:05d}".encode())
    raw = raw.replace(b"NF40004", f"NF{n:05d}".encode()).replace(b"PL40004", f"PL{n:05d}".encode())
    raw = raw.replace(b"ZQ70002", mrn.encode())
    return raw.replace(b"|23.4|", f"|{wbc}|".encode())


def ingest_alone(store: StoreBackend, engine: Engine, raw: bytes) -> Ingested:
    """One message per transaction, run again when it lost a race (as serve's writer)."""

    def unit() -> Ingested:
        with store.session() as s:
            return ingest(s, engine, raw, source="t", received_at=FIXED_NOW)

    return retry_conflicts(unit)


def run_together(*jobs: Callable[[], None]) -> None:
    """Start the jobs on threads at the same moment; re-raise the first failure."""
    start = threading.Barrier(len(jobs))
    errors: list[BaseException] = []

    def wrap(job: Callable[[], None]) -> None:
        try:
            start.wait(WAIT)
            job()
        except BaseException as exc:  # reported to the test below
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 4)
    assert not any(t.is_alive() for t in threads)
    if errors:
        raise errors[0]


def test_postgres_two_workers_never_claim_the_same_row(pg_url: str) -> None:
    filler_store = spec(pg_url).open()
    filler = SqliteFiller(filler_store)
    for v in range(1, 9):
        for p in range(30):
            filler.enqueue(
                identifier=f"f{p}",
                kind="Flag",
                patient_key=f"sys|P{p}",
                version=v,
                resource=flag_json(f"f{p}", "active" if v % 2 else "inactive"),
                received_at=FIXED_NOW,
            )
    total = len(filler_store.outbox(limit=10_000))
    claims: list[tuple[str, Delivery]] = []
    in_flight: set[str] = set()
    overlap: list[str] = []
    guard = threading.Lock()

    def worker(name: str) -> Callable[[], None]:
        store = spec(pg_url).open()

        def run() -> None:
            try:
                idle = 0
                while idle < 3:
                    got = store.claim_due(FIXED_NOW, limit=4, lease=LEASE)
                    idle = 0 if got else idle + 1
                    with guard:
                        for d in got:
                            if d.patient_key in in_flight:
                                overlap.append(d.patient_key)
                            in_flight.add(d.patient_key)
                            claims.append((name, d))
                    for d in got:
                        with guard:
                            in_flight.discard(d.patient_key)
                        assert store.mark_delivered(
                            d,
                            now=FIXED_NOW,
                            attempts=1,
                            status=200,
                            server_id="",
                            server_version="",
                        )
            finally:
                store.close()

        return run

    run_together(worker("a"), worker("b"))
    stats = filler_store.outbox_stats()
    filler_store.close()
    ids = Counter(d.id for _, d in claims)
    assert len(ids) == total == 240
    assert set(ids.values()) == {1}  # no row claimed twice
    by_worker = Counter(name for name, _ in claims)
    assert min(by_worker["a"], by_worker["b"]) > 0  # both really claimed
    assert overlap == []  # never two rows of one patient out at once
    order: dict[str, list[int]] = defaultdict(list)
    for _, d in claims:
        order[d.patient_key].append(d.version)
    assert all(v == sorted(v) for v in order.values())  # per patient in version order
    assert stats.counts == {"delivered": total}


def test_postgres_one_patient_on_two_connections_ends_as_one_connection_would(
    pg_url: str, tmp_path: Path, engine: Engine
) -> None:
    values = ["23.4", "6.0", "1.5", "25.0", "7.1", "30.2", "5.5", "1.2", "12.5", "6.6"]
    msgs = [same_patient_cbc(i, values[i % len(values)]) for i in range(40)]
    halves = (msgs[0::2], msgs[1::2])
    stores = [spec(pg_url).open() for _ in halves]
    done: list[Ingested] = []

    def feed(store: StoreBackend, part: list[bytes]) -> Callable[[], None]:
        def run() -> None:
            for raw in part:
                done.append(ingest_alone(store, engine, raw))

        return run

    run_together(*(feed(s, p) for s, p in zip(stores, halves, strict=True)))
    for s in stores:
        s.close()
    assert [d.disposition for d in done] == [Disposition.ACCEPTED] * len(msgs)

    concurrent = spec(pg_url).open()
    # the same messages on one connection, in the order the store numbered them
    arrival = sorted(done, key=lambda d: d.message_id)
    serial = StoreSpec("sqlite", f"sqlite:///{tmp_path / 'serial.sqlite'}").open()
    try:
        for d in arrival:
            ingest_alone(serial, engine, d.reading.raw)

        def outbox_of(store: StoreBackend) -> list[tuple[str, str, int, str]]:
            return [(r.kind, r.identifier, r.version, r.resource) for r in store.outbox()]

        def outputs_of(store: StoreBackend) -> list[tuple[str, str, int, str]]:
            return [(o.kind, o.identifier, o.version, o.status) for o in store.outputs()]

        assert outbox_of(concurrent) == outbox_of(serial)
        assert outputs_of(concurrent) == outputs_of(serial)
        flags = [r for r in concurrent.outbox() if r.kind == "Flag"]
    finally:
        concurrent.close()
        serial.close()
    versions: dict[str, list[int]] = defaultdict(list)
    for r in flags:
        versions[r.identifier].append(r.version)
    assert len(flags) > 4  # the Flags went on and off several times
    assert all(v == list(range(1, len(v) + 1)) for v in versions.values())


def waiting_for_a_lock(admin: psycopg.Connection[tuple[object, ...]], app: str) -> bool:
    """Whether one of the test's server connections waits for a lock right now."""
    row = admin.execute(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND application_name = %s",
        (app,),
    ).fetchone()
    return bool(row and row[0])


def test_postgres_retransmit_racing_its_original_is_recorded_as_a_duplicate(
    pg_url: str, engine: Engine
) -> None:
    raw = same_patient_cbc(1, "23.4")
    app = str(psycopg.conninfo.conninfo_to_dict(pg_url)["application_name"])
    first_store, second_store = spec(pg_url).open(), spec(pg_url).open()
    admin = psycopg.connect(pg_url, autocommit=True)
    inside = threading.Event()
    attempts: list[str] = []
    results: dict[str, Ingested] = {}

    def original() -> None:
        with first_store.session() as s:
            results["original"] = ingest(s, engine, raw, source="a", received_at=FIXED_NOW)
            inside.set()
            # commit only once the retransmit, past its look for an earlier copy, waits
            for _ in range(int(WAIT / 0.01)):
                if waiting_for_a_lock(admin, app):
                    break
                time.sleep(0.01)

    def retransmit() -> None:
        assert inside.wait(WAIT)

        def unit() -> Ingested:
            attempts.append("run")
            with second_store.session() as s:
                return ingest(s, engine, raw, source="b", received_at=FIXED_NOW)

        results["retransmit"] = retry_conflicts(unit)

    try:
        run_together(original, retransmit)
        rows = first_store.list_messages()
        outbox = first_store.outbox()
    finally:
        admin.close()
        first_store.close()
        second_store.close()
    assert results["original"].disposition is Disposition.ACCEPTED
    assert results["retransmit"].disposition is Disposition.DUPLICATE
    assert results["retransmit"].duplicate_of == results["original"].message_id
    assert len(attempts) == 2  # the first run lost the race (unique key) and ran again
    assert sorted(r.status for r in rows) == ["accepted", "duplicate"]
    assert len(outbox) == len(results["original"].emitted) == 2


def test_postgres_busy_patient_inside_a_batch_is_a_conflict_not_a_wait(
    pg_url: str, engine: Engine
) -> None:
    holder, batcher = spec(pg_url).open(), spec(pg_url).open()

    def batch_reaching_the_held_patient() -> None:
        with batcher.session() as s:
            for n, mrn in ((2, "ZC00002"), (3, "ZC00001")):
                ingest(
                    s, engine, same_patient_cbc(n, "6.0", mrn), source="b", received_at=FIXED_NOW
                )

    try:
        with holder.session() as held:
            raw = same_patient_cbc(1, "23.4", "ZC00001")
            ingest(held, engine, raw, source="a", received_at=FIXED_NOW)
            # while that transaction holds patient ZC00001, a batch that already holds
            # another patient reaches ZC00001: it gives up at once instead of waiting
            with pytest.raises(StoreConflictError):
                batch_reaching_the_held_patient()
        # nothing of the failed batch was kept; each message alone then commits
        assert [m.source for m in batcher.list_messages()] == ["a"]
        for n, mrn in ((2, "ZC00002"), (3, "ZC00001")):
            assert ingest_alone(batcher, engine, same_patient_cbc(n, "6.0", mrn)).disposition is (
                Disposition.ACCEPTED
            )
    finally:
        holder.close()
        batcher.close()


def test_postgres_connection_lost_mid_transaction_commits_nothing_then_reconnects(
    pg_url: str, engine: Engine
) -> None:
    store = spec(pg_url).open()
    app = psycopg.conninfo.conninfo_to_dict(pg_url)
    admin = psycopg.connect(pg_url, autocommit=True)

    def cut_mid_transaction() -> None:
        with store.session() as s:
            ingest(s, engine, same_patient_cbc(1, "23.4"), source="t", received_at=FIXED_NOW)
            found = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
                " AND pid <> pg_backend_pid()",
                (app["application_name"],),
            ).fetchall()
            assert len(found) == 1
            admin.execute("SELECT pg_terminate_backend(%s)", found[0])
            ingest(s, engine, same_patient_cbc(2, "6.0"), source="t", received_at=FIXED_NOW)

    try:
        with pytest.raises(StoreError):
            cut_mid_transaction()
        assert store.list_messages() == []  # nothing of the cut transaction is kept
        done = ingest_alone(store, engine, same_patient_cbc(1, "23.4"))
        assert done.disposition is Disposition.ACCEPTED  # a fresh connection serves on
        assert len(store.list_messages()) == 1
    finally:
        admin.close()
        store.close()
