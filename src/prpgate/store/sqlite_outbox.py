"""The outbox side of SqliteStore that is SQLite's own: claims and depth statistics.

A mixin so the delivery queue lives in its own module; ``SqliteStore`` inherits it and
provides the connection (``self._db``, autocommit mode). The rest of the outbox is
``SqlOutbox``, the statements both SQL stores share. Every write is one ``BEGIN
IMMEDIATE`` transaction (``_outbox_tx``), so two worker processes on one store file never
claim the same row: SQLite serialises writers, and the lease (``claim`` token plus
``next_attempt_at``) makes a worker that lost its row change nothing when it marks it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta
from typing import Any

from prpgate.ports import Delivery, OutboxStats
from prpgate.store.sql_access import SqlConnection
from prpgate.store.sql_outbox import SqlOutbox, utc_text
from prpgate.store.sqlite_split import SplitTransaction
from prpgate.store.sqlite_writer_lock import WriterLock

__all__ = ["SqliteOutboxMixin"]

_ACTIVE = "('pending', 'retry', 'inflight')"


class SqliteOutboxMixin(SqlOutbox):
    """The outbox methods of the OutboxStore port that are SQLite's own, over SqliteStore's
    connection."""

    _db: sqlite3.Connection
    _lock: WriterLock | None

    def _outbox_tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._write_tx("outbox")

    @contextmanager
    def _write_tx(self, what: str) -> Iterator[sqlite3.Connection]:
        """One BEGIN IMMEDIATE transaction (under the writer lock when there is one),
        committed on normal exit and rolled back on any failure; a SQLite error in the
        body is raised as StoreError ``<what>: ...`` (``SplitTransaction``'s steps in a
        row)."""
        tx = SplitTransaction(self._db, self._lock)
        tx.begin()
        with tx.writing(what) as db:
            yield db
        tx.commit()

    def claim_due(
        self,
        now: datetime,
        *,
        limit: int,
        lease: timedelta,
        skip_patients: Collection[str] = (),
    ) -> list[Delivery]:
        """Claim up to ``limit`` due rows (at most one per patient), oldest first.

        A row is due when it is pending, waiting for a retry whose time has come, or
        in flight with a lapsed lease, and no earlier row of its patient is still
        undelivered. Claimed rows are ``inflight`` until ``now + lease``.
        """
        if limit <= 0:
            return []
        stamp = utc_text(now)
        with self._outbox_tx() as db:
            rows = db.execute(
                "SELECT o.id, o.identifier, o.kind, o.patient_key, o.version, o.resource,"  # noqa: S608 - fixed state list
                " o.attempts, o.claim, m.received_at FROM outbox o INDEXED BY outbox_due"
                " JOIN messages m ON m.id = o.message_id"
                f" WHERE o.state IN {_ACTIVE} AND o.next_attempt_at <= ?"
                " AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.patient_key = o.patient_key"
                f" AND p.id < o.id AND p.state IN {_ACTIVE})"
                " ORDER BY o.id LIMIT ?",
                (stamp, limit + len(skip_patients)),
            ).fetchall()
            skip = set(skip_patients)
            chosen = [r for r in rows if str(r[3]) not in skip][:limit]
            lease_end = utc_text(now + lease)
            db.executemany(
                "UPDATE outbox SET state='inflight', next_attempt_at=?, claim=claim+1 WHERE id=?",
                [(lease_end, r[0]) for r in chosen],
            )
        return [
            Delivery(
                id=int(str(r[0])),
                identifier=str(r[1]),
                kind=str(r[2]),
                patient_key=str(r[3]),
                version=int(str(r[4])),
                resource=str(r[5]),
                attempts=int(str(r[6])),
                claim=int(str(r[7])) + 1,
                received_at=str(r[8]),
            )
            for r in chosen
        ]

    def _dead_letters(
        self, db: SqlConnection, ids: Collection[int], *, all_dead: bool
    ) -> Sequence[Any]:
        if all_dead:
            return db.execute(
                "SELECT id, identifier, version FROM outbox WHERE state='dead' ORDER BY id"
            ).fetchall()
        marks = ",".join("?" * len(ids)) or "NULL"
        return db.execute(
            "SELECT id, identifier, version FROM outbox"  # noqa: S608 - only ? placeholders
            f" WHERE state='dead' AND id IN ({marks}) ORDER BY id",
            tuple(ids),
        ).fetchall()

    def outbox_stats(self, *, include_done: bool = True) -> OutboxStats:
        """Depth per state and the arrival time of the oldest undelivered row.

        ``include_done=False`` counts only undelivered rows (pending, retry, in flight),
        however many delivered rows the store keeps, from the (state, id) index alone:
        counting through the partial index of due rows read every row (23-53 ms for
        33 000 undelivered rows, 2-3 ms from the index).
        """
        if include_done:
            sql = "SELECT state, COUNT(*) FROM outbox GROUP BY state"
        else:
            sql = (
                "SELECT state, COUNT(*) FROM outbox INDEXED BY outbox_state"  # noqa: S608 - fixed state list
                f" WHERE state IN {_ACTIVE} GROUP BY state"
            )
        counts = {str(s): int(n) for s, n in self._db.execute(sql)}
        oldest = self._db.execute(
            "SELECT m.received_at FROM outbox o INDEXED BY outbox_due"  # noqa: S608 - fixed state list
            f" JOIN messages m ON m.id = o.message_id WHERE o.state IN {_ACTIVE}"
            " ORDER BY o.id LIMIT 1"
        ).fetchone()
        nxt = self._db.execute(
            "SELECT MIN(next_attempt_at) FROM outbox INDEXED BY outbox_due"  # noqa: S608 - fixed state list
            f" WHERE state IN {_ACTIVE}"
        ).fetchone()
        return OutboxStats(
            counts=counts,
            oldest_undelivered=oldest[0] if oldest else None,
            next_attempt_at=nxt[0] if nxt else None,
        )
