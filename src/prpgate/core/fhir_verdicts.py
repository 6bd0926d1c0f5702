"""What reading FHIR input found: the input's own values and each Bundle entry's verdict
(shared by the reader, the Bundle walk and the HTTP answers)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from prpgate.core.fhir_request import FhirRequest
from prpgate.core.fhir_validate import Issue
from prpgate.core.model import LabResult, Patient

__all__ = ["EntryKind", "EntryVerdict", "FhirInput", "input_with", "refuse", "with_entries"]


class EntryKind(Enum):
    """What became of one Bundle entry (or of a lone resource)."""

    PROCESSED = "processed"  # an Observation (or a DiagnosticReport's contained ones) read
    CONTEXT = "context"  # a Patient or DiagnosticReport read for the Observations
    IGNORED = "ignored"  # a resource type this adapter does not read
    INVALID = "invalid"  # fails R4B validation or a required binding
    FAILED = "failed"  # valid, but cannot be processed (no usable subject or code)
    UNSUPPORTED = "unsupported"  # a request method other than POST or PUT
    EMPTY = "empty"  # no resource (e.g. a batch-response entry)


@dataclass(frozen=True, slots=True)
class EntryVerdict:
    """One entry's outcome: ``index`` in Bundle.entry (0 for a lone resource)."""

    index: int
    resource_type: str
    kind: EntryKind
    issues: tuple[Issue, ...] = ()
    results: int = 0


@dataclass(frozen=True, slots=True)
class FhirInput:
    """Everything read from one FHIR input.

    ``errors`` with ``rejected`` true: the input as a whole is refused (not JSON, not
    a resource this adapter takes, invalid); with ``rejected`` false: valid but it
    cannot be processed. ``key`` is empty when the input could not be decoded.
    """

    request: FhirRequest
    content_hash: str
    resource_type: str = ""
    bundle_type: str = ""
    key: str = ""
    facility: str = ""
    results: tuple[LabResult, ...] = ()
    patients: tuple[Patient, ...] = ()
    errors: tuple[Issue, ...] = ()
    rejected: bool = False
    warnings: tuple[str, ...] = ()
    entries: tuple[EntryVerdict, ...] = ()


def input_with(
    base: FhirInput,
    *,
    results: tuple[LabResult, ...] = (),
    patients: tuple[Patient, ...] = (),
    errors: tuple[Issue, ...] = (),
    rejected: bool = False,
    warnings: tuple[str, ...] = (),
    entries: tuple[EntryVerdict, ...] = (),
) -> FhirInput:
    """The input ``base`` names (request, content hash, types, key, facility) with what
    reading it found; what is not given is empty."""
    return FhirInput(
        base.request,
        base.content_hash,
        base.resource_type,
        base.bundle_type,
        base.key,
        base.facility,
        results,
        patients,
        errors,
        rejected,
        warnings,
        entries,
    )


def refuse(base: FhirInput, *issues: Issue) -> FhirInput:
    """The input refused as a whole, with these issues."""
    return input_with(base, errors=issues, rejected=True, entries=base.entries)


def with_entries(base: FhirInput, entries: tuple[EntryVerdict, ...]) -> FhirInput:
    """The input (not yet read further) with its entries' verdicts."""
    return input_with(base, entries=entries)
