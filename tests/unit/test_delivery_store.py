"""The outbox contract, run against the memory fake, SQLite and PostgreSQL (so the fake
stays honest and both stores keep one contract)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import pytest

from prpgate.ports import OutboxStore
from prpgate.store.memory_outbox import MemoryOutbox
from prpgate.store.sqlite import SqliteStore
from tests.conftest import FIXED_NOW, StoreSpec
from tests.fhirserver.support import SqliteFiller, flag_json, issue_json

LEASE = timedelta(minutes=5)


class Filler(Protocol):
    def enqueue(
        self,
        *,
        identifier: str,
        kind: str,
        patient_key: str,
        version: int,
        resource: str,
        received_at: datetime,
    ) -> int: ...


class Pair:
    def __init__(self, store: OutboxStore, filler: Filler) -> None:
        self.store = store
        self.filler = filler

    def add(self, ident: str, patient: str, version: int = 1, kind: str = "Flag") -> int:
        status = "active" if version == 1 else "inactive"
        res = flag_json(ident, status) if kind == "Flag" else issue_json(ident)
        return self.filler.enqueue(
            identifier=ident,
            kind=kind,
            patient_key=patient,
            version=version,
            resource=res,
            received_at=FIXED_NOW,
        )


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def outbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pair]:
    if request.param == "memory":
        mem = MemoryOutbox()
        yield Pair(mem, mem)
        return
    if request.param == "sqlite":
        db = SqliteStore(tmp_path / "s.sqlite", durable=False)
        yield Pair(db, SqliteFiller(db))
        db.close()
        return
    spec = StoreSpec("postgresql", str(request.getfixturevalue("pg_url")))
    pg = spec.open()
    yield Pair(pg, SqliteFiller(pg))
    pg.close()


def test_outbox_claim_gives_one_row_per_patient_in_order(outbox: Pair) -> None:
    a1 = outbox.add("a", "p1")
    outbox.add("a", "p1", version=2)
    b1 = outbox.add("b", "p2")
    claimed = outbox.store.claim_due(FIXED_NOW, limit=10, lease=LEASE)
    assert [d.id for d in claimed] == [a1, b1]
    assert outbox.store.claim_due(FIXED_NOW, limit=10, lease=LEASE) == []


def test_outbox_next_row_of_a_patient_waits_for_the_earlier_one(outbox: Pair) -> None:
    outbox.add("a", "p1")
    a2 = outbox.add("a", "p1", version=2)
    (first,) = outbox.store.claim_due(FIXED_NOW, limit=10, lease=LEASE)
    assert outbox.store.mark_delivered(
        first, now=FIXED_NOW, attempts=1, status=201, server_id="x", server_version="1"
    )
    (second,) = outbox.store.claim_due(FIXED_NOW, limit=10, lease=LEASE)
    assert second.id == a2
    assert second.version == 2


def test_outbox_retry_waits_until_its_time_and_blocks_the_patient(outbox: Pair) -> None:
    outbox.add("a", "p1")
    outbox.add("a", "p1", version=2)
    (d,) = outbox.store.claim_due(FIXED_NOW, limit=10, lease=LEASE)
    later = FIXED_NOW + timedelta(seconds=30)
    assert outbox.store.mark_retry(
        d, now=FIXED_NOW, next_attempt_at=later, attempts=2, status=503, error="x", outcome=""
    )
    assert outbox.store.claim_due(FIXED_NOW + timedelta(seconds=29), limit=10, lease=LEASE) == []
    (again,) = outbox.store.claim_due(later, limit=10, lease=LEASE)
    assert again.id == d.id
    assert again.attempts == 2


def test_outbox_dead_letter_blocks_no_one(outbox: Pair) -> None:
    outbox.add("a", "p1")
    a2 = outbox.add("a", "p1", version=2)
    b1 = outbox.add("b", "p2")
    first = outbox.store.claim_due(FIXED_NOW, limit=1, lease=LEASE)[0]
    outbox.store.mark_dead(
        first, now=FIXED_NOW, attempts=1, status=400, error="HTTP 400", outcome='{"x":1}'
    )
    assert [d.id for d in outbox.store.claim_due(FIXED_NOW, limit=10, lease=LEASE)] == [a2, b1]
    entry = outbox.store.get_outbox(first.id)
    assert entry is not None
    assert (entry.state, entry.last_status, entry.outcome) == ("dead", 400, '{"x":1}')


def test_outbox_stale_claim_changes_nothing(outbox: Pair) -> None:
    outbox.add("a", "p1")
    (d,) = outbox.store.claim_due(FIXED_NOW, limit=10, lease=LEASE)
    # the lease lapses and another worker takes the row
    (taken,) = outbox.store.claim_due(FIXED_NOW + LEASE, limit=10, lease=LEASE)
    assert taken.claim == d.claim + 1
    assert not outbox.store.mark_delivered(
        d, now=FIXED_NOW, attempts=1, status=200, server_id="", server_version=""
    )
    assert outbox.store.mark_delivered(
        taken, now=FIXED_NOW, attempts=1, status=200, server_id="", server_version=""
    )


def test_outbox_skip_patients_leaves_them_alone(outbox: Pair) -> None:
    outbox.add("a", "p1")
    b1 = outbox.add("b", "p2")
    claimed = outbox.store.claim_due(FIXED_NOW, limit=10, lease=LEASE, skip_patients={"p1"})
    assert [d.id for d in claimed] == [b1]


def test_outbox_retry_of_dead_letter_superseded_by_a_later_version(outbox: Pair) -> None:
    outbox.add("a", "p1")
    outbox.add("a", "p1", version=2)
    solo = outbox.add("c", "p3")
    first, other = outbox.store.claim_due(FIXED_NOW, limit=10, lease=LEASE)
    outbox.store.mark_dead(first, now=FIXED_NOW, attempts=1, status=400, error="x", outcome="")
    outbox.store.mark_dead(other, now=FIXED_NOW, attempts=1, status=400, error="x", outcome="")
    (second,) = outbox.store.claim_due(FIXED_NOW, limit=10, lease=LEASE)
    outbox.store.mark_delivered(
        second, now=FIXED_NOW, attempts=1, status=200, server_id="", server_version=""
    )
    assert outbox.store.retry_outbox((), now=FIXED_NOW, all_dead=True) == 1
    superseded = outbox.store.get_outbox(first.id)
    assert superseded is not None
    assert superseded.state == "superseded"
    assert [d.id for d in outbox.store.claim_due(FIXED_NOW, limit=10, lease=LEASE)] == [solo]


def test_outbox_retry_by_id_only_touches_dead_letters(outbox: Pair) -> None:
    a = outbox.add("a", "p1")
    b = outbox.add("b", "p2")
    d_a, _ = outbox.store.claim_due(FIXED_NOW, limit=10, lease=LEASE)
    outbox.store.mark_dead(d_a, now=FIXED_NOW, attempts=1, status=422, error="x", outcome="")
    assert outbox.store.retry_outbox([a, b], now=FIXED_NOW) == 1
    entry = outbox.store.get_outbox(a)
    assert entry is not None
    assert entry.state == "retry"


def test_outbox_purge_deletes_only_old_delivered_rows(outbox: Pair) -> None:
    outbox.add("a", "p1")
    outbox.add("b", "p2")
    d1, _ = outbox.store.claim_due(FIXED_NOW, limit=10, lease=LEASE)
    outbox.store.mark_delivered(
        d1, now=FIXED_NOW, attempts=1, status=201, server_id="", server_version=""
    )
    assert outbox.store.purge_delivered(FIXED_NOW) == 0
    assert outbox.store.purge_delivered(FIXED_NOW + timedelta(days=1)) == 1
    assert outbox.store.outbox_stats().counts == {"inflight": 1}


def test_outbox_stats_count_states_and_oldest_undelivered(outbox: Pair) -> None:
    outbox.add("a", "p1")
    outbox.add("b", "p2")
    stats = outbox.store.outbox_stats()
    assert stats.counts == {"pending": 2}
    assert stats.undelivered == 2
    assert stats.oldest_undelivered is not None
    assert datetime.fromisoformat(stats.oldest_undelivered) == FIXED_NOW


def test_outbox_release_makes_a_claimed_row_due_again(outbox: Pair) -> None:
    a = outbox.add("a", "p1")
    (d,) = outbox.store.claim_due(FIXED_NOW, limit=10, lease=LEASE)
    outbox.store.release(d)
    assert [x.id for x in outbox.store.claim_due(FIXED_NOW, limit=10, lease=LEASE)] == [a]


def test_outbox_list_filters_by_state_newest_first(outbox: Pair) -> None:
    a = outbox.add("a", "p1")
    b = outbox.add("b", "p2")
    assert [e.id for e in outbox.store.list_outbox()] == [b, a]
    assert [e.id for e in outbox.store.list_outbox(patient_key="p1")] == [a]
    assert outbox.store.list_outbox(state="dead") == []


def test_outbox_stats_without_done_rows_counts_only_undelivered(outbox: Pair) -> None:
    outbox.add("a", "p1")
    b = outbox.add("b", "p2")
    first, _ = outbox.store.claim_due(FIXED_NOW, limit=10, lease=LEASE)
    outbox.store.mark_delivered(
        first, now=FIXED_NOW, attempts=1, status=201, server_id="", server_version=""
    )
    assert outbox.store.outbox_stats().counts == {"delivered": 1, "inflight": 1}
    active = outbox.store.outbox_stats(include_done=False)
    assert active.counts == {"inflight": 1}
    assert active.next_attempt_at == (FIXED_NOW + LEASE).isoformat(timespec="microseconds")
    assert outbox.store.get_outbox(b) is not None
