"""FHIR input -> the pipeline's Reading, so FHIR takes the same road as HL7 v2 from
here on: mapping, dedup, store, rule pack, outputs.

``pipeline.read`` hands FHIR input (``fhir_request.looks_like_fhir``) to ``read_fhir``.
The Reading's header carries what dedup and the store need: sending application
``FHIR``, the sender (``meta.source``) as facility, the retransmit key as control id,
the resource type (and Bundle type) as message type, ``4.0.1`` as version.
"""

from __future__ import annotations

from prpgate.core.fhir_in import FhirInput, read_input
from prpgate.core.fhir_request import FhirRequest, unwrap
from prpgate.core.fhir_validate import Issue
from prpgate.core.fhir_verdicts import EntryKind
from prpgate.core.oru import Header
from prpgate.core.pipeline import (
    AckCode,
    Disposition,
    Engine,
    ErrorInfo,
    Reading,
    content_hash,
)

__all__ = ["FHIR_APPLICATION", "FHIR_VERSION", "fhir_header", "read_fhir", "reading_of"]

FHIR_APPLICATION = "FHIR"
FHIR_VERSION = "4.0.1"


def fhir_header(found: FhirInput) -> Header | None:
    """The dedup and bookkeeping header of a FHIR input; None when it is not a
    resource at all (then, as for bytes that are not HL7, nothing is deduplicated)."""
    if not found.resource_type:
        return None
    return Header(
        sending_application=FHIR_APPLICATION,
        sending_facility=found.facility,
        receiving_application="",
        receiving_facility="",
        timestamp="",
        message_type=found.resource_type,
        trigger_event=found.bundle_type,
        structure="",
        control_id=found.key,
        processing_id="",
        version=FHIR_VERSION,
        accept_ack_type="",
        application_ack_type="",
        charset="UTF-8",
        raw_sending_application="",
        raw_sending_facility="",
        raw_receiving_application="",
        raw_receiving_facility="",
    )


def _error(issue: Issue) -> ErrorInfo:
    return ErrorInfo(issue.code, issue.location, issue.reason)


def reading_of(raw: bytes, found: FhirInput, engine: Engine) -> Reading:
    """The Reading of an already read FHIR input (mapping applied)."""
    header = fhir_header(found)
    errors = tuple(_error(i) for i in found.errors)
    if found.rejected:
        return Reading(
            raw=raw,
            content_hash=found.content_hash,
            disposition=Disposition.REJECTED,
            ack=AckCode.AR,
            header=header,
            errors=errors,
            warnings=found.warnings,
        )
    results = tuple(engine.mapper.normalise(r) for r in found.results)
    accepted = not errors
    refused = tuple(
        _error(issue) for entry in found.entries if entry.kind in _REFUSED for issue in entry.issues
    )
    return Reading(
        raw=raw,
        content_hash=found.content_hash,
        disposition=Disposition.ACCEPTED if accepted else Disposition.ERROR,
        ack=AckCode.AA if accepted else AckCode.AE,
        header=header,
        results=results,
        patients=found.patients,
        errors=errors,
        warnings=found.warnings,
        refused_parts=refused if accepted else (),
    )


_REFUSED = frozenset({EntryKind.INVALID, EntryKind.FAILED, EntryKind.UNSUPPORTED})


def read_fhir(raw: bytes, engine: Engine) -> Reading:
    """Read and map one FHIR input. Never raises: every input gets a disposition.

    Accepted (AA): read, with or without results; error (AE): valid but cannot be
    processed (an Observation without a usable subject, a transaction entry likewise);
    rejected (AR): not JSON, not a resource prpgate takes here, invalid against R4B.
    """
    body = unwrap(raw).body  # the limit is on what was sent, not on the request record
    if len(body) > engine.max_message_bytes:
        too_long = Issue(
            "$",
            f"input of {len(body)} bytes is over the limit of {engine.max_message_bytes} bytes",
            100,
            "too-long",
        )
        found = FhirInput(FhirRequest(b""), content_hash(raw), errors=(too_long,), rejected=True)
        return reading_of(raw, found, engine)
    found = read_input(
        raw,
        system_base=engine.identifier_system_base,
        default_offset=engine.default_offset,
        max_entries=engine.max_bundle_entries,
    )
    return reading_of(raw, found, engine)
