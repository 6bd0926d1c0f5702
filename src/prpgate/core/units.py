"""UCUM unit conversion: multiplication factors computed by ucumvert/pint, never a hand table.

``UnitConverter`` wraps one ucumvert ``PintUcumRegistry``. Building that registry takes
about 0.6 s, so it happens at first use (or when ``warm_up()`` is called at start-up),
never at import time. Parsed units and factors are cached per converter.

Rules this module implements:

* Curly-brace annotations (``{cells}/uL``) carry no meaning in UCUM (UCUM §2.4.4):
  ucumvert drops them inside a term, and a term that is *only* an annotation
  (``{INR}``, ``{ratio}``) is the unity ``1``.
* A molar unit converts to a mass unit (``mmol/L`` → ``g/dL``, ``nmol/L`` → ``mg/L``)
  only when the caller passes the substance's molar mass.
* Only multiplicative units convert: an offset unit such as ``Cel`` raises ``UnitError``.
* pint computes in binary floats. A factor is the float rounded to 12 significant
  digits (a double carries 15–17), which removes representation noise such as
  ``0.0010000000000000002`` while keeping far more precision than any lab value;
  it is returned as a plain ``Decimal`` (``1000``, not ``1E+3``).
"""

from __future__ import annotations

import functools
import re
from decimal import Context, Decimal
from enum import Enum
from typing import Any

from prpgate.errors import PrpgateError

__all__ = [
    "UnitConverter",
    "UnitError",
    "UnitErrorKind",
    "is_dimensionless_code",
    "plain_decimal",
    "ucum_problem",
]

# A code that is nothing but one annotation, e.g. "{INR}": UCUM reads it as the unity.
_ANNOTATION_ONLY = re.compile(r"\{[^{}]*\}")
_SIGNIFICANT = Context(prec=12)
_FACTOR_CACHE_SIZE = 4096


class UnitErrorKind(Enum):
    """Why a conversion failed."""

    UNKNOWN = "unknown"  # not a valid UCUM code
    UNCONVERTIBLE = "unconvertible"  # valid UCUM, but no multiplication factor leads to the target


