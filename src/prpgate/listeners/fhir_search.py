"""``GET [base]/DetectedIssue?…`` and ``GET [base]/Flag?…``: what prpgate decided for a
patient, read from the store's current outputs, as a searchset Bundle."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prpgate.core.fhir_outcome import OutcomeIssue
from prpgate.ports import OutputRow, Store

__all__ = ["SearchQuery", "parse_search", "run_search", "searchset"]

_PATIENT_PARAMS = {
    "DetectedIssue": ("patient.identifier", "patient:identifier"),
    "Flag": (
        "patient.identifier",
        "patient:identifier",
        "subject.identifier",
        "subject:identifier",
    ),
}
_STATUSES = {
    "DetectedIssue": frozenset({"final", "entered-in-error"}),
    "Flag": frozenset({"active", "inactive"}),
}
_IGNORED = frozenset({"_format", "_count"})  # _count: the answer is never paged


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A parsed search: the resource type, the patient identifier (``system|value``
    or a bare value) and the statuses asked for (empty: all)."""

    resource_type: str
    patient: str
    statuses: frozenset[str] = frozenset()


def parse_search(
    resource_type: str, params: Sequence[tuple[str, str]]
) -> SearchQuery | OutcomeIssue:
    """Check and read the query parameters; an OutcomeIssue says what is wrong."""
    patient = ""
    statuses: set[str] = set()
    for name, value in params:
        if name in _PATIENT_PARAMS[resource_type]:
            if patient and patient != value:
                return OutcomeIssue(
                    "error", "not-supported", "one patient identifier per search", name
                )
            patient = value
        elif name == "status":
            for status in value.split(","):
                if status not in _STATUSES[resource_type]:
                    return OutcomeIssue(
                        "error",
                        "value",
                        f"status {status!r} is not one of "
                        + ", ".join(sorted(_STATUSES[resource_type])),
                        "status",
                    )
                statuses.add(status)
        elif name not in _IGNORED:
            return OutcomeIssue(
                "error",
                "not-supported",
                f"search parameter {name!r} is not supported for {resource_type} (see "
                "[base]/metadata)",
                name,
            )
    if not patient.strip("|"):
        return OutcomeIssue(
            "error",
            "required",
            f"a {resource_type} search needs patient.identifier=system|value",
            "patient.identifier",
        )
    return SearchQuery(resource_type, patient, frozenset(statuses))


def run_search(store: Store, query: SearchQuery) -> list[OutputRow]:
    """The current outputs matching the query (runs on the store's thread)."""
    keys = [query.patient] if "|" in query.patient else store.patient_keys(query.patient)
    rows: list[OutputRow] = []
    for key in keys:
        rows.extend(
            o
            for o in store.outputs(patient_key=key)
            if o.kind == query.resource_type and (not query.statuses or o.status in query.statuses)
        )
    return rows


def searchset(base_url: str, self_url: str, rows: Sequence[OutputRow]) -> dict[str, Any]:
    """A searchset Bundle of the rows' resources (each with its deterministic id)."""
    entries: list[Mapping[str, Any]] = []
    for row in rows:
        resource = json.loads(row.resource)
        entries.append(
            {
                "fullUrl": f"{base_url}/{resource['resourceType']}/{resource['id']}",
                "resource": resource,
                "search": {"mode": "match"},
            }
        )
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(entries),
        "link": [{"relation": "self", "url": self_url}],
        "entry": entries,
    }
