"""The installed `prpgate` command, run as a process: replay, explain, exit codes, logs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, MAPPINGS, ndjson, run_prpgate


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``prpgate *args`` with JSON logs on a wide terminal."""
    return run_prpgate(*args, env={"PRPGATE_LOG_FORMAT": "json", "COLUMNS": "200", **(env or {})})


def replay_json(
    tmp_path: Path, *inputs: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``prpgate replay --json`` of ``inputs`` into a new store in ``tmp_path``, with the
    repository's mappings."""
    store = str(tmp_path / "s.sqlite")
    paths = [str(p) for p in inputs]
    return run("replay", "--store", store, "--mappings", str(MAPPINGS), "--json", *paths, env=env)


def test_cli_replay_json_writes_resources_then_summary(tmp_path: Path) -> None:
    proc = replay_json(tmp_path, FIXTURES / "cbc_high_wbc.hl7")
    assert proc.returncode == 0, proc.stderr
    lines = ndjson(proc.stdout)
    assert [line.get("resourceType") for line in lines] == ["DetectedIssue", "Flag", None]
    assert lines[0]["severity"] == "high"
    assert lines[1]["status"] == "active"
    summary = lines[-1]
    assert summary["messages"] == 1
    assert summary["exit_code"] == 0


def test_cli_replay_json_reports_every_state_change_in_order(tmp_path: Path) -> None:
    proc = replay_json(tmp_path, FIXTURES / "correction.hl7")
    lines = ndjson(proc.stdout)[:-1]
    assert [(r["resourceType"], r["status"]) for r in lines] == [
        ("DetectedIssue", "final"),
        ("Flag", "active"),
        ("DetectedIssue", "entered-in-error"),
        ("Flag", "inactive"),
    ]
    # later lines supersede earlier ones with the same identifier
    assert lines[0]["identifier"] == lines[2]["identifier"]
    assert lines[1]["identifier"] == lines[3]["identifier"]


def test_cli_replay_exit_1_when_something_is_rejected(tmp_path: Path) -> None:
    proc = run(
        "replay",
        "--store",
        str(tmp_path / "s.sqlite"),
        "--mappings",
        str(MAPPINGS),
        str(FIXTURES / "bad" / "adt_a01.hl7"),
        str(FIXTURES / "cbc_normal.hl7"),
    )
    assert proc.returncode == 1
    assert "unsupported message type ADT^A01" in proc.stdout
    assert "rejected" in proc.stdout


def test_cli_replay_exit_2_for_missing_input(tmp_path: Path) -> None:
    proc = run("replay", "--store", str(tmp_path / "s.sqlite"), str(tmp_path / "nope.hl7"))
    assert proc.returncode == 2
    assert "no such file or folder" in proc.stderr


def test_cli_replay_exit_2_for_bad_mapping_names_file_and_key(tmp_path: Path) -> None:
    broken = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, broken)
    rules = (broken / "rules.yaml").read_text()
    (broken / "rules.yaml").write_text(rules.replace("moderate: 11.0", "moderate: eleven", 1))
    proc = run(
        "replay",
        "--store",
        str(tmp_path / "s.sqlite"),
        "--mappings",
        str(broken),
        str(FIXTURES / "cbc_normal.hl7"),
    )
    assert proc.returncode == 2
    assert "rules.yaml" in proc.stderr
    assert "moderate" in proc.stderr


def test_cli_explain_shows_chain_from_field_to_decision(tmp_path: Path) -> None:
    store = str(tmp_path / "s.sqlite")
    run("replay", "--store", store, "--mappings", str(MAPPINGS), str(FIXTURES / "cbc_high_wbc.hl7"))
    proc = run("explain", "--store", store, "PRPFX0002")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "6690-2" in out
    assert "23.4" in out
    assert "leukocytosis: FINDING high" in out
    assert "Flag leukocytosis → active" in out
    # Hb 13.2 g/dL is flagged L by the lab (range 13.5-17.5) but no anaemia rule fires
    assert "the lab flags it abnormal but the rule pack does not find it" in out
    as_json = json.loads(run("explain", "--store", store, "--json", "PRPFX0002").stdout)
    (message,) = as_json["messages"]
    wbc = next(r for r in message["results"] if r.get("analyte") == "wbc")
    assert wbc["judgements"][0]["severity"] == "high"
    assert message["message"]["ack"] == "AA"


def test_cli_explain_by_patient_lists_current_outputs(tmp_path: Path) -> None:
    store = str(tmp_path / "s.sqlite")
    run("replay", "--store", store, "--mappings", str(MAPPINGS), str(FIXTURES / "clearance.hl7"))
    proc = run("explain", "--store", store, "--json", "--patient", "ZQ70052")
    data = json.loads(proc.stdout)
    assert len(data["messages"]) == 2
    assert sorted((o["resourceType"], o["status"]) for o in data["outputs"]) == [
        ("DetectedIssue", "final"),
        ("Flag", "inactive"),
    ]


def _patient_strings() -> list[str]:
    """Names, MRNs and birth dates of the fixture patients (fixtures/README.md)."""
    text = (FIXTURES / "README.md").read_text()
    section = text.split("## Synthetic patients", 1)[1]
    found: list[str] = []
    for row in re.findall(
        r"^\| `(ZQ\d+)` \| ([^|]+) \| ([^|]+) \| `(\d{8})` \((\S+)\)", section, re.M
    ):
        mrn, family, given, dob, iso = row
        found += [mrn, family.strip(), given.strip(), dob, iso]
    return found


def test_cli_logs_carry_no_patient_data_by_default(tmp_path: Path) -> None:
    secrets = _patient_strings()
    assert len(secrets) > 300  # the grep list was read
    proc = replay_json(tmp_path, FIXTURES, env={"PRPGATE_LOG_LEVEL": "debug"})
    logs = proc.stderr
    assert '"event": "message"' in logs  # logging did happen
    leaked = [s for s in secrets if s in logs]
    assert leaked == []


@pytest.mark.parametrize("flag", ["--json", None])
def test_cli_replay_output_stream_has_no_progress_noise(flag: str | None, tmp_path: Path) -> None:
    args = ["replay", "--store", str(tmp_path / "s.sqlite"), "--mappings", str(MAPPINGS)]
    if flag:
        args.append(flag)
    proc = run(*args, str(FIXTURES / "cbc_normal.hl7"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    if flag:
        assert [line.get("resourceType") for line in ndjson(proc.stdout)] == [None]
    else:
        assert "replay summary" in proc.stdout
