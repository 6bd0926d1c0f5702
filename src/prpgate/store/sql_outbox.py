"""The outbox methods of the OutboxStore port that are the same SQL on SQLite and PostgreSQL.

``SqlOutbox`` records attempts on a claimed row (a mark changes the row only while this
claim still holds it: ``claim`` token, ``inflight`` state), lists and shows rows, makes
dead letters due again and purges delivered rows. Claiming and the depth statistics
differ per database (``SqliteOutboxMixin``, ``PostgresOutboxMixin``), as does the
selection of the dead letters to retry (``_dead_letters``: locked on PostgreSQL).

Times are stored as ISO 8601 UTC text with microseconds (``utc_text``), so text
comparison is time comparison; ``''`` sorts first and means "due now".
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

from prpgate.ports import Delivery, OutboxEntry, OutboxState
from prpgate.store.rows import outbox_entry
from prpgate.store.sql_access import SqlAccess, SqlConnection

__all__ = ["SqlOutbox", "utc_text"]

_ENTRY_COLS = (
    "id, identifier, kind, patient_key, version, message_id, state, attempts,"
    " next_attempt_at, last_attempt_at, delivered_at, last_status, last_error, outcome,"
    " server_id, server_version, resource"
)
_DELIVERED = (
    "state='delivered', attempts=attempts+?, last_attempt_at=?, delivered_at=?,"
    " last_status=?, last_error='', outcome='', server_id=?, server_version=?,"
    " next_attempt_at=''"
)
_RETRY = (
    "state='retry', attempts=attempts+?, last_attempt_at=?, next_attempt_at=?,"
    " last_status=?, last_error=?, outcome=?"
)
_DEAD = (
    "state='dead', attempts=attempts+?, last_attempt_at=?, next_attempt_at='',"
    " last_status=?, last_error=?, outcome=?"
)
_RELEASE = "state=CASE WHEN attempts=0 THEN 'pending' ELSE 'retry' END, next_attempt_at=''"


def utc_text(moment: datetime) -> str:
    """A timezone-aware time as fixed-width ISO 8601 UTC text (sorts as it compares)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


class SqlOutbox(SqlAccess):
    """Marks, listing, retries and purges of outbox rows, over a SQL store's connections."""

    def _dead_letters(
        self, db: SqlConnection, ids: Collection[int], *, all_dead: bool
    ) -> Sequence[Any]:
        """(id, identifier, version) of the dead letters to retry (these ids, or every
        one), in id order, inside ``retry_outbox``'s transaction."""
        raise NotImplementedError

    def _mark(self, delivery: Delivery, assignments: str, args: tuple[object, ...]) -> bool:
        with self._writing("outbox mark") as db:
            cur = db.execute(
                f"UPDATE outbox SET {assignments} WHERE id=? AND claim=? AND state='inflight'",  # noqa: S608 - assignments are constants of this module
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
            delivery, _DELIVERED, (attempts, stamp, stamp, status, server_id, server_version)
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
            _RETRY,
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
        return self._mark(delivery, _DEAD, (attempts, utc_text(now), status, error, outcome))

    def release(self, delivery: Delivery) -> None:
        """Hand an unattempted claimed row back, due at once."""
        self._mark(delivery, _RELEASE, ())

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
            where.append("state=?")
            args.append(state)
        if patient_key:
            where.append("patient_key=?")
            args.append(patient_key)
        sql = f"SELECT {_ENTRY_COLS} FROM outbox"  # noqa: S608 - fixed column list
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        with self._reading("outbox") as db:
            return [outbox_entry(r) for r in db.execute(sql, args).fetchall()]

    def get_outbox(self, outbox_id: int) -> OutboxEntry | None:
        """One outbox row with its delivery record."""
        with self._reading("outbox") as db:
            r = db.execute(
                f"SELECT {_ENTRY_COLS} FROM outbox WHERE id=?",  # noqa: S608 - fixed column list
                (outbox_id,),
            ).fetchone()
        return outbox_entry(r) if r else None

    def retry_outbox(self, ids: Collection[int], *, now: datetime, all_dead: bool = False) -> int:
        """Make dead letters (these ids, or every one) due again; returns how many.

        A dead letter whose resource has a later version delivered or waiting is
        marked ``superseded`` instead, so an old state never overwrites a newer one.
        """
        del now  # due at once: '' sorts before every time
        with self._transaction("outbox retry") as db:
            retried = 0
            for oid, identifier, version in self._dead_letters(db, ids, all_dead=all_dead):
                newer = db.execute(
                    "SELECT 1 FROM outbox WHERE identifier=? AND version>? AND state IN"
                    " ('pending', 'retry', 'inflight', 'delivered') LIMIT 1",
                    (identifier, version),
                ).fetchone()
                if newer:
                    db.execute(
                        "UPDATE outbox SET state=? WHERE id=?",
                        (OutboxState.SUPERSEDED.value, oid),
                    )
                    continue
                db.execute("UPDATE outbox SET state='retry', next_attempt_at='' WHERE id=?", (oid,))
                retried += 1
        return retried

    def purge_delivered(self, before: datetime) -> int:
        """Delete delivered rows whose delivery is older than ``before``; returns how many."""
        with self._writing("outbox purge") as db:
            cur = db.execute(
                "DELETE FROM outbox WHERE state='delivered' AND delivered_at < ?",
                (utc_text(before),),
            )
            return cur.rowcount
