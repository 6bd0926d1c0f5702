"""Codes and units -> normalised results: the hot-path normaliser of the mapping layer.

``Mapper.normalise`` turns one ``LabResult`` into a ``Normalised`` value (analyte,
canonical unit, Decimal value, comparator) or an ``Unmapped`` record saying why not.
Nothing is guessed (DESIGN.md, "Mapping layer"):

* Analyte: the sender's own code table (senders.yaml) first, over all codings of the
  result; then LOINC, recognised by its system (``LN``, ``LOINC``,
  ``http://loinc.org``, ``2.16.840.1.113883.6.1``, case-insensitive). Codings that
  name different analytes at the same level are a conflict: unmapped.
* Value: a decimal number with an optional comparator (``<5``, ``>= 20``, ``< 1``, or
  SN.1 in ``comparator_text``). ``065.88`` and ``.5`` are numbers; ``1,8`` only for a
  sender with ``decimal_comma``. SN ranges and ratios (``1-5``, ``1:128``), text and
  exponents are not numeric. A comparator is kept, never dropped (``<5`` is LT 5).
* Unit: see ``mappings/units.yaml`` for the resolution order; the factor comes from
  ``UnitConverter`` (UCUM via ucumvert/pint) and is cached per (sender, spelling, analyte).
* Plausibility: a converted value outside the analyte's plausible range is implausible.

The mapping data arrives through the ``MappingSource`` protocol (the validated
``prpgate.mapping_schema.MappingSet`` satisfies it); all lookups are precomputed into
dicts in ``Mapper.__init__``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Protocol

from prpgate.core.model import (
    Coding,
    Comparator,
    LabResult,
    Normalised,
    Unmapped,
    UnmappedReason,
)
from prpgate.core.units import (
    UnitConverter,
    UnitError,
    UnitErrorKind,
    is_dimensionless_code,
    plain_decimal,
)
from prpgate.core.values import remember

__all__ = [
    "AnalyteDef",
    "AnalyteTable",
    "LocalCodeDef",
    "Mapper",
    "MappingSource",
    "NotUsedDef",
    "PlausibleDef",
    "SenderDef",
    "SenderTable",
    "UnitTable",
    "ValueProblem",
    "read_value",
]

_LOINC_SYSTEMS = frozenset(
    {"ln", "loinc", "http://loinc.org", "2.16.840.1.113883.6.1", "urn:oid:2.16.840.1.113883.6.1"}
)

# --- what the mapper reads from the validated mapping files -------------------------


class PlausibleDef(Protocol):
    """Inclusive plausible bounds in the canonical unit."""

    @property
    def low(self) -> Decimal: ...
    @property
    def high(self) -> Decimal: ...


class AnalyteDef(Protocol):
    """One analyte (``analytes.yaml`` entry)."""

    @property
    def id(self) -> str: ...
    @property
    def unit(self) -> str: ...
    @property
    def plausible(self) -> PlausibleDef: ...
    @property
    def molar_mass_g_per_mol(self) -> Decimal | None: ...
    @property
    def loinc(self) -> Sequence[str]: ...


class LocalCodeDef(Protocol):
    """A sender's local code; ``system`` None means the code alone identifies it."""

    @property
    def code(self) -> str: ...
    @property
    def system(self) -> str | None: ...
    @property
    def analyte(self) -> str: ...


class SenderDef(Protocol):
    """One sending facility (``senders.yaml`` entry)."""

    @property
    def facility(self) -> str: ...
    @property
    def decimal_comma(self) -> bool: ...
    @property
    def units(self) -> Mapping[str, str]: ...
    @property
    def codes(self) -> Sequence[LocalCodeDef]: ...


class NotUsedDef(Protocol):
    """A LOINC code known to the mapping and not used by the rule pack."""

    @property
    def loinc(self) -> str: ...


class AnalyteTable(Protocol):
    """``analytes.yaml``."""

    @property
    def analytes(self) -> Sequence[AnalyteDef]: ...
    @property
    def not_used(self) -> Sequence[NotUsedDef]: ...


class UnitTable(Protocol):
    """``units.yaml``."""

    @property
    def spellings(self) -> Mapping[str, str]: ...


class SenderTable(Protocol):
    """``senders.yaml``."""

    @property
    def senders(self) -> Sequence[SenderDef]: ...


