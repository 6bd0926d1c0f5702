"""MemoryOutbox: the in-memory fake of the OutboxStore port, for worker tests.

It follows the same contract as SqliteStore's outbox (a shared test suite runs
against both): per-patient order, leases with claim tokens, dead letters that
block nothing, and retries that never let an old version overwrite a newer one.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from prpgate.ports import Delivery, OutboxEntry, OutboxState, OutboxStats
from prpgate.store.sql_outbox import utc_text

__all__ = ["MemoryOutbox"]

_ACTIVE = frozenset({"pending", "retry", "inflight"})


@dataclass(slots=True)
class _Row:
    entry: OutboxEntry
    claim: int
    received_at: str


class MemoryOutbox:
    """An outbox held in a dict; ``enqueue`` stands in for the pipeline's writes."""

    def __init__(self) -> None:
        self._rows: dict[int, _Row] = {}
        self._next_id = 1

    def enqueue(
        self,
        *,
        identifier: str,
        kind: str,
        patient_key: str,
        version: int,
        resource: str,
        received_at: datetime,
        message_id: int = 1,
    ) -> int:
        """Add a pending row (as ``StoreSession.apply`` does); returns its id."""
        oid = self._next_id
        self._next_id += 1
        entry = OutboxEntry(
            id=oid,
            identifier=identifier,
            kind=kind,
            patient_key=patient_key,
            version=version,
            message_id=message_id,
            state="pending",
            attempts=0,
            next_attempt_at="",
            last_attempt_at="",
            delivered_at="",
            last_status=None,
            last_error="",
            outcome="",
            server_id="",
            server_version="",
            resource=resource,
        )
        self._rows[oid] = _Row(entry, 0, utc_text(received_at))
        return oid

    def _is_due(self, row: _Row, stamp: str) -> bool:
        e = row.entry
        if e.state not in _ACTIVE or e.next_attempt_at > stamp:
            return False
        return not any(
            o.entry.patient_key == e.patient_key and o.entry.id < e.id and o.entry.state in _ACTIVE
            for o in self._rows.values()
        )

    def claim_due(
        self,
        now: datetime,
        *,
        limit: int,
        lease: timedelta,
        skip_patients: Collection[str] = (),
    ) -> list[Delivery]:
        """Claim up to ``limit`` due rows (at most one per patient), oldest first."""
        stamp = utc_text(now)
        due = [
            r
            for _, r in sorted(self._rows.items())
            if self._is_due(r, stamp) and r.entry.patient_key not in skip_patients
        ][: max(limit, 0)]
        out: list[Delivery] = []
        for r in due:
            r.claim += 1
            r.entry = replace(r.entry, state="inflight", next_attempt_at=utc_text(now + lease))
            e = r.entry
            out.append(
                Delivery(
                    e.id,
                    e.identifier,
                    e.kind,
                    e.patient_key,
                    e.version,
                    e.resource,
                    e.attempts,
                    r.claim,
                    r.received_at,
                )
            )
        return out

    def _held(self, delivery: Delivery) -> _Row | None:
        r = self._rows.get(delivery.id)
        if r is None or r.claim != delivery.claim or r.entry.state != "inflight":
            return None
        return r

    def _mark(self, delivery: Delivery, *, attempts: int, **changes: Any) -> bool:
        """Count the attempts and change a row this claim still holds; False when stale."""
        r = self._held(delivery)
        if r is None:
            return False
        r.entry = replace(r.entry, attempts=r.entry.attempts + attempts, **changes)
        return True

    def mark_delivered(
        self,
        delivery: Delivery,
        *,
        now: datetime,
        attempts: int,
        status: int,
        server_id: str,
        server_version: str,
    ) -> bool:
        """Record a delivery; False when the claim was stale."""
        stamp = utc_text(now)
        return self._mark(
            delivery,
            attempts=attempts,
            state="delivered",
            last_attempt_at=stamp,
            delivered_at=stamp,
            last_status=status,
            last_error="",
            outcome="",
            server_id=server_id,
            server_version=server_version,
            next_attempt_at="",
        )

    def mark_retry(
        self,
        delivery: Delivery,
        *,
        now: datetime,
        next_attempt_at: datetime,
        attempts: int,
        status: int | None,
        error: str,
        outcome: str,
    ) -> bool:
        """Put a row back to wait until ``next_attempt_at``; False when the claim was stale."""
        return self._mark(
            delivery,
            attempts=attempts,
            state="retry",
            last_attempt_at=utc_text(now),
            next_attempt_at=utc_text(next_attempt_at),
            last_status=status,
            last_error=error,
            outcome=outcome,
        )

    def mark_dead(
        self,
        delivery: Delivery,
        *,
        now: datetime,
        attempts: int,
        status: int | None,
        error: str,
        outcome: str,
    ) -> bool:
        """Park a row as a dead letter; False when the claim was stale."""
        return self._mark(
            delivery,
            attempts=attempts,
            state="dead",
            last_attempt_at=utc_text(now),
            next_attempt_at="",
            last_status=status,
            last_error=error,
            outcome=outcome,
        )

    def release(self, delivery: Delivery) -> None:
        """Hand an unattempted claimed row back, due at once."""
        r = self._held(delivery)
        if r is not None:
            state = "pending" if r.entry.attempts == 0 else "retry"
            r.entry = replace(r.entry, state=state, next_attempt_at="")

    def list_outbox(
        self,
        *,
        state: str | None = None,
        patient_key: str | None = None,
        limit: int = 50,
    ) -> list[OutboxEntry]:
        """Outbox rows, newest first, filtered by state or patient."""
        rows = [
            r.entry
            for _, r in sorted(self._rows.items(), reverse=True)
            if (not state or r.entry.state == state)
            and (not patient_key or r.entry.patient_key == patient_key)
        ]
        return rows[:limit]

    def get_outbox(self, outbox_id: int) -> OutboxEntry | None:
        """One outbox row."""
        r = self._rows.get(outbox_id)
        return r.entry if r else None

    def retry_outbox(self, ids: Collection[int], *, now: datetime, all_dead: bool = False) -> int:
        """Make dead letters due again; superseded ones are marked so instead."""
        del now
        retried = 0
        for oid, r in sorted(self._rows.items()):
            e = r.entry
            if e.state != "dead" or not (all_dead or oid in ids):
                continue
            newer = any(
                o.entry.identifier == e.identifier
                and o.entry.version > e.version
                and o.entry.state in (_ACTIVE | {"delivered"})
                for o in self._rows.values()
            )
            if newer:
                r.entry = replace(e, state=OutboxState.SUPERSEDED.value)
                continue
            r.entry = replace(e, state="retry", next_attempt_at="")
            retried += 1
        return retried

    def purge_delivered(self, before: datetime) -> int:
        """Delete delivered rows whose delivery is older than ``before``."""
        stamp = utc_text(before)
        gone = [
            oid
            for oid, r in self._rows.items()
            if r.entry.state == "delivered" and r.entry.delivered_at < stamp
        ]
        for oid in gone:
            del self._rows[oid]
        return len(gone)

    def outbox_stats(self, *, include_done: bool = True) -> OutboxStats:
        """Depth per state and the arrival time of the oldest undelivered row (the row
        first in line); ``include_done=False`` counts only undelivered rows."""
        counts: dict[str, int] = {}
        for r in self._rows.values():
            if include_done or r.entry.state in _ACTIVE:
                counts[r.entry.state] = counts.get(r.entry.state, 0) + 1
        active = [r for _, r in sorted(self._rows.items()) if r.entry.state in _ACTIVE]
        waiting = [active[0].received_at] if active else []
        times = [r.entry.next_attempt_at for r in self._rows.values() if r.entry.state in _ACTIVE]
        return OutboxStats(
            counts=counts,
            oldest_undelivered=min(waiting) if waiting else None,
            next_attempt_at=min(times) if times else None,
        )