class UnitError(PrpgateError):
    """A unit that is not valid UCUM, or two units with no conversion factor between them.

    ``unit`` is the offending UCUM code, ``target`` the unit converted to (if any),
    ``kind`` whether the unit is unknown or merely unconvertible.
    """

    def __init__(
        self, reason: str, *, unit: str, kind: UnitErrorKind, target: str | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unit = unit
        self.kind = kind
        self.target = target


def _for_ucumvert(code: str) -> str:
    """The code as ucumvert should see it: an annotation-only code becomes ``1``."""
    stripped = code.strip()
    if _ANNOTATION_ONLY.fullmatch(stripped):
        return "1"
    return stripped


def is_dimensionless_code(code: str) -> bool:
    """True for the unity written as ``1``, an annotation alone (``{INR}``) or nothing."""
    return _for_ucumvert(code) in ("1", "")


@functools.cache
def _parser() -> Any:
    """The UCUM grammar parser alone (~50 ms to build; no pint registry needed)."""
    from ucumvert import get_ucum_parser  # deferred: only at first use

    return get_ucum_parser()


def ucum_problem(code: str) -> str | None:
    """Why ``code`` is not valid UCUM syntax, or None when it parses.

    Checks syntax and known atoms only (no conversion). Used when validating mapping
    files; accepts annotation-only codes such as ``{INR}``.
    """
    from ucumvert import InvalidUcumError, parse_ucum  # deferred, see _parser

    text = _for_ucumvert(code)
    if not text:
        return "empty unit code"
    try:
        parse_ucum(text, _parser())
    except InvalidUcumError as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        why = first_line.rpartition(": ")[2].rstrip(".") or "invalid syntax"
        return f"not valid UCUM ({why})"
    return None


def plain_decimal(value: Decimal) -> Decimal:
    """``value`` without trailing zeros and without an exponent (``1E+3`` -> ``1000``)."""
    normal = value.normalize()
    exponent = normal.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0:
        return normal.quantize(Decimal(1))
    return normal


class UnitConverter:
    """Conversion factors between UCUM codes, computed by ucumvert/pint and cached.

    ``registry`` may be passed (e.g. shared between converters in tests); otherwise a
    ``PintUcumRegistry`` is built at first use or by ``warm_up()``.
    """

    def __init__(
        self, registry: Any | None = None, *, cache_size: int = _FACTOR_CACHE_SIZE
    ) -> None:
        self._registry: Any | None = registry
        self._quantities: dict[str, Any] = {}
        self._factor = functools.lru_cache(maxsize=cache_size)(self._compute_factor)

    def warm_up(self) -> None:
        """Build the ucumvert registry now (call at start-up to keep the first message fast)."""
        self._ureg()

    @property
    def is_ready(self) -> bool:
        """True once the ucumvert registry has been built (by ``warm_up`` or first use)."""
        return self._registry is not None

    def _ureg(self) -> Any:
        if self._registry is None:
            from ucumvert import PintUcumRegistry  # ~0.6 s: never at import time

            self._registry = PintUcumRegistry()
        return self._registry

    def factor(
        self, from_ucum: str, to_ucum: str, *, molar_mass_g_per_mol: Decimal | None = None
    ) -> Decimal:
        """The multiplier that turns a value in ``from_ucum`` into one in ``to_ucum``.

        ``molar_mass_g_per_mol`` bridges amount of substance and mass (``mmol/L`` ->
        ``g/dL``); it is ignored when the units convert without it. Returns a Decimal
        rounded to 12 significant digits. Raises ``UnitError`` (kind UNKNOWN) for a
        code that is not UCUM, and (kind UNCONVERTIBLE) when no factor exists.
        """
        return self._factor(from_ucum, to_ucum, molar_mass_g_per_mol)

    def cache_info(self) -> functools._CacheInfo:
        """Hits and misses of the factor cache."""
        return self._factor.cache_info()

    def is_valid(self, code: str) -> bool:
        """True when ``code`` is a UCUM code the registry understands."""
        try:
            self._quantity(code)
        except UnitError:
            return False
        return True

    def _quantity(self, code: str) -> Any:
        cached = self._quantities.get(code)
        if cached is not None:
            return cached
        text = _for_ucumvert(code)
        if not text:
            raise UnitError("empty unit code", unit=code, kind=UnitErrorKind.UNKNOWN)
        from pint.errors import PintError  # deferred with ucumvert
        from ucumvert import InvalidUcumError

        try:
            quantity = self._ureg().from_ucum(text)
        except (
            InvalidUcumError,
            PintError,
            ValueError,
            TypeError,
            AttributeError,
            KeyError,
        ) as exc:
            raise UnitError(
                f"{code!r} is not a valid UCUM unit", unit=code, kind=UnitErrorKind.UNKNOWN
            ) from exc
        if not hasattr(quantity, "dimensionality"):
            raise UnitError(f"{code!r} is not a UCUM unit", unit=code, kind=UnitErrorKind.UNKNOWN)
        if len(self._quantities) < _FACTOR_CACHE_SIZE:
            self._quantities[code] = quantity
        return quantity

    def _compute_factor(self, from_ucum: str, to_ucum: str, molar_mass: Decimal | None) -> Decimal:
        from pint.errors import DimensionalityError

        src = self._quantity(from_ucum)
        dst = self._quantity(to_ucum)
        if not (src._ok_for_muldiv() and dst._ok_for_muldiv()):
            raise UnitError(
                f"{from_ucum!r} -> {to_ucum!r}: offset units have no conversion factor",
                unit=from_ucum,
                target=to_ucum,
                kind=UnitErrorKind.UNCONVERTIBLE,
            )
        candidates = [src]
        if molar_mass is not None:
            mass = self._quantity("g/mol") * float(molar_mass)
            candidates += [src * mass, src / mass]
        for candidate in candidates:
            try:
                magnitude = candidate.to(dst.units).magnitude / dst.magnitude
            except DimensionalityError:
                continue
            return self._decimal(float(magnitude), from_ucum, to_ucum)
        via = f" (molar mass {molar_mass} g/mol)" if molar_mass is not None else ""
        raise UnitError(
            f"{from_ucum!r} ({src.dimensionality}) does not convert to {to_ucum!r} "
            f"({dst.dimensionality}){via}",
            unit=from_ucum,
            target=to_ucum,
            kind=UnitErrorKind.UNCONVERTIBLE,
        )

    @staticmethod
    def _decimal(magnitude: float, from_ucum: str, to_ucum: str) -> Decimal:
        value = _SIGNIFICANT.create_decimal(repr(magnitude))
        if not value.is_finite() or value <= 0:
            raise UnitError(
                f"{from_ucum!r} -> {to_ucum!r}: factor {magnitude!r} is not a positive number",
                unit=from_ucum,
                target=to_ucum,
                kind=UnitErrorKind.UNCONVERTIBLE,
            )
        return plain_decimal(value)
