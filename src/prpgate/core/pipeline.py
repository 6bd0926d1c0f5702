"""The pure pipeline: bytes -> Reading (parse, map) -> Outcome (evaluate, build).

Two steps, because the store must load the patients' state between them:

    reading = read(raw, engine)                       # parse + map, no state
    states = <store loads state for reading.needs()>
    outcome = evaluate(reading, states, engine, seq=message_id)

Neither step does I/O, reads a clock or logs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from prpgate.core import er7
from prpgate.core.build import (
    Deployment,
    Draft,
    draft_flag,
    draft_issue,
    issue_identifier,
    validate_draft,
)
from prpgate.core.explanation import explain_results, issue_detail
from prpgate.core.fhir_request import looks_like_fhir
from prpgate.core.model import (
    LabResult,
    Normalised,
    Patient,
    PatientId,
    ResultStatus,
    Unmapped,
    UnmappedReason,
)
from prpgate.core.oru import Header, Problem, read_header, read_oru
from prpgate.core.rules import PatientDecisions, Rule, decide
from prpgate.core.state import OutputKind, PatientState, StoredOutput
from prpgate.core.values import fast_init
from prpgate.errors import ParseError

__all__ = [
    "AckCode",
    "Disposition",
    "Emitted",
    "Engine",
    "ErrorInfo",
    "Needs",
    "Normaliser",
    "Outcome",
    "Reading",
    "content_hash",
    "evaluate",
    "read",
]


class AckCode(Enum):
    """HL7 original-mode acknowledgment codes (table 0008)."""

    AA = "AA"
    AE = "AE"
    AR = "AR"


class Disposition(Enum):
    """What became of one inbound message."""

    ACCEPTED = "accepted"
    ERROR = "error"  # structurally valid, cannot be processed (AE)
    REJECTED = "rejected"  # wrong type/version, unusable MSH, not HL7 (AR)
    DUPLICATE = "duplicate"  # retransmit of a committed message, not processed again


_ACCEPTED, _AA = Disposition.ACCEPTED, AckCode.AA  # read per message (see _ENTERED_IN_ERROR)


class Normaliser(Protocol):
    """The mapping layer as the pipeline sees it (``core.mapping.Mapper``)."""

    def normalise(self, result: LabResult) -> Normalised | Unmapped: ...


@dataclass(frozen=True, slots=True)
class Engine:
    """Everything the pure pipeline needs, built once at start-up from mappings/."""

    mapper: Normaliser
    rules_by_analyte: Mapping[str, tuple[Rule, ...]]
    deployment: Deployment
    charset_overrides: Mapping[str, str] = field(default_factory=dict)
    assigning_authorities: Mapping[str, str] = field(default_factory=dict)
    identifier_system_base: str = "urn:prpgate:assigning-authority"
    default_offset: str = "+00:00"
    max_message_bytes: int = 4 * 1024 * 1024
    max_bundle_entries: int = 5000


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why a message was not accepted: HL7 error code (table 0357) and location."""

    code: int
    location: str
    reason: str


@dataclass(frozen=True, slots=True)
class Needs:
    """The state a reading needs from the store, per patient key."""

    analytes: Mapping[str, frozenset[str]]
    result_keys: Mapping[str, frozenset[str]]


@dataclass(frozen=True, slots=True)
class Reading:
    """A message parsed and mapped, before any state is consulted."""

    raw: bytes
    content_hash: str
    disposition: Disposition
    ack: AckCode
    header: Header | None = None
    results: tuple[Normalised | Unmapped, ...] = ()
    patients: tuple[Patient, ...] = ()
    errors: tuple[ErrorInfo, ...] = ()
    warnings: tuple[str, ...] = ()
    # parts refused on their own while the input as a whole was accepted (an invalid
    # entry of a batch or collection Bundle: the other entries went on)
    refused_parts: tuple[ErrorInfo, ...] = ()

    @property
    def unmapped(self) -> tuple[Unmapped, ...]:
        """Results recorded without a normalised value for a reason someone must review
        (codes the mapping marks as not used are left out)."""
        return tuple(r for r in self.results if isinstance(r, Unmapped) and r.reason.is_problem)

    @property
    def not_used(self) -> tuple[Unmapped, ...]:
        """Results whose codes the mapping knows and the rule pack does not use."""
        return tuple(r for r in self.results if isinstance(r, Unmapped) and not r.reason.is_problem)

    def needs(self) -> Needs:
        """Which patients, analytes and result identities evaluation will look at."""
        if self.disposition is not _ACCEPTED:
            return Needs({}, {})
        analytes: dict[str, set[str]] = {}
        keys: dict[str, set[str]] = {}
        for r in self.results:
            pk = r.result.patient.identifier.key
            found = keys.get(pk)
            if found is None:
                found = keys[pk] = set()
                analytes[pk] = set()
            found.add(r.result.key.text)
            if r.analyte:
                analytes[pk].add(r.analyte)
        return Needs(
            analytes={k: frozenset(v) for k, v in analytes.items() if v},
            result_keys={k: frozenset(v) for k, v in keys.items()},
        )


