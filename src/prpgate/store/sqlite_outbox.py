"""The outbox side of SqliteStore: claim due rows in per-patient order, record attempts.

A mixin so the delivery queue lives in its own module; ``SqliteStore`` inherits it
and provides the connection (``self._db``, autocommit mode). Every method is one
``BEGIN IMMEDIATE`` transaction, so two worker processes on one store file never
claim the same row: SQLite serialises writers, and the lease (``claim`` token plus
``next_attempt_at``) makes a worker that lost its row change nothing when it marks it.

Times are stored as ISO 8601 UTC text with microseconds (``utc_text``), so text
comparison is time comparison; ``''`` sorts first and means "due now".
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from prpgate.errors import StoreError
from prpgate.ports import Delivery, OutboxEntry, OutboxState, OutboxStats

__all__ = ["SqliteOutboxMixin", "utc_text"]

_ACTIVE = "('pending', 'retry', 'inflight')"
_ENTRY_COLS = (
    "id, identifier, kind, patient_key, version, message_id, state, attempts,"
    " next_attempt_at, last_attempt_at, delivered_at, last_status, last_error, outcome,"
    " server_id, server_version, resource"
)


def utc_text(moment: datetime) -> str:
    """A timezone-aware time as fixed-width ISO 8601 UTC text (sorts as it compares)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _entry(r: tuple[object, ...]) -> OutboxEntry:
    return OutboxEntry(
        id=int(str(r[0])),
        identifier=str(r[1]),
        kind=str(r[2]),
        patient_key=str(r[3]),
        version=int(str(r[4])),
        message_id=int(str(r[5])),
        state=str(r[6]),
        attempts=int(str(r[7])),
        next_attempt_at=str(r[8]),
        last_attempt_at=str(r[9]),
        delivered_at=str(r[10]),
        last_status=int(str(r[11])) if r[11] is not None else None,
        last_error=str(r[12]),
        outcome=str(r[13]),
        server_id=str(r[14]),
        server_version=str(r[15]),
        resource=str(r[16]),
    )


class SqliteOutboxMixin:
    """Outbox methods of the OutboxStore port, over SqliteStore's connection."""

    _db: sqlite3.Connection

    @contextmanager
    def _outbox_tx(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot begin a transaction: {exc}") from exc
        try:
            yield self._db
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(f"outbox: {exc}") from exc
        except BaseException:
            self._rollback()
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(f"commit failed: {exc}") from exc

    def _rollback(self) -> None:
        """Roll back, unless SQLite already has: after a full disk or an I/O error it
        may roll the transaction back itself, and a ROLLBACK then fails ("no transaction
        is active"), hiding the error that matters."""
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

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

    def _mark(self, delivery: Delivery, assignments: str, args: tuple[object, ...]) -> bool:
        with self._outbox_tx() as db:
            cur = db.execute(
                f"UPDATE outbox SET {assignments} WHERE id=? AND claim=? AND state='inflight'",  # noqa: S608 - assignments are literals of this module
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
            "state='delivered', attempts=attempts+?, last_attempt_at=?, delivered_at=?,"
            " last_status=?, last_error='', outcome='', server_id=?, server_version=?,"
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
            "state='retry', attempts=attempts+?, last_attempt_at=?, next_attempt_at=?,"
            " last_status=?, last_error=?, outcome=?",
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
            "state='dead', attempts=attempts+?, last_attempt_at=?, next_attempt_at='',"
            " last_status=?, last_error=?, outcome=?",
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
        try:
            return [_entry(r) for r in self._db.execute(sql, args)]
        except sqlite3.Error as exc:
            raise StoreError(f"outbox: {exc}") from exc

    def get_outbox(self, outbox_id: int) -> OutboxEntry | None:
        """One outbox row with its delivery record."""
        r = self._db.execute(
            f"SELECT {_ENTRY_COLS} FROM outbox WHERE id=?",  # noqa: S608 - fixed column list
            (outbox_id,),
        ).fetchone()
        return _entry(r) if r else None

    def retry_outbox(self, ids: Collection[int], *, now: datetime, all_dead: bool = False) -> int:
        """Make dead letters (these ids, or every one) due again; returns how many.

        A dead letter whose resource has a later version delivered or waiting is
        marked ``superseded`` instead, so an old state never overwrites a newer one.
        """
        del now  # due at once: '' sorts before every time
        with self._outbox_tx() as db:
            if all_dead:
                rows = db.execute(
                    "SELECT id, identifier, version FROM outbox WHERE state='dead' ORDER BY id"
                ).fetchall()
            else:
                marks = ",".join("?" * len(ids)) or "NULL"
                rows = db.execute(
                    "SELECT id, identifier, version FROM outbox"  # noqa: S608 - only ? placeholders
                    f" WHERE state='dead' AND id IN ({marks}) ORDER BY id",
                    tuple(ids),
                ).fetchall()
            retried = 0
            for oid, identifier, version in rows:
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
        with self._outbox_tx() as db:
            cur = db.execute(
                "DELETE FROM outbox WHERE state='delivered' AND delivered_at < ?",
                (utc_text(before),),
            )
            return cur.rowcount

    def outbox_stats(self, *, include_done: bool = True) -> OutboxStats:
        """Depth per state and the arrival time of the oldest undelivered row.

        ``include_done=False`` counts only undelivered rows (pending, retry, in flight):
        cheap however many delivered rows the store keeps.
        """
        if include_done:
            sql = "SELECT state, COUNT(*) FROM outbox GROUP BY state"
        else:
            sql = (
                "SELECT state, COUNT(*) FROM outbox INDEXED BY outbox_due"  # noqa: S608 - fixed state list
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

    def find_messages(
        self,
        *,
        limit: int = 50,
        status: str | None = None,
        control_id: str | None = None,
        order_number: str | None = None,
        patient_hash: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> list[int]:
        """Ids of messages, newest first, by indexed business keys: control id, order
        (filler/placer) number, patient hash, status, and received time (ISO text)."""
        where: list[str] = []
        args: list[object] = []
        if status:
            where.append("status=?")
            args.append(status)
        if control_id:
            where.append("control_id=?")
            args.append(control_id)
        if order_number:
            # stored as F:<filler>^<namespace> or P:<placer>^<namespace>: match the number
            # alone, with its namespace, or as stored (index lookups and range scans)
            where.append(
                "id IN (SELECT message_id FROM message_keys WHERE kind='order' AND"
                " (value IN (?, ?, ?) OR (value >= ? AND value < ?) OR (value >= ? AND value < ?)))"
            )
            n = order_number
            args += [n, f"F:{n}", f"P:{n}", f"F:{n}^", f"F:{n}_", f"P:{n}^", f"P:{n}_"]
        if patient_hash:
            where.append(
                "id IN (SELECT message_id FROM message_keys WHERE kind='patient' AND value=?)"
            )
            args.append(patient_hash)
        if since:
            where.append("received_at >= ?")
            args.append(since)
        if until:
            where.append("received_at < ?")
            args.append(until)
        sql = "SELECT id FROM messages"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        try:
            return [int(r[0]) for r in self._db.execute(sql, args)]
        except sqlite3.Error as exc:
            raise StoreError(f"messages: {exc}") from exc
