"""Observation.subject -> the Patient value the pipeline keys state and outputs by.

Resolution order: a contained Patient (``#p1``); a Patient elsewhere in the same
Bundle (by ``fullUrl``, ``urn:uuid:…``, or ``Patient/<id>``); the reference's own
``identifier``; else the reference text itself.

Identity agrees with HL7 v2 when the identifiers agree: HL7 v2 makes
``PatientId.system`` a URI from PID-3's assigning authority (``urn:oid:…`` for an ISO
universal id, the URI senders.yaml maps a namespace to); FHIR carries that URI in
``Identifier.system``. The primary identifier is the one typed ``MR`` (v2-0203),
else the first, as for PID-3. An identifier without a system is scoped to the
sender, as an HL7 v2 MRN without an assigning authority is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from prpgate.core.json_shape import as_list
from prpgate.core.model import Patient, PatientId

__all__ = ["NotFound", "Resolved", "SubjectContext", "patient_from_resource", "resolve_subject"]


@dataclass(frozen=True, slots=True)
class SubjectContext:
    """What a reference can resolve against: the resources contained in the
    Observation (and in a DiagnosticReport holding it), the Bundle's resources by
    fullUrl and by ``Type/id``, and how identifiers without a system are scoped."""

    contained: Mapping[str, dict[str, Any]]
    bundle: Mapping[str, dict[str, Any]]
    system_base: str
    facility: str


@dataclass(frozen=True, slots=True)
class Resolved:
    """A subject resolved to a patient, with a note when the identity is weak."""

    patient: Patient
    note: str = ""


@dataclass(frozen=True, slots=True)
class NotFound:
    """A subject whose reference must resolve inside the input (``#id`` to a contained
    resource, ``urn:uuid:``/``urn:oid:`` to a Bundle entry's fullUrl) and resolves to
    nothing, with no identifier beside it: a reference that goes nowhere."""

    reason: str


def _scope(system: str, ctx: SubjectContext) -> str:
    if system:
        return system
    return f"{ctx.system_base}/facility/{quote(ctx.facility, safe='')}"


def _type_code(identifier: dict[str, Any]) -> str:
    itype = identifier.get("type")
    codings = as_list(itype.get("coding")) if isinstance(itype, dict) else []
    for c in codings:
        if isinstance(c, dict) and isinstance(c.get("code"), str):
            return str(c["code"])
    return ""


def _identifier(identifier: object, ctx: SubjectContext) -> PatientId | None:
    if not isinstance(identifier, dict):
        return None
    value = identifier.get("value")
    if not isinstance(value, str) or not value:
        return None
    system = identifier.get("system")
    return PatientId(
        _scope(system if isinstance(system, str) else "", ctx), value, _type_code(identifier)
    )


def patient_from_resource(resource: dict[str, Any], ctx: SubjectContext) -> Patient | None:
    """A Patient resource's identity (MR identifier, else the first), name, birth date
    and gender; None when it has no usable identifier."""
    ids = [i for i in (_identifier(x, ctx) for x in as_list(resource.get("identifier"))) if i]
    if not ids:
        return None
    primary = next((i for i in ids if i.type_code == "MR"), ids[0])
    others = tuple(i for i in ids if i is not primary)
    name = ""
    for n in as_list(resource.get("name")):
        if isinstance(n, dict):
            given = " ".join(g for g in as_list(n.get("given")) if isinstance(g, str))
            family = n.get("family") if isinstance(n.get("family"), str) else ""
            name = " ".join(p for p in (given, family) if p) or str(n.get("text") or "")
            break
    birth = resource.get("birthDate")
    gender = resource.get("gender")
    return Patient(
        primary,
        others,
        name,
        birth if isinstance(birth, str) else "",
        gender if isinstance(gender, str) else "",
    )


def resolve_subject(subject: object, ctx: SubjectContext) -> Resolved | NotFound | str:
    """Resolve Observation.subject; returns a Resolved patient, NotFound for a local
    reference that resolves to nothing, or why not (text)."""
    if not isinstance(subject, dict):
        return "the Observation has no subject"
    ref = subject.get("reference")
    ref = ref if isinstance(ref, str) else ""
    rtype = subject.get("type")
    if ref:
        target = _target(ref, ctx)
        if target is not None:
            if target.get("resourceType") != "Patient":
                return f"subject {ref} is a {target.get('resourceType')}, not a Patient"
            patient = patient_from_resource(target, ctx)
            if patient is not None:
                return Resolved(patient)
        elif _is_local(ref) and _identifier(subject.get("identifier"), ctx) is None:
            where = "contained resource" if ref.startswith("#") else "Bundle entry (fullUrl)"
            return NotFound(f"subject {ref} resolves to nothing: there is no such {where}")
        elif not _is_patient_ref(ref, rtype):
            return f"subject {ref} is not a Patient reference"
    elif isinstance(rtype, str) and rtype and rtype != "Patient":
        return f"subject is a {rtype}, not a Patient"
    logical = _identifier(subject.get("identifier"), ctx)
    if logical is not None:
        return Resolved(Patient(logical))
    if ref and not ref.startswith("#"):
        # Only a literal reference to a Patient prpgate does not hold: that reference is
        # the patient's identity (the same reference always maps to the same patient).
        identity = PatientId(f"{ctx.system_base}/reference", ref)
        return Resolved(Patient(identity), f"subject {ref} is known only by its reference")
    if ref:
        return f"subject {ref} names no contained Patient with an identifier"
    return "the Observation's subject has neither a reference nor an identifier"


def _is_local(ref: str) -> bool:
    """A reference that can only resolve inside the input itself."""
    return ref.startswith(("#", "urn:uuid:", "urn:oid:"))


def _is_patient_ref(ref: str, rtype: object) -> bool:
    if rtype == "Patient":
        return True
    path = ref.split("/_history/", 1)[0].rstrip("/")
    parts = path.split("/")
    return len(parts) >= 2 and parts[-2] == "Patient"


def _target(ref: str, ctx: SubjectContext) -> dict[str, Any] | None:
    if ref.startswith("#"):
        return ctx.contained.get(ref[1:])
    found = ctx.bundle.get(ref)
    if found is not None:
        return found
    # A relative reference resolves against the Bundle's Type/id; a versioned one too
    path = ref.split("/_history/", 1)[0]
    parts = path.rstrip("/").split("/")
    if len(parts) >= 2:
        return ctx.bundle.get(f"{parts[-2]}/{parts[-1]}")
    return None
