"""The outbox side of PostgresStore: claims with ``FOR UPDATE SKIP LOCKED``, leases, marks.

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

from collections.abc import Collection
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import class_row
from psycopg_pool import ConnectionPool

from prpgate.ports import Delivery, OutboxEntry, OutboxState, OutboxStats
from prpgate.store.postgres_errors import translated
from prpgate.store.sqlite_outbox import utc_text

__all__ = ["PostgresOutboxMixin"]

_ACTIVE = "('pending', 'retry', 'inflight')"
_ENTRY_COLS = (
    "id, identifier, kind, patient_key, version, message_id, state, attempts,"
    " next_attempt_at, last_attempt_at, delivered_at, last_status, last_error, outcome,"
    " server_id, server_version, resource"
)
_CLAIM = (
    "SELECT o.id, o.identifier, o.kind, o.patient_key, o.version, o.resource, o.attempts,"  # noqa: S608 - fixed state list
    " o.claim + 1 AS claim, m.received_at FROM outbox o JOIN messages m ON m.id = o.message_id"
    f" WHERE o.state IN {_ACTIVE} AND o.next_attempt_at <= %s"
    " AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.patient_key = o.patient_key"
    f" AND p.id < o.id AND p.state IN {_ACTIVE})"
    " AND NOT (o.patient_key = ANY(%s))"
    " ORDER BY o.id LIMIT %s FOR UPDATE OF o SKIP LOCKED"
)


class PostgresOutboxMixin:
    """Outbox methods of the OutboxStore port over PostgresStore's pool."""

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

    def _mark(self, delivery: Delivery, assignments: str, args: tuple[object, ...]) -> bool:
        with translated("outbox mark"), self._connection() as conn:
            cur = conn.execute(
                f"UPDATE outbox SET {assignments}"  # noqa: S608 - assignments are literals of this module
                " WHERE id=%s AND claim=%s AND state='inflight'",
                (*args, delivery.id, delivery.claim),
            )
            return cur.rowcount == 1

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
        """Record a delivery; False when the claim was stale (nothing changed)."""
        stamp = utc_text(now)
        return self._mark(
            delivery,
            "state='delivered', attempts=attempts+%s, last_attempt_at=%s, delivered_at=%s,"
            " last_status=%s, last_error='', outcome='', server_id=%s, server_version=%s,"
            " next_attempt_at=''",
            (attempts, stamp, stamp, status, server_id, server_version),
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
            "state='retry', attempts=attempts+%s, last_attempt_at=%s, next_attempt_at=%s,"
            " last_status=%s, last_error=%s, outcome=%s",
            (attempts, utc_text(now), utc_text(next_attempt_at), status, error, outcome),
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
        """Park a row as a dead letter with the reason and the server's OperationOutcome."""
        return self._mark(
            delivery,
            "state='dead', attempts=attempts+%s, last_attempt_at=%s, next_attempt_at='',"
            " last_status=%s, last_error=%s, outcome=%s",
            (attempts, utc_text(now), status, error, outcome),
        )

    def release(self, delivery: Delivery) -> None:
        """Hand an unattempted claimed row back, due at once."""
        self._mark(
            delivery,
            "state=CASE WHEN attempts=0 THEN 'pending' ELSE 'retry' END, next_attempt_at=''",
            (),
        )

    def list_outbox(
        self,
        *,
        state: str | None = None,
        patient_key: str | None = None,
        limit: int = 50,
    ) -> list[OutboxEntry]:
        """Outbox rows, newest first, filtered by state or patient."""
        where: list[str] = []
        args: list[object] = []
        if state:
            where.append("state=%s")
            args.append(state)
        if patient_key:
            where.append("patient_key=%s")
            args.append(patient_key)
        sql = f"SELECT {_ENTRY_COLS} FROM outbox"  # noqa: S608 - fixed column list
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT %s"
        args.append(limit)
        return self._entries(sql, args)

    def get_outbox(self, outbox_id: int) -> OutboxEntry | None:
        """One outbox row with its delivery record."""
        found = self._entries(
            f"SELECT {_ENTRY_COLS} FROM outbox WHERE id=%s",  # noqa: S608 - fixed column list
            [outbox_id],
        )
        return found[0] if found else None

    def _entries(self, sql: str, args: list[object]) -> list[OutboxEntry]:
        with (
            translated("outbox"),
            self._connection() as conn,
            conn.cursor(row_factory=class_row(OutboxEntry)) as cur,
        ):
            return cur.execute(sql.encode(), args).fetchall()

    def retry_outbox(self, ids: Collection[int], *, now: datetime, all_dead: bool = False) -> int:
        """Make dead letters (these ids, or every one) due again; returns how many.

        A dead letter whose resource has a later version delivered or waiting is
        marked ``superseded`` instead, so an old state never overwrites a newer one.
        """
        del now  # due at once: '' sorts before every time
        with translated("outbox retry"), self._connection() as conn, conn.transaction():
            if all_dead:
                rows = conn.execute(
                    "SELECT id, identifier, version FROM outbox WHERE state='dead'"
                    " ORDER BY id FOR UPDATE"
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT id, identifier, version FROM outbox WHERE state='dead'"
                    " AND id = ANY(%s) ORDER BY id FOR UPDATE",
                    (list(ids),),
                ).fetchall()
            retried = 0
            for oid, identifier, version in rows:
                newer = conn.execute(
                    "SELECT 1 FROM outbox WHERE identifier=%s AND version>%s AND state IN"
                    " ('pending', 'retry', 'inflight', 'delivered') LIMIT 1",
                    (identifier, version),
                ).fetchone()
                if newer:
                    conn.execute(
                        "UPDATE outbox SET state=%s WHERE id=%s",
                        (OutboxState.SUPERSEDED.value, oid),
                    )
                    continue
                conn.execute(
                    "UPDATE outbox SET state='retry', next_attempt_at='' WHERE id=%s", (oid,)
                )
                retried += 1
        return retried

    def purge_delivered(self, before: datetime) -> int:
        """Delete delivered rows whose delivery is older than ``before``; returns how many."""
        with translated("outbox purge"), self._connection() as conn:
            cur = conn.execute(
                "DELETE FROM outbox WHERE state='delivered' AND delivered_at < %s",
                (utc_text(before),),
            )
            return cur.rowcount

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
