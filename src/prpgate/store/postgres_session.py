"""PostgresSession: one transaction of the PostgreSQL store, shared by several instances.

Two rules keep instances from deciding twice or out of order:

* **One first arrival per retransmit key.** A unique index (schema version 2) admits one
  non-duplicate message per (MSH-3, MSH-4, MSH-10, content). When another instance
  commits the same message first, the insert fails (after waiting for that commit) and
  the session raises StoreConflictError; run again, the work finds the committed message
  and records a duplicate.
* **One transaction at a time per patient.** An accepted message takes a transaction-level
  advisory lock per patient before its row is inserted, so for every patient the message
  ids (the arrival numbers that order results) follow the order in which the state was
  read and written. A transaction holding no lock yet waits for the locks it needs (in
  key order); one that already holds some only tries, and a busy patient raises
  StoreConflictError rather than risk a deadlock: the caller retries, alone or in a
  smaller transaction.

The session runs in pipeline mode: statements whose results nobody reads (a lock, a
savepoint, the writes of ``apply``) are queued and travel with the next query that is
read, so a message costs about three round trips (look for an earlier copy; lock and
insert; read the patient's state). An error of a queued statement is raised at that next
read, or at commit, and fails the whole transaction. Errors from psycopg leave every
method as StoreError or StoreConflictError (``translated``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg

from prpgate.core.pipeline import Outcome
from prpgate.core.state import PatientState
from prpgate.errors import StoreConflictError
from prpgate.ports import MessageRecord, PriorMessage
from prpgate.store.postgres_errors import translated
from prpgate.store.rows import message_values, stored_outputs, stored_results

__all__ = ["PATIENT_LOCKS", "PostgresSession", "patient_lock"]

# pg_advisory_xact_lock(classid, objid): class 'prpp' = patients, objid from the MRN's hash
PATIENT_LOCKS = 0x70727070


def patient_lock(patient_hash: str) -> int:
    """The advisory lock object id (int4) of a patient, from the SHA-256 hex of its MRN.

    Patients whose hashes share 32 bits share a lock: harmless, they only wait for each
    other."""
    return int(patient_hash[:8], 16) - 2**31


def _lock_of_key(patient_key: str) -> int:
    """The lock of a patient key (``system|value``), the same as ``patient_lock`` of the
    hash ``add_message`` received for that patient."""
    value = patient_key.partition("|")[2]
    return patient_lock(hashlib.sha256(value.encode()).hexdigest())


# Lock the patients (keys in order), then insert the message and its keys: one statement.
# The lock condition is evaluated before the row (and its id) is made; no row comes back
# when a lock was only tried and is busy.
_LOCK_WAIT = "(SELECT count(pg_advisory_xact_lock(%s::int4, k)) FROM unnest(%s::int4[]) AS k) >= 0"
_LOCK_TRY = (
    "(SELECT coalesce(bool_and(pg_try_advisory_xact_lock(%s::int4, k)), true)"
    " FROM unnest(%s::int4[]) AS k)"
)
_INSERT_MESSAGE = (
    "WITH m AS (INSERT INTO messages (received_at, source, sending_application,"
    " sending_facility, control_id, content_hash, message_type, version, status, ack_code,"
    " errors, summary, duplicate_of, reuse_of, raw)"
    " SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::int8, %s::int8, %s::bytea"
    " WHERE {locked} RETURNING id),"
    " k AS (INSERT INTO message_keys (message_id, kind, value)"
    " SELECT m.id, u.kind, u.value FROM m, unnest(%s::text[], %s::text[]) AS u(kind, value))"
    " SELECT id FROM m"
)
_INSERT_WAITING = _INSERT_MESSAGE.format(locked=_LOCK_WAIT)
_INSERT_TRYING = _INSERT_MESSAGE.format(locked=_LOCK_TRY)
# A patient's state in one statement: two JSON arrays of rows (the lists of analytes and
# result keys go in as JSON too).
_LOAD_STATE = (
    "SELECT (SELECT json_agg(json_build_array(result_key, patient_key, analyte, value,"
    " comparator, effective, effective_sort, seq, status, source)) FROM results"
    " WHERE patient_key=%(pk)s AND (analyte = ANY(ARRAY(SELECT json_array_elements_text("
    "%(an)s::json))) OR result_key = ANY(ARRAY(SELECT json_array_elements_text(%(keys)s::json))))),"
    " (SELECT json_agg(json_build_array(identifier, kind, patient_key, rule, result_key, status,"
    " resource, version)) FROM outputs WHERE patient_key=%(pk)s AND (kind='Flag'"
    " OR result_key = ANY(ARRAY(SELECT json_array_elements_text(%(keys)s::json)))))"
)
# A table's rows travel as one JSON array (json.dumps is cheap; adapting arrays value by
# value is not); a key appears once per statement, the last version of a row winning, as
# row-by-row upserts would.
_UPSERT_RESULTS = (
    "INSERT INTO results (result_key, patient_key, analyte, value, comparator, effective,"
    " effective_sort, seq, status, source) SELECT * FROM json_to_recordset(%s::json)"
    " AS x(result_key text, patient_key text, analyte text, value text, comparator text,"
    " effective text, effective_sort text, seq int8, status text, source text)"
    " ON CONFLICT (result_key) DO UPDATE SET patient_key=excluded.patient_key,"
    " analyte=excluded.analyte, value=excluded.value, comparator=excluded.comparator,"
    " effective=excluded.effective, effective_sort=excluded.effective_sort,"
    " seq=excluded.seq, status=excluded.status, source=excluded.source"
)
# Outputs, their outbox versions (ids in the order the pipeline emitted them: the delivery
# order) and the explanation, in one statement.
_WRITE_OUTPUTS = (
    "WITH o AS (INSERT INTO outputs (identifier, kind, patient_key, rule, result_key, status,"
    " version, resource, message_id) SELECT x.*, %(mid)s::int8"
    " FROM json_to_recordset(%(outputs)s::json)"
    " AS x(identifier text, kind text, patient_key text, rule text, result_key text,"
    " status text, version int4, resource text)"
    " ON CONFLICT (identifier) DO UPDATE SET status=excluded.status,"
    " result_key=excluded.result_key, version=excluded.version,"
    " message_id=excluded.message_id, resource=excluded.resource RETURNING 1),"
    " b AS (INSERT INTO outbox (identifier, kind, patient_key, version, resource, message_id)"
    " SELECT x.identifier, x.kind, x.patient_key, x.version, x.resource, %(mid)s::int8"
    " FROM json_to_recordset(%(versions)s::json)"
    " AS x(identifier text, kind text, patient_key text, version int4, resource text, n int8)"
    " ORDER BY x.n RETURNING 1),"
    " e AS (INSERT INTO explanations (message_id, records) SELECT %(mid)s::int8, %(records)s::text"
    " WHERE %(records)s::text IS NOT NULL RETURNING 1)"
    " SELECT (SELECT count(*) FROM o), (SELECT count(*) FROM b), (SELECT count(*) FROM e)"
)


def _json(rows: Iterable[Mapping[str, object]]) -> str:
    return json.dumps(list(rows), ensure_ascii=False, separators=(",", ":"))


class PostgresSession:
    """One transaction on a pooled connection (see the module's rules)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn
        self._held: frozenset[int] = frozenset()
        self._savepoints = 0

    def find_prior(
        self, sending_application: str, sending_facility: str, control_id: str
    ) -> list[PriorMessage]:
        """Earlier messages with this retransmit key, oldest first."""
        with translated("find prior"):
            rows = self._conn.execute(
                "SELECT id, content_hash, status, ack_code FROM messages"
                " WHERE sending_application=%s AND sending_facility=%s AND control_id=%s"
                " AND status <> 'duplicate' ORDER BY id",
                (sending_application, sending_facility, control_id),
            ).fetchall()
        return [PriorMessage(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]

    def add_message(self, record: MessageRecord) -> int:
        """Record an inbound message (after locking its patients when it is accepted);
        returns its id. Raises StoreConflictError when the same first arrival committed
        elsewhere first, or a patient is busy while this transaction holds other locks."""
        locks: list[int] = []
        if record.status == "accepted":
            locks = sorted({patient_lock(h) for h in record.patient_hashes} - self._held)
        kinds = ["patient"] * len(record.patient_hashes) + ["order"] * len(record.order_numbers)
        values = [*record.patient_hashes, *record.order_numbers]
        with translated("add message"):
            row = self._conn.execute(
                _INSERT_TRYING if self._held else _INSERT_WAITING,
                (
                    *message_values(record),
                    PATIENT_LOCKS,
                    locks,
                    kinds,
                    values,
                ),
            ).fetchone()
        if row is None:
            raise StoreConflictError("a patient of this message is busy elsewhere")
        self._held = self._held | frozenset(locks)
        return int(row[0])

    def set_summary(self, message_id: int, summary: str) -> None:
        """Replace a message's summary (JSON text)."""
        with translated("set summary"):
            self._conn.execute("UPDATE messages SET summary=%s WHERE id=%s", (summary, message_id))

    def load_state(
        self, patient_key: str, analytes: Iterable[str], result_keys: Iterable[str]
    ) -> PatientState:
        """The patient's stored state restricted to what a message can change (under the
        patient's lock, taken here if ``add_message`` did not)."""
        self._lock({_lock_of_key(patient_key)})
        keys = json.dumps(list(result_keys))
        with translated("load state"):
            row = self._conn.execute(
                _LOAD_STATE, {"pk": patient_key, "an": json.dumps(list(analytes)), "keys": keys}
            ).fetchone()
        rows: list[list[Any]] = (row[0] if row else None) or []
        out_rows: list[list[Any]] = (row[1] if row else None) or []
        return PatientState(patient_key, stored_results(rows), stored_outputs(out_rows))

    def apply(self, message_id: int, outcome: Outcome) -> None:
        """Write an outcome: result versions, outputs, outbox rows, explanation (queued in
        the session's pipeline: no round trip of its own)."""
        conn = self._conn
        with translated("apply"), conn.cursor() as cur:
            for d in outcome.decisions:
                if d.results:
                    latest = {
                        r.key: {
                            "result_key": r.key,
                            "patient_key": r.patient_key,
                            "analyte": r.analyte,
                            "value": str(r.value),
                            "comparator": r.comparator.value if r.comparator else None,
                            "effective": r.effective,
                            "effective_sort": r.effective_sort,
                            "seq": r.seq,
                            "status": r.status.value,
                            "source": r.source,
                        }
                        for r in d.results
                    }
                    cur.execute(_UPSERT_RESULTS, (_json(latest.values()),))
                if d.removed:
                    cur.execute(
                        "DELETE FROM results WHERE result_key = ANY(%s)", (list(d.removed),)
                    )
            if not outcome.emitted and not outcome.explanation:
                return
            current = {
                e.identifier: {
                    "identifier": e.identifier,
                    "kind": e.kind.value,
                    "patient_key": e.patient_key,
                    "rule": e.rule,
                    "result_key": e.result_key,
                    "status": e.status,
                    "version": e.version,
                    "resource": e.resource,
                }
                for e in outcome.emitted
            }
            versions = [
                {
                    "identifier": e.identifier,
                    "kind": e.kind.value,
                    "patient_key": e.patient_key,
                    "version": e.version,
                    "resource": e.resource,
                    "n": n,
                }
                for n, e in enumerate(outcome.emitted)
            ]
            records = (
                json.dumps(outcome.explanation, ensure_ascii=False, separators=(",", ":"))
                if outcome.explanation
                else None
            )
            cur.execute(
                _WRITE_OUTPUTS,
                {
                    "mid": message_id,
                    "outputs": _json(current.values()),
                    "versions": _json(versions),
                    "records": records,
                },
            )

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested unit rolled back alone when its block raises (locks taken inside it are
        released with it, as PostgreSQL does)."""
        self._savepoints += 1
        name = f"sp{self._savepoints}".encode()
        held = self._held
        with translated("savepoint"):
            self._conn.execute(b"SAVEPOINT " + name)
        try:
            yield
        except BaseException:
            self._held = held
            with translated("savepoint"):
                self._conn.execute(b"ROLLBACK TO SAVEPOINT " + name)
                self._conn.execute(b"RELEASE SAVEPOINT " + name)
            raise
        with translated("savepoint"):
            self._conn.execute(b"RELEASE SAVEPOINT " + name)

    def _lock(self, wanted: set[int]) -> None:
        needed = sorted(wanted - self._held)
        if not needed:
            return
        with translated("patient lock"):
            if not self._held:
                for key in needed:
                    self._conn.execute(
                        "SELECT pg_advisory_xact_lock(%s::int4, %s::int4)", (PATIENT_LOCKS, key)
                    )
            else:
                row = self._conn.execute(
                    "SELECT bool_and(pg_try_advisory_xact_lock(%s::int4, k))"
                    " FROM unnest(%s::int4[]) AS k",
                    (PATIENT_LOCKS, needed),
                ).fetchone()
                if not row or not row[0]:
                    raise StoreConflictError("a patient of this message is busy elsewhere")
        self._held = self._held | frozenset(needed)
