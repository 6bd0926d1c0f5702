"""The shell's unit of work for one inbound message: dedup, record, evaluate, save.

Every input is recorded (raw bytes kept) whatever becomes of it. Evaluation runs
inside a savepoint: if anything fails after the message row exists, the partial
writes roll back and the message is recorded again as an error (AE, HL7 code 207)
with its raw bytes, so nothing is lost and nothing half-written remains. A store failure
(StoreError, StoreConflictError) is not the message's fault: it leaves ``ingest`` and
the caller's transaction rolls back whole (a listener answers "send again").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from prpgate.core.json_text import compact
from prpgate.core.model import Normalised
from prpgate.core.pipeline import (
    AckCode,
    Disposition,
    Emitted,
    Engine,
    ErrorInfo,
    Reading,
    evaluate,
    read,
)
from prpgate.errors import PrpgateError, StoreError
from prpgate.ports import MessageRecord, StoreSession
from prpgate.store.sqlite import patient_hash

__all__ = ["Ingested", "ingest", "summarise"]


@dataclass(frozen=True, slots=True)
class Ingested:
    """What became of one message, after the session that recorded it commits."""

    message_id: int
    disposition: Disposition
    ack: AckCode
    reading: Reading
    emitted: tuple[Emitted, ...] = ()
    duplicate_of: int | None = None
    reuse_of: int | None = None

    @property
    def errors(self) -> tuple[ErrorInfo, ...]:
        """Why the message was not accepted (empty when it was)."""
        return self.reading.errors


def summarise(reading: Reading, emitted: tuple[Emitted, ...] = ()) -> dict[str, object]:
    """A small, PHI-free summary of a reading for the store and for reports."""
    reasons: dict[str, int] = {}
    normalised = not_used = 0
    for r in reading.results:
        if isinstance(r, Normalised):
            normalised += 1
        elif r.reason.is_problem:
            reasons[r.reason.value] = reasons.get(r.reason.value, 0) + 1
        else:
            not_used += 1
    return {
        "results": len(reading.results),
        "normalised": normalised,
        "unmapped": reasons,
        "not_used": not_used,
        "patients": len({p.identifier.key for p in reading.patients}),
        "outputs": len(emitted),
        "warnings": list(reading.warnings),
        "refused_parts": len(reading.refused_parts),
    }


def _errors_json(errors: tuple[ErrorInfo, ...]) -> str:
    if not errors:
        return "[]"
    return compact([{"code": e.code, "location": e.location, "reason": e.reason} for e in errors])


def _record(
    reading: Reading,
    *,
    source: str,
    received_at: datetime,
    disposition: Disposition,
    ack: AckCode,
    emitted: tuple[Emitted, ...] = (),
    duplicate_of: int | None = None,
    reuse_of: int | None = None,
    raw: bytes | None = None,
) -> MessageRecord:
    h = reading.header
    orders = sorted({r.result.key.order for r in reading.results if r.result.key.order})
    mrns = sorted({p.identifier.value for p in reading.patients if p.identifier.value})
    return MessageRecord(
        received_at=received_at.isoformat(),
        source=source,
        raw=reading.raw if raw is None else raw,
        content_hash=reading.content_hash,
        sending_application=h.sending_application if h else "",
        sending_facility=h.sending_facility if h else "",
        control_id=h.control_id if h else "",
        message_type="^".join(p for p in (h.message_type, h.trigger_event) if p) if h else "",
        version=h.version if h else "",
        status=disposition.value,
        ack_code=ack.value,
        errors=_errors_json(reading.errors),
        summary=compact(summarise(reading, emitted)),
        patient_hashes=tuple(patient_hash(m) for m in mrns),
        order_numbers=tuple(orders),
        duplicate_of=duplicate_of,
        reuse_of=reuse_of,
    )


def ingest(
    session: StoreSession,
    engine: Engine,
    raw: bytes,
    *,
    source: str,
    received_at: datetime,
    reading: Reading | None = None,
) -> Ingested:
    """Run one message through the pipeline inside an open store session.

    The caller commits the session (and only then acknowledges). A retransmit —
    same (MSH-3, MSH-4, MSH-10) and same content as a committed message — is
    recorded as a duplicate and not processed again; the same key with other
    content is processed and recorded as a control-id reuse. ``reading`` is ``raw``
    already read (parse and map need no store, so a caller may do them beforehand,
    off the store's thread); it is read here when None.
    """
    if reading is None:
        reading = read(raw, engine)
    h = reading.header
    reuse_of: int | None = None
    if h is not None and h.control_id:
        priors = session.find_prior(h.sending_application, h.sending_facility, h.control_id)
        same = next((p for p in priors if p.content_hash == reading.content_hash), None)
        if same is not None:
            record = _record(
                reading,
                source=source,
                received_at=received_at,
                disposition=Disposition.DUPLICATE,
                ack=AckCode(same.ack_code),
                duplicate_of=same.id,
                raw=b"",
            )
            mid = session.add_message(record)
            return Ingested(
                mid, Disposition.DUPLICATE, AckCode(same.ack_code), reading, duplicate_of=same.id
            )
        if priors:
            reuse_of = priors[-1].id
    try:
        with session.savepoint():
            mid = session.add_message(
                _record(
                    reading,
                    source=source,
                    received_at=received_at,
                    disposition=reading.disposition,
                    ack=reading.ack,
                    reuse_of=reuse_of,
                )
            )
            if reading.disposition is not Disposition.ACCEPTED:
                return Ingested(mid, reading.disposition, reading.ack, reading, reuse_of=reuse_of)
            needs = reading.needs()
            states = {
                pk: session.load_state(pk, needs.analytes.get(pk, frozenset()), keys)
                for pk, keys in needs.result_keys.items()
            }
            outcome = evaluate(reading, states, engine, seq=mid)
            session.apply(mid, outcome)
            if outcome.emitted:
                # the summary counts outputs, which exist only after evaluation
                summary = compact(summarise(reading, outcome.emitted))
                session.set_summary(mid, summary)
            return Ingested(
                mid, Disposition.ACCEPTED, AckCode.AA, reading, outcome.emitted, reuse_of=reuse_of
            )
    except StoreError:
        raise  # the store failed or lost a race, not the message: nothing of it is kept
    except PrpgateError as exc:
        failed = Reading(
            raw=reading.raw,
            content_hash=reading.content_hash,
            disposition=Disposition.ERROR,
            ack=AckCode.AE,
            header=reading.header,
            results=reading.results,
            patients=reading.patients,
            errors=(ErrorInfo(207, "message", f"application internal error: {exc}"),),
            warnings=reading.warnings,
        )
        mid = session.add_message(
            _record(
                failed,
                source=source,
                received_at=received_at,
                disposition=Disposition.ERROR,
                ack=AckCode.AE,
                reuse_of=reuse_of,
            )
        )
        return Ingested(mid, Disposition.ERROR, AckCode.AE, failed, reuse_of=reuse_of)
