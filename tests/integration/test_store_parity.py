"""PostgreSQL against SQLite on the same inputs: every fixture replayed into both stores,
then every read the commands use compared (ids, rows, order, JSON)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from prpgate.core.pipeline import Engine
from prpgate.ports import StoreBackend
from prpgate.replay import replay
from prpgate.store.sqlite import patient_hash
from tests.conftest import FIXED_NOW, FIXTURES, FixedClock, StoreSpec

pytestmark = pytest.mark.pg


def _reads(store: StoreBackend) -> dict[str, object]:
    """Everything the commands read, as comparable values."""
    messages = store.list_messages(limit=1000)
    keys = {k for o in store.outputs() for k in [o.patient_key]}
    return {
        "messages": messages,
        "by_status": {s: store.list_messages(status=s) for s in ("accepted", "error", "rejected")},
        "by_control": store.list_messages(control_id="PRPFX0002"),
        "by_patient": store.list_messages(patient_hash=patient_hash("ZQ70002")),
        "one": [store.get_message(m.id) for m in messages[:5]],
        "explanations": {m.id: store.explanation(m.id) for m in messages},
        "outputs": store.outputs(),
        "outputs_by_patient": {k: store.outputs(patient_key=k) for k in sorted(keys)},
        "outputs_by_message": {m.id: store.outputs(message_id=m.id) for m in messages},
        "outbox": store.outbox(),
        "iter_outbox": list(store.iter_outbox(after_id=2)),
        "patient_keys": store.patient_keys("ZQ70002"),
        "find_order": store.find_messages(order_number="NF40004"),
        "find_since": store.find_messages(since="2000-01-01", until="2100-01-01", limit=7),
        "find_status": store.find_messages(status="rejected"),
        "list_outbox": store.list_outbox(limit=1000),
        "stats": store.outbox_stats(),
        "stats_active": store.outbox_stats(include_done=False),
        "claimed": store.claim_due(FIXED_NOW, limit=100, lease=timedelta(minutes=5)),
    }


def test_postgres_store_reads_as_sqlite_after_the_same_replay(
    pg_url: str, tmp_path: Path, engine: Engine
) -> None:
    specs = [
        StoreSpec("sqlite", f"sqlite:///{tmp_path / 'ref.sqlite'}"),
        StoreSpec("postgresql", pg_url),
    ]
    reads = []
    for spec in specs:
        store = spec.open()
        try:
            stats = replay(store, engine, [FIXTURES], clock=FixedClock(), batch=7)
            reads.append((stats.messages, _reads(store)))
        finally:
            store.close()
    (n_sqlite, sqlite_reads), (n_pg, pg_reads) = reads
    assert n_sqlite == n_pg > 20
    assert sqlite_reads["outbox"]  # the fixtures decide something
    for name, value in sqlite_reads.items():
        assert pg_reads[name] == value, name
