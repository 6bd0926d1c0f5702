"""MLLP frames that hold FHIR JSON or an HTTP request instead of HL7 v2.

The pipeline reads FHIR input too (files, the FHIR listener), and tells it apart by its
first bytes. Over MLLP that must not happen: MLLP carries HL7 v2 messages, so a frame
that holds JSON or a ``POST /…`` request is refused as not HL7 (HL7 error 100, answered
AR/CR, recorded as rejected with its bytes and no retransmit key) and never processed.
"""

from __future__ import annotations

from datetime import datetime

from prpgate.core.fhir_request import looks_like_fhir
from prpgate.core.pipeline import ErrorInfo
from prpgate.listeners.mllp_records import refused_record
from prpgate.ports import MessageRecord

__all__ = ["not_hl7", "not_hl7_record"]


def not_hl7(data: bytes) -> ErrorInfo | None:
    """The error to answer a frame with when it holds FHIR JSON or an HTTP request
    record rather than HL7 v2; None for anything else (the pipeline judges it)."""
    if not looks_like_fhir(data):
        return None
    return ErrorInfo(
        100,
        "message",
        "not an HL7 v2 message (no MSH segment): the frame holds FHIR JSON or an HTTP "
        "request; MLLP carries HL7 v2, FHIR goes to the FHIR listener",
    )


def not_hl7_record(
    data: bytes, error: ErrorInfo, *, source: str, received_at: datetime, answered: str
) -> MessageRecord:
    """The store record of a refused frame: its bytes, why, and no retransmit key.

    ``answered`` is the MSA-1 code sent back (``""`` when none was asked for).
    """
    return refused_record(
        data,
        source=source,
        received_at=received_at,
        answered=answered,
        errors=[{"code": error.code, "location": error.location, "reason": error.reason}],
        summary={"not_hl7": True, "bytes": len(data)},
    )
