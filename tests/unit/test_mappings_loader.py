"""load_mappings and the mapping schema: the shipped files load; broken copies are named."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from prpgate.core.rules import Direction
from prpgate.errors import MappingError
from prpgate.mapping_schema import MappingSet, is_valid_loinc, json_schema
from prpgate.mappings_loader import load_mappings
from tests.conftest import MAPPINGS

FILES = ("analytes.yaml", "units.yaml", "senders.yaml", "rules.yaml")


@pytest.fixture(scope="module")
def shipped() -> MappingSet:
    return load_mappings(MAPPINGS)


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "mappings"
    target.mkdir()
    for name in FILES:
        shutil.copyfile(MAPPINGS / name, target / name)
    return target


def _edit(tmp_path: Path, name: str, change: Callable[[Any], None]) -> Path:
    """A copy of the shipped mappings with ``change`` applied to one file's data."""
    folder = _copy(tmp_path)
    path = folder / name
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return folder


def _error(folder: Path) -> MappingError:
    with pytest.raises(MappingError) as info:
        load_mappings(folder)
    return info.value


# --- the shipped files ----------------------------------------------------------------


def test_mappings_loader_loads_shipped_analytes(shipped: MappingSet) -> None:
    loinc = {a.id: set(a.loinc) for a in shipped.analytes.analytes}
    assert loinc == {
        "wbc": {"6690-2", "26464-8", "804-5", "33256-9"},
        "plt": {"777-3", "26515-7"},
        "hgb": {"718-7"},
        "crp": {"1988-5", "30522-7"},
        "inr": {"6301-6", "34714-6"},
        "neut": {"751-8", "26499-4"},
    }
    units = {a.id: a.unit for a in shipped.analytes.analytes}
    assert units == {
        "wbc": "10*9/L",
        "plt": "10*9/L",
        "hgb": "g/dL",
        "crp": "mg/L",
        "inr": "{INR}",
        "neut": "10*9/L",
    }
    hgb = shipped.analyte("hgb")
    assert hgb is not None
    assert hgb.molar_mass_g_per_mol == Decimal("16114.5")
    assert (hgb.plausible.low, hgb.plausible.high) == (Decimal(1), Decimal(25))


def test_mappings_loader_loads_shipped_rule_pack_exactly_as_designed(shipped: MappingSet) -> None:
    table = {
        r.id: (r.analyte, r.direction, r.moderate, r.high, r.flag_text) for r in shipped.rules.rules
    }
    above, below = Direction.ABOVE, Direction.BELOW
    assert table == {
        "leukocytosis": (
            "wbc",
            above,
            Decimal("11.0"),
            Decimal("20.0"),
            "PRP on hold: leukocytosis",
        ),
        "leukopenia": ("wbc", below, Decimal("4.0"), Decimal("2.0"), "PRP on hold: leukopenia"),
        "thrombocytopenia": (
            "plt",
            below,
            Decimal(105),
            Decimal(50),
            "PRP on hold: thrombocytopenia",
        ),
        "anaemia": ("hgb", below, Decimal("10.0"), Decimal("7.0"), "PRP on hold: anaemia"),
        "inflammation": ("crp", above, Decimal(10), Decimal(100), "PRP on hold: inflammation"),
        "bleeding-risk": (
            "inr",
            above,
            Decimal("1.5"),
            Decimal("3.0"),
            "PRP on hold: bleeding-risk",
        ),
    }
    assert str(shipped.rules.rules[0].moderate) == "11.0"  # exactly as written, no float


def test_mappings_loader_loads_shipped_code_systems(shipped: MappingSet) -> None:
    pack = shipped.rules
    coding = pack.issue_coding
    assert (coding.system, coding.code, coding.display) == (
        "http://terminology.hl7.org/CodeSystem/v3-ActCode",
        "LAB",
        "Lab Alert",
    )
    assert pack.rule_code_system.startswith("https://prpgate.example/fhir/")
    assert pack.identifier_system.startswith("https://prpgate.example/fhir/")
    assert pack.patient_identifier_system_default.startswith("https://prpgate.example/fhir/")


def test_mappings_loader_rules_by_analyte_feed_the_evaluator(shipped: MappingSet) -> None:
    by_analyte = shipped.rules_by_analyte()
    assert [r.id for r in by_analyte["wbc"]] == ["leukocytosis", "leukopenia"]
    assert by_analyte["inr"][0].unit == "{INR}"
    assert "neut" not in by_analyte


