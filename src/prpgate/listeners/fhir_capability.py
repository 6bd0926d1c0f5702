"""The CapabilityStatement ``GET [base]/metadata`` answers: what this listener does,
and nothing it does not (no read of Observations, no XML, no conditional create)."""

from __future__ import annotations

from typing import Any

from prpgate import __version__

__all__ = ["SEARCH_PARAMETERS", "capability_statement"]

# resource type -> (search parameter name, FHIR type, what it matches)
SEARCH_PARAMETERS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "DetectedIssue": (
        (
            "patient.identifier",
            "token",
            "The patient's identifier (system|value, or value alone); also accepted as "
            "patient:identifier. Required.",
        ),
        ("status", "token", "final or entered-in-error."),
    ),
    "Flag": (
        (
            "patient.identifier",
            "token",
            "The patient's identifier (system|value, or value alone); also accepted as "
            "patient:identifier, subject.identifier, subject:identifier. Required.",
        ),
        ("status", "token", "active or inactive."),
    ),
}

_CREATE_DOC = (
    "A lab result: read, mapped, evaluated with the PRP rule pack and committed before the "
    "answer (201, with an OperationOutcome saying what was read; 200 for a retransmit: the "
    "same X-Request-Id, If-None-Exist value or Observation identity with the same content). "
    "Results are not kept as Observation resources: read what was decided from DetectedIssue "
    "and Flag. Invalid input: 400; wrong resource type or not processable: 422."
)
_SYSTEM_DOC = (
    "transaction (all or nothing) and batch (entry by entry) Bundles of Observations, with "
    "Patient and DiagnosticReport entries read as context; other entries are acknowledged "
    "with a warning and not stored. Answered with a transaction-response or batch-response "
    "after the commit."
)


def capability_statement(base_url: str, *, date: str, token_required: bool) -> dict[str, Any]:
    """The CapabilityStatement as a dict. ``date`` is the process start (FHIR dateTime)."""
    resources: list[dict[str, Any]] = [
        {
            "type": "Observation",
            "interaction": [{"code": "create", "documentation": _CREATE_DOC}],
            "versioning": "no-version",
            "conditionalCreate": False,
        }
    ]
    for rtype, params in SEARCH_PARAMETERS.items():
        resources.append(
            {
                "type": rtype,
                "interaction": [
                    {
                        "code": "search-type",
                        "documentation": f"The {rtype} resources prpgate decided, as they "
                        "stand now (the same versions the outbox delivers).",
                    }
                ],
                "searchParam": [
                    {"name": name, "type": ptype, "documentation": doc}
                    for name, ptype, doc in params
                ],
            }
        )
    rest: dict[str, Any] = {
        "mode": "server",
        "documentation": "prpgate: lab results in (HL7 v2 over MLLP, FHIR R4 here), PRP-safety "
        "DetectedIssue and Flag resources out.",
        "resource": resources,
        "interaction": [{"code": "transaction", "documentation": _SYSTEM_DOC}, {"code": "batch"}],
    }
    if token_required:
        rest["security"] = {
            "cors": False,
            "description": "A static bearer token (Authorization: Bearer …) is required for "
            "every interaction but this CapabilityStatement.",
        }
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "publisher": "prpgate",
        "kind": "instance",
        "software": {"name": "prpgate", "version": __version__},
        "implementation": {"description": "prpgate FHIR listener", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [rest],
    }
