"""Store records of MLLP input refused before the pipeline: framing faults and frames that
hold no HL7 v2. Each keeps the bytes (an oversize frame: its head), why, and the answer
sent, with empty retransmit keys, so it never counts as an earlier copy of a message."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from prpgate.core.ack import read_context
from prpgate.core.mllp import Fault, FaultKind
from prpgate.core.pipeline import content_hash
from prpgate.ports import MessageRecord

__all__ = ["fault_record", "refused_record"]

_FAULT_REASON = {
    FaultKind.STRAY: "MLLP framing: bytes outside a frame (before <VT>); dropped, not answered",
    FaultKind.UNTERMINATED: "MLLP framing: frame without <FS><CR> before the next <VT>;"
    " dropped, not answered",
    FaultKind.TRUNCATED: "MLLP framing: the connection ended inside a frame (peer closed,"
    " idle timeout or read error); dropped",
    FaultKind.OVERSIZE: "message larger than the limit; rejected",
}


def refused_record(
    data: bytes,
    *,
    source: str,
    received_at: datetime,
    answered: str,
    errors: list[dict[str, Any]],
    summary: dict[str, Any],
) -> MessageRecord:
    """The record of input refused unprocessed: ``errors`` and ``summary`` as JSON text,
    status rejected, ``answered`` the MSA-1 code sent back (``""`` when none)."""
    return MessageRecord(
        received_at=received_at.isoformat(),
        source=source,
        raw=data,
        content_hash=content_hash(data),
        sending_application="",
        sending_facility="",
        control_id="",
        message_type="",
        version="",
        status="rejected",
        ack_code=answered,
        errors=json.dumps(errors, ensure_ascii=False),
        summary=json.dumps(summary),
    )


def fault_record(
    fault: Fault, *, source: str, received_at: datetime, answered: str = ""
) -> MessageRecord:
    """The store record of a framing fault: its bytes (head), why, and no retransmit key.

    ``answered`` is the MSA-1 code sent back (``""`` when not answered).
    """
    ctx = read_context(fault.data)
    reason = f"{_FAULT_REASON[fault.kind]} ({fault.size} bytes"
    if fault.kind is FaultKind.OVERSIZE:
        reason += f", {len(fault.data)} kept"
    if ctx.control_id:
        reason += f"; MSH-10 {ctx.control_id}"
    reason += ")"
    code = 207 if fault.kind is FaultKind.OVERSIZE else 100
    return refused_record(
        fault.data,
        source=source,
        received_at=received_at,
        answered=answered,
        errors=[{"code": code, "location": "message", "reason": reason}],
        summary={"framing": fault.kind.value, "bytes": fault.size},
    )
