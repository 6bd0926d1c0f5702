"""Decisions -> FHIR R4 DetectedIssue and Flag resources (fhir.resources R4B models).

Resources are built as plain dicts in a fixed key order and serialised compactly,
so the same input always gives the same bytes; every version the pipeline emits is
validated with the R4B models first (``validate_resource``).
Nothing here reads a clock: every time in a resource comes from the input.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any

from fhir.resources.R4B.detectedissue import DetectedIssue
from fhir.resources.R4B.flag import Flag

from prpgate.core.fhir_check import ShapeChecker
from prpgate.core.json_text import compact, interleave
from prpgate.core.model import Coding, Normalised, PatientId
from prpgate.core.rules import FlagChange, IssueChange
from prpgate.errors import BuildError

__all__ = [
    "BuildError",
    "Deployment",
    "Draft",
    "build_flag",
    "build_issue",
    "draft_flag",
    "draft_issue",
    "flag_identifier",
    "issue_identifier",
    "resource_id",
    "validate_draft",
    "validate_resource",
]

_LOINC_SYSTEMS = {"LN", "LOINC", "HTTP://LOINC.ORG", "2.16.840.1.113883.6.1"}
_FLAG_CATEGORY = "http://terminology.hl7.org/CodeSystem/flag-category"
_FLAG_DETAIL = "http://hl7.org/fhir/StructureDefinition/flag-detail"


@dataclass(frozen=True, slots=True)
class Deployment:
    """The deployment's own systems and the standard coding for a lab alert.

    ``identifier_system`` is the base URI of output identifiers;
    ``rule_code_system`` the system of rule codes (the rule id is the code);
    ``issue_coding`` the standard DetectedIssue.code coding (v3 ActCode LAB).
    """

    identifier_system: str
    rule_code_system: str
    issue_coding: Coding


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def issue_identifier(patient_key: str, rule_id: str, result_key: str) -> str:
    """Identifier value of the DetectedIssue for (patient, rule, source result)."""
    return _digest("DetectedIssue", patient_key, rule_id, result_key)


def flag_identifier(patient_key: str, rule_id: str) -> str:
    """Identifier value of the patient's Flag for a rule (one per patient and rule)."""
    return _digest("Flag", patient_key, rule_id)


def resource_id(kind: str, identifier: str) -> str:
    """Deterministic logical id for client-assigned-id writes (FHIR id: <= 64 chars)."""
    prefix = "prp-di-" if kind == "DetectedIssue" else "prp-flag-"
    return prefix + identifier


# A memo of what the R4B models said about each shape of output (see core/fhir_check.py).
_CHECKER = ShapeChecker({"DetectedIssue": DetectedIssue, "Flag": Flag})


def validate_draft(draft: Draft) -> None:
    """Validate a built resource like ``validate_resource``; a composed one by its
    value slots once its parts are known (``ShapeChecker.check_composed``)."""
    if draft.parts:
        _CHECKER.check_composed(draft.parts, draft.values)
    else:
        _CHECKER.check(draft.text)


def validate_resource(resource_json: str) -> None:
    """Validate an emitted resource against its fhir.resources R4B model.

    The pipeline calls this for every resource version it emits (one that differs
    from what the store holds) before it goes to the outbox: in full with the model
    the first time a shape of resource is seen, then value by value with the R4B
    primitive types (``ShapeChecker``). Raises BuildError.
    """
    _CHECKER.check(resource_json)


# Resources are written as compact JSON text directly: the parts a rule or a
# deployment fixes are encoded once (``_fragments``), the values of one decision are
# quoted with the encoder's own string function, in the key order ``compact`` would
# write them. The result is exactly ``compact`` of the resource (tests/unit/test_build.py).
_q = encode_basestring


@dataclass(frozen=True, slots=True)
class _Fragments:
    """JSON fragments one (deployment, rule) always writes the same way."""

    issue_code: str
    flag_code: str
    issue_system: str  # quoted identifier system of DetectedIssues
    flag_system: str
    result_system: str


