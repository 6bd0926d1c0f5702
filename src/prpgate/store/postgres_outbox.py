"""The outbox side of PostgresStore that is PostgreSQL's own: claims with ``FOR UPDATE SKIP
LOCKED``, dead letters locked for a retry, depth statistics in one round trip. Marks,
listings, retries and purges are the statements both SQL stores share (``SqlOutbox``).

Workers of several instances claim from one table at once. A claim selects due rows in
id order and locks them, skipping rows another worker's claim has locked; the NOT EXISTS
test keeps a patient's later rows waiting while an earlier one is undelivered (in flight
included), so two workers never hold rows of one patient, and never the same row. The
lease (``claim`` token plus ``next_attempt_at``) makes a worker that lost its row change
nothing when it marks it, as on SQLite.

Times are ISO 8601 UTC text (``utc_text``) in "C"-collated columns: text order is time
order, and ``''`` sorts first and means "due now".
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import class_row
from psycopg_pool import ConnectionPool

from prpgate.ports import Delivery, OutboxStats
from prpgate.store.postgres_errors import translated
from prpgate.store.sql_access import SqlConnection
from prpgate.store.sql_outbox import SqlOutbox, utc_text

__all__ = ["PostgresOutboxMixin"]

_ACTIVE = "('pending', 'retry', 'inflight')"
_CLAIM = (
    "SELECT o.id, o.identifier, o.kind, o.patient_key, o.version, o.resource, o.attempts,"  # noqa: S608 - fixed state list
    " o.claim + 1 AS claim, m.received_at FROM outbox o JOIN messages m ON m.id = o.message_id"
    f" WHERE o.state IN {_ACTIVE} AND o.next_attempt_at <= %s"
    " AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.patient_key = o.patient_key"
    f" AND p.id < o.id AND p.state IN {_ACTIVE})"
    " AND NOT (o.patient_key = ANY(%s))"
    " ORDER BY o.id LIMIT %s FOR UPDATE OF o SKIP LOCKED"
)


class PostgresOutboxMixin(SqlOutbox):
    """The outbox methods of the OutboxStore port that are PostgreSQL's own, over
    PostgresStore's pool."""

    _pool: ConnectionPool[psycopg.Connection[Any]]

    def _connection(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        return self._pool.connection()

    def claim_due(
        self,
        now: datetime,
        *,
        limit: int,
        lease: timedelta,
        skip_patients: Collection[str] = (),
    ) -> list[Delivery]:
        """Claim up to ``limit`` due rows (at most one per patient), oldest first.

        A row is due when it is pending, waiting for a retry whose time has come, or in
        flight with a lapsed lease, and no earlier row of its patient is still undelivered.
        Rows another worker is claiming at this moment are skipped, not waited for.
        Claimed rows are ``inflight`` until ``now + lease``.
        """
        if limit <= 0:
            return []
        with translated("claim"), self._connection() as conn, conn.transaction():
            with conn.cursor(row_factory=class_row(Delivery)) as cur:
                chosen = cur.execute(_CLAIM, (utc_text(now), list(skip_patients), limit)).fetchall()
            if chosen:
                conn.execute(
                    "UPDATE outbox SET state='inflight', next_attempt_at=%s, claim=claim+1"
                    " WHERE id = ANY(%s)",
                    (utc_text(now + lease), [d.id for d in chosen]),
                )
        return chosen

    def _dead_letters(
        self, db: SqlConnection, ids: Collection[int], *, all_dead: bool
    ) -> Sequence[Any]:
        # db is the shared statements' connection: ? placeholders
        if all_dead:
            return db.execute(
                "SELECT id, identifier, version FROM outbox WHERE state='dead'"
                " ORDER BY id FOR UPDATE"
            ).fetchall()
        return db.execute(
            "SELECT id, identifier, version FROM outbox WHERE state='dead'"
            " AND id = ANY(?) ORDER BY id FOR UPDATE",
            (list(ids),),
        ).fetchall()

    def outbox_stats(self, *, include_done: bool = True) -> OutboxStats:
        """Depth per state and the arrival time of the oldest undelivered row.

        ``include_done=False`` counts only undelivered rows (pending, retry, in flight),
        through the partial index, however many delivered rows the store keeps.
        """
        where = "" if include_done else f" WHERE state IN {_ACTIVE}"
        with translated("outbox stats"), self._connection() as conn, conn.pipeline():
            counts = conn.execute(
                f"SELECT state, COUNT(*) FROM outbox{where} GROUP BY state"  # noqa: S608 - fixed state list
            )
            oldest = conn.execute(
                "SELECT m.received_at FROM outbox o JOIN messages m ON m.id = o.message_id"  # noqa: S608 - fixed state list
                f" WHERE o.state IN {_ACTIVE} ORDER BY o.id LIMIT 1"
            )
            nxt = conn.execute(
                f"SELECT MIN(next_attempt_at) FROM outbox WHERE state IN {_ACTIVE}"  # noqa: S608 - fixed state list
            )
            by_state = {str(s): int(n) for s, n in counts.fetchall()}
            first, soonest = oldest.fetchone(), nxt.fetchone()
        return OutboxStats(
            counts=by_state,
            oldest_undelivered=first[0] if first else None,
            next_attempt_at=soonest[0] if soonest else None,
        )
