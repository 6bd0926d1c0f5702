"""fixtures-fhir/ replayed into SQLite files, compared with fixtures-fhir/README.md (the
expectations there were derived by hand from the values and the rule pack), and the
`prpgate` command's logs grepped for the fixture patients."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from prpgate.core.pipeline import Engine
from prpgate.replay import replay
from prpgate.store.sqlite import SqliteStore
from tests.conftest import MAPPINGS, ROOT, FixedClock, ndjson
from tests.integration.test_cli import replay_json, run

FHIR_FIXTURES = ROOT / "fixtures-fhir"
Row = tuple[str, str, str, str]

EXPECTED: dict[str, list[Row]] = {
    "observation_wbc_high.json": [
        ("DetectedIssue", "leukocytosis", "high", "final"),
        ("Flag", "leukocytosis", "", "active"),
    ],
    "transaction_cbc.json": [
        ("DetectedIssue", "anaemia", "moderate", "final"),
        ("DetectedIssue", "thrombocytopenia", "high", "final"),
        ("Flag", "anaemia", "", "active"),
        ("Flag", "thrombocytopenia", "", "active"),
    ],
    "results.ndjson": [
        ("DetectedIssue", "bleeding-risk", "moderate", "final"),
        ("Flag", "bleeding-risk", "", "active"),
    ],
}
INPUTS = {"results.ndjson": 3}


def test_fhir_fixture_expectations_cover_every_file() -> None:
    on_disk = {p.name for p in FHIR_FIXTURES.iterdir() if p.suffix != ".md"}
    assert on_disk == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fhir_fixture_replay_ends_in_readme_state(
    engine: Engine, name: str, tmp_path: Path
) -> None:
    store = SqliteStore(tmp_path / "s.sqlite")
    try:
        stats = replay(store, engine, [FHIR_FIXTURES / name], clock=FixedClock())
        rows = sorted(
            (o.kind, o.rule, json.loads(o.resource).get("severity", ""), o.status)
            for o in store.outputs()
        )
        keys = {o.patient_key for o in store.outputs()}
    finally:
        store.close()
    assert rows == sorted(EXPECTED[name])
    assert dict(stats.dispositions) == {"accepted": INPUTS.get(name, 1)}
    assert stats.clean
    assert len(keys) == 1
    assert next(iter(keys)).startswith("urn:oid:2.16.840.1.113883.3.9999.2|ZQ7900")


def _patient_strings() -> list[str]:
    text = (FHIR_FIXTURES / "README.md").read_text()
    section = text.split("## Synthetic patients", 1)[1]
    found = re.findall(r"`(ZQ\d+)`", section)
    for family, given, dob, iso in re.findall(
        r"^\| `ZQ\d+` \| ([^|]+) \| ([^|]+) \| `(\d{8})` \((\S+)\)", section, re.M
    ):
        found += [family.strip(), given.strip(), dob, iso]
    return found


def test_fhir_fixture_cli_replay_json_and_logs_carry_no_patient_data(tmp_path: Path) -> None:
    secrets = _patient_strings()
    assert len(secrets) == 3 + 2 * 4  # the grep list was read
    proc = replay_json(tmp_path, FHIR_FIXTURES, env={"PRPGATE_LOG_LEVEL": "debug"})
    assert proc.returncode == 0, proc.stderr
    lines = ndjson(proc.stdout)
    resources = [line for line in lines if "resourceType" in line]
    assert sorted(str(r["resourceType"]) for r in resources) == ["DetectedIssue"] * 4 + ["Flag"] * 4
    assert '"event": "message"' in proc.stderr  # logging did happen
    assert [s for s in secrets if s in proc.stderr] == []


def test_fhir_fixture_cli_validate_passes_with_conformance_skipped() -> None:
    proc = run("validate", "--mappings", str(MAPPINGS), "--strict", "--json", str(FHIR_FIXTURES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["summary"]["messages"] == 5
    assert {m["checks"]["parse"]["status"] for m in report["messages"]} == {"passed"}
    assert {m["checks"]["mapping"]["status"] for m in report["messages"]} == {"passed"}
    # hl7apy's conformance is for HL7 v2; FHIR input was checked against R4B when read
    assert {m["checks"]["conformance"]["status"] for m in report["messages"]} == {"skipped"}


def test_replay_and_validate_fail_a_batch_with_a_refused_entry(tmp_path: Path) -> None:
    good = json.loads((FHIR_FIXTURES / "observation_wbc_high.json").read_text())
    bad = {"resourceType": "Observation", "status": "final", "valueQuantity": {"value": "x"}}
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": good}, {"resource": bad}],
    }
    path = tmp_path / "batch_with_bad_entry.json"
    path.write_text(json.dumps(bundle))
    store = str(tmp_path / "s.sqlite")
    proc = run("replay", "--store", store, "--mappings", str(MAPPINGS), "--json", str(path))
    # the good entry decided (leukocytosis), the bad one is reported, and the exit says so
    resources = [r for r in ndjson(proc.stdout) if "resourceType" in r]
    rules = {(r["resourceType"], r["code"]["coding"][-1]["code"]) for r in resources}
    assert ("Flag", "leukocytosis") in rules
    assert proc.returncode == 1
    checked = run("validate", "--mappings", str(MAPPINGS), "--json", str(path))
    report = json.loads(checked.stdout)
    assert checked.returncode == 1
    parse = report["messages"][0]["checks"]["parse"]
    assert parse["status"] == "failed"
    assert any("entry[1]" in f["location"] for f in parse["findings"])
