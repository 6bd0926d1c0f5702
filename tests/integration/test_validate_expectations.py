"""``validate`` over the team's fixtures, with the reviewed expectations in tests/expectations.

The documents in tests/expectations were written by hand from fixtures/README.md
(each names the manifest rows it follows); ``tests/expectations/wrong`` holds one
that is deliberately wrong.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from prpgate.config import Settings
from prpgate.core.pipeline import Engine
from prpgate.engine import build_engine
from prpgate.validate import ValidateOptions, validate_files
from prpgate.validation.expectations import ExpectationError, load_expectations
from prpgate.validation.report import CheckKind, Status, ValidationReport
from tests.conftest import FIXED_NOW, FIXTURES, MAPPINGS

EXPECTATIONS = Path(__file__).resolve().parent.parent / "expectations"
REVIEWED = sorted(p.name.removesuffix(".yaml") for p in EXPECTATIONS.glob("*.yaml"))
_ENGINE: list[Engine] = []


class FixedClock:
    def now(self):  # type: ignore[no-untyped-def]
        return FIXED_NOW


def engine() -> Engine:
    if not _ENGINE:
        _ENGINE.append(build_engine(Settings(mappings=MAPPINGS)))
    return _ENGINE[0]


def fixture(name: str) -> Path:
    (path,) = FIXTURES.rglob(name)
    return path


def run(names: list[str], options: ValidateOptions) -> ValidationReport:
    paths = [fixture(n) for n in names]
    return validate_files(paths, engine(), options, clock=FixedClock())


def expectation_statuses(report: ValidationReport) -> list[tuple[str, int, Status]]:
    out = []
    for m in report.messages:
        check = m.check(CheckKind.EXPECTATIONS)
        assert check is not None
        out.append((Path(m.file).name, m.number, check.status))
    return out


def test_validate_expectations_cover_ten_fixture_files() -> None:
    assert len(REVIEWED) == 10
    assert all(list(FIXTURES.rglob(name)) for name in REVIEWED)


def test_validate_reviewed_expectations_pass_for_their_fixtures() -> None:
    docs = load_expectations([EXPECTATIONS])
    report = run(REVIEWED, ValidateOptions(expectations=docs))
    statuses = expectation_statuses(report)
    assert len(statuses) == 14  # ten files, four of them with two messages
    assert {s for _, _, s in statuses} == {Status.PASSED}
    # the other checks still speak: unmapped.hl7 fails mapping, bad_version.hl7 parsing
    failed = {(Path(m.file).name, c.kind) for m in report.messages for c in m.checks}
    assert ("unmapped.hl7", CheckKind.MAPPING) in failed
    assert not report.passed


def test_validate_correction_sequence_is_evaluated_with_state() -> None:
    docs = load_expectations([EXPECTATIONS])
    report = run(["correction.hl7"], ValidateOptions(expectations=docs))
    second = report.messages[1]
    assert [(o.resource, o.status) for o in second.outputs] == [
        ("DetectedIssue", "entered-in-error"),
        ("Flag", "inactive"),
    ]
    assert report.passed


def test_validate_wrong_expectation_fails_with_field_diff() -> None:
    docs = load_expectations([EXPECTATIONS / "wrong"])
    report = run(["cbc_high_wbc.hl7"], ValidateOptions(expectations=docs))
    (message,) = report.messages
    check = message.check(CheckKind.EXPECTATIONS)
    assert check is not None
    assert check.status is Status.FAILED
    assert [(f.location, f.reason) for f in check.findings] == [
        ("DetectedIssue leukocytosis ZQ70002", "severity: expected 'moderate', got 'high'"),
        ("Flag leukopenia ZQ70002", "missing: expected (status active), not emitted"),
    ]
    assert "-  severity: moderate\n+  severity: high\n" in check.diff
    assert "-  rule: leukopenia\n" in check.diff
    assert report.exit_code == 1


def test_validate_without_document_skips_expectations() -> None:
    docs = load_expectations([EXPECTATIONS])
    report = run(["crp_inr.hl7"], ValidateOptions(expectations=docs))
    check = report.messages[0].check(CheckKind.EXPECTATIONS)
    assert check is not None
    assert check.status is Status.SKIPPED
    assert "no expectations document for crp_inr.hl7" in check.note
    assert report.passed


def test_validate_update_writes_unreviewed_documents_that_fail_until_reviewed(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "expect"
    report = run(["correction.hl7"], ValidateOptions(expectations={}, update_folder=folder))
    written = folder / "correction.hl7.yaml"
    assert report.written == (str(written),)
    text = written.read_text()
    assert text.startswith("# Expectations for correction.hl7")
    data = yaml.safe_load(text)
    assert data["reviewed"] is False
    assert data["messages"][1]["outputs"][0] == {
        "resource": "DetectedIssue",
        "rule": "leukocytosis",
        "severity": "moderate",
        "status": "entered-in-error",
        "patient": "ZQ70051",
    }
    # never used silently: an unreviewed document fails its messages
    unreviewed = run(["correction.hl7"], ValidateOptions(expectations=load_expectations([folder])))
    assert [s for _, _, s in expectation_statuses(unreviewed)] == [Status.FAILED] * 2
    written.write_text(text.replace("reviewed: false", "reviewed: true"))
    reviewed = run(["correction.hl7"], ValidateOptions(expectations=load_expectations([folder])))
    assert [s for _, _, s in expectation_statuses(reviewed)] == [Status.PASSED] * 2


def test_validate_document_expecting_more_messages_fails_the_last(tmp_path: Path) -> None:
    doc = yaml.safe_load((EXPECTATIONS / "cbc_high_wbc.hl7.yaml").read_text())
    doc["messages"].append({"message": 2, "outputs": []})
    (tmp_path / "cbc_high_wbc.hl7.yaml").write_text(yaml.safe_dump(doc))
    report = run(["cbc_high_wbc.hl7"], ValidateOptions(expectations=load_expectations([tmp_path])))
    check = report.messages[0].check(CheckKind.EXPECTATIONS)
    assert check is not None
    assert check.status is Status.FAILED
    assert "expects message(s) [2]; the file holds 1" in check.findings[-1].reason


@pytest.mark.parametrize(
    ("change", "key", "reason"),
    [
        ("severity: high", "messages.0.outputs.0.severity", "Input should be 'moderate' or 'high'"),
        ("status: final", "messages.0.outputs.0.status", "Input should be"),
        ("reviewed: true", "reviewed", "Field required"),
    ],
)
def test_validate_broken_expectations_document_names_file_and_key(
    change: str, key: str, reason: str, tmp_path: Path
) -> None:
    text = (EXPECTATIONS / "cbc_high_wbc.hl7.yaml").read_text()
    broken = {
        "severity: high": text.replace("severity: high", "severity: severe"),
        "status: final": text.replace("status: final", "status: done"),
        "reviewed: true": text.replace("reviewed: true\n", ""),
    }[change]
    path = tmp_path / "cbc_high_wbc.hl7.yaml"
    path.write_text(broken)
    with pytest.raises(ExpectationError) as info:
        load_expectations([tmp_path])
    assert (info.value.file, info.value.key) == (str(path), key)
    assert reason in info.value.reason


def test_validate_two_documents_for_one_file_are_refused(tmp_path: Path) -> None:
    text = (EXPECTATIONS / "cbc_high_wbc.hl7.yaml").read_text()
    (tmp_path / "a.yaml").write_text(text)
    (tmp_path / "b.yaml").write_text(text)
    with pytest.raises(ExpectationError) as info:
        load_expectations([tmp_path])
    assert info.value.key == "source"
    assert "a second document for 'cbc_high_wbc.hl7'" in info.value.reason


def test_validate_fixture_folder_dispositions_follow_the_manifest() -> None:
    report = validate_files([FIXTURES], engine(), ValidateOptions(), clock=FixedClock())
    parse_failed = sorted(
        Path(m.file).name
        for m in report.messages
        if (c := m.check(CheckKind.PARSE)) is not None and c.status is Status.FAILED
    )
    # fixtures/README.md, "Bad inputs": all seven are rejected or answered AE
    assert parse_failed == [
        "adt_a01.hl7",
        "bad_version.hl7",
        "garbage.bin",
        "missing_pid.hl7",
        "no_msh.hl7",
        "not_a_number.hl7",
        "truncated.hl7",
    ]
    mapping_failed = sorted(
        {
            Path(m.file).name
            for m in report.messages
            if (c := m.check(CheckKind.MAPPING)) is not None and c.status is Status.FAILED
        }
    )
    # unmapped.hl7 by design; not_a_number.hl7's WBC "abc" is recorded not-numeric.
    # escapes.hl7 passes: mappings/ lists its two text observations as not used and
    # x10^9/L as a spelling (the README's "unless mappings/ lists ..." cases)
    assert mapping_failed == ["not_a_number.hl7", "unmapped.hl7"]
    assert len(report.messages) == 67 + 7
