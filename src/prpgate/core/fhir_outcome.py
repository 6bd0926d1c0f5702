"""What a FHIR client is answered: HTTP status, OperationOutcome, and the per-entry
responses of a transaction-response or batch-response Bundle.

The FHIR counterpart of ``core.ack``: the pipeline's disposition and errors (HL7 table
0357 codes, FHIRPath locations) become an HTTP status and OperationOutcome issues:

* accepted: 201 Created (a Bundle: 200 with the response Bundle);
* a retransmit of a committed input: 200 OK, the first answer's status kept in the
  OperationOutcome, nothing processed again;
* rejected as not a resource this endpoint takes (wrong type): 422;
* rejected otherwise (malformed JSON, invalid against R4B): 400;
* valid but cannot be processed (no usable subject, …): 422.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from prpgate.core.fhir_in import EntryKind, EntryVerdict
from prpgate.core.pipeline import Disposition, ErrorInfo

__all__ = [
    "REASONS",
    "OutcomeIssue",
    "entry_response",
    "http_status",
    "issue_type",
    "issues_of",
    "operation_outcome",
]

# HL7 table 0357 code -> FHIR IssueType
_ISSUE_TYPES = {
    100: "structure",
    101: "required",
    102: "value",
    103: "code-invalid",
    200: "not-supported",
    201: "not-supported",
    203: "not-supported",
    204: "not-found",  # unknown key identifier: a reference that resolves to nothing
    207: "exception",
}
_NOT_SUPPORTED = frozenset({200, 201, 203})

REASONS = {
    200: "OK",
    201: "Created",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class OutcomeIssue:
    """One OperationOutcome.issue: severity (fatal, error, warning, information), FHIR
    IssueType code, diagnostics text and an optional FHIRPath location."""

    severity: str
    code: str
    diagnostics: str
    location: str = ""


def issue_type(hl7_code: int) -> str:
    """The FHIR IssueType for an HL7 table 0357 error code."""
    return _ISSUE_TYPES.get(hl7_code, "processing")


def issues_of(errors: Iterable[ErrorInfo], severity: str = "error") -> list[OutcomeIssue]:
    """Stored errors as OperationOutcome issues (JSON locations such as ``line 3,
    column 7`` are diagnostics, not FHIRPath, and go there)."""
    out: list[OutcomeIssue] = []
    for e in errors:
        fhirpath = e.location and not e.location.startswith(("line ", "byte ", "$"))
        text = e.reason if fhirpath else f"{e.reason} ({e.location})" if e.location else e.reason
        out.append(OutcomeIssue(severity, issue_type(e.code), text, e.location if fhirpath else ""))
    return out


def operation_outcome(issues: Sequence[OutcomeIssue]) -> dict[str, Any]:
    """An OperationOutcome resource (as a dict) with the issues, in order; one
    informational issue when there are none (an OperationOutcome needs an issue)."""
    items = issues or [OutcomeIssue("information", "informational", "all OK")]
    rendered: list[dict[str, Any]] = []
    for i in items:
        issue: dict[str, Any] = {"severity": i.severity, "code": i.code}
        if i.diagnostics:
            issue["diagnostics"] = i.diagnostics
        if i.location:
            issue["location"] = [i.location]
            issue["expression"] = [i.location]
        rendered.append(issue)
    return {"resourceType": "OperationOutcome", "issue": rendered}


def http_status(disposition: Disposition, errors: Sequence[ErrorInfo]) -> int:
    """The status for a committed input's disposition (a duplicate: 200)."""
    if disposition is Disposition.ACCEPTED:
        return 201
    if disposition is Disposition.DUPLICATE:
        return 200
    if disposition is Disposition.REJECTED:
        if any(e.code in _NOT_SUPPORTED for e in errors):
            return 422
        return 400
    return 422


def _status_line(code: int) -> str:
    return f"{code} {REASONS.get(code, '')}".strip()


def entry_response(verdict: EntryVerdict) -> dict[str, Any]:
    """One ``entry.response`` of a committed transaction-response or batch-response
    Bundle (a transaction that fails is answered with one OperationOutcome instead)."""
    issues = [OutcomeIssue("error", i.issue_type, i.reason, i.location) for i in verdict.issues]
    kind = verdict.kind
    if kind is EntryKind.PROCESSED and not verdict.issues:
        code = 201
        note = f"{verdict.results} result(s) read and evaluated"
        issues.append(OutcomeIssue("information", "informational", note))
    elif kind is EntryKind.CONTEXT:
        code = 200
        issues.append(
            OutcomeIssue(
                "information",
                "informational",
                f"{verdict.resource_type} read for the results' context; not stored",
            )
        )
    elif kind is EntryKind.IGNORED:
        code = 200
        issues.append(
            OutcomeIssue(
                "warning",
                "not-supported",
                f"{verdict.resource_type} is not read by prpgate (it takes Observations; "
                "Patient and DiagnosticReport as context); not stored",
            )
        )
    elif kind is EntryKind.EMPTY:
        code = 200
        issues.append(OutcomeIssue("information", "informational", "entry without a resource"))
    elif kind is EntryKind.UNSUPPORTED:
        code = 422
    elif kind is EntryKind.INVALID:
        code = 400
    else:  # FAILED, or PROCESSED with problems in a DiagnosticReport's contained results
        code = 422
    return {"status": _status_line(code), "outcome": operation_outcome(issues)}
