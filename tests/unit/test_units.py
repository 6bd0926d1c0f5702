"""UnitConverter: UCUM factors from ucumvert/pint, and the shipped unit spellings."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from prpgate.core.units import (
    UnitConverter,
    UnitError,
    UnitErrorKind,
    is_dimensionless_code,
    ucum_problem,
)
from prpgate.mapping_schema import MappingSet
from prpgate.mappings_loader import load_mappings
from tests.conftest import MAPPINGS


@pytest.fixture(scope="module")
def registry() -> Any:
    from ucumvert import PintUcumRegistry

    return PintUcumRegistry()  # ~0.6 s: built once for the module


@pytest.fixture(scope="module")
def converter(registry: Any) -> UnitConverter:
    return UnitConverter(registry)


@pytest.fixture(scope="module")
def shipped() -> MappingSet:
    return load_mappings(MAPPINGS)


# Expected factors from first principles (value in spelling x factor = value in canonical):
#   1 uL = 1e-6 L, so 1e3/uL = 1e9/L            -> 10*3/uL to 10*9/L is 1
#   1/uL = 1e6/L = 1e-3 x 1e9/L                   -> /uL to 10*9/L is 0.001
#   1 mm3 = 1 uL                                  -> /mm3 like /uL, 10*3/mm3 like 10*3/uL
#   1/nL = 1e9/L                                  -> 1
#   G/L in feeds = giga per litre = 1e9/L         -> 1
#   1 g/L = 0.1 g/dL (1 dL = 0.1 L)               -> 0.1
#   Hb 1 mmol/L x 16114.5 g/mol = 16.1145 g/L = 1.61145 g/dL
#   1 mg/dL = 10 mg/L
#   CRP 1 nmol/L x 105000 g/mol = 105000 ng/L = 0.105 mg/L
#   INR: a unitless ratio, factor 1
COUNT = "10*9/L"
DESIGN_SPELLINGS: list[tuple[str, str, str]] = [
    ("10*3/uL", COUNT, "1"),
    ("10^3/uL", COUNT, "1"),
    ("x10E3/uL", COUNT, "1"),
    ("K/uL", COUNT, "1"),
    ("K/ul", COUNT, "1"),
    ("THOU/uL", COUNT, "1"),
    ("thou/mm3", COUNT, "1"),
    ("/uL", COUNT, "0.001"),
    ("cells/uL", COUNT, "0.001"),
    ("{cells}/uL", COUNT, "0.001"),
    ("/mm3", COUNT, "0.001"),
    ("/nL", COUNT, "1"),
    ("/nl", COUNT, "1"),
    ("G/L", COUNT, "1"),
    ("giga.l-1", COUNT, "1"),
    # also seen in the corpus
    ("10*9/L", COUNT, "1"),
    ("x10*9/L", COUNT, "1"),
    ("10^9/L", COUNT, "1"),
    ("10*3/mm3", COUNT, "1"),
    ("g/dl", "g/dL", "1"),
    ("g/dL", "g/dL", "1"),
    ("g/L", "g/dL", "0.1"),
    ("g/l-1", "g/dL", "0.1"),
    ("mmol/L", "g/dL", "1.61145"),
    ("mg/L", "mg/L", "1"),
    ("mg/dL", "mg/L", "10"),
    ("nmol/L", "mg/L", "0.105"),
    ("{INR}", "{INR}", "1"),
    ("INR", "{INR}", "1"),
    ("ratio", "{INR}", "1"),
    ("1", "{INR}", "1"),
]
CANONICAL_ANALYTE = {COUNT: "wbc", "g/dL": "hgb", "mg/L": "crp", "{INR}": "inr"}


@pytest.mark.parametrize(("spelling", "canonical", "expected"), DESIGN_SPELLINGS)
def test_units_design_spelling_converts_to_canonical_unit(
    converter: UnitConverter, shipped: MappingSet, spelling: str, canonical: str, expected: str
) -> None:
    analyte = shipped.analyte(CANONICAL_ANALYTE[canonical])
    assert analyte is not None
    assert analyte.unit == canonical
    ucum = shipped.units.spellings[spelling]
    factor = converter.factor(ucum, canonical, molar_mass_g_per_mol=analyte.molar_mass_g_per_mol)
    assert factor == Decimal(expected)
    assert str(factor) == expected  # plain and rounded: no 0.0010000000000000002, no 1E+1


def test_units_g_per_l_is_giga_per_litre_in_the_table_but_gauss_in_ucum(
    converter: UnitConverter, shipped: MappingSet
) -> None:
    assert shipped.units.spellings["G/L"] == "10*9/L"
    with pytest.raises(UnitError) as info:
        converter.factor("G/L", "10*9/L")  # read as UCUM: gauss per litre
    assert info.value.kind is UnitErrorKind.UNCONVERTIBLE


def test_units_k_per_ul_is_thousands_in_the_table_but_kelvin_in_ucum(
    converter: UnitConverter, shipped: MappingSet
) -> None:
    assert shipped.units.spellings["K/uL"] == "10*3/uL"
    assert converter.is_valid("K/uL")  # kelvin per microlitre, hence the table entry
    with pytest.raises(UnitError):
        converter.factor("K/uL", "10*9/L")


@pytest.mark.parametrize(
    ("annotated", "plain"),
    [("{cells}/uL", "/uL"), ("10*3{cells}/uL", "10*3/uL"), ("{INR}", "1"), ("pg/{cell}", "pg")],
)
def test_units_curly_brace_annotations_carry_no_meaning(
    converter: UnitConverter, annotated: str, plain: str
) -> None:
    assert converter.factor(annotated, plain) == 1
    assert converter.factor(plain, annotated) == 1


def test_units_annotations_do_not_make_units_compatible(converter: UnitConverter) -> None:
    with pytest.raises(UnitError) as info:
        converter.factor("{cells}/uL", "{cells}")
    assert info.value.kind is UnitErrorKind.UNCONVERTIBLE


@pytest.mark.parametrize("unit", ["x10E3/uL", "THOU/uL", "cells/uL", "", "  ", "foo"])
def test_units_unknown_unit_raises_unit_error(converter: UnitConverter, unit: str) -> None:
    with pytest.raises(UnitError) as info:
        converter.factor(unit, "10*9/L")
    assert info.value.kind is UnitErrorKind.UNKNOWN
    assert info.value.unit == unit


def test_units_unknown_target_raises_unit_error(converter: UnitConverter) -> None:
    with pytest.raises(UnitError) as info:
        converter.factor("10*9/L", "giga.l-1")
    assert info.value.kind is UnitErrorKind.UNKNOWN


def test_units_unconvertible_unit_raises_unit_error(converter: UnitConverter) -> None:
    with pytest.raises(UnitError) as info:
        converter.factor("g/dL", "10*9/L")
    assert info.value.kind is UnitErrorKind.UNCONVERTIBLE
    assert info.value.unit == "g/dL"
    assert info.value.target == "10*9/L"


def test_units_molar_conversion_needs_a_molar_mass(converter: UnitConverter) -> None:
    with pytest.raises(UnitError) as info:
        converter.factor("mmol/L", "g/dL")
    assert info.value.kind is UnitErrorKind.UNCONVERTIBLE
    assert converter.factor("mmol/L", "g/dL", molar_mass_g_per_mol=Decimal("16114.5")) == Decimal(
        "1.61145"
    )


def test_units_molar_conversion_works_both_ways(converter: UnitConverter) -> None:
    crp = Decimal(105000)
    to_mass = converter.factor("nmol/L", "mg/L", molar_mass_g_per_mol=crp)
    to_molar = converter.factor("mg/L", "nmol/L", molar_mass_g_per_mol=crp)
    assert to_mass == Decimal("0.105")
    assert to_molar == Decimal("9.52380952381")  # 1e6 / 105000, 12 significant digits


def test_units_molar_mass_is_ignored_when_units_convert_directly(converter: UnitConverter) -> None:
    assert converter.factor("g/L", "g/dL", molar_mass_g_per_mol=Decimal(7)) == Decimal("0.1")


def test_units_offset_units_have_no_factor(converter: UnitConverter) -> None:
    with pytest.raises(UnitError) as info:
        converter.factor("Cel", "K")
    assert info.value.kind is UnitErrorKind.UNCONVERTIBLE


def test_units_large_factor_is_plain_decimal(converter: UnitConverter) -> None:
    factor = converter.factor("10*9/L", "/uL")
    assert factor == 1000
    assert str(factor) == "1000"


def test_units_factor_cache_hits_on_repeat(registry: Any) -> None:
    fresh = UnitConverter(registry)
    first = fresh.factor("/nL", "10*9/L")
    second = fresh.factor("/nL", "10*9/L")
    info = fresh.cache_info()
    assert first == second == 1
    assert (info.hits, info.misses) == (1, 1)


def test_units_registry_is_built_lazily(registry: Any) -> None:
    conv = UnitConverter()
    assert conv.is_ready is False
    assert UnitConverter(registry).is_ready is True


def test_units_ucum_problem_explains_invalid_codes() -> None:
    assert ucum_problem("10*9/L") is None
    assert ucum_problem("{INR}") is None
    problem = ucum_problem("x10*9/L")
    assert problem is not None
    assert "not valid UCUM" in problem
    assert ucum_problem("") == "empty unit code"


@pytest.mark.parametrize(
    ("code", "expected"), [("1", True), ("{INR}", True), ("", True), ("%", False), ("g/L", False)]
)
def test_units_is_dimensionless_code(code: str, expected: bool) -> None:
    assert is_dimensionless_code(code) is expected
