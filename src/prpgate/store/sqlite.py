"""SqliteStore: the embedded default store (one file, WAL, durable commits).

Durability: WAL journal with ``synchronous=FULL``, so a committed transaction
survives power loss; a caller acknowledges a message only after ``session()``
has exited. One connection, used from one thread at a time (the listeners
funnel writes through one writer).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

from prpgate.core.json_text import compact
from prpgate.core.model import Comparator, ResultStatus
from prpgate.core.pipeline import Outcome
from prpgate.core.state import OutputKind, PatientState, StoredOutput, StoredResult
from prpgate.errors import StoreError
from prpgate.ports import MessageRecord, MessageRow, OutboxRow, OutputRow, PriorMessage
from prpgate.store.migrations import SCHEMA_VERSION, migrate_sqlite
from prpgate.store.sqlite_outbox import SqliteOutboxMixin

__all__ = ["SCHEMA_VERSION", "SqliteSession", "SqliteStore", "patient_hash"]


def patient_hash(identifier_value: str) -> str:
    """SHA-256 of a patient identifier value (the MRN): lets the store find a patient's
    messages by MRN without its index holding MRNs in clear."""
    return hashlib.sha256(identifier_value.encode()).hexdigest()


class SqliteSession:
    """One transaction on a SqliteStore connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._db = conn
        self._savepoints = 0
        # Rows nothing reads while the transaction is open (search keys, explanations)
        # are written once per transaction, in one statement each (``flush``).
        self._keys: list[tuple[int, str, str]] = []
        self._explanations: list[tuple[int, str]] = []

    def flush(self) -> None:
        """Write the rows held back for the end of the transaction (before COMMIT)."""
        if self._keys:
            self._db.executemany(
                "INSERT INTO message_keys (message_id, kind, value) VALUES (?,?,?)", self._keys
            )
            self._keys.clear()
        if self._explanations:
            self._db.executemany(
                "INSERT INTO explanations (message_id, records) VALUES (?,?)", self._explanations
            )
            self._explanations.clear()

    def find_prior(
        self, sending_application: str, sending_facility: str, control_id: str
    ) -> list[PriorMessage]:
        """Earlier messages with this retransmit key, oldest first."""
        rows = self._db.execute(
            "SELECT id, content_hash, status, ack_code FROM messages "
            "WHERE sending_application=? AND sending_facility=? AND control_id=? "
            "AND status != 'duplicate' ORDER BY id",
            (sending_application, sending_facility, control_id),
        ).fetchall()
        return [PriorMessage(r[0], r[1], r[2], r[3]) for r in rows]

    def add_message(self, record: MessageRecord) -> int:
        """Record an inbound message; returns its id."""
        cur = self._db.execute(
            "INSERT INTO messages (received_at, source, sending_application, sending_facility,"
            " control_id, content_hash, message_type, version, status, ack_code, errors, summary,"
            " duplicate_of, reuse_of, raw) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                record.received_at,
                record.source,
                record.sending_application,
                record.sending_facility,
                record.control_id,
                record.content_hash,
                record.message_type,
                record.version,
                record.status,
                record.ack_code,
                record.errors,
                record.summary,
                record.duplicate_of,
                record.reuse_of,
                record.raw,
            ),
        )
        mid = cur.lastrowid
        assert mid is not None
        self._keys.extend((mid, "patient", h) for h in record.patient_hashes)
        self._keys.extend((mid, "order", o) for o in record.order_numbers)
        return mid

    def set_summary(self, message_id: int, summary: str) -> None:
        """Replace a message's summary (JSON text)."""
        self._db.execute("UPDATE messages SET summary=? WHERE id=?", (summary, message_id))

    def load_state(
        self, patient_key: str, analytes: Iterable[str], result_keys: Iterable[str]
    ) -> PatientState:
        """The patient's stored state restricted to what a message can change."""
        analytes = list(analytes)
        result_keys = list(result_keys)
        a_marks = ",".join("?" * len(analytes)) or "NULL"
        k_marks = ",".join("?" * len(result_keys)) or "NULL"
        rows = self._db.execute(
            "SELECT result_key, patient_key, analyte, value, comparator, effective,"  # noqa: S608 - only ? placeholders are interpolated
            " effective_sort, seq, status, source FROM results WHERE patient_key=?"
            f" AND (analyte IN ({a_marks}) OR result_key IN ({k_marks}))",
            (patient_key, *analytes, *result_keys),
        ).fetchall()
        results = tuple(
            StoredResult(
                key=str(r[0]),
                patient_key=str(r[1]),
                analyte=str(r[2]),
                value=Decimal(str(r[3])),
                comparator=Comparator(r[4]) if r[4] else None,
                effective=str(r[5]),
                effective_sort=str(r[6]),
                seq=int(str(r[7])),
                status=ResultStatus(r[8]),
                source=str(r[9]),
            )
            for r in rows
        )
        out_rows = self._db.execute(
            "SELECT identifier, kind, patient_key, rule, result_key, status, resource, version"  # noqa: S608 - only ? placeholders are interpolated
            " FROM outputs WHERE patient_key=?"
            f" AND (kind='Flag' OR result_key IN ({k_marks}))",
            (patient_key, *result_keys),
        ).fetchall()
        outputs = tuple(
            StoredOutput(
                identifier=str(r[0]),
                kind=OutputKind(r[1]),
                patient_key=str(r[2]),
                rule=str(r[3]),
                result_key=str(r[4]),
                status=str(r[5]),
                resource=str(r[6]),
                version=int(str(r[7])),
            )
            for r in out_rows
        )
        return PatientState(patient_key, results, outputs)

    def apply(self, message_id: int, outcome: Outcome) -> None:
        """Write an outcome: result versions, outputs, outbox rows, explanation."""
        db = self._db
        for d in outcome.decisions:
            db.executemany(
                "INSERT INTO results (result_key, patient_key, analyte, value, comparator,"
                " effective, effective_sort, seq, status, source) VALUES (?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(result_key) DO UPDATE SET patient_key=excluded.patient_key,"
                " analyte=excluded.analyte, value=excluded.value,"
                " comparator=excluded.comparator, effective=excluded.effective,"
                " effective_sort=excluded.effective_sort, seq=excluded.seq,"
                " status=excluded.status, source=excluded.source",
                [
                    (
                        r.key,
                        r.patient_key,
                        r.analyte,
                        str(r.value),
                        r.comparator.value if r.comparator else None,
                        r.effective,
                        r.effective_sort,
                        r.seq,
                        r.status.value,
                        r.source,
                    )
                    for r in d.results
                ],
            )
            if d.removed:
                db.executemany("DELETE FROM results WHERE result_key=?", [(k,) for k in d.removed])
        if outcome.emitted:
            db.executemany(
                "INSERT INTO outputs (identifier, kind, patient_key, rule, result_key, status,"
                " version, message_id, resource) VALUES (?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(identifier) DO UPDATE SET status=excluded.status,"
                " result_key=excluded.result_key, version=excluded.version,"
                " message_id=excluded.message_id, resource=excluded.resource",
                [
                    (
                        e.identifier,
                        e.kind.value,
                        e.patient_key,
                        e.rule,
                        e.result_key,
                        e.status,
                        e.version,
                        message_id,
                        e.resource,
                    )
                    for e in outcome.emitted
                ],
            )
            db.executemany(
                "INSERT INTO outbox (identifier, kind, patient_key, version, message_id,"
                " resource) VALUES (?,?,?,?,?,?)",
                [
                    (e.identifier, e.kind.value, e.patient_key, e.version, message_id, e.resource)
                    for e in outcome.emitted
                ],
            )
        if outcome.explanation:
            self._explanations.append((message_id, compact(outcome.explanation)))

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested unit rolled back alone when its block raises."""
        self._savepoints += 1
        name = f"sp{self._savepoints}"
        held = (len(self._keys), len(self._explanations))
        self._db.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            if self._db.in_transaction:  # SQLite may have rolled back the whole transaction
                self._db.execute(f"ROLLBACK TO SAVEPOINT {name}")
                self._db.execute(f"RELEASE SAVEPOINT {name}")
            del self._keys[held[0] :], self._explanations[held[1] :]
            raise
        else:
            self._db.execute(f"RELEASE SAVEPOINT {name}")


class SqliteStore(SqliteOutboxMixin):
    """The embedded store: one SQLite file in WAL mode with durable commits.

    ``durable=False`` (synchronous=NORMAL) trades the last commits on power loss
    for speed; it exists for benchmarks that measure what fsync costs. Pending schema
    migrations are applied on open; ``migrate=False`` refuses an older store instead.
    """

    def __init__(self, path: str | Path, *, durable: bool = True, migrate: bool = True) -> None:
        self.path = Path(path)
        try:
            if self.path.parent != Path():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=10000")
            migrate_sqlite(self._db, apply=migrate)
        except (sqlite3.Error, OSError) as exc:
            folder = self.path.parent
            writable = not folder.is_dir() or os.access(folder, os.W_OK)
            hint = "" if writable else f" (its folder {folder} is read-only)"
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}{hint}") from exc
        except StoreError:
            self._db.close()
            raise

    @contextmanager
    def session(self) -> Iterator[SqliteSession]:
        """A write transaction (BEGIN IMMEDIATE), committed durably on normal exit."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot begin a transaction: {exc}") from exc
        session = SqliteSession(self._db)
        try:
            yield session
            session.flush()
        except sqlite3.Error as exc:  # a write failed (disk full, I/O error, ...)
            self._rollback()
            raise StoreError(f"write failed: {exc}") from exc
        except BaseException:
            self._rollback()
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(f"commit failed: {exc}") from exc

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    # --- reads -------------------------------------------------------------

    _MSG_COLS = (
        "id, received_at, source, sending_application, sending_facility, control_id,"
        " message_type, version, status, ack_code, errors, summary, duplicate_of, reuse_of, raw"
    )

    @staticmethod
    def _message(r: tuple[object, ...]) -> MessageRow:
        return MessageRow(
            id=int(str(r[0])),
            received_at=str(r[1]),
            source=str(r[2]),
            sending_application=str(r[3]),
            sending_facility=str(r[4]),
            control_id=str(r[5]),
            message_type=str(r[6]),
            version=str(r[7]),
            status=str(r[8]),
            ack_code=str(r[9]),
            errors=str(r[10]),
            summary=str(r[11]),
            duplicate_of=int(str(r[12])) if r[12] is not None else None,
            reuse_of=int(str(r[13])) if r[13] is not None else None,
            raw=bytes(r[14]) if isinstance(r[14], bytes | bytearray | memoryview) else b"",
        )

    def list_messages(
        self,
        *,
        limit: int = 50,
        status: str | None = None,
        control_id: str | None = None,
        patient_hash: str | None = None,
    ) -> list[MessageRow]:
        """Newest first, filtered by indexed keys."""
        where: list[str] = []
        args: list[object] = []
        if status:
            where.append("status=?")
            args.append(status)
        if control_id:
            where.append("control_id=?")
            args.append(control_id)
        if patient_hash:
            where.append(
                "id IN (SELECT message_id FROM message_keys WHERE kind='patient' AND value=?)"
            )
            args.append(patient_hash)
        sql = f"SELECT {self._MSG_COLS} FROM messages"  # noqa: S608 - fixed column list
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        return [self._message(r) for r in self._db.execute(sql, args)]

    def get_message(self, message_id: int) -> MessageRow | None:
        """One message with its raw bytes."""
        r = self._db.execute(
            f"SELECT {self._MSG_COLS} FROM messages WHERE id=?",  # noqa: S608 - fixed columns
            (message_id,),
        ).fetchone()
        return self._message(r) if r else None

    def explanation(self, message_id: int) -> list[dict[str, Any]]:
        """The explanation records of a message, in order (empty when it decided nothing)."""
        row = self._db.execute(
            "SELECT records FROM explanations WHERE message_id=?", (message_id,)
        ).fetchone()
        records: list[dict[str, Any]] = json.loads(row[0]) if row else []
        return records

    def outputs(
        self, *, patient_key: str | None = None, message_id: int | None = None
    ) -> list[OutputRow]:
        """Current outputs, by patient or by the message that last changed them."""
        sql = (
            "SELECT identifier, kind, patient_key, rule, result_key, status, version,"
            " message_id, resource FROM outputs"
        )
        args: list[object] = []
        if patient_key is not None:
            sql += " WHERE patient_key=?"
            args.append(patient_key)
        elif message_id is not None:
            sql += " WHERE message_id=?"
            args.append(message_id)
        sql += " ORDER BY kind, rule, identifier"
        return [
            OutputRow(
                str(r[0]),
                str(r[1]),
                str(r[2]),
                str(r[3]),
                str(r[4]),
                str(r[5]),
                int(r[6]),
                int(r[7]),
                str(r[8]),
            )
            for r in self._db.execute(sql, args)
        ]

    def outbox(self, *, message_id: int | None = None, limit: int = 1000) -> list[OutboxRow]:
        """Outbox rows in order, optionally of one message."""
        sql = (
            "SELECT id, identifier, kind, patient_key, version, message_id, state, attempts,"
            " resource FROM outbox"
        )
        args: list[object] = []
        if message_id is not None:
            sql += " WHERE message_id=?"
            args.append(message_id)
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        return [self._outbox(r) for r in self._db.execute(sql, args)]

    @staticmethod
    def _outbox(r: tuple[object, ...]) -> OutboxRow:
        return OutboxRow(
            int(str(r[0])),
            str(r[1]),
            str(r[2]),
            str(r[3]),
            int(str(r[4])),
            int(str(r[5])),
            str(r[6]),
            int(str(r[7])),
            str(r[8]),
        )

    def iter_outbox(self, after_id: int = 0) -> Iterator[OutboxRow]:
        """Every outbox row after an id, in order."""
        cur = self._db.execute(
            "SELECT id, identifier, kind, patient_key, version, message_id, state, attempts,"
            " resource FROM outbox WHERE id>? ORDER BY id",
            (after_id,),
        )
        for r in cur:
            yield self._outbox(r)

    def patient_keys(self, value: str) -> list[str]:
        """Patient keys whose identifier value is ``value`` (from results and outputs)."""
        suffix = f"|{value}"
        keys = {
            str(r[0])
            for r in self._db.execute(
                "SELECT DISTINCT patient_key FROM outputs UNION "
                "SELECT DISTINCT patient_key FROM results"
            )
            if str(r[0]).endswith(suffix)
        }
        return sorted(keys)
