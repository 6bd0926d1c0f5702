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
from prpgate.core.model import Coding, PatientId
from prpgate.core.rules import FlagChange, IssueChange, Rule
from prpgate.core.values import fast_init
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
# deployment fixes are encoded once per layout (``_Template``), the values of one
# decision are quoted with the encoder's own string function, in the key order
# ``compact`` would write them. The result is exactly ``compact`` of the resource
# (tests/unit/test_build.py); the fixed parts also let the R4B check learn a layout
# once and then validate only the values (``validate_draft``).
_q = encode_basestring


@dataclass(frozen=True, slots=True)
class _Fragments:
    """JSON fragments one (deployment, rule) always writes the same way, and the
    templates of its resources (built on first use, one per layout)."""

    issue_code: str
    flag_code: str
    issue_system: str  # quoted identifier system of DetectedIssues
    flag_system: str
    result_system: str
    templates: dict[tuple[str, bool, bool, bool], _Template]


# by the identity of the deployment and rule objects (an engine's own, made once at
# start): hashing the frozen dataclasses field by field on every output cost more than
# composing the resource. The entry keeps both objects, so an id is never reused.
_FRAGMENTS: dict[tuple[int, int], tuple[Deployment, Rule, _Fragments]] = {}


def _fragments(dep: Deployment, rule: Rule) -> _Fragments:
    found = _FRAGMENTS.get((id(dep), id(rule)))
    if found is not None and found[0] is dep and found[1] is rule:
        return found[2]
    rule_coding = {"system": dep.rule_code_system, "code": rule.id, "display": rule.display}
    frags = _Fragments(
        issue_code=compact(
            {"coding": [_coding(dep.issue_coding), rule_coding], "text": rule.display}
        ),
        flag_code=compact({"coding": [rule_coding], "text": rule.flag_text}),
        issue_system=_q(f"{dep.identifier_system}/detected-issue"),
        flag_system=_q(f"{dep.identifier_system}/flag"),
        result_system=_q(f"{dep.identifier_system}/lab-result"),
        templates={},
    )
    if len(_FRAGMENTS) > 4096:  # one entry per rule and deployment; a bound for safety
        _FRAGMENTS.clear()
    _FRAGMENTS[(id(dep), id(rule))] = (dep, rule, frags)
    return frags


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


@dataclass(frozen=True, slots=True)
class _Template:
    """The fixed JSON text of one resource layout, between its string values."""

    parts: tuple[str, ...]

    @classmethod
    def of(cls, spec: list[str | None]) -> _Template:
        """From a layout: fixed text, with None where a string value goes."""
        parts: list[str] = []
        fixed: list[str] = []
        for piece in spec:
            if piece is None:
                parts.append("".join(fixed))
                fixed = []
            else:
                fixed.append(piece)
        parts.append("".join(fixed))
        return cls(tuple(parts))

    def draft(self, values: tuple[str, ...]) -> Draft:
        return Draft(interleave(self.parts, values), self.parts, values)


# The layouts. Each None is one string value; the values tuples of draft_issue and
# draft_flag give them in the same order (tests/unit/test_build.py parses the result).
_V = None


def _issue_layout(
    frags: _Fragments, identified: bool, system: bool, display: bool
) -> list[str | None]:
    ref = ['{"identifier":{"system":', frags.result_system, ',"value":', _V]
    ref += ['},"display":', _V, "}"]
    return [
        '{"resourceType":"DetectedIssue","id":', _V,
        ',"identifier":[{"system":', frags.issue_system, ',"value":', _V,
        '}],"status":"final","code":', frags.issue_code, ',"severity":', _V,
        ',"patient":{"identifier":{"system":', _V, ',"value":', _V, "}}",
        *([',"identifiedDateTime":', _V] if identified else []),
        ',"implicated":[', *ref,
        '],"evidence":[{"code":[{"coding":[{',
        *(['"system":', _V, ","] if system else []),
        '"code":', _V,
        *([',"display":', _V] if display else []),
        '}]}],"detail":[', *ref,
        ']}],"detail":', _V, "}",
    ]  # fmt: skip


def _flag_layout(frags: _Fragments, period: bool) -> list[str | None]:
    return [
        '{"resourceType":"Flag","id":', _V,
        ',"extension":[{"url":', _q(_FLAG_DETAIL), ',"valueReference":{"identifier":',
        '{"system":', frags.issue_system, ',"value":', _V, '},"type":"DetectedIssue"}}],',
        '"identifier":[{"system":', frags.flag_system, ',"value":', _V,
        '}],"status":"active","category":', _FLAG_CATEGORY_JSON, ',"code":', frags.flag_code,
        ',"subject":{"identifier":{"system":', _V, ',"value":', _V, "}}",
        *([',"period":{"start":', _V, "}"] if period else []),
        "}",
    ]  # fmt: skip


def _template(frags: _Fragments, key: tuple[str, bool, bool, bool]) -> _Template:
    found = frags.templates.get(key)
    if found is None:
        kind, a, b, c = key
        layout = _issue_layout(frags, a, b, c) if kind == "issue" else _flag_layout(frags, a)
        found = frags.templates[key] = _Template.of(layout)
    return found


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
    frags = _fragments(dep, rule)
    ident = issue_identifier(patient.key, rule.id, change.result_key)
    r = n.result
    unit = f" {r.unit_text}" if r.unit_text else ""
    ref = (r.key.text, f"{n.analyte} {r.comparator_text}{r.value_text}{unit}".strip())
    loinc = [x for x in r.codes if x.system.upper() in _LOINC_SYSTEMS]
    chosen = loinc[0] if loinc else r.codes[0]
    system = "http://loinc.org" if loinc else chosen.system
    layout = ("issue", bool(identified), bool(system), bool(chosen.display))
    values = (
        resource_id("DetectedIssue", ident),
        ident,
        j.severity._value_,
        patient.system,
        patient.value,
        *((identified,) if identified else ()),
        *ref,
        *((system,) if system else ()),
        chosen.code,
        *((chosen.display,) if chosen.display else ()),
        *ref,
        detail,
    )
    return ident, _template(frags, layout).draft(values)


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
    frags = _fragments(dep, rule)
    since = change.since
    values = (
        resource_id("Flag", ident),
        issue_ident,
        ident,
        patient.system,
        patient.value,
        *((since,) if since else ()),
    )
    return ident, _template(frags, ("flag", bool(since), False, False)).draft(values)


fast_init(Draft)
