"""The per-patient state that decides, as the store hands it to the core and takes it back.

State lives in the store (never in process memory), so a replay in two runs ends
where one run would.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import Enum

from prpgate.core.model import Comparator, ResultStatus
from prpgate.core.values import fast_init

__all__ = ["OutputKind", "PatientState", "StoredOutput", "StoredResult"]


class OutputKind(Enum):
    """The FHIR resource types prpgate emits."""

    DETECTED_ISSUE = "DetectedIssue"
    FLAG = "Flag"


@dataclass(frozen=True, slots=True)
class StoredResult:
    """The current deciding version of one result identity (final/corrected/amended).

    ``seq`` is the store's arrival number of the message that carried it; it breaks
    ties between results with the same effective time.
    """

    key: str
    patient_key: str
    analyte: str
    value: Decimal
    comparator: Comparator | None
    effective: str
    effective_sort: str
    seq: int
    status: ResultStatus
    source: str


@dataclass(frozen=True, slots=True)
class StoredOutput:
    """The current version of one emitted resource.

    ``result_key`` is the source result of a DetectedIssue, or the result that
    last changed a Flag's state. ``resource`` is the JSON exactly as emitted.
    """

    identifier: str
    kind: OutputKind
    patient_key: str
    rule: str
    result_key: str
    status: str
    resource: str
    version: int


@dataclass(frozen=True, slots=True)
class PatientState:
    """What the store knows of one patient, restricted to what a message can change:
    the deciding results of the analytes the message touches, the DetectedIssues of
    the result identities it carries, and all of the patient's Flags."""

    patient_key: str
    results: tuple[StoredResult, ...] = ()
    outputs: tuple[StoredOutput, ...] = ()


fast_init(StoredResult, StoredOutput, PatientState)
