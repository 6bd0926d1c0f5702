"""The mapping files' schema: pydantic models for ``mappings/*.yaml`` (validation at the edge).

Four parts, one per file:

* ``analytes.yaml`` -> ``AnalytesFile``: analytes, canonical UCUM unit, plausible range,
  molar mass, LOINC codes.
* ``units.yaml`` -> ``UnitsFile``: unit spellings seen in feeds -> UCUM code.
* ``senders.yaml`` -> ``SendersFile``: per sending facility, local codes, locale
  (decimal comma), charset, extra unit spellings, assigning authorities.
* ``rules.yaml`` -> ``RulePack``: the deployment's code systems and the PRP rules.

``MappingSet`` bundles the four and checks references between them. Models are
frozen and forbid unknown keys. Problems between entries are raised as
``PydanticCustomError`` whose ``ctx`` carries ``key`` (the dotted path inside the
file, e.g. ``analytes.3.loinc.0``) and, for cross-file problems, ``file``, so the
loader can name them without parsing message text. This module is pure: no file I/O.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator
from pydantic_core import PydanticCustomError

from prpgate.core.rules import Direction, Rule
from prpgate.core.units import ucum_problem

# The file-name constants (ANALYTES_FILE ...) are public but kept out of __all__: the
# architecture test wants a plain sorted() order, ruff an isort-style one.
__all__ = [
    "AnalyteSpec",
    "AnalytesFile",
    "CodingSpec",
    "LocalCode",
    "MappingSet",
    "NotUsedCode",
    "PlausibleRange",
    "RulePack",
    "RuleSpec",
    "SenderSpec",
    "SendersFile",
    "UnitsFile",
    "is_valid_loinc",
    "json_schema",
]

ANALYTES_FILE = "analytes.yaml"
UNITS_FILE = "units.yaml"
SENDERS_FILE = "senders.yaml"
RULES_FILE = "rules.yaml"
# MappingSet field name -> file name.
FILES: dict[str, str] = {
    "analytes": ANALYTES_FILE,
    "units": UNITS_FILE,
    "senders": SENDERS_FILE,
    "rules": RULES_FILE,
}

_CONFIG = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

Slug = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]*$", max_length=64)]
Text = Annotated[str, Field(min_length=1)]
# An absolute URI (http(s), urn:oid:, urn:uuid: ...); FHIR systems are URIs.
Uri = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s]+$")]
Loinc = Annotated[str, Field(pattern=r"^[0-9]{1,7}-[0-9]$")]
Number = Annotated[Decimal, Field(allow_inf_nan=False)]
Positive = Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]


def _conflict(
    path: tuple[str | int, ...], reason: str, file: str | None = None
) -> PydanticCustomError:
    """A problem between entries, at ``path`` below the model raising it (or, with
    ``file``, below the top of that file)."""
    ctx: dict[str, Any] = {"path": path, "reason": reason}
    if file is not None:
        ctx["file"] = file
    return PydanticCustomError("mapping_conflict", "{reason}", ctx)


def is_valid_loinc(code: str) -> bool:
    """True when ``code`` (``NNNNN-C``) carries a correct LOINC mod-10 check digit.

    LOINC's check digit is the Luhn mod-10 digit of the part before the hyphen.
    """
    body, _, check = code.partition("-")
    if not (body.isdigit() and check.isdigit() and len(check) == 1):
        return False
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    return (10 - total % 10) % 10 == int(check)


def _check_ucum(code: str) -> str:
    problem = ucum_problem(code)
    if problem is not None:
        raise ValueError(f"unit {code!r} is {problem}")
    return code


def _check_spellings(spellings: dict[str, str]) -> dict[str, str]:
    for spelling, code in spellings.items():
        if not spelling or spelling != spelling.strip():
            raise _conflict(
                (spelling,), f"spelling {spelling!r} is empty or has surrounding whitespace"
            )
        problem = ucum_problem(code)
        if problem is not None:
            raise _conflict(
                (spelling,), f"spelling {spelling!r} maps to {code!r}, which is {problem}"
            )
    return spellings


class PlausibleRange(BaseModel):
    """Inclusive bounds, in the analyte's canonical unit, of a value a living patient can have."""

    model_config = _CONFIG

    low: Number
    high: Number

    @model_validator(mode="after")
    def _ordered(self) -> PlausibleRange:
        if self.low >= self.high:
            raise _conflict(("high",), f"high ({self.high}) must be greater than low ({self.low})")
        return self


