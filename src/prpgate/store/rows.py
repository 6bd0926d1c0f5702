"""Store rows to and from the ports' values, written once for the SQLite and PostgreSQL stores.

A statement names its columns in the order these functions read or give them: a row comes
back as a tuple (``sqlite3`` rows, psycopg's default rows, or a JSON array built by the
statement) and leaves as a tuple of parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from prpgate.core.model import Comparator, ResultStatus
from prpgate.core.state import OutputKind, StoredOutput, StoredResult
from prpgate.ports import MessageRecord, MessageRow, OutboxEntry, OutboxRow, OutputRow

__all__ = [
    "message_row",
    "message_values",
    "outbox_entry",
    "outbox_row",
    "output_row",
    "stored_outputs",
    "stored_results",
]

Row = Sequence[Any]


def message_values(record: MessageRecord) -> tuple[object, ...]:
    """A message's values in the ``messages`` columns' order: received_at, source,
    sending_application, sending_facility, control_id, content_hash, message_type, version,
    status, ack_code, errors, summary, duplicate_of, reuse_of, raw."""
    return (
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
    )


def stored_results(rows: Iterable[Row]) -> tuple[StoredResult, ...]:
    """``results`` rows (result_key, patient_key, analyte, value, comparator, effective,
    effective_sort, seq, status, source) as the core's state."""
    return tuple(
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


def stored_outputs(rows: Iterable[Row]) -> tuple[StoredOutput, ...]:
    """``outputs`` rows (identifier, kind, patient_key, rule, result_key, status, resource,
    version) as the core's state."""
    return tuple(
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
        for r in rows
    )


def message_row(r: Row) -> MessageRow:
    """A ``messages`` row: id, received_at, source, sending_application, sending_facility,
    control_id, message_type, version, status, ack_code, errors, summary, duplicate_of,
    reuse_of, raw."""
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


def output_row(r: Row) -> OutputRow:
    """An ``outputs`` row: identifier, kind, patient_key, rule, result_key, status, version,
    message_id, resource."""
    return OutputRow(
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


def outbox_row(r: Row) -> OutboxRow:
    """An ``outbox`` row: id, identifier, kind, patient_key, version, message_id, state,
    attempts, resource."""
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


def outbox_entry(r: Row) -> OutboxEntry:
    """An ``outbox`` row with its delivery record: id, identifier, kind, patient_key,
    version, message_id, state, attempts, next_attempt_at, last_attempt_at, delivered_at,
    last_status, last_error, outcome, server_id, server_version, resource."""
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
