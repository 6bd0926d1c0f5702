"""Mapper.normalise: codes, values, units and plausibility -> Normalised or Unmapped."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prpgate.core.mapping import Mapper, ValueProblem, read_value
from prpgate.core.model import (
    Coding,
    Comparator,
    LabResult,
    Normalised,
    Patient,
    PatientId,
    ResultKey,
    ResultStatus,
    Unmapped,
    UnmappedReason,
)
from prpgate.core.units import UnitConverter
from prpgate.mapping_schema import MappingSet
from prpgate.mappings_loader import load_mappings
from tests.conftest import MAPPINGS

_RULES: dict[str, Any] = {
    "rule_code_system": "https://prpgate.example/fhir/CodeSystem/prp-rules",
    "identifier_system": "https://prpgate.example/fhir/sid",
    "patient_identifier_system_default": "https://prpgate.example/fhir/sid/aa",
    "issue_coding": {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
        "code": "LAB",
        "display": "Lab Alert",
    },
    "rules": [
        {
            "id": "leukocytosis",
            "analyte": "wbc",
            "direction": "above",
            "unit": "10*9/L",
            "moderate": "11.0",
            "high": "20.0",
            "display": "Leukocytosis",
            "flag_text": "PRP on hold: leukocytosis",
        }
    ],
}
MAPPING_DATA: dict[str, Any] = {
    "analytes": {
        "analytes": [
            {
                "id": "wbc",
                "display": "WBC",
                "unit": "10*9/L",
                "plausible": {"low": 0, "high": 1000},
                "loinc": ["6690-2", "26464-8"],
            },
            {
                "id": "plt",
                "display": "PLT",
                "unit": "10*9/L",
                "plausible": {"low": 0, "high": 5000},
                "loinc": ["777-3"],
            },
            {
                "id": "hgb",
                "display": "Hb",
                "unit": "g/dL",
                "plausible": {"low": 1, "high": 25},
                "molar_mass_g_per_mol": "16114.5",
                "loinc": ["718-7"],
            },
            {
                "id": "crp",
                "display": "CRP",
                "unit": "mg/L",
                "plausible": {"low": 0, "high": 1000},
                "molar_mass_g_per_mol": 105000,
                "loinc": ["1988-5"],
            },
            {
                "id": "inr",
                "display": "INR",
                "unit": "{INR}",
                "plausible": {"low": "0.5", "high": 20},
                "loinc": ["6301-6"],
            },
        ]
    },
    "units": {
        "spellings": {
            "K/uL": "10*3/uL",
            "/nl": "/nL",
            "G/L": "10*9/L",
            "g/L": "g/L",
            "mg/L": "mg/L",
            "INR": "{INR}",
            "ratio": "1",
            "Xy/uL": "10*3/uL",
            "XY/uL": "/uL",
        }
    },
    "senders": {
        "senders": [
            {
                "facility": "LAB-A",
                "codes": [
                    {"system": "Local", "code": "wbc", "analyte": "wbc"},
                    {"code": "plt", "analyte": "plt"},
                ],
                "units": {"Gpt/l": "10*9/L"},
            },
            {
                "facility": "LAB-DE",
                "decimal_comma": True,
                "codes": [{"system": "L", "code": "WBC", "analyte": "wbc"}],
            },
        ]
    },
    "rules": _RULES,
}


@pytest.fixture(scope="module")
def converter() -> UnitConverter:
    conv = UnitConverter()
    conv.warm_up()  # ~0.6 s, once for the module
    return conv


@pytest.fixture(scope="module")
def mapper(converter: UnitConverter) -> Mapper:
    return Mapper(MappingSet.model_validate(MAPPING_DATA), converter)


def result(
    *codes: tuple[str, str],
    value: str = "7.0",
    unit: str = "10*9/L",
    facility: str = "LAB-A",
    value_type: str = "NM",
    comparator: str = "",
) -> LabResult:
    """A LabResult as the ORU/FHIR readers produce it."""
    return LabResult(
        key=ResultKey(facility, "ORD1", f"{codes[0][0]}^{codes[0][1]}" if codes else ""),
        patient=Patient(PatientId("urn:test", "MRN1")),
        codes=tuple(Coding(system, code) for system, code in codes),
        value_type=value_type,
        value_text=value,
        unit_text=unit,
        status=ResultStatus.FINAL,
        effective="2026-01-15T09:00:00+00:00",
        sending_facility=facility,
        source="OBX[1]",
        comparator_text=comparator,
    )


WBC = ("LN", "6690-2")


def normalised(mapper: Mapper, r: LabResult) -> Normalised:
    out = mapper.normalise(r)
    assert isinstance(out, Normalised), out
    return out


def unmapped(mapper: Mapper, r: LabResult) -> Unmapped:
    out = mapper.normalise(r)
    assert isinstance(out, Unmapped), out
    return out


# --- codes ----------------------------------------------------------------------------


def test_mapping_loinc_in_primary_coding(mapper: Mapper) -> None:
    out = normalised(mapper, result(WBC, ("Local", "xyz")))
    assert (out.analyte, out.value, out.unit) == ("wbc", Decimal("7.0"), "10*9/L")


def test_mapping_loinc_in_alternate_coding(mapper: Mapper) -> None:
    out = normalised(mapper, result(("99LAB", "LEUK"), ("LN", "26464-8"), facility="ELSEWHERE"))
    assert out.analyte == "wbc"


@pytest.mark.parametrize(
    "system", ["LN", "ln", "LOINC", "http://loinc.org", "HTTP://LOINC.ORG", "2.16.840.1.113883.6.1"]
)
def test_mapping_loinc_recognised_by_system(mapper: Mapper, system: str) -> None:
    assert normalised(mapper, result((system, "6690-2"))).analyte == "wbc"


@pytest.mark.parametrize("system", ["", "SCT", "L"])
def test_mapping_loinc_like_code_in_other_system_is_unmapped(mapper: Mapper, system: str) -> None:
    out = unmapped(mapper, result((system, "6690-2"), facility="ELSEWHERE"))
    assert out.reason is UnmappedReason.UNMAPPED_CODE


def test_mapping_unknown_loinc_is_unmapped_with_detail(mapper: Mapper) -> None:
    out = unmapped(mapper, result(("LN", "2345-7"), facility="LAB-X"))
    assert out.reason is UnmappedReason.UNMAPPED_CODE
    assert "LN 2345-7" in out.detail
    assert "LAB-X" in out.detail
    assert out.analyte == ""


def test_mapping_local_code_scoped_by_facility(mapper: Mapper) -> None:
    assert normalised(mapper, result(("Local", "wbc"))).analyte == "wbc"
    out = unmapped(mapper, result(("Local", "wbc"), facility="LAB-B"))
    assert out.reason is UnmappedReason.UNMAPPED_CODE
    assert "LAB-B" in out.detail


def test_mapping_local_code_system_is_case_insensitive_code_is_not(mapper: Mapper) -> None:
    assert normalised(mapper, result(("LOCAL", "wbc"))).analyte == "wbc"
    assert unmapped(mapper, result(("Local", "WBC"))).reason is UnmappedReason.UNMAPPED_CODE


def test_mapping_local_code_with_system_needs_that_system(mapper: Mapper) -> None:
    out = unmapped(mapper, result(("Other", "wbc")))
    assert out.reason is UnmappedReason.UNMAPPED_CODE


def test_mapping_local_code_without_system_matches_code_alone(mapper: Mapper) -> None:
    out = normalised(mapper, result(("", "plt"), value="221", unit="/nl"))
    assert (out.analyte, out.value) == ("plt", Decimal("221"))


def test_mapping_local_code_wins_over_loinc_alternate(mapper: Mapper) -> None:
    # The sender's reviewed table is authoritative for its own codes.
    out = normalised(mapper, result(("Local", "wbc"), ("LN", "718-7")))
    assert out.analyte == "wbc"


def test_mapping_conflicting_loinc_codings_are_unmapped(mapper: Mapper) -> None:
    out = unmapped(mapper, result(WBC, ("LN", "718-7")))
    assert out.reason is UnmappedReason.UNMAPPED_CODE
    assert "different analytes" in out.detail


def test_mapping_result_without_codes_is_unmapped(mapper: Mapper) -> None:
    assert unmapped(mapper, result()).reason is UnmappedReason.UNMAPPED_CODE


# --- values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "comparator", "number"),
    [
        ("<5", Comparator.LT, "5"),
        (">20", Comparator.GT, "20"),
        ("<=3", Comparator.LE, "3"),
        (">=7.5", Comparator.GE, "7.5"),
        ("< 1", Comparator.LT, "1"),
        ("> 25.0", Comparator.GT, "25.0"),
        ("=4", None, "4"),
        ("  4.2 ", None, "4.2"),
    ],
)
def test_mapping_comparator_forms(
    mapper: Mapper, text: str, comparator: Comparator | None, number: str
) -> None:
    out = normalised(mapper, result(WBC, value=text, value_type="ST"))
    assert out.comparator is comparator
    assert out.value == Decimal(number)
    assert out.sent_value == Decimal(number)


@pytest.mark.parametrize(
    ("sn1", "comparator"),
    [("<", Comparator.LT), (">", Comparator.GT), ("<=", Comparator.LE), (">=", Comparator.GE)],
)
def test_mapping_sn_comparator_comes_from_sn1(
    mapper: Mapper, sn1: str, comparator: Comparator
) -> None:
    out = normalised(mapper, result(WBC, value="5", value_type="SN", comparator=sn1))
    assert (out.comparator, out.value) == (comparator, Decimal(5))


def test_mapping_sn_equals_is_no_comparator(mapper: Mapper) -> None:
    out = normalised(mapper, result(WBC, value="5", value_type="SN", comparator="="))
    assert out.comparator is None


@pytest.mark.parametrize("rest", ["1-5", "1:128", "1/2", "2+"])
def test_mapping_sn_range_or_ratio_is_not_numeric(mapper: Mapper, rest: str) -> None:
    out = unmapped(mapper, result(WBC, value=rest, value_type="SN"))
    assert out.reason is UnmappedReason.NOT_NUMERIC
    assert "range or ratio" in out.detail
    assert out.analyte == "wbc"


def test_mapping_sn_not_equal_comparator_is_not_numeric(mapper: Mapper) -> None:
    out = unmapped(mapper, result(WBC, value="5", value_type="SN", comparator="<>"))
    assert out.reason is UnmappedReason.NOT_NUMERIC


def test_mapping_comparator_kept_through_conversion(mapper: Mapper) -> None:
    out = normalised(mapper, result(WBC, value="<5000", unit="{cells}/uL", value_type="ST"))
    assert (out.comparator, out.value, out.factor) == (Comparator.LT, Decimal(5), Decimal("0.001"))


@pytest.mark.parametrize(
    ("text", "number"),
    [("065.88", "65.88"), (".5", "0.5"), ("5.", "5"), ("0", "0"), ("+7.1", "7.1")],
)
def test_mapping_decimal_forms(mapper: Mapper, text: str, number: str) -> None:
    assert normalised(mapper, result(WBC, value=text)).value == Decimal(number)


def test_mapping_decimal_comma_for_configured_sender(mapper: Mapper) -> None:
    out = normalised(mapper, result(("L", "WBC"), value="1,8", facility="LAB-DE"))
    assert out.value == Decimal("1.8")
    out = normalised(mapper, result(("L", "WBC"), value="<0,5", facility="LAB-DE"))
    assert (out.comparator, out.value) == (Comparator.LT, Decimal("0.5"))


def test_mapping_decimal_point_still_accepted_for_decimal_comma_sender(mapper: Mapper) -> None:
    assert normalised(mapper, result(WBC, value="1.8", facility="LAB-DE")).value == Decimal("1.8")


def test_mapping_decimal_comma_without_sender_flag_is_not_numeric(mapper: Mapper) -> None:
    out = unmapped(mapper, result(WBC, value="1,8"))
    assert out.reason is UnmappedReason.NOT_NUMERIC
    assert "decimal_comma" in out.detail


@pytest.mark.parametrize(
    "text", ["see note", "1e3", "NaN", "Infinity", "5 H", "1.2.3", "1,000.5", "7 ~ 8", "<", "٣"]
)
def test_mapping_text_is_not_numeric(mapper: Mapper, text: str) -> None:
    out = unmapped(mapper, result(WBC, value=text, value_type="ST"))
    assert out.reason is UnmappedReason.NOT_NUMERIC
    assert out.detail


@pytest.mark.parametrize("text", ["", "   "])
def test_mapping_empty_value_is_no_value(mapper: Mapper, text: str) -> None:
    out = unmapped(mapper, result(WBC, value=text))
    assert out.reason is UnmappedReason.NO_VALUE
    assert out.analyte == "wbc"


def test_mapping_comparator_without_number_is_not_numeric(mapper: Mapper) -> None:
    out = unmapped(mapper, result(WBC, value="", value_type="SN", comparator="<"))
    assert out.reason is UnmappedReason.NOT_NUMERIC


def test_mapping_read_value_never_returns_float() -> None:
    value = read_value("0.1")
    assert value == (None, Decimal("0.1"))


_DECIMALS = st.decimals(min_value=0, max_value=10**6, places=4, allow_nan=False)


@given(_DECIMALS, st.sampled_from(["", "<", ">", "<=", ">="]), st.booleans())
def test_mapping_read_value_round_trips_decimals(
    number: Decimal, symbol: str, decimal_comma: bool
) -> None:
    text = f"{symbol}{number:f}"
    if decimal_comma:
        text = text.replace(".", ",")
    comparator = Comparator(symbol) if symbol else None
    assert read_value(text, decimal_comma=decimal_comma) == (comparator, number)


@given(st.text(max_size=20), st.text(max_size=3), st.sampled_from(["NM", "SN", "ST"]))
def test_mapping_read_value_never_raises(text: str, comparator: str, value_type: str) -> None:
    out = read_value(text, comparator, value_type=value_type)
    if isinstance(out, ValueProblem):
        assert out.reason in (UnmappedReason.NO_VALUE, UnmappedReason.NOT_NUMERIC)
        assert out.detail
    else:
        assert out[1].is_finite()


# --- units ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unit", "sent", "value", "ucum"),
    [
        ("/nl", "7.0", "7.0", "/nL"),
        ("K/uL", "7.0", "7.0", "10*3/uL"),
        ("G/L", "7.0", "7.0", "10*9/L"),
        ("{cells}/uL", "105600", "105.6", "{cells}/uL"),
        ("10*9/L", "4.6", "4.6", "10*9/L"),
        ("/uL", "4600", "4.6", "/uL"),
    ],
)
def test_mapping_count_units_convert(
    mapper: Mapper, unit: str, sent: str, value: str, ucum: str
) -> None:
    out = normalised(mapper, result(WBC, value=sent, unit=unit))
    assert (out.value, out.ucum, out.unit) == (Decimal(value), ucum, "10*9/L")
    assert out.sent_value == Decimal(sent)


def test_mapping_haemoglobin_mmol_per_l_uses_molar_mass(mapper: Mapper) -> None:
    out = normalised(mapper, result(("LN", "718-7"), value="8.5", unit="mmol/L"))
    assert (out.value, out.unit, out.factor) == (Decimal("13.697325"), "g/dL", Decimal("1.61145"))


def test_mapping_crp_nmol_per_l_uses_molar_mass(mapper: Mapper) -> None:
    out = normalised(mapper, result(("LN", "1988-5"), value="100", unit="nmol/L"))
    assert out.value == Decimal("10.5")


def test_mapping_sender_unit_spelling_is_scoped_to_the_sender(mapper: Mapper) -> None:
    assert normalised(mapper, result(WBC, unit="Gpt/l")).ucum == "10*9/L"
    out = unmapped(mapper, result(WBC, unit="Gpt/l", facility="LAB-DE"))
    assert out.reason is UnmappedReason.UNKNOWN_UNIT


def test_mapping_case_insensitive_fallback_when_unambiguous(mapper: Mapper) -> None:
    out = normalised(mapper, result(WBC, unit="k/UL"))
    assert (out.ucum, out.value) == ("10*3/uL", Decimal("7.0"))


def test_mapping_no_case_insensitive_fallback_when_ambiguous(mapper: Mapper) -> None:
    # "Xy/uL" and "XY/uL" fold to the same text but map to different units.
    out = unmapped(mapper, result(WBC, unit="xy/ul"))
    assert out.reason is UnmappedReason.UNKNOWN_UNIT


def test_mapping_all_caps_unit_falls_back_even_when_it_is_other_valid_ucum(
    mapper: Mapper,
) -> None:
    # Case-sensitive UCUM reads "MG/L" as megagauss per litre, which does not convert.
    out = normalised(mapper, result(("LN", "1988-5"), value="5", unit="MG/L"))
    assert (out.ucum, out.value) == ("mg/L", Decimal(5))


def test_mapping_valid_ucum_wins_over_case_insensitive_guess(mapper: Mapper) -> None:
    # "Mg/L" is UCUM megagram per litre: read literally, so it is implausible, not mg/L.
    out = unmapped(mapper, result(("LN", "1988-5"), value="5", unit="Mg/L"))
    assert out.reason is UnmappedReason.IMPLAUSIBLE


def test_mapping_unknown_unit(mapper: Mapper) -> None:
    out = unmapped(mapper, result(WBC, unit="zillions/uL"))
    assert out.reason is UnmappedReason.UNKNOWN_UNIT
    assert "zillions/uL" in out.detail
    assert "LN 6690-2" in out.detail
    assert "LAB-A" in out.detail
    assert out.analyte == "wbc"


def test_mapping_missing_unit_for_a_count_is_unknown_unit(mapper: Mapper) -> None:
    assert unmapped(mapper, result(WBC, unit="")).reason is UnmappedReason.UNKNOWN_UNIT


def test_mapping_unconvertible_unit(mapper: Mapper) -> None:
    out = unmapped(mapper, result(WBC, unit="g/dL"))
    assert out.reason is UnmappedReason.UNCONVERTIBLE_UNIT
    assert "g/dL" in out.detail
    assert "10*9/L" in out.detail


def test_mapping_giga_per_litre_spelling_is_not_gauss_but_lowercase_litre_is(
    mapper: Mapper,
) -> None:
    assert normalised(mapper, result(WBC, unit="G/L")).value == Decimal("7.0")
    # "G/l" is not in the table; as UCUM it is gauss per litre: never a count.
    assert unmapped(mapper, result(WBC, unit="G/l")).reason is UnmappedReason.UNCONVERTIBLE_UNIT


@pytest.mark.parametrize("unit", ["", "{INR}", "INR", "1", "ratio", " "])
def test_mapping_inr_is_unitless(mapper: Mapper, unit: str) -> None:
    out = normalised(mapper, result(("LN", "6301-6"), value="2.4", unit=unit))
    assert (out.analyte, out.value, out.unit) == ("inr", Decimal("2.4"), "{INR}")
    assert out.factor == 1


def test_mapping_inr_in_percent_is_not_a_ratio(mapper: Mapper) -> None:
    # A Quick value in % under an INR code is a different quantity: never 100 % -> 1.0.
    out = unmapped(mapper, result(("LN", "6301-6"), value="100", unit="%"))
    assert out.reason is UnmappedReason.UNCONVERTIBLE_UNIT


# --- plausibility ---------------------------------------------------------------------


def test_mapping_haemoglobin_in_g_per_ml_is_implausible(mapper: Mapper) -> None:
    # The NIST LRI CBC in the corpus reports Hb "12.5 g/mL" (1250 g/dL).
    out = unmapped(mapper, result(("LN", "718-7"), value="12.5", unit="g/mL"))
    assert out.reason is UnmappedReason.IMPLAUSIBLE
    assert out.analyte == "hgb"
    assert "1250 g/dL" in out.detail
    assert "g/mL" in out.detail
    assert "1..25" in out.detail


def test_mapping_count_labelled_with_wrong_power_is_implausible(mapper: Mapper) -> None:
    out = unmapped(mapper, result(WBC, value="7000", unit="10*9/L"))
    assert out.reason is UnmappedReason.IMPLAUSIBLE


def test_mapping_plausible_bounds_are_inclusive(mapper: Mapper) -> None:
    assert normalised(mapper, result(("LN", "718-7"), value="25", unit="g/dL")).value == 25
    assert normalised(mapper, result(("LN", "718-7"), value="10", unit="g/L")).value == 1
    out = unmapped(mapper, result(("LN", "718-7"), value="0.9", unit="g/dL"))
    assert out.reason is UnmappedReason.IMPLAUSIBLE


def test_mapping_negative_value_is_implausible(mapper: Mapper) -> None:
    assert unmapped(mapper, result(WBC, value="-1")).reason is UnmappedReason.IMPLAUSIBLE


# --- the shipped mappings on corpus-shaped results --------------------------------------


@pytest.fixture(scope="module")
def shipped_mapper(converter: UnitConverter) -> Mapper:
    return Mapper(load_mappings(MAPPINGS), converter)


def test_mapping_shipped_mirth_local_codes(shipped_mapper: Mapper) -> None:
    # mirth-connect__nonbatch_nested_08.hl7: "wbc^Wbc^Local^6690-2^Wbc^LN" 7.0 /nl,
    # "plt^Platelets" 221 /nl, "hgb^Hgb^Local^718-7^Hgb^LN" 13.7 g/dl.
    wbc = normalised(
        shipped_mapper,
        result(("Local", "wbc"), ("LN", "6690-2"), unit="/nl", facility="SendingFac"),
    )
    plt = normalised(
        shipped_mapper, result(("", "plt"), value="221", unit="/nl", facility="SendingFac")
    )
    hgb = normalised(
        shipped_mapper,
        result(("Local", "hgb"), ("LN", "718-7"), value="13.7", unit="g/dl", facility="SendingFac"),
    )
    assert (wbc.analyte, wbc.value) == ("wbc", Decimal("7.0"))
    assert (plt.analyte, plt.value) == ("plt", Decimal("221"))
    assert (hgb.analyte, hgb.value, hgb.unit) == ("hgb", Decimal("13.7"), "g/dL")


def test_mapping_shipped_local_crp_with_spaced_comparator(shipped_mapper: Mapper) -> None:
    # mirth-connect__large.hl7: "CRP^CRP^L" (no LOINC), ST "< 1" mg/L.
    out = normalised(
        shipped_mapper,
        result(("L", "CRP"), value="< 1", unit="mg/L", facility="STRONG", value_type="ST"),
    )
    assert (out.analyte, out.comparator, out.value) == ("crp", Comparator.LT, Decimal(1))


def test_mapping_shipped_local_plt_from_other_facility_is_unmapped(shipped_mapper: Mapper) -> None:
    out = unmapped(shipped_mapper, result(("", "plt"), value="221", unit="/nl", facility="STRONG"))
    assert out.reason is UnmappedReason.UNMAPPED_CODE


def test_mapping_shipped_nist_cbc_hb_is_implausible(shipped_mapper: Mapper) -> None:
    out = unmapped(
        shipped_mapper,
        result(("LN", "718-7"), value="12.5", unit="g/mL", facility="NIST Lab Facility"),
    )
    assert out.reason is UnmappedReason.IMPLAUSIBLE


def test_one_codes_tuple_read_with_other_units_and_senders_resolves_each_anew(
    mapper: Mapper,
) -> None:
    """The reader hands out one codes tuple per distinct OBX-3, and the mapper keeps
    what (facility, codes, unit) resolved to: the unit and the facility are part of it."""
    first = result(("Local", "wbc"))
    codes = first.codes

    def again(unit: str, facility: str = "LAB-A") -> Normalised | Unmapped:
        r = result(("Local", "wbc"), unit=unit, facility=facility)
        return mapper.normalise(LabResult(**{**_fields(r), "codes": codes}))

    assert normalised(mapper, first).value == Decimal("7.0")
    thousands = again("K/uL")
    assert isinstance(thousands, Normalised)
    assert (thousands.value, thousands.ucum) == (Decimal("7.0"), "10*3/uL")
    sender_own = again("Gpt/l")  # LAB-A's own spelling
    assert isinstance(sender_own, Normalised)
    assert sender_own.ucum == "10*9/L"
    elsewhere = again("Gpt/l", facility="ELSEWHERE")  # another sender: no such code or unit
    assert isinstance(elsewhere, Unmapped)
    assert elsewhere.reason is UnmappedReason.UNMAPPED_CODE
    wrong = again("mg/L")
    assert isinstance(wrong, Unmapped)
    assert wrong.reason is UnmappedReason.UNCONVERTIBLE_UNIT


def _fields(r: LabResult) -> dict[str, Any]:
    return {name: getattr(r, name) for name in LabResult.__dataclass_fields__}
