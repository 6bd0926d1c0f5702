"""HTTP statuses, OperationOutcomes and Bundle entry answers (core.fhir_outcome)."""

from __future__ import annotations

from fhir.resources.R4B.operationoutcome import OperationOutcome

from prpgate.core.fhir_outcome import (
    OutcomeIssue,
    entry_response,
    http_status,
    issues_of,
    operation_outcome,
)
from prpgate.core.fhir_validate import Issue
from prpgate.core.fhir_verdicts import EntryKind, EntryVerdict
from prpgate.core.pipeline import Disposition, ErrorInfo


def test_http_status_follows_disposition_and_error_code() -> None:
    assert http_status(Disposition.ACCEPTED, ()) == 201
    assert http_status(Disposition.DUPLICATE, ()) == 200
    wrong_type = ErrorInfo(200, "Observation.resourceType", "not an Observation")
    invalid = ErrorInfo(102, "Observation.status", "bad code")
    assert http_status(Disposition.REJECTED, (wrong_type,)) == 422
    assert http_status(Disposition.REJECTED, (invalid,)) == 400
    assert http_status(Disposition.ERROR, (ErrorInfo(101, "Observation.subject", "none"),)) == 422


def test_issues_of_keeps_fhirpath_locations_and_moves_json_positions_to_text() -> None:
    issues = issues_of(
        [
            ErrorInfo(101, "Observation.subject", "no subject"),
            ErrorInfo(100, "line 2, column 7", "malformed JSON: Expecting value"),
        ]
    )
    assert issues == [
        OutcomeIssue("error", "required", "no subject", "Observation.subject"),
        OutcomeIssue("error", "structure", "malformed JSON: Expecting value (line 2, column 7)"),
    ]


def test_operation_outcome_is_valid_r4b_with_and_without_issues() -> None:
    full = operation_outcome(issues_of([ErrorInfo(102, "Observation.valueQuantity.value", "x")]))
    OperationOutcome.model_validate(full)
    assert full["issue"][0]["expression"] == ["Observation.valueQuantity.value"]
    empty = operation_outcome([])
    OperationOutcome.model_validate(empty)
    assert empty["issue"][0]["severity"] == "information"


def test_entry_response_status_per_verdict() -> None:
    bad = Issue("Bundle.entry[1].resource.status", "bad", 103, "code-invalid")
    cases = {
        EntryKind.PROCESSED: "201 Created",
        EntryKind.CONTEXT: "200 OK",
        EntryKind.IGNORED: "200 OK",
        EntryKind.EMPTY: "200 OK",
        EntryKind.INVALID: "400 Bad Request",
        EntryKind.FAILED: "422 Unprocessable Content",
        EntryKind.UNSUPPORTED: "422 Unprocessable Content",
    }
    for kind, status in cases.items():
        issues = (bad,) if kind in (EntryKind.INVALID, EntryKind.FAILED) else ()
        response = entry_response(EntryVerdict(1, "Observation", kind, issues, 1))
        assert response["status"] == status, kind
        OperationOutcome.model_validate(response["outcome"])
    invalid = entry_response(EntryVerdict(1, "Observation", EntryKind.INVALID, (bad,)))
    assert invalid["outcome"]["issue"][0]["expression"] == ["Bundle.entry[1].resource.status"]
