"""DetectedIssue and Flag resources: codings, identity, determinism, validation."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from fhir.resources.R4B.detectedissue import DetectedIssue
from fhir.resources.R4B.flag import Flag
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from prpgate.core.build import (
    BuildError,
    Deployment,
    Draft,
    build_flag,
    build_issue,
    draft_flag,
    draft_issue,
    flag_identifier,
    issue_identifier,
    validate_draft,
    validate_resource,
)
from prpgate.core.json_text import compact
from prpgate.core.model import (
    Coding,
    LabResult,
    Normalised,
    Patient,
    PatientId,
    ResultKey,
    ResultStatus,
)
from prpgate.core.rules import Direction, FlagChange, IssueChange, Rule, judge
from prpgate.core.state import OutputKind, StoredOutput

DEP = Deployment(
    identifier_system="https://clinic.example/sid",
    rule_code_system="https://clinic.example/CodeSystem/prp-rules",
    issue_coding=Coding("http://terminology.hl7.org/CodeSystem/v3-ActCode", "LAB", "Lab Alert"),
)
RULE = Rule(
    "leukocytosis",
    "wbc",
    Direction.ABOVE,
    Decimal("11.0"),
    Decimal("20.0"),
    "Leukocytosis",
    "PRP on hold: leukocytosis",
)
PATIENT = PatientId("urn:oid:1.2.3", "MRN77", "MR")


def _normalised(value: str) -> Normalised:
    result = LabResult(
        key=ResultKey("LAB", "F:9^LAB", "LN^6690-2", "1"),
        patient=Patient(PATIENT),
        codes=(Coding("LN", "6690-2", "Leukocytes"),),
        value_type="NM",
        value_text=value,
        unit_text="10*3/uL",
        status=ResultStatus.FINAL,
        effective="2026-01-02T08:00:00+01:00",
        sending_facility="LAB",
        source="OBX[4]",
    )
    return Normalised(
        result, "wbc", Decimal(value), "10*9/L", None, Decimal(value), "10*3/uL", Decimal(1)
    )


def _issue(value: str = "23.4") -> tuple[str, str]:
    n = _normalised(value)
    j = judge(RULE, n.value, None)
    change = IssueChange(RULE, n.result.key.text, "final", j, n, None, j.note)
    return build_issue(
        DEP, change, patient=PATIENT, detail="WBC high.", identified=n.result.effective
    )


def test_build_issue_carries_actcode_and_rule_coding_and_validates() -> None:
    ident, text = _issue()
    validate_resource(text)
    res = json.loads(text)
    assert res["code"]["coding"] == [
        {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "LAB",
            "display": "Lab Alert",
        },
        {
            "system": "https://clinic.example/CodeSystem/prp-rules",
            "code": "leukocytosis",
            "display": "Leukocytosis",
        },
    ]
    assert res["severity"] == "high"
    assert res["status"] == "final"
    assert res["patient"] == {"identifier": {"system": "urn:oid:1.2.3", "value": "MRN77"}}
    assert res["identifier"] == [
        {"system": "https://clinic.example/sid/detected-issue", "value": ident}
    ]
    assert res["identifiedDateTime"] == "2026-01-02T08:00:00+01:00"
    assert res["evidence"][0]["code"][0]["coding"][0]["system"] == "http://loinc.org"


def test_build_issue_is_byte_identical_for_the_same_input() -> None:
    assert _issue() == _issue()


def test_issue_identifier_depends_on_patient_rule_and_result() -> None:
    base = issue_identifier("p|1", "leukocytosis", "LAB|F:9|LN^6690-2|1")
    assert base != issue_identifier("p|2", "leukocytosis", "LAB|F:9|LN^6690-2|1")
    assert base != issue_identifier("p|1", "leukopenia", "LAB|F:9|LN^6690-2|1")
    assert base != issue_identifier("p|1", "leukocytosis", "LAB|F:8|LN^6690-2|1")
    assert "MRN" not in base  # the identifier does not reveal the MRN


def test_build_flag_active_then_inactive_keeps_period_start() -> None:
    n = _normalised("23.4")
    issue_ident, _ = _issue()
    active = FlagChange(
        RULE, "active", "2026-01-02T08:00:00+01:00", n.result.key.text, None, None, "x"
    )
    ident, text = build_flag(DEP, active, patient=PATIENT, issue_ident=issue_ident)
    validate_resource(text)
    assert ident == flag_identifier(PATIENT.key, "leukocytosis")
    stored = StoredOutput(
        ident, OutputKind.FLAG, PATIENT.key, "leukocytosis", n.result.key.text, "active", text, 1
    )
    inactive = FlagChange(RULE, "inactive", "2026-01-09T08:00:00+01:00", "k", None, stored, "y")
    _, text2 = build_flag(DEP, inactive, patient=PATIENT, issue_ident="")
    validate_resource(text2)
    res = json.loads(text2)
    assert res["status"] == "inactive"
    assert res["period"] == {
        "start": "2026-01-02T08:00:00+01:00",
        "end": "2026-01-09T08:00:00+01:00",
    }
    assert res["code"]["text"] == "PRP on hold: leukocytosis"
    assert res["category"][0]["coding"][0]["code"] == "lab"
    assert res["extension"][0]["valueReference"]["identifier"]["value"] == issue_ident


def test_validate_resource_rejects_invalid_resource() -> None:
    _, text = _issue()
    broken = json.loads(text)
    broken["identifiedDateTime"] = "yesterday at noon"  # not a FHIR dateTime
    with pytest.raises(BuildError):
        validate_resource(json.dumps(broken))


def test_built_text_is_canonical_compact_json_even_with_quotes_and_accents() -> None:
    odd = Rule(
        "leukocytosis",
        "wbc",
        Direction.ABOVE,
        Decimal("11.0"),
        Decimal("20.0"),
        'Leukozytose "hoch" — Zählung',
        "PRP gesperrt: Leukozytose\\",
    )
    n = _normalised("23.4")
    j = judge(odd, n.value, None)
    change = IssueChange(odd, n.result.key.text, "final", j, n, None, j.note)
    patient = PatientId("urn:oid:1.2.3", 'MRN "77"\tß', "MR")
    _, issue = build_issue(DEP, change, patient=patient, detail='sent "23,4"', identified="")
    flag_change = FlagChange(odd, "active", "", n.result.key.text, None, None, "x")
    _, flag = build_flag(DEP, flag_change, patient=patient, issue_ident="abc")
    for text in (issue, flag):
        parsed = json.loads(text)
        assert text == compact(parsed)  # the same bytes compact() writes for it
        validate_resource(text)
    assert json.loads(issue)["code"]["text"] == 'Leukozytose "hoch" — Zählung'
    assert json.loads(flag)["subject"]["identifier"]["value"] == 'MRN "77"\tß'
    assert "identifiedDateTime" not in json.loads(issue)
    assert "period" not in json.loads(flag)


_ODD = st.one_of(
    st.text(max_size=10),
    st.sampled_from(["", " ", "a  b", "urn:oid:1.2", "2026-01-02", "2026-01-02T08:00", "x\ny"]),
)


@settings(max_examples=200, deadline=None)
@given(system=_ODD, value=_ODD, detail=_ODD, identified=_ODD, since=_ODD)
def test_validate_draft_agrees_with_the_r4b_models(
    system: str, value: str, detail: str, identified: str, since: str
) -> None:
    """The composed drafts are validated slot by slot once their parts are known: the
    verdict is still the full model's, whatever the values."""
    n = _normalised("23.4")
    j = judge(RULE, n.value, None)
    change = IssueChange(RULE, n.result.key.text, "final", j, n, None, j.note)

    def issue(p: PatientId, d: str, when: str) -> Draft:
        return draft_issue(DEP, change, patient=p, detail=d, identified=when)[1]

    def flag(p: PatientId, d: str, when: str) -> Draft:
        active = FlagChange(RULE, "active", when, n.result.key.text, None, None, "x")
        return draft_flag(DEP, active, patient=p, issue_ident=d)[1]

    for build in (issue, flag):
        # the parts are learnt from valid values, with and without the optional time
        validate_draft(build(PATIENT, "WBC high.", n.result.effective))
        validate_draft(build(PATIENT, "WBC high.", ""))
        draft = build(PatientId(system, value, "MR"), detail, identified or since)
        resource = json.loads(draft.text)
        assert draft.text == compact(resource)
        model = DetectedIssue if resource["resourceType"] == "DetectedIssue" else Flag
        try:
            model.model_validate(resource)
            expected = True
        except ValidationError:
            expected = False
        try:
            validate_draft(draft)
            accepted = True
        except BuildError:
            accepted = False
        assert accepted == expected