@dataclass(frozen=True, slots=True)
class Emitted:
    """One output resource version to store and put in the outbox."""

    identifier: str
    kind: OutputKind
    patient_key: str
    rule: str
    result_key: str
    status: str
    resource: str
    version: int
    event: str  # "created" or "updated"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What evaluating a reading decided: state changes, emitted outputs, explanation."""

    decisions: tuple[PatientDecisions, ...]
    emitted: tuple[Emitted, ...]
    explanation: tuple[dict[str, Any], ...]


# members read per result, as module constants (see model.ResultStatus.is_deciding)
_ENTERED_IN_ERROR = ResultStatus.ENTERED_IN_ERROR
_NOT_NUMERIC = UnmappedReason.NOT_NUMERIC
_DETECTED_ISSUE, _FLAG = OutputKind.DETECTED_ISSUE, OutputKind.FLAG


def content_hash(raw: bytes) -> str:
    """SHA-256 of the message bytes with segment terminators normalised.

    A retransmit that differs only in line endings or MLLP framing is the same content.
    """
    body = raw
    if b"\n" in body:  # a scan; the replacements copy the message even when they change nothing
        body = body.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    return hashlib.sha256(body.strip(b"\r\x0b\x1c\x00 ")).hexdigest()


def _reject(raw: bytes, digest: str, exc: ParseError, header: Header | None) -> Reading:
    """Not HL7, unusable MSH, wrong type or version: rejected (AR), nothing processed."""
    err = ErrorInfo(exc.code, exc.location, exc.reason)
    return Reading(
        raw=raw,
        content_hash=digest,
        disposition=Disposition.REJECTED,
        ack=AckCode.AR,
        header=header,
        errors=(err,),
    )


def read(raw: bytes, engine: Engine) -> Reading:
    """Parse and map one message. Never raises: every input gets a disposition."""
    if looks_like_fhir(raw):
        # FHIR JSON or an HTTP request record; fhir_reading imports this module
        from prpgate.core.fhir_reading import read_fhir

        return read_fhir(raw, engine)
    digest = content_hash(raw)
    try:
        msg = er7.parse(
            raw, charset_overrides=engine.charset_overrides, max_bytes=engine.max_message_bytes
        )
    except ParseError as exc:
        return _reject(raw, digest, exc, None)
    try:
        oru = read_oru(
            msg,
            assigning_authorities=engine.assigning_authorities,
            identifier_system_base=engine.identifier_system_base,
            default_offset=engine.default_offset,
        )
    except ParseError as exc:
        try:
            header: Header | None = read_header(msg)
        except ParseError:
            header = None
        return _reject(raw, digest, exc, header)
    results = tuple(map(engine.mapper.normalise, oru.results))
    errors = [_problem_error(p) for p in oru.problems]
    for item in results:
        if (
            isinstance(item, Unmapped)
            and item.reason is _NOT_NUMERIC
            and item.result.value_type == "NM"
        ):
            errors.append(
                ErrorInfo(
                    102, f"{item.result.source}-5", f"NM value is not a number: {item.detail}"
                )
            )
    if errors:
        return Reading(
            raw=raw,
            content_hash=digest,
            disposition=Disposition.ERROR,
            ack=AckCode.AE,
            header=oru.header,
            results=results,
            patients=oru.patients,
            errors=tuple(errors),
            warnings=oru.warnings,
        )
    return Reading(
        raw=raw,
        content_hash=digest,
        disposition=_ACCEPTED,
        ack=_AA,
        header=oru.header,
        results=results,
        patients=oru.patients,
        warnings=oru.warnings,
    )