_FRAGMENTS: dict[tuple[Deployment, str, str, str], _Fragments] = {}


def _fragments(dep: Deployment, rule_id: str, display: str, flag_text: str) -> _Fragments:
    key = (dep, rule_id, display, flag_text)
    found = _FRAGMENTS.get(key)
    if found is None:
        rule_coding = {"system": dep.rule_code_system, "code": rule_id, "display": display}
        found = _Fragments(
            issue_code=compact(
                {"coding": [_coding(dep.issue_coding), rule_coding], "text": display}
            ),
            flag_code=compact({"coding": [rule_coding], "text": flag_text}),
            issue_system=_q(f"{dep.identifier_system}/detected-issue"),
            flag_system=_q(f"{dep.identifier_system}/flag"),
            result_system=_q(f"{dep.identifier_system}/lab-result"),
        )
        if len(_FRAGMENTS) > 4096:  # one entry per rule and deployment; a bound for safety
            _FRAGMENTS.clear()
        _FRAGMENTS[key] = found
    return found


_FLAG_CATEGORY_JSON = compact(
    [{"coding": [{"system": _FLAG_CATEGORY, "code": "lab", "display": "Lab"}]}]
)


def _coding(c: Coding) -> dict[str, str]:
    out = {"system": c.system, "code": c.code}
    if c.display:
        out["display"] = c.display
    return out


@dataclass(frozen=True, slots=True)
class Draft:
    """A resource's compact JSON text and how it was composed: ``text`` is
    ``interleave(parts, values)``; ``parts`` is empty for text built another way.
    ``validate_draft`` checks it."""

    text: str
    parts: tuple[str, ...]
    values: tuple[str, ...]


class _Composer:
    """Collects the fixed JSON text and the string values of one resource, in order."""

    __slots__ = ("_fixed", "parts", "values")

    def __init__(self, fixed: str) -> None:
        self._fixed = [fixed]
        self.parts: list[str] = []
        self.values: list[str] = []

    def fixed(self, text: str) -> None:
        self._fixed.append(text)

    def value(self, value: str) -> None:
        self.parts.append("".join(self._fixed))
        self._fixed = []
        self.values.append(value)

    def draft(self) -> Draft:
        parts = (*self.parts, "".join(self._fixed))
        return Draft(interleave(parts, self.values), parts, tuple(self.values))


def _patient_ref(c: _Composer, patient: PatientId) -> None:
    c.fixed('{"identifier":{"system":')
    c.value(patient.system)
    c.fixed(',"value":')
    c.value(patient.value)
    c.fixed("}}")


def _result_ref(c: _Composer, frags: _Fragments, n: Normalised) -> None:
    r = n.result
    unit = f" {r.unit_text}" if r.unit_text else ""
    c.fixed(f'{{"identifier":{{"system":{frags.result_system},"value":')
    c.value(r.key.text)
    c.fixed('},"display":')
    c.value(f"{n.analyte} {r.comparator_text}{r.value_text}{unit}".strip())
    c.fixed("}")


def _evidence_code(c: _Composer, n: Normalised) -> None:
    loinc = [x for x in n.result.codes if x.system.upper() in _LOINC_SYSTEMS]
    chosen = loinc[0] if loinc else n.result.codes[0]
    system = "http://loinc.org" if loinc else chosen.system
    c.fixed('[{"coding":[{')
    if system:
        c.fixed('"system":')
        c.value(system)
        c.fixed(',"code":')
    else:
        c.fixed('"code":')
    c.value(chosen.code)
    if chosen.display:
        c.fixed(',"display":')
        c.value(chosen.display)
    c.fixed("}]}]")


def build_issue(
    dep: Deployment,
    change: IssueChange,
    *,
    patient: PatientId,
    detail: str,
    identified: str,
) -> tuple[str, str]:
    """Build (identifier, JSON) of the DetectedIssue a change asks for (see ``draft_issue``)."""
    ident, draft = draft_issue(dep, change, patient=patient, detail=detail, identified=identified)
    return ident, draft.text


