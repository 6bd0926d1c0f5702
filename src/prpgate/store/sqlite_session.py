"""SqliteSession: one write transaction on a SqliteStore connection (the store's port
``StoreSession``): dedup lookups, message rows, patient state, outcomes, savepoints."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from prpgate.core.json_text import compact
from prpgate.core.pipeline import Outcome
from prpgate.core.state import PatientState
from prpgate.ports import MessageRecord, PriorMessage
from prpgate.store.rows import message_values, stored_outputs, stored_results

__all__ = ["SqliteSession"]


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
            message_values(record),
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
        out_rows = self._db.execute(
            "SELECT identifier, kind, patient_key, rule, result_key, status, resource, version"  # noqa: S608 - only ? placeholders are interpolated
            " FROM outputs WHERE patient_key=?"
            f" AND (kind='Flag' OR result_key IN ({k_marks}))",
            (patient_key, *result_keys),
        ).fetchall()
        return PatientState(patient_key, stored_results(rows), stored_outputs(out_rows))

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
