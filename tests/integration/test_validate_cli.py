"""``prpgate validate`` and ``prpgate mappings check`` run as processes: exit codes,
the JSON report, JUnit XML read back, and configuration errors naming file and key."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from junitparser import JUnitXml

from tests.conftest import FIXTURES, MAPPINGS
from tests.integration.test_cli import run

EXPECTATIONS = Path(__file__).resolve().parent.parent / "expectations"
CLEAN = [
    "cbc_normal.hl7",
    "cbc_high_wbc.hl7",
    "cbc_low_wbc.hl7",
    "correction.hl7",
    "clearance.hl7",
    "retraction.hl7",
    "preliminary_then_final.hl7",
    "two_patients.hl7",
]


def fixtures(*names: str) -> list[str]:
    return [str(FIXTURES / n) for n in names]


def test_validate_cli_exit_0_when_everything_passes() -> None:
    proc = run(
        "validate", "--mappings", str(MAPPINGS), "--expect", str(EXPECTATIONS), *fixtures(*CLEAN)
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASSED: 12 message(s) in 8 file(s), every check passed" in proc.stdout
    assert "mapping coverage" in proc.stdout
    assert "FAIL" not in proc.stdout


def test_validate_cli_exit_1_with_readable_diff_for_a_wrong_expectation() -> None:
    proc = run(
        "validate",
        "--mappings",
        str(MAPPINGS),
        "--expect",
        str(EXPECTATIONS / "wrong"),
        *fixtures("cbc_high_wbc.hl7"),
    )
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout
    assert "severity: expected 'moderate', got 'high'" in out
    assert "-  severity: moderate" in out
    assert "+  severity: high" in out
    assert "FAILED: 1 of 1 message(s) in 1 file(s) failed a check (expectations 1)" in out


def test_validate_cli_json_report_has_every_message_and_check() -> None:
    proc = run(
        "validate",
        "--mappings",
        str(MAPPINGS),
        "--json",
        *fixtures("correction.hl7", "unmapped.hl7", "bad/adt_a01.hl7"),
    )
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["exit_code"] == 1
    assert report["summary"]["messages"] == 4
    assert report["summary"]["failed_by_check"] == {"mapping": 1, "parse": 1}
    adt = report["messages"][-1]
    assert (adt["disposition"], adt["checks"]["parse"]["status"]) == ("rejected", "failed")
    assert adt["checks"]["parse"]["findings"][0]["location"] == "MSH-9"
    assert adt["checks"]["mapping"]["status"] == "skipped"
    unmapped = report["messages"][2]["checks"]["mapping"]["findings"]
    assert [f["code"] for f in unmapped] == [
        "unmapped-code",
        "unknown-unit",
        "unconvertible-unit",
        "implausible",
    ]
    assert 'L ZZWBC "Weird count" from NORTHLAB' in unmapped[0]["reason"]
    assert report["messages"][1]["outputs"][1] == {
        "resource": "Flag",
        "rule": "leukocytosis",
        "status": "inactive",
        "patient": "ZQ70051",
    }
    (northlab,) = report["coverage"]
    assert northlab["sending_facility"] == "NORTHLAB"
    # unmapped.hl7's Hb is implausible (12.5 g/mL): no Hb was usable in these three files
    assert northlab["analytes_covered"] == ["plt", "wbc"]
    assert northlab["analytes_missing"] == ["crp", "hgb", "inr"]


def test_validate_cli_junit_xml_read_back(tmp_path: Path) -> None:
    junit = tmp_path / "reports" / "validate.xml"
    proc = run(
        "validate",
        "--mappings",
        str(MAPPINGS),
        "--strict",
        "--expect",
        str(EXPECTATIONS),
        "--junit",
        str(junit),
        *fixtures("cbc_high_wbc.hl7", "correction.hl7", "unmapped.hl7", "bad/adt_a01.hl7"),
    )
    assert proc.returncode == 1, proc.stderr
    xml = JUnitXml.fromfile(str(junit))
    cases = [case for suite in xml for case in suite]
    # 5 messages x 4 checks (parse, conformance, mapping, expectations)
    assert len(cases) == xml.tests == 20
    failed = sorted(c.name for c in cases if c.is_failure)
    assert failed == ["message 1 [PRPFX0058] mapping", "message 1 [PRPFX0070] parse"]
    skipped = sorted(c.name for c in cases if c.is_skipped)
    # the ADT: nothing to map, and no expectations document for it
    assert skipped == ["message 1 [PRPFX0070] expectations", "message 1 [PRPFX0070] mapping"]
    assert (xml.failures, xml.skipped, xml.errors) == (2, 2, 0)
    assert [s.name for s in xml] == fixtures(
        "cbc_high_wbc.hl7", "correction.hl7", "unmapped.hl7", "bad/adt_a01.hl7"
    )
    mapping = next(c for c in cases if c.name == "message 1 [PRPFX0058] mapping")
    assert mapping.classname == str(FIXTURES / "unmapped.hl7")
    assert "OBX[8]: implausible" in (mapping.result[0].text or "")


def test_validate_cli_exit_2_for_a_broken_mapping_naming_file_and_key(tmp_path: Path) -> None:
    broken = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, broken)
    rules = (broken / "rules.yaml").read_text()
    (broken / "rules.yaml").write_text(rules.replace("moderate: 11.0", "moderate: eleven", 1))
    proc = run("validate", "--mappings", str(broken), *fixtures("cbc_normal.hl7"))
    assert proc.returncode == 2
    assert "rules.yaml:rules.0.moderate" in proc.stderr
    assert proc.stdout == ""


def test_validate_cli_exit_2_for_a_broken_expectations_file(tmp_path: Path) -> None:
    text = (EXPECTATIONS / "cbc_high_wbc.hl7.yaml").read_text()
    bad = tmp_path / "cbc_high_wbc.hl7.yaml"
    bad.write_text(text.replace("resource: Flag", "resource: Flagg"))
    proc = run(
        "validate", "--mappings", str(MAPPINGS), "--expect", str(bad), *fixtures("cbc_high_wbc.hl7")
    )
    assert proc.returncode == 2
    assert f"{bad}:messages.0.outputs.1.resource" in proc.stderr


def test_validate_cli_exit_2_for_usage_errors(tmp_path: Path) -> None:
    missing = run("validate", "--mappings", str(MAPPINGS), str(tmp_path / "nope.hl7"))
    assert missing.returncode == 2
    assert "no such file or folder" in missing.stderr
    no_folder = run(
        "validate",
        "--mappings",
        str(MAPPINGS),
        "--update-expectations",
        *fixtures("cbc_normal.hl7"),
    )
    assert no_folder.returncode == 2
    assert "--update-expectations needs one --expect FOLDER" in no_folder.stderr


def test_validate_cli_update_expectations_writes_for_review(tmp_path: Path) -> None:
    folder = tmp_path / "expect"
    proc = run(
        "validate",
        "--mappings",
        str(MAPPINGS),
        "--expect",
        str(folder),
        "--update-expectations",
        *fixtures("clearance.hl7"),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    written = folder / "clearance.hl7.yaml"
    assert f"expectations written for review: {written}" in proc.stdout
    assert "reviewed: false" in written.read_text()
    again = run(
        "validate", "--mappings", str(MAPPINGS), "--expect", str(folder), *fixtures("clearance.hl7")
    )
    assert again.returncode == 1
    assert "is not reviewed (reviewed: false)" in again.stdout


def test_mappings_check_cli_accepts_the_shipped_mappings() -> None:
    proc = run("mappings", "check", "--mappings", str(MAPPINGS))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"mappings OK ({MAPPINGS}):")
    assert "6 rules" in proc.stdout


def test_mappings_check_cli_exit_2_names_file_and_key(tmp_path: Path) -> None:
    broken = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, broken)
    units = (broken / "units.yaml").read_text()
    (broken / "units.yaml").write_text(units.replace("spellings:", "spelings:", 1))
    proc = run("mappings", "check", "--mappings", str(broken))
    assert proc.returncode == 2
    assert "units.yaml:spellings: missing key 'spellings'" in proc.stderr


def test_mappings_check_cli_prints_the_json_schema() -> None:
    proc = run("mappings", "check", "--schema")
    assert proc.returncode == 0, proc.stderr
    schema = json.loads(proc.stdout)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["properties"]) == {"analytes", "units", "senders", "rules"}