class MappingSource(Protocol):
    """The mapping files as the mapper reads them (``MappingSet`` satisfies this)."""

    @property
    def analytes(self) -> AnalyteTable: ...
    @property
    def units(self) -> UnitTable: ...
    @property
    def senders(self) -> SenderTable: ...


# --- values -------------------------------------------------------------------------

_COMPARATORS: dict[str, Comparator | None] = {
    "": None,
    "=": None,
    "<": Comparator.LT,
    "<=": Comparator.LE,
    ">": Comparator.GT,
    ">=": Comparator.GE,
}
_NUMBER = re.compile(
    r"\s*(?P<cmp><=|>=|<|>|=)?\s*(?P<num>[+-]?(?:[0-9]+(?:[.,][0-9]*)?|[.,][0-9]+))\s*", re.ASCII
)
_SN_COMPOUND = re.compile(r"[0-9]\s*[-:/+]", re.ASCII)


@dataclass(frozen=True, slots=True)
class ValueProblem:
    """Why a value (or code, or unit) cannot be normalised: reason and human detail."""

    reason: UnmappedReason
    detail: str


def read_value(
    value_text: str,
    comparator_text: str = "",
    *,
    value_type: str = "",
    decimal_comma: bool = False,
) -> tuple[Comparator | None, Decimal] | ValueProblem:
    """Read a result value as (comparator, Decimal), or a ValueProblem (NO_VALUE or
    NOT_NUMERIC, with why).

    ``comparator_text`` is SN.1 (or FHIR Quantity.comparator); an inline comparator
    (``<5``, ``>= 20``) is read from ``value_text`` when there is none. A comma is a
    decimal separator only with ``decimal_comma`` (a point is always one: HL7 NM).
    """
    if not comparator_text and value_text.isascii() and value_text.replace(".", "", 1).isdigit():
        return None, Decimal(value_text)  # the common case: a plain unsigned decimal
    text = value_text.strip()
    sent_cmp = comparator_text.strip()
    if not text:
        if sent_cmp:
            return ValueProblem(
                UnmappedReason.NOT_NUMERIC, f"comparator {sent_cmp!r} without a number"
            )
        return ValueProblem(UnmappedReason.NO_VALUE, "no value sent")
    match = _NUMBER.fullmatch(text)
    if match is None:
        if value_type == "SN" and _SN_COMPOUND.search(text):
            return ValueProblem(
                UnmappedReason.NOT_NUMERIC,
                f"SN value {sent_cmp}{text!r} is a range or ratio (SN.3 separator), "
                "not a single number",
            )
        return ValueProblem(UnmappedReason.NOT_NUMERIC, f"value {sent_cmp}{text!r} is not a number")
    inline = match["cmp"] or ""
    if sent_cmp and inline:
        return ValueProblem(
            UnmappedReason.NOT_NUMERIC, f"two comparators: {sent_cmp!r} and {text!r}"
        )
    symbol = sent_cmp or inline
    if symbol not in _COMPARATORS:
        return ValueProblem(
            UnmappedReason.NOT_NUMERIC, f"comparator {symbol!r} is not one of < <= > >= ="
        )
    number = match["num"]
    if "," in number:
        if not decimal_comma:
            return ValueProblem(
                UnmappedReason.NOT_NUMERIC,
                f"value {text!r} has a decimal comma, but the sender is not configured "
                "with decimal_comma",
            )
        number = number.replace(",", ".")
    try:
        return _COMPARATORS[symbol], Decimal(number)
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        return ValueProblem(UnmappedReason.NOT_NUMERIC, f"value {text!r} is not a number")


# --- the mapper ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Analyte:
    id: str
    unit: str
    low: Decimal
    high: Decimal
    molar_mass: Decimal | None
    dimensionless: bool


@dataclass(frozen=True, slots=True)
class _Sender:
    facility: str
    decimal_comma: bool
    by_system_code: Mapping[tuple[str, str], str]
    by_code: Mapping[str, str]
    spellings: Mapping[str, str]
    folded: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class _Unit:
    """A resolved unit: the UCUM code and the factor to the analyte's canonical unit."""

    ucum: str
    factor: Decimal


_NO_SENDER = _Sender("", False, {}, {}, {}, {})