def draft_issue(
    dep: Deployment,
    change: IssueChange,
    *,
    patient: PatientId,
    detail: str,
    identified: str,
) -> tuple[str, Draft]:
    """Build (identifier, draft) of the DetectedIssue a change asks for.

    A retraction (``status`` entered-in-error) keeps the stored resource and changes
    only its status; a final issue is built from the judgement. The pipeline
    validates what it emits with ``validate_draft``.
    """
    if change.status == "entered-in-error" and change.existing is not None:
        retracted: dict[str, Any] = json.loads(change.existing.resource)
        retracted["status"] = "entered-in-error"
        return change.existing.identifier, Draft(compact(retracted), (), ())
    assert change.judgement is not None
    assert change.normalised is not None
    j, n, rule = change.judgement, change.normalised, change.rule
    assert j.severity is not None
    frags = _fragments(dep, rule.id, rule.display, rule.flag_text)
    ident = issue_identifier(patient.key, rule.id, change.result_key)
    c = _Composer('{"resourceType":"DetectedIssue","id":')
    c.value(resource_id("DetectedIssue", ident))
    c.fixed(f',"identifier":[{{"system":{frags.issue_system},"value":')
    c.value(ident)
    c.fixed(f'}}],"status":"final","code":{frags.issue_code},"severity":')
    c.value(j.severity.value)
    c.fixed(',"patient":')
    _patient_ref(c, patient)
    if identified:
        c.fixed(',"identifiedDateTime":')
        c.value(identified)
    c.fixed(',"implicated":[')
    _result_ref(c, frags, n)
    c.fixed('],"evidence":[{"code":')
    _evidence_code(c, n)
    c.fixed(',"detail":[')
    _result_ref(c, frags, n)
    c.fixed(']}],"detail":')
    c.value(detail)
    c.fixed("}")
    return ident, c.draft()


def build_flag(
    dep: Deployment,
    change: FlagChange,
    *,
    patient: PatientId,
    issue_ident: str,
) -> tuple[str, str]:
    """Build (identifier, JSON) of the patient's Flag for a rule (see ``draft_flag``)."""
    ident, draft = draft_flag(dep, change, patient=patient, issue_ident=issue_ident)
    return ident, draft.text


def draft_flag(
    dep: Deployment,
    change: FlagChange,
    *,
    patient: PatientId,
    issue_ident: str,
) -> tuple[str, Draft]:
    """Build (identifier, draft) of the patient's Flag for a rule after a state change.

    Activation writes a fresh period starting at ``change.since`` and points
    flag-detail at the DetectedIssue ``issue_ident``; deactivation keeps the stored
    Flag and sets ``status`` inactive and ``period.end``.
    """
    rule = change.rule
    ident = flag_identifier(patient.key, rule.id)
    if change.status == "inactive":
        assert change.existing is not None
        resource = json.loads(change.existing.resource)
        resource["status"] = "inactive"
        period = resource.setdefault("period", {})
        if change.since:
            period["end"] = change.since
        return change.existing.identifier, Draft(compact(resource), (), ())
    frags = _fragments(dep, rule.id, rule.display, rule.flag_text)
    c = _Composer('{"resourceType":"Flag","id":')
    c.value(resource_id("Flag", ident))
    c.fixed(
        f',"extension":[{{"url":{_q(_FLAG_DETAIL)},"valueReference":{{"identifier":'
        f'{{"system":{frags.issue_system},"value":'
    )
    c.value(issue_ident)
    c.fixed(f'}},"type":"DetectedIssue"}}}}],"identifier":[{{"system":{frags.flag_system},"value":')
    c.value(ident)
    c.fixed(f'}}],"status":"active","category":{_FLAG_CATEGORY_JSON},"code":{frags.flag_code},')
    c.fixed('"subject":')
    _patient_ref(c, patient)
    if change.since:
        c.fixed(',"period":{"start":')
        c.value(change.since)
        c.fixed("}")
    c.fixed("}")
    return ident, c.draft()
