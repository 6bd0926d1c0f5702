"""Rule judging and the per-patient decision state machine, with literal values."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prpgate.core.model import (
    Coding,
    Comparator,
    LabResult,
    Normalised,
    Patient,
    PatientId,
    ResultKey,
    ResultStatus,
)
from prpgate.core.rules import Direction, Rule, Severity, decide, judge
from prpgate.core.state import OutputKind, PatientState, StoredOutput, StoredResult

LEUKOCYTOSIS = Rule(
    "leukocytosis",
    "wbc",
    Direction.ABOVE,
    Decimal("11.0"),
    Decimal("20.0"),
    "Leukocytosis",
    "PRP on hold: leukocytosis",
)
LEUKOPENIA = Rule(
    "leukopenia",
    "wbc",
    Direction.BELOW,
    Decimal("4.0"),
    Decimal("2.0"),
    "Leukopenia",
    "PRP on hold: leukopenia",
)
INFLAMMATION = Rule(
    "inflammation",
    "crp",
    Direction.ABOVE,
    Decimal("10"),
    Decimal("100"),
    "Inflammation",
    "PRP on hold: inflammation",
)
RULES = {"wbc": (LEUKOCYTOSIS, LEUKOPENIA), "crp": (INFLAMMATION,)}
PATIENT = Patient(PatientId("urn:oid:1.2.3", "MRN1", "MR"))
PK = PATIENT.identifier.key


def _wbc(
    value: str,
    *,
    order: str = "F:1",
    status: ResultStatus = ResultStatus.FINAL,
    effective: str = "202601010800",
    cmp: Comparator | None = None,
) -> Normalised:
    result = LabResult(
        key=ResultKey("LAB", order, "LN^6690-2"),
        patient=PATIENT,
        codes=(Coding("LN", "6690-2", "WBC"),),
        value_type="NM",
        value_text=value,
        unit_text="10*3/uL",
        status=status,
        effective=effective,
        sending_facility="LAB",
        source="OBX[3]",
        effective_sort=effective,
    )
    return Normalised(
        result, "wbc", Decimal(value), "10*9/L", cmp, Decimal(value), "10*3/uL", Decimal(1)
    )


@pytest.mark.parametrize(
    ("value", "cmp", "met", "severity"),
    [
        ("11.0", None, False, None),  # > 11.0 is strict
        ("11.1", None, True, Severity.MODERATE),
        ("20.0", None, True, Severity.MODERATE),
        ("20.1", None, True, Severity.HIGH),
        ("20", Comparator.GT, True, Severity.HIGH),  # x > 20 settles > 20.0
        ("15", Comparator.GT, True, Severity.MODERATE),  # settles > 11, not > 20
        ("10", Comparator.GT, None, None),  # x > 10 does not settle > 11
        ("11", Comparator.GE, None, None),  # x >= 11 does not settle > 11
        ("5", Comparator.LT, False, None),  # x < 5 settles not > 11
        ("11", Comparator.LE, False, None),  # x <= 11 settles not > 11
        ("12", Comparator.LT, None, None),  # x < 12 leaves > 11 open
    ],
)
def test_judge_above_rule_with_and_without_comparators(
    value: str, cmp: Comparator | None, met: bool | None, severity: Severity | None
) -> None:
    j = judge(LEUKOCYTOSIS, Decimal(value), cmp)
    assert (j.met, j.severity) == (met, severity)


@pytest.mark.parametrize(
    ("value", "cmp", "met", "severity"),
    [
        ("4.0", None, False, None),
        ("3.9", None, True, Severity.MODERATE),
        ("1.9", None, True, Severity.HIGH),
        ("2", Comparator.LT, True, Severity.HIGH),
        ("3", Comparator.LT, True, Severity.MODERATE),
        ("4", Comparator.LE, None, None),  # x <= 4 may be exactly 4: not below 4
        ("5", Comparator.GT, False, None),
        ("3", Comparator.GT, None, None),
    ],
)
def test_judge_below_rule_with_and_without_comparators(
    value: str, cmp: Comparator | None, met: bool | None, severity: Severity | None
) -> None:
    j = judge(LEUKOPENIA, Decimal(value), cmp)
    assert (j.met, j.severity) == (met, severity)


@given(st.decimals(min_value=-1000, max_value=1000, allow_nan=False, places=3))
def test_judge_a_plain_value_against_both_thresholds(value: Decimal) -> None:
    """Without a comparator: high beyond the high threshold, moderate beyond only the
    moderate one, else not met (thresholds themselves are not beyond)."""
    for rule, beyond in ((LEUKOCYTOSIS, Decimal.__gt__), (LEUKOPENIA, Decimal.__lt__)):
        j = judge(rule, value, None)
        if beyond(value, rule.high):
            expected = (True, Severity.HIGH, rule.high)
        elif beyond(value, rule.moderate):
            expected = (True, Severity.MODERATE, rule.moderate)
        else:
            expected = (False, None, rule.moderate)
        assert (j.met, j.severity, j.threshold) == expected
        assert (j.value, j.comparator) == (value, None)


def test_judge_crp_less_than_five_is_not_inflammation() -> None:
    j = judge(INFLAMMATION, Decimal(5), Comparator.LT)
    assert j.met is False


def test_decide_final_high_wbc_raises_issue_and_activates_flag() -> None:
    d = decide(RULES, [_wbc("23.4")], [], PatientState(PK), seq=1, source="m1")
    assert [
        (i.rule.id, i.status, i.judgement.severity if i.judgement else None) for i in d.issues
    ] == [("leukocytosis", "final", Severity.HIGH)]
    assert [(f.rule.id, f.status, f.since) for f in d.flags] == [
        ("leukocytosis", "active", "202601010800")
    ]
    assert [r.key for r in d.results] == ["LAB|F:1|LN^6690-2|"]


def test_decide_preliminary_decides_nothing() -> None:
    d = decide(
        RULES,
        [_wbc("25", status=ResultStatus.PRELIMINARY)],
        [],
        PatientState(PK),
        seq=1,
        source="m1",
    )
    assert (d.issues, d.flags, d.results) == ((), (), ())


def _stored(
    value: str, *, order: str = "F:1", effective: str = "202601010800", seq: int = 1
) -> StoredResult:
    return StoredResult(
        f"LAB|{order}|LN^6690-2|",
        PK,
        "wbc",
        Decimal(value),
        None,
        effective,
        effective,
        seq,
        ResultStatus.FINAL,
        "m",
    )


def _output(kind: OutputKind, rule: str, result_key: str, status: str) -> StoredOutput:
    return StoredOutput(
        f"{kind.value}-{rule}-{result_key}", kind, PK, rule, result_key, status, "{}", 1
    )


def test_decide_correction_retracts_issue_and_deactivates_flag() -> None:
    key = "LAB|F:1|LN^6690-2|"
    state = PatientState(
        PK,
        (_stored("14.0"),),
        (
            _output(OutputKind.DETECTED_ISSUE, "leukocytosis", key, "final"),
            _output(OutputKind.FLAG, "leukocytosis", key, "active"),
        ),
    )
    d = decide(RULES, [_wbc("8.0", status=ResultStatus.CORRECTED)], [], state, seq=2, source="m2")
    assert [(i.rule.id, i.status) for i in d.issues] == [("leukocytosis", "entered-in-error")]
    assert [(f.rule.id, f.status) for f in d.flags] == [("leukocytosis", "inactive")]


def test_decide_later_normal_result_clears_flag_but_keeps_issue() -> None:
    old_key = "LAB|F:1|LN^6690-2|"
    state = PatientState(
        PK,
        (_stored("14.0"),),
        (
            _output(OutputKind.DETECTED_ISSUE, "leukocytosis", old_key, "final"),
            _output(OutputKind.FLAG, "leukocytosis", old_key, "active"),
        ),
    )
    d = decide(
        RULES, [_wbc("7.0", order="F:2", effective="202601080800")], [], state, seq=2, source="m2"
    )
    assert d.issues == ()  # the old DetectedIssue stays final: it was true when made
    assert [(f.rule.id, f.status, f.since) for f in d.flags] == [
        ("leukocytosis", "inactive", "202601080800")
    ]


def test_decide_older_normal_result_arriving_late_does_not_clear() -> None:
    old_key = "LAB|F:1|LN^6690-2|"
    state = PatientState(
        PK,
        (_stored("14.0", effective="202601080800"),),
        (_output(OutputKind.FLAG, "leukocytosis", old_key, "active"),),
    )
    d = decide(
        RULES, [_wbc("7.0", order="F:0", effective="202601010800")], [], state, seq=2, source="m2"
    )
    assert d.flags == ()


def test_decide_retraction_removes_result_and_retracts_what_it_caused() -> None:
    key = "LAB|F:1|LN^6690-2|"
    state = PatientState(
        PK,
        (_stored("14.0"),),
        (
            _output(OutputKind.DETECTED_ISSUE, "leukocytosis", key, "final"),
            _output(OutputKind.FLAG, "leukocytosis", key, "active"),
        ),
    )
    w = _wbc("14.0", status=ResultStatus.ENTERED_IN_ERROR)
    d = decide(RULES, [w], [w], state, seq=2, source="m2")
    assert d.removed == (key,)
    assert [(i.rule.id, i.status) for i in d.issues] == [("leukocytosis", "entered-in-error")]
    assert [(f.rule.id, f.status) for f in d.flags] == [("leukocytosis", "inactive")]


def test_decide_repeat_of_same_final_changes_no_flag() -> None:
    key = "LAB|F:1|LN^6690-2|"
    state = PatientState(
        PK, (_stored("23.4"),), (_output(OutputKind.FLAG, "leukocytosis", key, "active"),)
    )
    d = decide(RULES, [_wbc("23.4")], [], state, seq=2, source="m2")
    assert d.flags == ()
    # the issue is re-derived; the pipeline emits nothing when its resource is unchanged
    assert [i.status for i in d.issues] == ["final"]


def test_decide_unsettled_comparator_leaves_flag_alone() -> None:
    d = decide(RULES, [_wbc("10", cmp=Comparator.GT)], [], PatientState(PK), seq=1, source="m")
    assert (d.issues, d.flags) == ((), ())
