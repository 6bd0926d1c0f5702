"""The reads of the Store port and the message search, written once for SQLite and PostgreSQL.

``SqlReads`` runs the same statements on both stores, through the connection a store gives
for reads (``SqlAccess._reading``); rows become the ports' values through ``store.rows``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from prpgate.ports import MessageRow, OutboxRow, OutputRow
from prpgate.store.rows import message_row, outbox_row, output_row
from prpgate.store.sql_access import SqlAccess

__all__ = ["SqlReads"]

_MESSAGE_COLS = (
    "id, received_at, source, sending_application, sending_facility, control_id,"
    " message_type, version, status, ack_code, errors, summary, duplicate_of, reuse_of, raw"
)
_OUTPUT_COLS = (
    "identifier, kind, patient_key, rule, result_key, status, version, message_id, resource"
)
_OUTBOX_COLS = "id, identifier, kind, patient_key, version, message_id, state, attempts, resource"
_PAGE = 500  # outbox rows per statement of iter_outbox


class SqlReads(SqlAccess):
    """Messages, explanations, outputs and outbox rows as the commands read them."""

    def list_messages(
        self,
        *,
        limit: int = 50,
        status: str | None = None,
        control_id: str | None = None,
        patient_hash: str | None = None,
    ) -> list[MessageRow]:
        """Newest first, filtered by indexed keys."""
        rows = self._messages(
            "read",
            _MESSAGE_COLS,
            limit=limit,
            status=status,
            control_id=control_id,
            patient_hash=patient_hash,
        )
        return [message_row(r) for r in rows]

    def get_message(self, message_id: int) -> MessageRow | None:
        """One message with its raw bytes."""
        with self._reading("read") as db:
            r = db.execute(
                f"SELECT {_MESSAGE_COLS} FROM messages WHERE id=?",  # noqa: S608 - fixed column list
                (message_id,),
            ).fetchone()
        return message_row(r) if r else None

    def explanation(self, message_id: int) -> list[dict[str, Any]]:
        """The explanation records of a message, in order (empty when it decided nothing)."""
        with self._reading("read") as db:
            row = db.execute(
                "SELECT records FROM explanations WHERE message_id=?", (message_id,)
            ).fetchone()
        records: list[dict[str, Any]] = json.loads(row[0]) if row else []
        return records

    def outputs(
        self, *, patient_key: str | None = None, message_id: int | None = None
    ) -> list[OutputRow]:
        """Current outputs, by patient or by the message that last changed them."""
        sql = f"SELECT {_OUTPUT_COLS} FROM outputs"  # noqa: S608 - fixed column list
        args: list[object] = []
        if patient_key is not None:
            sql += " WHERE patient_key=?"
            args.append(patient_key)
        elif message_id is not None:
            sql += " WHERE message_id=?"
            args.append(message_id)
        sql += " ORDER BY kind, rule, identifier"
        with self._reading("read") as db:
            return [output_row(r) for r in db.execute(sql, args).fetchall()]

    def outbox(self, *, message_id: int | None = None, limit: int = 1000) -> list[OutboxRow]:
        """Outbox rows in order, optionally of one message."""
        sql = f"SELECT {_OUTBOX_COLS} FROM outbox"  # noqa: S608 - fixed column list
        args: list[object] = []
        if message_id is not None:
            sql += " WHERE message_id=?"
            args.append(message_id)
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        with self._reading("read") as db:
            return [outbox_row(r) for r in db.execute(sql, args).fetchall()]

    def iter_outbox(self, after_id: int = 0) -> Iterator[OutboxRow]:
        """Every outbox row after an id, in order (pages of 500, nothing held between)."""
        last = after_id
        while True:
            with self._reading("read") as db:
                page = db.execute(
                    f"SELECT {_OUTBOX_COLS} FROM outbox WHERE id > ? ORDER BY id LIMIT ?",  # noqa: S608 - fixed column list
                    (last, _PAGE),
                ).fetchall()
            if not page:
                return
            rows = [outbox_row(r) for r in page]
            yield from rows
            last = rows[-1].id

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
        rows = self._messages(
            "messages",
            "id",
            limit=limit,
            status=status,
            control_id=control_id,
            order_number=order_number,
            patient_hash=patient_hash,
            since=since,
            until=until,
        )
        return [int(r[0]) for r in rows]

    def _messages(
        self,
        what: str,
        columns: str,
        *,
        limit: int,
        status: str | None = None,
        control_id: str | None = None,
        order_number: str | None = None,
        patient_hash: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> list[Any]:
        """These columns of messages, newest first, filtered by the indexed keys given."""
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
        sql = f"SELECT {columns} FROM messages"  # noqa: S608 - columns are constants of this module
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        with self._reading(what) as db:
            return db.execute(sql, args).fetchall()
