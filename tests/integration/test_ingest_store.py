"""The store contract: ingest() against each store backend (a SQLite file, a PostgreSQL
schema) — dedup, control-id reuse, failure isolation, durability, schema versions."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
from pathlib import Path

import pytest

from prpgate.core.model import LabResult, Normalised, Unmapped
from prpgate.core.pipeline import AckCode, Disposition, Engine, Normaliser, read
from prpgate.errors import StoreError
from prpgate.ingest import ingest
from prpgate.ports import StoreBackend
from prpgate.store.sqlite import SCHEMA_VERSION, SqliteStore
from tests.conftest import FIXED_NOW, StoreSpec, load


class BadTimeMapper:
    """A mapper (the Normaliser port) whose results carry a time FHIR cannot hold, so
    building the DetectedIssue fails after the message row and results were written."""

    def __init__(self, inner: Normaliser) -> None:
        self._inner = inner

    def normalise(self, result: LabResult) -> Normalised | Unmapped:
        out = self._inner.normalise(result)
        if isinstance(out, Normalised):
            bad = dataclasses.replace(out.result, effective="yesterday noon")
            return dataclasses.replace(out, result=bad)
        return out


def _ingest(store: StoreBackend, engine: Engine, raw: bytes, source: str = "t") -> object:
    with store.session() as s:
        return ingest(s, engine, raw, source=source, received_at=FIXED_NOW)


def test_ingest_retransmit_is_recorded_not_processed_again(
    store_spec: StoreSpec, engine: Engine
) -> None:
    store = store_spec.open()
    raw = load("cbc_high_wbc.hl7")
    first = _ingest(store, engine, raw)
    again = _ingest(store, engine, raw.replace(b"\r", b"\r\n"))  # same content, other line ends
    outbox = store.outbox()
    store.close()
    assert first.disposition is Disposition.ACCEPTED  # type: ignore[attr-defined]
    assert len(first.emitted) == 2  # type: ignore[attr-defined]
    assert again.disposition is Disposition.DUPLICATE  # type: ignore[attr-defined]
    assert again.ack is AckCode.AA  # type: ignore[attr-defined]
    assert again.duplicate_of == first.message_id  # type: ignore[attr-defined]
    assert len(outbox) == 2


def test_ingest_reused_control_id_with_new_content_is_processed(
    store_spec: StoreSpec, engine: Engine
) -> None:
    store = store_spec.open()
    raw = load("cbc_high_wbc.hl7")
    first = _ingest(store, engine, raw)
    changed = raw.replace(b"|23.4|", b"|5.1|")
    assert changed != raw
    second = _ingest(store, engine, changed)
    outputs = {(o.kind, o.status) for o in store.outputs()}
    row = store.get_message(second.message_id)  # type: ignore[attr-defined]
    store.close()
    assert second.disposition is Disposition.ACCEPTED  # type: ignore[attr-defined]
    assert second.reuse_of == first.message_id  # type: ignore[attr-defined]
    assert row is not None
    assert row.reuse_of == first.message_id  # type: ignore[attr-defined]
    # same result identity, new value: the finding is withdrawn, the Flag cleared
    assert outputs == {("DetectedIssue", "entered-in-error"), ("Flag", "inactive")}


def test_ingest_failure_rolls_back_partial_writes_and_keeps_raw(
    store_spec: StoreSpec, engine: Engine
) -> None:
    broken = dataclasses.replace(engine, mapper=BadTimeMapper(engine.mapper))
    store = store_spec.open()
    raw = load("cbc_high_wbc.hl7")
    with store.session() as s:
        ok = ingest(s, engine, load("cbc_low_wbc.hl7"), source="a", received_at=FIXED_NOW)
        failed = ingest(s, broken, raw, source="b", received_at=FIXED_NOW)
    rows = store.list_messages()
    outputs = store.outputs()
    seqs = store_spec.sql("SELECT DISTINCT seq FROM results")
    store.close()
    assert ok.disposition is Disposition.ACCEPTED
    assert failed.disposition is Disposition.ERROR
    assert failed.ack is AckCode.AE
    assert failed.errors[0].code == 207
    # the failed message is stored once, as an error, with its raw bytes ...
    statuses = sorted((r.source, r.status) for r in rows)
    assert statuses == [("a", "accepted"), ("b", "error")]
    assert next(r for r in rows if r.source == "b").raw == raw
    # ... and nothing it half-wrote remains; the other message in the batch is intact
    assert {o.patient_key for o in outputs} == {ok.reading.patients[0].identifier.key}
    assert [row[0] for row in seqs] == [ok.message_id]  # only the first message's results


def test_store_commits_survive_reopen(store_spec: StoreSpec, engine: Engine) -> None:
    store = store_spec.open()
    _ingest(store, engine, load("crp_inr.hl7"))
    store.close()
    reopened = store_spec.open()
    kinds = sorted(o.kind for o in reopened.outputs())
    messages = reopened.list_messages()
    reopened.close()
    assert kinds == ["DetectedIssue", "DetectedIssue", "Flag", "Flag"]
    assert len(messages) == 1


def test_sqlite_store_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    SqliteStore(path).close()
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def _page_size(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA page_size").fetchone()[0])
    finally:
        db.close()


def test_new_sqlite_store_has_1k_pages(tmp_path: Path, engine: Engine) -> None:
    path = tmp_path / "s.sqlite"
    store = SqliteStore(path)
    _ingest(store, engine, load("crp_inr.hl7"))
    store.close()
    assert _page_size(path) == 1024


_WITH_FINDINGS = ("cbc_high_wbc.hl7", "cbc_low_wbc.hl7", "v24_cbc.hl7", "crp_inr.hl7")


def _numbered(n: int) -> bytes:
    """One of four fixtures with findings, in turn, with a control id, order numbers and
    patient of its own."""
    raw = load(_WITH_FINDINGS[n % len(_WITH_FINDINGS)])
    raw = raw.replace(raw.split(b"|", 10)[9], f"SPJ{n:06d}".encode(), 1)
    raw = raw.replace(b"NF4", f"N{n:06d}-".encode()).replace(b"PL4", f"P{n:06d}-".encode())
    return raw.replace(b"ZQ700", f"Z{n:06d}".encode())


def _sqlite_temp_files() -> list[str]:
    """The temporary files SQLite holds open in this process (``etilqs_`` names)."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):  # a descriptor closed while listing
            target = os.readlink(fd)
            if "etilqs_" in target:
                found.append(target)
    return found