class AnalyteSpec(BaseModel):
    """One analyte: its id, canonical UCUM unit, plausible range and LOINC codes."""

    model_config = _CONFIG

    id: Slug
    display: Text
    unit: str = Field(description="Canonical UCUM unit; values are converted to it.")
    plausible: PlausibleRange
    molar_mass_g_per_mol: Positive | None = Field(
        default=None, description="Needed to convert amount-of-substance units (mmol/L)."
    )
    loinc: tuple[Loinc, ...] = ()

    _unit_is_ucum = field_validator("unit")(_check_ucum)

    @field_validator("loinc")
    @classmethod
    def _loinc_check_digits(cls, codes: tuple[str, ...]) -> tuple[str, ...]:
        for i, code in enumerate(codes):
            if not is_valid_loinc(code):
                raise _conflict((i,), f"LOINC code {code!r} has a wrong check digit")
        return codes


class NotUsedCode(BaseModel):
    """A LOINC code the mapping knows and the rule pack deliberately does not use."""

    model_config = _CONFIG

    loinc: Loinc
    display: Text


class AnalytesFile(BaseModel):
    """``analytes.yaml``: the analytes the rule pack can speak about, and the codes it
    knows but does not use (reported as not used, not as unmapped)."""

    model_config = _CONFIG

    analytes: tuple[AnalyteSpec, ...] = Field(min_length=1)
    not_used: tuple[NotUsedCode, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> AnalytesFile:
        ids: dict[str, int] = {}
        owners: dict[str, str] = {}
        for i, analyte in enumerate(self.analytes):
            if analyte.id in ids:
                raise _conflict(
                    ("analytes", i, "id"),
                    f"duplicate analyte id {analyte.id!r} (also entry {ids[analyte.id]})",
                )
            ids[analyte.id] = i
            for j, code in enumerate(analyte.loinc):
                if code in owners:
                    raise _conflict(
                        ("analytes", i, "loinc", j),
                        f"LOINC {code} is listed twice "
                        f"(analytes {owners[code]!r} and {analyte.id!r})",
                    )
                owners[code] = analyte.id
        for i, entry in enumerate(self.not_used):
            if not is_valid_loinc(entry.loinc):
                raise _conflict(
                    ("not_used", i, "loinc"), f"LOINC code {entry.loinc!r} has a wrong check digit"
                )
            if entry.loinc in owners:
                raise _conflict(
                    ("not_used", i, "loinc"),
                    f"LOINC {entry.loinc} is listed as not used and as analyte "
                    f"{owners[entry.loinc]!r}",
                )
            owners[entry.loinc] = "not_used"
        return self

    def get(self, analyte_id: str) -> AnalyteSpec | None:
        """The analyte with this id, or None."""
        return next((a for a in self.analytes if a.id == analyte_id), None)


class UnitsFile(BaseModel):
    """``units.yaml``: unit spellings seen in feeds -> UCUM code (exact match first)."""

    model_config = _CONFIG

    spellings: dict[str, str] = Field(min_length=1)

    _valid = field_validator("spellings")(_check_spellings)


class LocalCode(BaseModel):
    """A sender's own code for an analyte.

    With ``system`` the coding must match (system compared case-insensitively, code
    exactly); without it the code alone identifies the analyte, whatever the system.
    """

    model_config = _CONFIG

    code: Text
    system: Text | None = None
    analyte: Slug


class SenderSpec(BaseModel):
    """Everything specific to one sending facility (MSH-4 universal id, else namespace id)."""

    model_config = _CONFIG

    facility: Text
    display: str = ""
    decimal_comma: StrictBool = Field(
        default=False, description="True when the sender writes 1,8 for 1.8."
    )
    charset: Text | None = Field(
        default=None, description="Python codec for a sender that leaves MSH-18 empty."
    )
    units: dict[str, str] = Field(default_factory=dict)
    codes: tuple[LocalCode, ...] = ()
    assigning_authorities: dict[str, Uri] = Field(
        default_factory=dict, description="PID-3 assigning authority namespace id -> system URI."
    )

    _valid_units = field_validator("units")(_check_spellings)

    @field_validator("charset")
    @classmethod
    def _known_codec(cls, charset: str | None) -> str | None:
        if charset is not None:
            try:
                codecs.lookup(charset)
            except LookupError:
                raise ValueError(f"unknown character set {charset!r}") from None
        return charset

    @model_validator(mode="after")
    def _unique_codes(self) -> SenderSpec:
        seen: dict[tuple[str | None, str], int] = {}
        by_code: dict[str, set[str]] = {}
        for i, entry in enumerate(self.codes):
            system = entry.system.casefold() if entry.system is not None else None
            key = (system, entry.code)
            if key in seen:
                raise _conflict(
                    ("codes", i),
                    f"code {entry.code!r} (system {entry.system!r}) is listed twice "
                    f"(also entry {seen[key]})",
                )
            seen[key] = i
            by_code.setdefault(entry.code, set()).add(entry.analyte)
        for i, entry in enumerate(self.codes):
            if entry.system is None and len(by_code[entry.code]) > 1:
                raise _conflict(
                    ("codes", i),
                    f"code {entry.code!r} without a system is ambiguous: the same "
                    f"code maps to {sorted(by_code[entry.code])}",
                )
        return self


class SendersFile(BaseModel):
    """``senders.yaml``: per sending facility settings."""

    model_config = _CONFIG

    senders: tuple[SenderSpec, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> SendersFile:
        seen: dict[str, int] = {}
        authorities: dict[str, str] = {}
        for i, sender in enumerate(self.senders):
            if sender.facility in seen:
                raise _conflict(
                    ("senders", i, "facility"),
                    f"facility {sender.facility!r} is listed twice "
                    f"(also entry {seen[sender.facility]})",
                )
            seen[sender.facility] = i
            for namespace, uri in sender.assigning_authorities.items():
                if authorities.setdefault(namespace, uri) != uri:
                    raise _conflict(
                        ("senders", i, "assigning_authorities", namespace),
                        f"assigning authority {namespace!r} maps to two systems: "
                        f"{authorities[namespace]!r} and {uri!r}",
                    )
        return self

    def get(self, facility: str) -> SenderSpec | None:
        """The sender entry for this facility, or None."""
        return next((s for s in self.senders if s.facility == facility), None)


class CodingSpec(BaseModel):
    """A FHIR Coding."""

    model_config = _CONFIG

    system: Uri
    code: Text
    display: Text


class RuleSpec(BaseModel):
    """One PRP rule: a finding when the analyte's canonical value passes a threshold.

    ``direction`` ``above``: moderate when value > moderate, high when value > high
    (so high > moderate); ``below``: the mirror image (high < moderate). Thresholds
    are in ``unit``, which must be the analyte's canonical unit.
    """

    model_config = _CONFIG

    id: Slug = Field(description="Stable code of the rule in the deployment's rule code system.")
    analyte: Slug
    direction: Direction
    unit: str
    moderate: Number
    high: Number
    display: Text
    flag_text: Text = Field(description='Flag.code text, e.g. "PRP on hold: leukocytosis".')

    _unit_is_ucum = field_validator("unit")(_check_ucum)

    @model_validator(mode="after")
    def _ordered(self) -> RuleSpec:
        if self.direction is Direction.ABOVE and not self.high > self.moderate:
            raise _conflict(
                ("moderate",),
                f"direction above needs high ({self.high}) > moderate ({self.moderate})",
            )
        if self.direction is Direction.BELOW and not self.high < self.moderate:
            raise _conflict(
                ("moderate",),
                f"direction below needs high ({self.high}) < moderate ({self.moderate})",
            )
        return self

    def to_rule(self) -> Rule:
        """The evaluator's value for this rule (``prpgate.core.rules.Rule``)."""
        return Rule(
            id=self.id,
            analyte=self.analyte,
            direction=self.direction,
            moderate=self.moderate,
            high=self.high,
            display=self.display,
            flag_text=self.flag_text,
            unit=self.unit,
        )


def _no_trailing_slash(uri: str) -> str:
    if uri.endswith("/"):
        raise ValueError("must not end with '/': paths are appended to it")
    return uri


class RulePack(BaseModel):
    """``rules.yaml``: the deployment's code systems and the rules (thresholds are config)."""

    model_config = _CONFIG

    rule_code_system: Uri = Field(description="System of the rules' own codings (code = rule id).")
    identifier_system: Uri = Field(description="Base URI of output identifiers.")
    patient_identifier_system_default: Uri = Field(
        description="Prefix for an assigning authority with no universal id and no mapping."
    )
    issue_coding: CodingSpec = Field(description="Standard DetectedIssue.code coding.")
    rules: tuple[RuleSpec, ...] = Field(min_length=1)

    _slash = field_validator("identifier_system", "patient_identifier_system_default")(
        _no_trailing_slash
    )

    @model_validator(mode="after")
    def _unique(self) -> RulePack:
        seen: dict[str, int] = {}
        for i, rule in enumerate(self.rules):
            if rule.id in seen:
                raise _conflict(
                    ("rules", i, "id"),
                    f"duplicate rule id {rule.id!r} (also entry {seen[rule.id]})",
                )
            seen[rule.id] = i
        return self


class MappingSet(BaseModel):
    """The four mapping files, validated together: what the core consumes.

    Cross-file checks: every rule and local code names a known analyte; a rule's unit
    is its analyte's canonical unit and its thresholds lie within the plausible range.
    """

    model_config = _CONFIG

    analytes: AnalytesFile
    units: UnitsFile
    senders: SendersFile
    rules: RulePack

    @model_validator(mode="after")
    def _references(self) -> MappingSet:
        for problem in self._problems():
            raise problem
        return self

    def _problems(self) -> Iterator[PydanticCustomError]:
        known = {a.id: a for a in self.analytes.analytes}
        spellings = self.units.spellings
        for i, spec in enumerate(self.analytes.analytes):
            meant = spellings.get(spec.unit, spec.unit)
            if meant != spec.unit:
                # e.g. "G/L": valid UCUM (gauss per litre), but a feed spelling of 10*9/L.
                yield _conflict(
                    ("analytes", i, "unit"),
                    f"canonical unit {spec.unit!r} is a feed spelling of {meant!r} "
                    "in units.yaml; write the UCUM code",
                    file=ANALYTES_FILE,
                )
        for i, rule in enumerate(self.rules.rules):
            analyte = known.get(rule.analyte)
            if analyte is None:
                yield _conflict(
                    ("rules", i, "analyte"),
                    f"rule {rule.id!r} names unknown analyte {rule.analyte!r} "
                    f"(known: {', '.join(sorted(known))})",
                    file=RULES_FILE,
                )
                continue
            if rule.unit != analyte.unit:
                yield _conflict(
                    ("rules", i, "unit"),
                    f"rule {rule.id!r} is in {rule.unit!r} but analyte {analyte.id!r} is "
                    f"normalised to {analyte.unit!r}",
                    file=RULES_FILE,
                )
            for name in ("moderate", "high"):
                value: Decimal = getattr(rule, name)
                if not analyte.plausible.low <= value <= analyte.plausible.high:
                    yield _conflict(
                        ("rules", i, name),
                        f"threshold {value} lies outside {analyte.id!r}'s plausible range "
                        f"{analyte.plausible.low}..{analyte.plausible.high} {analyte.unit}",
                        file=RULES_FILE,
                    )
        for i, sender in enumerate(self.senders.senders):
            for j, entry in enumerate(sender.codes):
                if entry.analyte not in known:
                    yield _conflict(
                        ("senders", i, "codes", j, "analyte"),
                        f"code {entry.code!r} names unknown analyte {entry.analyte!r}",
                        file=SENDERS_FILE,
                    )

    def analyte(self, analyte_id: str) -> AnalyteSpec | None:
        """The analyte with this id, or None."""
        return self.analytes.get(analyte_id)

    def rules_by_analyte(self) -> dict[str, tuple[Rule, ...]]:
        """The rule pack as the evaluator takes it: analyte id -> rules, in file order."""
        out: dict[str, list[Rule]] = {}
        for spec in self.rules.rules:
            out.setdefault(spec.analyte, []).append(spec.to_rule())
        return {k: tuple(v) for k, v in out.items()}

    def charset_overrides(self) -> dict[str, str]:
        """Sending facility -> codec, for senders that declare a charset."""
        return {s.facility: s.charset for s in self.senders.senders if s.charset}

    def assigning_authorities(self) -> dict[str, str]:
        """Assigning authority namespace id -> identifier system URI, over all senders."""
        out: dict[str, str] = {}
        for sender in self.senders.senders:
            out.update(sender.assigning_authorities)
        return out


def json_schema() -> dict[str, object]:
    """One JSON Schema (draft 2020-12) for the four files, as ``MappingSet`` properties.

    Top-level properties ``analytes``, ``units``, ``senders``, ``rules`` describe
    ``analytes.yaml``, ``units.yaml``, ``senders.yaml`` and ``rules.yaml``.
    Cross-entry checks (uniqueness, references, threshold order) are not expressible
    in JSON Schema and are enforced by the models only.
    """
    schema: dict[str, object] = MappingSet.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://prpgate.example/schema/mappings.json"
    return schema
