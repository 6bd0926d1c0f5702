"""Schema versions on both backends: an upgrade from version 1 (the schema as first shipped)
keeps every row and adds the unique first-arrival key; `prpgate store migrate` as a process;
a store on an older schema is refused when migrations may not run."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import psycopg
import pytest

from prpgate.core.pipeline import Disposition, Engine
from prpgate.errors import StoreError
from prpgate.ingest import Ingested, ingest
from prpgate.ports import MessageRecord, StoreSession
from prpgate.store.migrations import (
    SCHEMA_VERSION,
    SchemaReport,
    migrate_postgres,
    migrate_sqlite,
)
from prpgate.store.postgres_session import PostgresSession
from prpgate.store.sqlite import SqliteSession
from tests.conftest import FIXED_NOW, MAPPINGS, StoreSpec, load, run_prpgate

V1_MESSAGES = ("cbc_high_wbc.hl7", "crp_inr.hl7", "two_patients.hl7")


@contextmanager
def v1_session(spec: StoreSpec) -> Iterator[StoreSession]:
    """A transaction on a store created at schema version 1, as the previous build made it
    (the session code of this build, which writes the columns version 1 has)."""
    if spec.kind == "sqlite":
        db = sqlite3.connect(spec.url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            migrate_sqlite(db, target=1)
            db.execute("BEGIN IMMEDIATE")
            yield SqliteSession(db)
            db.execute("COMMIT")
        finally:
            db.close()
        return
    with psycopg.connect(spec.url, autocommit=True) as conn:
        migrate_postgres(conn, target=1)
        with conn.transaction():
            yield PostgresSession(conn)


def fill_v1(spec: StoreSpec, engine: Engine) -> list[Ingested]:
    with v1_session(spec) as s:
        return [
            ingest(s, engine, load(name), source=name, received_at=FIXED_NOW)
            for name in V1_MESSAGES
        ]


def migrate_cli(spec: StoreSpec, *args: str) -> subprocess.CompletedProcess[str]:
    store = {"PRPGATE_STORE_URL": spec.url, "PRPGATE_MAPPINGS": str(MAPPINGS)}
    return run_prpgate("store", "migrate", "--json", *args, env=store)


def test_store_upgrade_from_version_1_keeps_every_row(
    store_spec: StoreSpec, engine: Engine
) -> None:
    before = fill_v1(store_spec, engine)
    assert store_spec.sql("SELECT version FROM schema_version") == [(1,)]
    counts = {t: store_spec.sql(f"SELECT COUNT(*) FROM {t}")[0][0] for t in ("messages", "outbox")}  # noqa: S608 - fixed table names

    check = migrate_cli(store_spec, "--check")
    assert check.returncode == 1, check.stderr
    assert [m["version"] for m in json.loads(check.stdout)["pending"]] == [2]
    done = migrate_cli(store_spec)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["before"], report["version"], report["pending"]) == (1, SCHEMA_VERSION, [])
    assert [m["version"] for m in report["applied"]] == [2]
    again = migrate_cli(store_spec, "--check")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["applied"] == []

    store = store_spec.open(migrate=False)  # at the latest version: opens without migrating
    try:
        assert len(store.list_messages()) == counts["messages"] == 3
        assert len(store.outbox()) == counts["outbox"] == sum(len(i.emitted) for i in before)
        # the upgraded store deduplicates as before: a retransmit is recorded, not processed
        with store.session() as s:
            dup = ingest(s, engine, load("cbc_high_wbc.hl7"), source="x", received_at=FIXED_NOW)
        assert dup.disposition is Disposition.DUPLICATE
        assert dup.duplicate_of == before[0].message_id
    finally:
        store.close()


def test_store_on_an_older_schema_is_refused_without_migrations(
    store_spec: StoreSpec, engine: Engine
) -> None:
    fill_v1(store_spec, engine)
    with pytest.raises(StoreError, match="store migrate"):
        store_spec.open(migrate=False)
    assert store_spec.sql("SELECT version FROM schema_version") == [(1,)]
    store_spec.open().close()  # store_migrate (the default): migrated at start
    assert store_spec.sql("SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]


def test_store_migrate_check_on_an_empty_store_changes_nothing(store_spec: StoreSpec) -> None:
    check = migrate_cli(store_spec, "--check")
    assert check.returncode == 1, check.stderr
    report = json.loads(check.stdout)
    assert (report["before"], report["version"]) == (0, 0)
    assert [m["version"] for m in report["pending"]] == [1, 2]
    done = migrate_cli(store_spec)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["version"] == SCHEMA_VERSION


def test_store_migrate_refuses_a_newer_store_with_exit_2(store_spec: StoreSpec) -> None:
    store_spec.open().close()
    store_spec.sql("UPDATE schema_version SET version=%s", SCHEMA_VERSION + 1)
    proc = migrate_cli(store_spec)
    assert proc.returncode == 2
    assert "newer" in proc.stderr


def _record(control: str, *, source: str = "t", status: str = "accepted") -> MessageRecord:
    return MessageRecord(
        received_at=FIXED_NOW.isoformat(),
        source=source,
        raw=b"MSH|",
        content_hash="h1",
        sending_application="APP",
        sending_facility="LAB",
        control_id=control,
        message_type="ORU^R01",
        version="2.5.1",
        status=status,
        ack_code="AA",
        errors="[]",
        summary="{}",
    )


def test_store_admits_one_first_arrival_per_key_and_content(store_spec: StoreSpec) -> None:
    store = store_spec.open()
    try:
        with store.session() as s:
            first = s.add_message(_record("C1"))
        with pytest.raises(store_spec.conflict), store.session() as s:
            s.add_message(_record("C1"))  # as a racing instance would, past find_prior
        with store.session() as s:
            # not first arrivals: a duplicate, a reprocessed copy, a frame without MSH-10
            s.add_message(replace(_record("C1", status="duplicate"), duplicate_of=first))
            s.add_message(_record("C1", source=f"reprocess:{first}"))
            s.add_message(_record(""))
            s.add_message(_record(""))
            s.add_message(replace(_record("C1"), content_hash="h2"))  # same key, new content
        statuses = sorted(m.status for m in store.list_messages(control_id="C1"))
    finally:
        store.close()
    assert statuses == ["accepted", "accepted", "accepted", "duplicate"]


@pytest.mark.pg
def test_postgres_instances_starting_together_migrate_once(pg_url: str) -> None:
    spec = StoreSpec("postgresql", pg_url)
    start = threading.Barrier(3)
    reports: list[SchemaReport] = []

    def start_instance() -> None:
        start.wait(30)
        with psycopg.connect(spec.url, autocommit=True) as conn:
            reports.append(migrate_postgres(conn))

    threads = [threading.Thread(target=start_instance) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(reports) == 3
    assert sorted(len(r.applied) for r in reports) == [0, 0, SCHEMA_VERSION]
    assert {r.after for r in reports} == {SCHEMA_VERSION}
    assert spec.sql("SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
