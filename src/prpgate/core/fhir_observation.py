"""One (validated) FHIR Observation -> LabResult values, one per value it carries.

* Identity (``ResultKey.order``): Observation.identifier (the first with a value),
  else the id (``Observation/<id>``), else the Bundle entry's fullUrl, else a hash of
  the resource. The code part is the coding read, so each component is its own result.
* Codes: every ``code.coding`` (system as sent: ``http://loinc.org`` is LOINC to the
  mapper). A component's codes are its own.
* Value: valueQuantity (the UCUM ``code`` when the system is UCUM, else ``unit``),
  its comparator; valueInteger; valueString as sent (``<5``, ``7.2``, read by the
  mapper like OBX-5 text); a dataAbsentReason leaves no value.
* Status, referenceRange (``low-high``), interpretation codes (H, L, HH, …: the same
  table as OBX-8), effective[x] (a Period's start), else ``issued``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from prpgate.core.fhir_request import canonical_hash, number_text
from prpgate.core.fhir_subject import NotFound, SubjectContext, resolve_subject
from prpgate.core.fhir_validate import Issue
from prpgate.core.json_shape import as_dict, as_list, as_str
from prpgate.core.model import Coding, LabResult, Patient, ResultKey, ResultStatus
from prpgate.core.timestamps import parse_ts

__all__ = ["ObservationContext", "ObservationRead", "fhir_sort_key", "read_observation"]

_UCUM = "http://unitsofmeasure.org"
_DATETIME = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


@dataclass(frozen=True, slots=True)
class ObservationContext:
    """What surrounds an Observation: its location (FHIRPath), the Bundle entry's
    fullUrl, the sender, fallbacks from a DiagnosticReport that lists it, and what
    its subject can resolve against."""

    where: str
    full_url: str
    facility: str
    subjects: SubjectContext
    default_offset: str = "+00:00"
    order_code: str = ""
    fallback_subject: object = None
    fallback_effective: str = ""


@dataclass(frozen=True, slots=True)
class ObservationRead:
    """The results read from one Observation; ``problem`` when none could be (no
    usable subject or code); ``warnings`` for things worth knowing."""

    results: tuple[LabResult, ...]
    patient: Patient | None
    problem: Issue | None = None
    warnings: tuple[str, ...] = ()


def fhir_sort_key(text: str, default_offset: str = "+00:00") -> str:
    """An order key for a FHIR date/dateTime/instant, comparable with the keys HL7 v2
    timestamps get (``core.timestamps``); '' when it cannot be read."""
    m = _DATETIME.match(text.strip())
    if m is None:
        return ""
    year, month, day, hour, minute, second, frac, tz = m.groups()
    ts = year + (month or "") + (day or "") + (hour or "") + (minute or "") + (second or "")
    if frac:
        ts += "." + frac[:4]
    if tz:
        ts += "+0000" if tz == "Z" else tz.replace(":", "")
    parsed = parse_ts(ts, default_offset=default_offset)
    return parsed.sort_key if parsed is not None else ""


def _codings(concept: object) -> tuple[Coding, ...]:
    out: list[Coding] = []
    for c in as_list(as_dict(concept).get("coding")):
        c = as_dict(c)
        code = as_str(c.get("code"))
        if code:
            out.append(Coding(as_str(c.get("system")), code, as_str(c.get("display"))))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class _Value:
    value_type: str
    text: str
    comparator: str = ""
    unit: str = ""
    unit_system: str = ""
    absent: str = ""


def _value(element: dict[str, Any]) -> _Value:
    """value[x] of an Observation or component."""
    if "valueQuantity" in element:
        q = as_dict(element["valueQuantity"])
        system, code, unit = as_str(q.get("system")), as_str(q.get("code")), as_str(q.get("unit"))
        spelling = code if (system == _UCUM and code) else (unit or code)
        return _Value(
            "NM", number_text(q.get("value")), as_str(q.get("comparator")), spelling, system
        )
    if "valueInteger" in element:
        return _Value("NM", number_text(element["valueInteger"]))
    if "valueString" in element:
        return _Value("ST", as_str(element["valueString"]))
    if "valueCodeableConcept" in element:
        cc = as_dict(element["valueCodeableConcept"])
        codes = _codings(cc)
        shown = as_str(cc.get("text")) or (codes[0].display or codes[0].code if codes else "")
        return _Value("CWE", shown)
    if "valueRange" in element:
        r = as_dict(element["valueRange"])
        low = number_text(as_dict(r.get("low")).get("value"))
        high = number_text(as_dict(r.get("high")).get("value"))
        return _Value("SN", f"{low}-{high}")
    if "valueRatio" in element:
        r = as_dict(element["valueRatio"])
        n = number_text(as_dict(r.get("numerator")).get("value"))
        d = number_text(as_dict(r.get("denominator")).get("value"))
        return _Value("SN", f"{n}:{d}")
    for key in ("valueBoolean", "valueDateTime", "valueTime", "valuePeriod", "valueSampledData"):
        if key in element:
            return _Value(key[5:], str(element[key]))
    absent = _codings(element.get("dataAbsentReason"))
    reason = (
        absent[0].code if absent else as_str(as_dict(element.get("dataAbsentReason")).get("text"))
    )
    return _Value("", "", absent=reason or "")


def _reference_range(element: dict[str, Any]) -> str:
    for rr in as_list(element.get("referenceRange")):
        rr = as_dict(rr)
        low = number_text(as_dict(rr.get("low")).get("value"))
        high = number_text(as_dict(rr.get("high")).get("value"))
        if low and high:
            return f"{low}-{high}"
        if low:
            return f">={low}"
        if high:
            return f"<={high}"
        if as_str(rr.get("text")):
            return as_str(rr.get("text"))
    return ""


def _interpretation(element: dict[str, Any]) -> tuple[str, ...]:
    flags: list[str] = []
    for cc in as_list(element.get("interpretation")):
        codes = _codings(cc)
        if codes:
            flags.extend(c.code for c in codes[:1])
        elif as_str(as_dict(cc).get("text")):
            flags.append(as_str(as_dict(cc).get("text")))
    return tuple(flags)


def _effective(obs: dict[str, Any], ctx: ObservationContext) -> str:
    for key in ("effectiveDateTime", "effectiveInstant"):
        if as_str(obs.get(key)):
            return as_str(obs.get(key))
    period = as_dict(obs.get("effectivePeriod"))
    if as_str(period.get("start")) or as_str(period.get("end")):
        return as_str(period.get("start")) or as_str(period.get("end"))
    return as_str(obs.get("issued")) or ctx.fallback_effective


def _identity(obs: dict[str, Any], ctx: ObservationContext) -> str:
    for ident in as_list(obs.get("identifier")):
        ident = as_dict(ident)
        if as_str(ident.get("value")):
            return f"Observation?identifier={as_str(ident.get('system'))}|{ident['value']}"
    if as_str(obs.get("id")):
        return f"Observation/{obs['id']}"
    if ctx.full_url:
        return ctx.full_url
    return f"sha256:{canonical_hash(obs)}"


def read_observation(obs: dict[str, Any], ctx: ObservationContext) -> ObservationRead:
    """Read one Observation (already valid against R4B) into LabResult values."""
    subject = obs.get("subject") if "subject" in obs else ctx.fallback_subject
    resolved = resolve_subject(subject, ctx.subjects)
    if isinstance(resolved, str):
        return ObservationRead((), None, Issue(f"{ctx.where}.subject", resolved, 101, "required"))
    if isinstance(resolved, NotFound):
        # HL7 table 0357 204 "unknown key identifier": the FHIR IssueType not-found
        issue = Issue(f"{ctx.where}.subject", resolved.reason, 204, "not-found")
        return ObservationRead((), None, issue)
    patient = resolved.patient
    warnings = [f"{ctx.where}.subject: {resolved.note}"] if resolved.note else []
    status_text = as_str(obs.get("status"))
    try:
        status = ResultStatus(status_text)
    except ValueError:
        status = ResultStatus.UNKNOWN
    facility = as_str(as_dict(obs.get("meta")).get("source")) or ctx.facility
    effective = _effective(obs, ctx)
    sort_key = fhir_sort_key(effective, ctx.default_offset) if effective else ""
    order = _identity(obs, ctx)
    elements: list[tuple[str, dict[str, Any], tuple[Coding, ...]]] = []
    codes = _codings(obs.get("code"))
    has_value = any(k.startswith("value") for k in obs) or "dataAbsentReason" in obs
    components = as_list(obs.get("component"))
    if has_value or not components:
        elements.append((ctx.where, obs, codes))
    for j, comp in enumerate(components):
        comp = as_dict(comp)
        elements.append((f"{ctx.where}.component[{j}]", comp, _codings(comp.get("code"))))
    results: list[LabResult] = []
    for where, element, element_codes in elements:
        if not element_codes:
            if element is obs:
                return ObservationRead(
                    (),
                    patient,
                    Issue(f"{where}.code", "Observation.code has no coding", 101, "required"),
                )
            warnings.append(f"{where}.code: component has no coding; not read")
            continue
        value = _value(element)
        if value.absent:
            warnings.append(f"{where}.dataAbsentReason: {value.absent}")
        primary = element_codes[0]
        results.append(
            LabResult(
                key=ResultKey(facility, order, f"{primary.system}^{primary.code}"),
                patient=patient,
                codes=element_codes,
                value_type=value.value_type,
                value_text=value.text,
                unit_text=value.unit,
                status=status,
                effective=effective,
                sending_facility=facility,
                source=where,
                comparator_text=value.comparator,
                unit_system=value.unit_system,
                reference_range=_reference_range(element),
                abnormal_flags=_interpretation(element),
                order_code=ctx.order_code,
                effective_sort=sort_key,
            )
        )
    return ObservationRead(tuple(results), patient, None, tuple(warnings))