def test_mappings_loader_shipped_senders(shipped: MappingSet) -> None:
    sender = shipped.senders.get("SendingFac")
    assert sender is not None
    assert sender.decimal_comma is False
    assert {(c.system, c.code): c.analyte for c in sender.codes}[(None, "plt")] == "plt"
    assert shipped.assigning_authorities()["URMC"].startswith("https://")
    assert shipped.charset_overrides() == {"SOUTHLAB": "latin-1"}


def test_mappings_loader_every_shipped_loinc_has_a_valid_check_digit(shipped: MappingSet) -> None:
    codes = [c for a in shipped.analytes.analytes for c in a.loinc]
    assert codes
    assert all(is_valid_loinc(c) for c in codes)
    assert not is_valid_loinc("6690-3")


# --- broken copies --------------------------------------------------------------------


def test_mappings_loader_missing_folder(tmp_path: Path) -> None:
    err = _error(tmp_path / "nope")
    assert "does not exist" in err.reason


def test_mappings_loader_missing_file_is_named(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    (folder / "senders.yaml").unlink()
    err = _error(folder)
    assert (err.file, err.reason) == ("senders.yaml", "file is missing")


def test_mappings_loader_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    (folder / "rules.yaml").write_text("rules:\n  - id: [unclosed\n", encoding="utf-8")
    err = _error(folder)
    assert err.file == "rules.yaml"
    assert "YAML syntax error" in err.reason
    assert "line 3" in err.reason


def test_mappings_loader_empty_file(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    (folder / "units.yaml").write_text("# nothing\n", encoding="utf-8")
    err = _error(folder)
    assert (err.file, err.reason) == ("units.yaml", "file is empty")


def test_mappings_loader_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    path = folder / "rules.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("    high: 20.0\n", "    high: 20.0\n    high: 2.0\n"), "utf-8")
    err = _error(folder)
    assert err.file == "rules.yaml"
    assert "duplicate key 'high'" in err.reason


def test_mappings_loader_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    folder = _edit(tmp_path, "rules.yaml", lambda d: d["rules"][1].update(colour="red"))
    err = _error(folder)
    assert (err.file, err.key) == ("rules.yaml", "rules.1.colour")
    assert "unknown key" in err.reason
    assert "line " in err.reason


def test_mappings_loader_rule_with_unknown_analyte(tmp_path: Path) -> None:
    folder = _edit(tmp_path, "rules.yaml", lambda d: d["rules"][2].update(analyte="ferritin"))
    err = _error(folder)
    assert (err.file, err.key) == ("rules.yaml", "rules.2.analyte")
    assert "unknown analyte 'ferritin'" in err.reason
    assert str(err).startswith("rules.yaml:rules.2.analyte: ")


def test_mappings_loader_moderate_and_high_inverted(tmp_path: Path) -> None:
    def invert(d: Any) -> None:
        d["rules"][2].update(moderate=50, high=105)  # thrombocytopenia is "below"

    err = _error(_edit(tmp_path, "rules.yaml", invert))
    assert (err.file, err.key) == ("rules.yaml", "rules.2.moderate")
    assert "below" in err.reason


def test_mappings_loader_threshold_outside_plausible_range(tmp_path: Path) -> None:
    folder = _edit(tmp_path, "rules.yaml", lambda d: d["rules"][3].update(moderate=40, high=30))
    err = _error(folder)
    assert (err.file, err.key) == ("rules.yaml", "rules.3.moderate")
    assert "plausible range" in err.reason


def test_mappings_loader_rule_unit_must_be_analyte_unit(tmp_path: Path) -> None:
    folder = _edit(tmp_path, "rules.yaml", lambda d: d["rules"][3].update(unit="g/L"))
    err = _error(folder)
    assert (err.file, err.key) == ("rules.yaml", "rules.3.unit")


def test_mappings_loader_duplicate_loinc(tmp_path: Path) -> None:
    # plt's 777-3 listed again under hgb: reported where it repeats.
    folder = _edit(tmp_path, "analytes.yaml", lambda d: d["analytes"][2]["loinc"].append("777-3"))
    err = _error(folder)
    assert (err.file, err.key) == ("analytes.yaml", "analytes.2.loinc.1")
    assert "777-3" in err.reason


def test_mappings_loader_wrong_loinc_check_digit(tmp_path: Path) -> None:
    folder = _edit(tmp_path, "analytes.yaml", lambda d: d["analytes"][0]["loinc"].append("6690-3"))
    err = _error(folder)
    assert (err.file, err.key) == ("analytes.yaml", "analytes.0.loinc.4")
    assert "check digit" in err.reason


def test_mappings_loader_spelling_to_invalid_ucum_names_the_spelling(tmp_path: Path) -> None:
    folder = _edit(tmp_path, "units.yaml", lambda d: d["spellings"].update({"k/cmm": "K/cmm"}))
    err = _error(folder)
    assert (err.file, err.key) == ("units.yaml", "spellings.k/cmm")
    assert "not valid UCUM" in err.reason


def test_mappings_loader_key_with_a_dot_is_quoted(tmp_path: Path) -> None:
    folder = _edit(tmp_path, "units.yaml", lambda d: d["spellings"].update({"giga.l-1": "giga"}))
    err = _error(folder)
    assert err.key == 'spellings."giga.l-1"'


def test_mappings_loader_canonical_unit_must_not_be_a_feed_spelling(tmp_path: Path) -> None:
    folder = _edit(tmp_path, "analytes.yaml", lambda d: d["analytes"][0].update(unit="G/L"))
    err = _error(folder)
    assert (err.file, err.key) == ("analytes.yaml", "analytes.0.unit")
    assert "feed spelling" in err.reason


def test_mappings_loader_missing_key_is_named(tmp_path: Path) -> None:
    err = _error(_edit(tmp_path, "rules.yaml", lambda d: d.pop("issue_coding")))
    assert (err.file, err.key, err.reason.split(" (")[0]) == (
        "rules.yaml",
        "issue_coding",
        "missing key 'issue_coding'",
    )


def test_mappings_loader_non_string_spelling_key(tmp_path: Path) -> None:
    err = _error(_edit(tmp_path, "units.yaml", lambda d: d["spellings"].update({7: "1"})))
    assert (err.file, err.key) == ("units.yaml", "spellings.7")
    assert "quote it" in err.reason


def test_mappings_loader_local_code_with_unknown_analyte(tmp_path: Path) -> None:
    def change(d: Any) -> None:
        d["senders"][0]["codes"][1]["analyte"] = "ferritin"

    err = _error(_edit(tmp_path, "senders.yaml", change))
    assert (err.file, err.key) == ("senders.yaml", "senders.0.codes.1.analyte")


def test_mappings_loader_duplicate_local_code(tmp_path: Path) -> None:
    def change(d: Any) -> None:
        d["senders"][0]["codes"].append({"system": "local", "code": "wbc", "analyte": "hgb"})

    err = _error(_edit(tmp_path, "senders.yaml", change))
    assert (err.file, err.key) == ("senders.yaml", "senders.0.codes.3")
    assert "listed twice" in err.reason


def test_mappings_loader_unknown_charset(tmp_path: Path) -> None:
    folder = _edit(tmp_path, "senders.yaml", lambda d: d["senders"][0].update(charset="latin-9x"))
    err = _error(folder)
    assert (err.file, err.key) == ("senders.yaml", "senders.0.charset")


def test_mappings_loader_decimal_comma_must_be_a_boolean(tmp_path: Path) -> None:
    folder = _edit(tmp_path, "senders.yaml", lambda d: d["senders"][0].update(decimal_comma="yes"))
    err = _error(folder)
    assert (err.file, err.key) == ("senders.yaml", "senders.0.decimal_comma")


def test_mappings_loader_threshold_must_be_a_number(tmp_path: Path) -> None:
    folder = _edit(tmp_path, "rules.yaml", lambda d: d["rules"][0].update(high="lots"))
    err = _error(folder)
    assert (err.file, err.key) == ("rules.yaml", "rules.0.high")


# --- JSON Schema ----------------------------------------------------------------------


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_mappings_loader_json_schema_is_one_json_document() -> None:
    schema = json_schema()
    again = json.loads(json.dumps(schema))
    assert again == schema
    assert again["type"] == "object"
    assert set(again["properties"]) == {"analytes", "units", "senders", "rules"}
    assert set(again["required"]) == {"analytes", "units", "senders", "rules"}
    assert again["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_mappings_loader_json_schema_refs_resolve_and_forbid_extra_keys() -> None:
    schema = json_schema()
    defs: Any = schema["$defs"]
    refs = _refs(schema)
    assert refs
    for ref in refs:
        assert ref.startswith("#/$defs/")
        assert ref.removeprefix("#/$defs/") in defs
    assert all(d.get("additionalProperties") is False for d in defs.values() if "properties" in d)