@dataclass(frozen=True, slots=True)
class _Kind:
    """What a result's (sending facility, codes, unit text) resolve to: its sender,
    and its analyte and unit, or (``analyte`` None) why its codes name none."""

    sender: _Sender
    analyte: _Analyte | None
    problem: ValueProblem  # why there is no analyte (_NO_PROBLEM when there is one)
    unit: _Unit | ValueProblem  # the same problem when there is no analyte


_NO_PROBLEM = ValueProblem(
    UnmappedReason.UNMAPPED_CODE, "(not a problem: the codes name an analyte)"
)
_RESOLVED_CACHE_LIMIT = 10_000


def _fold_unambiguous(spellings: Mapping[str, str]) -> dict[str, str]:
    """Case-folded spelling -> UCUM, keeping only folds all of whose spellings agree."""
    targets: dict[str, set[str]] = {}
    for spelling, ucum in spellings.items():
        targets.setdefault(spelling.casefold(), set()).add(ucum)
    return {k: next(iter(v)) for k, v in targets.items() if len(v) == 1}


class Mapper:
    """Normalises lab results with the mapping files; build once, call per result.

    ``converter`` supplies UCUM factors; it is consulted once per distinct
    (sender, unit spelling, analyte) and the outcome cached, so the per-result cost is
    a few dict lookups and one Decimal multiplication.
    """

    def __init__(self, mappings: MappingSource, converter: UnitConverter) -> None:
        self._converter = converter
        self._analytes: dict[str, _Analyte] = {}
        self._loinc: dict[str, str] = {}
        for a in mappings.analytes.analytes:
            self._analytes[a.id] = _Analyte(
                id=a.id,
                unit=a.unit,
                low=a.plausible.low,
                high=a.plausible.high,
                molar_mass=a.molar_mass_g_per_mol,
                dimensionless=is_dimensionless_code(a.unit),
            )
            for code in a.loinc:
                self._loinc[code] = a.id
        self._not_used = frozenset(n.loinc for n in mappings.analytes.not_used)
        self._spellings: dict[str, str] = dict(mappings.units.spellings)
        self._folded = _fold_unambiguous(self._spellings)
        self._senders: dict[str, _Sender] = {}
        for s in mappings.senders.senders:
            by_system_code: dict[tuple[str, str], str] = {}
            by_code: dict[str, str] = {}
            for entry in s.codes:
                if entry.system is None:
                    by_code[entry.code] = entry.analyte
                else:
                    by_system_code[(entry.system.casefold(), entry.code)] = entry.analyte
            self._senders[s.facility] = _Sender(
                facility=s.facility,
                decimal_comma=s.decimal_comma,
                by_system_code=by_system_code,
                by_code=by_code,
                spellings=dict(s.units),
                folded=_fold_unambiguous(s.units),
            )
        self._resolved: dict[tuple[str, str, str], _Unit | ValueProblem] = {}
        # codes -> analyte, per sending facility: a lab sends the same codes again and
        # again, and the reader hands out the same codes tuple for the same OBX-3
        # (core/oru.py), so the memo is keyed by that tuple's identity (held in the
        # entry, so the id stays its)
        self._analyte_memo: dict[
            tuple[str, int], tuple[tuple[Coding, ...], str | ValueProblem]
        ] = {}
        # the same, with the unit: (facility, id(codes), unit text) -> what they resolve
        # to, so a result of a known kind costs one lookup before its value is read
        self._kinds: dict[tuple[str, int, str], tuple[tuple[Coding, ...], _Kind]] = {}

    # -- what a result's codes and unit resolve to ----------------------------------

    def _kind_of(self, result: LabResult) -> tuple[tuple[Coding, ...], _Kind]:
        """The sender, analyte and unit a result's (facility, codes, unit) resolve to,
        with the codes tuple the entry is for."""
        sender = self._senders.get(result.sending_facility, _NO_SENDER)
        analyte_id = self._analyte_of(result, sender)
        if isinstance(analyte_id, ValueProblem):
            return result.codes, _Kind(sender, None, analyte_id, analyte_id)
        analyte = self._analytes[analyte_id]
        unit = self._unit_for(result.unit_text, sender, analyte)
        return result.codes, _Kind(sender, analyte, _NO_PROBLEM, unit)

    # -- analyte ------------------------------------------------------------------

    def _analyte_of(self, result: LabResult, sender: _Sender) -> str | ValueProblem:
        codes = result.codes
        key = (result.sending_facility, id(codes))  # the sender follows from the facility
        entry = self._analyte_memo.get(key)
        if entry is not None and entry[0] is codes:
            return entry[1]
        found = self._find_analyte(result, sender)
        if len(self._analyte_memo) >= _RESOLVED_CACHE_LIMIT:
            self._analyte_memo.clear()
        self._analyte_memo[key] = (codes, found)
        return found

    def _find_analyte(self, result: LabResult, sender: _Sender) -> str | ValueProblem:
        local: set[str] = set()
        loinc: set[str] = set()
        for coding in result.codes:
            system = coding.system.casefold()
            hit = sender.by_system_code.get((system, coding.code)) or sender.by_code.get(
                coding.code
            )
            if hit is not None:
                local.add(hit)
            elif system in _LOINC_SYSTEMS and coding.code in self._loinc:
                loinc.add(self._loinc[coding.code])
        # The sender's own table is authoritative; LOINC only where it says nothing.
        found, level = (local, "local") if local else (loinc, "LOINC")
        if len(found) == 1:
            return next(iter(found))
        if found:
            return ValueProblem(
                UnmappedReason.UNMAPPED_CODE,
                f"{level} codes name different analytes {sorted(found)}: "
                f"{_codes(result)} from {_facility(result)}",
            )
        if any(
            c.system.casefold() in _LOINC_SYSTEMS and c.code in self._not_used for c in result.codes
        ):
            return ValueProblem(
                UnmappedReason.NOT_USED,
                f"code {_codes(result)} is known and not used by the rule pack",
            )
        return ValueProblem(
            UnmappedReason.UNMAPPED_CODE,
            f"no mapping for code {_codes(result)} from {_facility(result)}",
        )

    # -- unit ---------------------------------------------------------------------

    def _unit_for(self, unit_text: str, sender: _Sender, analyte: _Analyte) -> _Unit | ValueProblem:
        key = (sender.facility, unit_text, analyte.id)
        cached = self._resolved.get(key)
        if cached is None:
            cached = self._resolve(unit_text, sender, analyte)
            if len(self._resolved) < _RESOLVED_CACHE_LIMIT:
                self._resolved[key] = cached
        return cached

    def _resolve(self, unit_text: str, sender: _Sender, analyte: _Analyte) -> _Unit | ValueProblem:
        spelling = unit_text.strip()
        if not spelling:
            if analyte.dimensionless:
                return self._convert("1", analyte, "(empty)")
            return ValueProblem(
                UnmappedReason.UNKNOWN_UNIT,
                f"no unit sent; {analyte.id} needs a unit convertible to {analyte.unit}",
            )
        ucum = sender.spellings.get(spelling) or self._spellings.get(spelling)
        if ucum is not None:
            return self._convert(ucum, analyte, spelling)
        literal: _Unit | ValueProblem | None = None
        if self._converter.is_valid(spelling):
            literal = self._convert(spelling, analyte, spelling)
            if isinstance(literal, _Unit):
                return literal
        # Case-insensitive fallback, only where the fold is unambiguous and converts:
        # "MG/L" (UCUM's case-insensitive form of mg/L; case-sensitive UCUM would read
        # megagauss per litre) -> mg/L. "Mg/L" stays megagram: it converts as written.
        folded = spelling.casefold()
        ucum = sender.folded.get(folded) or self._folded.get(folded)
        if ucum is not None:
            guess = self._convert(ucum, analyte, spelling)
            if isinstance(guess, _Unit) or literal is None:
                return guess
        if literal is not None:
            return literal
        return ValueProblem(
            UnmappedReason.UNKNOWN_UNIT,
            f"unit {spelling!r} is neither a known spelling nor valid UCUM",
        )

    def _convert(self, ucum: str, analyte: _Analyte, spelling: str) -> _Unit | ValueProblem:
        shown = repr(spelling) if spelling == ucum else f"{spelling!r} (UCUM {ucum})"
        try:
            factor = self._converter.factor(
                ucum, analyte.unit, molar_mass_g_per_mol=analyte.molar_mass
            )
        except UnitError as exc:
            if exc.kind is UnitErrorKind.UNKNOWN:
                return ValueProblem(UnmappedReason.UNKNOWN_UNIT, f"unit {shown}: {exc.reason}")
            return ValueProblem(
                UnmappedReason.UNCONVERTIBLE_UNIT,
                f"unit {shown} does not convert to {analyte.id}'s {analyte.unit}: {exc.reason}",
            )
        if analyte.dimensionless and factor != 1:
            # e.g. a Quick value in % under an INR code: a different quantity, not a ratio
            return ValueProblem(
                UnmappedReason.UNCONVERTIBLE_UNIT,
                f"unit {shown} is not a plain ratio; {analyte.id} is unitless ({analyte.unit})",
            )
        return _Unit(ucum, factor)

    # -- start-up --------------------------------------------------------------------

    def sample(self, analyte_id: str) -> tuple[str, str, Decimal, Decimal] | None:
        """(a LOINC code, canonical unit, plausible low, plausible high) of an analyte,
        or None when the mappings give it no LOINC code (for synthetic start-up input)."""
        analyte = self._analytes.get(analyte_id)
        code = next((c for c, a in self._loinc.items() if a == analyte_id), None)
        if analyte is None or code is None:
            return None
        return code, analyte.unit, analyte.low, analyte.high

    def warm_up(self) -> int:
        """Resolve every unit spelling of units.yaml, and each sender's own, for every
        analyte now: the UCUM parsing and factors a first conversion computes are cached
        by the converter, so no message pays for them. Returns how many were resolved."""
        count = 0
        for sender in (_NO_SENDER, *self._senders.values()):
            for spelling in self._spellings if sender is _NO_SENDER else sender.spellings:
                for analyte in self._analytes.values():
                    self._unit_for(spelling, sender, analyte)
                    count += 1
        return count

    # -- the public call -----------------------------------------------------------

    def normalise(self, result: LabResult) -> Normalised | Unmapped:
        """Map one result to its analyte and canonical value, or say why it cannot be.

        Returns ``Normalised`` or ``Unmapped`` (reason UNMAPPED_CODE, NO_VALUE,
        NOT_NUMERIC, UNKNOWN_UNIT, UNCONVERTIBLE_UNIT or IMPLAUSIBLE, with a
        human-readable detail naming code, unit and facility). Never raises.
        """
        codes = result.codes
        key = (result.sending_facility, id(codes), result.unit_text)
        kind = self._kinds.get(key)
        if kind is None or kind[0] is not codes:
            kind = remember(self._kinds, key, self._kind_of(result), _RESOLVED_CACHE_LIMIT)
        k = kind[1]
        analyte = k.analyte
        if analyte is None:
            problem = k.problem
            return Unmapped(result, problem.reason, problem.detail)
        analyte_id = analyte.id
        unit = k.unit
        value = read_value(
            result.value_text,
            result.comparator_text,
            value_type=result.value_type,
            decimal_comma=k.sender.decimal_comma,
        )
        if isinstance(value, ValueProblem):
            return Unmapped(
                result,
                value.reason,
                f"{value.detail} (code {_codes(result)} from {_facility(result)})",
                analyte_id,
            )
        comparator, sent = value
        if isinstance(unit, ValueProblem):
            return Unmapped(
                result,
                unit.reason,
                f"{unit.detail} (code {_codes(result)} from {_facility(result)})",
                analyte_id,
            )
        converted = sent if unit.factor == 1 else plain_decimal(sent * unit.factor)
        if not analyte.low <= converted <= analyte.high:
            return Unmapped(
                result,
                UnmappedReason.IMPLAUSIBLE,
                f"{analyte_id} {converted} {analyte.unit} (sent {result.comparator_text}"
                f"{result.value_text.strip()} {result.unit_text.strip()!r}) "
                f"is outside the plausible range {analyte.low}..{analyte.high} {analyte.unit}; "
                f"probably a unit error at the sender (code {_codes(result)} from "
                f"{_facility(result)})",
                analyte_id,
            )
        return Normalised(
            result=result,
            analyte=analyte_id,
            value=converted,
            unit=analyte.unit,
            comparator=comparator,
            sent_value=sent,
            ucum=unit.ucum,
            factor=unit.factor,
        )


def _codes(result: LabResult) -> str:
    return ", ".join(f"{c.system or '(no system)'} {c.code}" for c in result.codes) or "(none)"


def _facility(result: LabResult) -> str:
    return f"facility {result.sending_facility!r}" if result.sending_facility else "no facility"
