"""FHIR R4 resources checked with the fhir.resources R4B models, problems located in
FHIRPath terms (``Observation.referenceRange[0].low.value``).

The R4B models check structure, cardinality and primitive formats; they do not check
required code bindings, so the codes this adapter acts on (Observation.status,
Bundle.type) are checked here against their value sets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fhir.resources.R4B.bundle import Bundle, BundleEntry
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from pydantic import ValidationError

__all__ = [
    "BUNDLE_TYPES",
    "DIAGNOSTIC_REPORT_STATUSES",
    "OBSERVATION_STATUSES",
    "Issue",
    "validate",
    "validate_entry",
]

# Required bindings (R4): ObservationStatus, DiagnosticReportStatus, BundleType.
OBSERVATION_STATUSES = frozenset(
    {
        "registered",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "cancelled",
        "entered-in-error",
        "unknown",
    }
)
DIAGNOSTIC_REPORT_STATUSES = frozenset(
    {
        "registered",
        "partial",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "appended",
        "cancelled",
        "entered-in-error",
        "unknown",
    }
)
BUNDLE_TYPES = frozenset(
    {
        "document",
        "message",
        "transaction",
        "transaction-response",
        "batch",
        "batch-response",
        "history",
        "searchset",
        "collection",
    }
)

_MODELS: dict[str, Any] = {
    "Observation": Observation,
    "DiagnosticReport": DiagnosticReport,
    "Patient": Patient,
    "Bundle": Bundle,
}
_STATUS_SETS = {
    "Observation": OBSERVATION_STATUSES,
    "DiagnosticReport": DIAGNOSTIC_REPORT_STATUSES,
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INTERNAL = frozenset({"__root__", "root"})


@dataclass(frozen=True, slots=True)
class Issue:
    """A problem with FHIR input.

    ``location`` is FHIRPath-like (``Bundle.entry[2].resource.valueQuantity.value``,
    or ``line 3, column 7`` for JSON that does not parse); ``code`` an HL7 table 0357
    error code, as every stored error carries (100 structure, 101 required element
    missing, 102 value, 200 unsupported input type, 207 internal); ``issue_type`` the
    FHIR IssueType code for an OperationOutcome.
    """

    location: str
    reason: str
    code: int = 102
    issue_type: str = "value"


def validate(resource: dict[str, Any], path: str) -> list[Issue]:
    """Check one resource (Observation, DiagnosticReport, Patient or a Bundle's own
    elements) with its R4B model; ``path`` is where it sits (``Observation``,
    ``Bundle.entry[3].resource``). Returns the problems found (empty: valid).

    For a Bundle pass it without entry resources: those are checked one by one.
    """
    rtype = str(resource.get("resourceType", ""))
    model = _MODELS.get(rtype)
    if model is None:
        return [
            Issue(
                path,
                f"{rtype or 'input'} is not a resource this adapter reads",
                200,
                "not-supported",
            )
        ]
    issues: list[Issue] = []
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        for err in exc.errors():
            issues.append(_issue(path, err))
    except (ValueError, TypeError, LookupError, RecursionError) as exc:
        # fhir.resources' own checks outside pydantic's (an unknown resourceType in
        # contained raises KeyError from its model lookup)
        why = (
            f"a resource of an unknown type inside it ({exc})"
            if isinstance(exc, LookupError)
            else exc
        )
        issues.append(Issue(path, f"invalid {rtype}: {why}", 100, "structure"))
    allowed = _STATUS_SETS.get(rtype)
    status = resource.get("status")
    if allowed is not None and isinstance(status, str) and status not in allowed:
        issues.append(
            Issue(
                f"{path}.status",
                f"status {status!r} is not in the required value set "
                f"({', '.join(sorted(allowed))})",
                103,
                "code-invalid",
            )
        )
    btype = resource.get("type")
    if rtype == "Bundle" and isinstance(btype, str) and btype not in BUNDLE_TYPES:
        issues.append(
            Issue(
                f"{path}.type", f"Bundle.type {btype!r} is not a Bundle type", 103, "code-invalid"
            )
        )
    return issues


def validate_entry(entry: object, path: str) -> list[Issue]:
    """Check one Bundle.entry's own elements (fullUrl, request, response; pass it
    without its resource) with the R4B BundleEntry model."""
    if not isinstance(entry, dict):
        return [Issue(path, "a Bundle entry must be a JSON object", 100, "structure")]
    try:
        BundleEntry.model_validate(entry)
    except ValidationError as exc:
        return [_issue(path, err) for err in exc.errors()]
    except (ValueError, TypeError, LookupError, RecursionError) as exc:
        return [Issue(path, f"invalid Bundle entry: {type(exc).__name__} {exc}", 100, "structure")]
    return []


def _issue(path: str, err: Any) -> Issue:
    """One pydantic error as an Issue; the message only, never the input value (it may
    be patient data)."""
    where = _fhirpath(path, err.get("loc", ()))
    kind = str(err.get("type", ""))
    msg = str(err.get("msg", "invalid value"))
    if kind == "missing" or kind.endswith(".missing"):
        return Issue(where, msg, 101, "required")
    if kind == "extra_forbidden":
        return Issue(where, "unknown element (not in the R4 definition)", 100, "structure")
    if "resource-type" in kind or "resource_type" in kind:
        return Issue(
            where,
            "unexpected resourceType: this element is not a resource (a Bundle entry holds "
            "its resource in entry.resource)",
            100,
            "structure",
        )
    return Issue(where, msg, 102, "value")


def _fhirpath(path: str, loc: tuple[Any, ...]) -> str:
    out = path
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "resource_type":
            out += ".resourceType"
        elif isinstance(part, str) and _NAME.match(part) and part not in _INTERNAL:
            out += f".{part}"
        # pydantic's internal parts (validator names, union branches, a model's root
        # value) are left out: no R4 element is named "root"
    return out
