"""Domain values shared by the pure pipeline: lab results as read, and as normalised.

Frozen, slotted dataclasses: they are created per OBX on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum

from prpgate.core.values import fast_init

__all__ = [
    "Coding",
    "Comparator",
    "LabResult",
    "Normalised",
    "Patient",
    "PatientId",
    "ResultKey",
    "ResultStatus",
    "Unmapped",
    "UnmappedReason",
]


class ResultStatus(Enum):
    """Result status, in FHIR Observation.status vocabulary.

    HL7 v2 OBX-11 (table 0085) maps onto it in ``core/oru.py``.
    """

    REGISTERED = "registered"
    PRELIMINARY = "preliminary"
    FINAL = "final"
    AMENDED = "amended"
    CORRECTED = "corrected"
    CANCELLED = "cancelled"
    ENTERED_IN_ERROR = "entered-in-error"
    UNKNOWN = "unknown"

    @property
    def is_deciding(self) -> bool:
        """Only final, corrected and amended results take part in decisions."""
        # identity tests: hashing an Enum member for a set lookup is a Python-level
        # call, and reading a member off its class (ResultStatus.FINAL) a descriptor's
        return self is _FINAL or self is _CORRECTED or self is _AMENDED

    @property
    def is_retraction(self) -> bool:
        """An entered-in-error result retracts what its earlier versions caused."""
        return self is _ENTERED_IN_ERROR


# the members the properties above test for, as module constants (see is_deciding)
_FINAL = ResultStatus.FINAL
_CORRECTED = ResultStatus.CORRECTED
_AMENDED = ResultStatus.AMENDED
_ENTERED_IN_ERROR = ResultStatus.ENTERED_IN_ERROR


class Comparator(Enum):
    """A value qualifier, in FHIR Quantity.comparator vocabulary."""

    LT = "<"
    LE = "<="
    GE = ">="
    GT = ">"


@dataclass(frozen=True, slots=True)
class Coding:
    """One code of an observation: ``system`` is the coding system as sent (``LN``,
    ``http://loinc.org``, a local system name, or empty)."""

    system: str
    code: str
    display: str = ""


@dataclass(frozen=True, slots=True, init=False)
class PatientId:
    """A patient identifier: ``system`` is a URI (from PID-3's assigning authority),
    ``value`` the identifier (the MRN); ``type_code`` as sent (``MR``, ``SS``, …).

    ``key`` is the stable key used by the store and in output identities,
    ``system|value``; written once, at construction (it is read per result).
    """

    system: str
    value: str
    type_code: str = ""
    key: str = field(init=False, compare=False, repr=False)

    def __init__(self, system: str, value: str, type_code: str = "") -> None:
        _patient_system(self, system)
        _patient_value(self, value)
        _patient_type_code(self, type_code)
        _patient_key(self, f"{system}|{value}")


_patient_system = PatientId.__dict__["system"].__set__
_patient_value = PatientId.__dict__["value"].__set__
_patient_type_code = PatientId.__dict__["type_code"].__set__
_patient_key = PatientId.__dict__["key"].__set__


@dataclass(frozen=True, slots=True)
class Patient:
    """The patient a result belongs to. Names and birth dates are patient data:
    they never reach logs unless explicitly enabled."""

    identifier: PatientId
    other_identifiers: tuple[PatientId, ...] = ()
    name: str = ""
    birth_date: str = ""
    sex: str = ""


@dataclass(frozen=True, slots=True, init=False)
class ResultKey:
    """A result's identity (DESIGN: sending facility, filler order number — else
    placer —, observation code, OBX-4 sub-id; for FHIR: Observation.identifier).

    ``text`` is its canonical single-string form, used as a store key and in output
    identities; it is written once, at construction (the pipeline reads it several
    times per result).
    """

    facility: str
    order: str
    code: str
    sub_id: str
    text: str = field(init=False, compare=False, repr=False)

    def __init__(self, facility: str, order: str, code: str, sub_id: str = "") -> None:
        _key_facility(self, facility)
        _key_order(self, order)
        _key_code(self, code)
        _key_sub_id(self, sub_id)
        _key_text(self, "|".join((facility, order, code, sub_id)))


# the slots' own setters: the class is frozen, and object.__setattr__ costs more
_key_facility = ResultKey.__dict__["facility"].__set__
_key_order = ResultKey.__dict__["order"].__set__
_key_code = ResultKey.__dict__["code"].__set__
_key_sub_id = ResultKey.__dict__["sub_id"].__set__
_key_text = ResultKey.__dict__["text"].__set__


@dataclass(frozen=True, slots=True)
class LabResult:
    """One observation as read from the input, before mapping.

    ``value_text`` is the decoded value as sent (OBX-5, or valueString/valueQuantity
    rendered); for SN values ``comparator_text`` is SN.1 and ``value_text`` SN.2.
    ``source`` locates it in the input (``OBX[7]`` or ``Bundle.entry[3]``).
    ``effective`` is a FHIR dateTime (OBX-14, else OBR-7, else MSH-7) and
    ``effective_sort`` a key that orders such instants across time zones.
    """

    key: ResultKey
    patient: Patient
    codes: tuple[Coding, ...]
    value_type: str
    value_text: str
    unit_text: str
    status: ResultStatus
    effective: str
    sending_facility: str
    source: str
    comparator_text: str = ""
    unit_system: str = ""
    reference_range: str = ""
    abnormal_flags: tuple[str, ...] = ()
    order_code: str = ""
    effective_sort: str = ""


class UnmappedReason(Enum):
    """Why a result was recorded without a normalised value; none of these decide.

    ``NOT_USED`` is the one reason that is not a problem: the mapping knows the code
    and says the rule pack does not use it (RBC, MCV, …), so it is not reported as
    unmapped.
    """

    UNMAPPED_CODE = "unmapped-code"
    UNKNOWN_UNIT = "unknown-unit"
    UNCONVERTIBLE_UNIT = "unconvertible-unit"
    NOT_NUMERIC = "not-numeric"
    NO_VALUE = "no-value"
    IMPLAUSIBLE = "implausible"
    NOT_USED = "not-used"

    @property
    def is_problem(self) -> bool:
        """True for every reason but NOT_USED: something a mapping author must look at."""
        return self is not _NOT_USED


_NOT_USED = UnmappedReason.NOT_USED


@dataclass(frozen=True, slots=True)
class Unmapped:
    """A result the mapping layer could not normalise, and why."""

    result: LabResult
    reason: UnmappedReason
    detail: str
    analyte: str = ""


@dataclass(frozen=True, slots=True)
class Normalised:
    """A result mapped to an analyte, its value converted to the analyte's canonical unit.

    ``factor`` is the multiplier applied to the sent value; ``ucum`` the UCUM code the
    sent unit spelling resolved to.
    """

    result: LabResult
    analyte: str
    value: Decimal
    unit: str
    comparator: Comparator | None
    sent_value: Decimal
    ucum: str
    factor: Decimal


fast_init(Coding, Patient, LabResult, Unmapped, Normalised)
