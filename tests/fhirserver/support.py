"""Helpers for delivery tests: output resources, and filling an outbox (memory or SQLite)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

from prpgate.core.build import resource_id
from prpgate.core.pipeline import Emitted, Outcome
from prpgate.core.state import OutputKind
from prpgate.ports import MessageRecord, StoreBackend
from prpgate.store.memory_outbox import MemoryOutbox

SID = "https://prpgate.example/fhir/sid"
PATIENT_SYSTEM = "urn:oid:1.2.3"


def flag_json(ident: str, status: str = "active", mrn: str = "MRN1") -> str:
    """A minimal Flag as the pipeline emits it (client-assigned id, identifier)."""
    return json.dumps(
        {
            "resourceType": "Flag",
            "id": resource_id("Flag", ident),
            "identifier": [{"system": f"{SID}/flag", "value": ident}],
            "status": status,
            "code": {"text": "PRP on hold: leukocytosis"},
            "subject": {"identifier": {"system": PATIENT_SYSTEM, "value": mrn}},
        },
        separators=(",", ":"),
    )


def issue_json(ident: str, status: str = "final", mrn: str = "MRN1") -> str:
    """A minimal DetectedIssue as the pipeline emits it."""
    return json.dumps(
        {
            "resourceType": "DetectedIssue",
            "id": resource_id("DetectedIssue", ident),
            "identifier": [{"system": f"{SID}/detected-issue", "value": ident}],
            "status": status,
            "severity": "high",
            "patient": {"identifier": {"system": PATIENT_SYSTEM, "value": mrn}},
        },
        separators=(",", ":"),
    )


def resource_for(kind: str, ident: str, status: str, mrn: str) -> str:
    """``flag_json`` or ``issue_json`` by kind."""
    return flag_json(ident, status, mrn) if kind == "Flag" else issue_json(ident, status, mrn)


class SqliteFiller:
    """Adds outbox rows to a store (SQLite or PostgreSQL) the way ingest does (a message,
    then apply)."""

    def __init__(self, store: StoreBackend) -> None:
        self.store = store

    def enqueue(
        self,
        *,
        identifier: str,
        kind: str,
        patient_key: str,
        version: int,
        resource: str,
        received_at: datetime,
    ) -> int:
        """One message carrying one output version; returns the outbox row id."""
        # unique per store, whichever filler adds it: one first arrival per key and content
        n = uuid.uuid4().hex[:16]
        with self.store.session() as s:
            mid = s.add_message(
                MessageRecord(
                    received_at=received_at.isoformat(),
                    source="test",
                    raw=b"MSH|",
                    content_hash=f"h{n}",
                    sending_application="APP",
                    sending_facility="LAB",
                    control_id=f"C{n}",
                    message_type="ORU^R01",
                    version="2.5.1",
                    status="accepted",
                    ack_code="AA",
                    errors="[]",
                    summary="{}",
                )
            )
            status = json.loads(resource).get("status", "")
            emitted = Emitted(
                identifier,
                OutputKind(kind),
                patient_key,
                "leukocytosis",
                "rk",
                status,
                resource,
                version,
                "created" if version == 1 else "updated",
            )
            s.apply(mid, Outcome(decisions=(), emitted=(emitted,), explanation=()))
        rows = self.store.outbox(message_id=mid)
        return rows[-1].id


def memory_filler() -> MemoryOutbox:
    """A fresh MemoryOutbox (its ``enqueue`` has the same signature as SqliteFiller's)."""
    return MemoryOutbox()