@pytest.mark.skipif(
    not Path("/proc/self/fd").is_dir(), reason="lists the open files through /proc (Linux)"
)
def test_savepoint_journal_of_a_batch_stays_in_memory(tmp_path: Path, engine: Engine) -> None:
    # Every message's savepoint journals the pages it changes. On a store of a thousand
    # messages these passed SQLite's 64 KiB spill threshold within a batch, and the
    # journal went to a temporary file (checked with temp_store=DEFAULT).
    store = SqliteStore(tmp_path / "s.sqlite")
    with store.session() as s:
        for n in range(1000):
            ingest(s, engine, _numbered(n), source="t", received_at=FIXED_NOW)
    with store.session() as s:
        batch = [
            ingest(s, engine, _numbered(n), source="t", received_at=FIXED_NOW)
            for n in range(1000, 1016)
        ]
        open_temp = _sqlite_temp_files()
    store.close()
    assert [b.disposition for b in batch] == [Disposition.ACCEPTED] * 16
    assert open_temp == []


def test_store_made_with_4k_pages_keeps_them_and_works(
    tmp_path: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.sqlite"
    monkeypatch.setattr("prpgate.store.sqlite.PAGE_SIZE", 4096)  # as an earlier build made it
    old = SqliteStore(path)
    _ingest(old, engine, load("crp_inr.hl7"), source="before")
    old.close()
    monkeypatch.undo()
    store = SqliteStore(path)
    _ingest(store, engine, load("cbc_high_wbc.hl7"), source="after")
    sources = sorted(m.source for m in store.list_messages())
    store.close()
    assert _page_size(path) == 4096
    assert sources == ["after", "before"]


def test_store_session_rolls_back_everything_on_exception(
    store_spec: StoreSpec, engine: Engine
) -> None:
    store = store_spec.open()

    def crash_before_commit() -> None:
        with store.session() as s:
            ingest(s, engine, load("crp_inr.hl7"), source="x", received_at=FIXED_NOW)
            raise RuntimeError("crash before commit")

    with pytest.raises(RuntimeError):
        crash_before_commit()
    assert store.list_messages() == []
    assert store.outputs() == []
    store.close()


def test_store_refuses_a_newer_schema(store_spec: StoreSpec) -> None:
    store_spec.open().close()
    store_spec.sql("UPDATE schema_version SET version=%s", SCHEMA_VERSION + 1)
    with pytest.raises(StoreError, match="newer"):
        store_spec.open()


def test_store_explanation_records_are_json_in_order(store_spec: StoreSpec, engine: Engine) -> None:
    store = store_spec.open()
    item = _ingest(store, engine, load("cbc_high_wbc.hl7"))
    records = store.explanation(item.message_id)  # type: ignore[attr-defined]
    store.close()
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "result"
    assert kinds[-2:] == ["output", "output"]
    assert "flag" in kinds


def test_read_rejects_a_10_mb_message_saying_size_and_limit(engine: Engine) -> None:
    head = load("cbc_normal.hl7")
    obx = b"OBX|99|TX|48767-8^Annotation^LN|1|" + b"x" * 1000 + b"||||||F\r"
    huge = head + obx * (10 * 1024)
    assert len(huge) > 10 * 1024 * 1024
    reading = read(huge, engine)
    assert reading.disposition is Disposition.REJECTED
    assert reading.ack is AckCode.AR
    (error,) = reading.errors
    assert error.code == 207
    assert str(engine.max_message_bytes) in error.reason