def _problem_error(p: Problem) -> ErrorInfo:
    return ErrorInfo(p.code, p.location, p.reason)


def evaluate(
    reading: Reading,
    states: Mapping[str, PatientState],
    engine: Engine,
    *,
    seq: int,
) -> Outcome:
    """Evaluate an accepted reading against the patients' stored state.

    ``seq`` is the store's arrival number for the message. Returns the state changes,
    the output resource versions that differ from what was stored, and an
    explanation record per judgement, unmapped result and output change.
    """
    if reading.disposition is not _ACCEPTED or reading.header is None:
        return Outcome((), (), ())
    control = reading.header.control_id
    by_patient: dict[str, list[Normalised | Unmapped]] = {}
    patients: dict[str, Patient] = {}
    for r in reading.results:
        who = r.result.patient
        pk = who.identifier.key
        group = by_patient.get(pk)
        if group is None:
            by_patient[pk] = [r]
            patients[pk] = who
        else:
            group.append(r)
    decisions: list[PatientDecisions] = []
    emitted: list[Emitted] = []
    explanation: list[dict[str, Any]] = []
    for pk, items in by_patient.items():
        normalised = [i for i in items if isinstance(i, Normalised)]
        retracted: list[Normalised | str] = [
            i if isinstance(i, Normalised) else i.result.key.text
            for i in items
            if i.result.status is _ENTERED_IN_ERROR
        ]
        state = states.get(pk) or PatientState(pk)
        d = decide(
            engine.rules_by_analyte,
            normalised,
            retracted,
            state,
            seq=seq,
            source=f"message {control}",
        )
        decisions.append(d)
        patient = patients[pk].identifier
        emitted.extend(_emit(d, state, engine.deployment, patient, control))
        explanation.extend(explain_results(items, d))
    explanation.extend(
        {
            "kind": "output",
            "resource": e.kind._value_,
            "identifier": e.identifier,
            "status": e.status,
            "rule": e.rule,
            "event": e.event,
            "result": e.result_key,
        }
        for e in emitted
    )
    return Outcome(tuple(decisions), tuple(emitted), tuple(explanation))


def _emit(
    d: PatientDecisions,
    state: PatientState,
    dep: Deployment,
    patient: PatientId,
    control: str,
) -> list[Emitted]:
    stored = {o.identifier: o for o in state.outputs}
    out: list[Emitted] = []
    issue_for_result: dict[tuple[str, str], str] = {}
    for change in d.issues:
        detail = issue_detail(change, control)
        identified = change.normalised.result.effective if change.normalised else ""
        ident, resource = draft_issue(
            dep, change, patient=patient, detail=detail, identified=identified
        )
        issue_for_result[(change.rule.id, change.result_key)] = ident
        e = _versioned(
            ident,
            _DETECTED_ISSUE,
            d.patient_key,
            change.rule.id,
            change.result_key,
            change.status,
            resource,
            stored.get(ident),
        )
        if e is not None:
            out.append(e)
    for flag in d.flags:
        ident_issue = ""
        if flag.decider is not None:
            ident_issue = issue_for_result.get((flag.rule.id, flag.decider.key), "")
            if not ident_issue:  # the issue of a stored result: not rebuilt by this message
                ident_issue = issue_identifier(d.patient_key, flag.rule.id, flag.decider.key)
        ident, resource = draft_flag(dep, flag, patient=patient, issue_ident=ident_issue)
        result_key = flag.decider.key if flag.decider else flag.trigger_key
        e = _versioned(
            ident,
            _FLAG,
            d.patient_key,
            flag.rule.id,
            result_key,
            flag.status,
            resource,
            stored.get(ident),
        )
        if e is not None:
            out.append(e)
    return out


def _versioned(
    ident: str,
    kind: OutputKind,
    patient_key: str,
    rule: str,
    result_key: str,
    status: str,
    draft: Draft,
    old: StoredOutput | None,
) -> Emitted | None:
    resource = draft.text
    if old is not None and old.resource == resource:
        return None  # nothing changed: a replay or retransmit emits nothing
    validate_draft(draft)  # only what leaves the core is validated
    version = 1 if old is None else old.version + 1
    event = "created" if old is None else "updated"
    return Emitted(ident, kind, patient_key, rule, result_key, status, resource, version, event)


fast_init(ErrorInfo, Needs, Reading, Emitted, Outcome)
