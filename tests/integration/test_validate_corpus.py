"""``validate --strict`` over the published corpus (../shared/corpus/hl7v2), per message.

What each message must give, and why, comes from reading the messages and
../shared/corpus/SOURCES.md (not from running the code): which ones our tokenizer
refuses (AE/AR), which codes no mapping covers, and where hl7apy's STRICT level
finds the message breaks its version's definition — including the malformed ones
SOURCES.md describes: realm-lead-laboratory-result (a segment break inside PID, PV2
and ORC run together, and so do OBR and the lead OBX), realm-hepatitis-c-virus (the
SN value shifted into OBX-7, units into OBX-8, range into OBX-9) and
realm-bad-batch (OBX-3 identifiers blanked).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from junitparser import JUnitXml

from prpgate.config import Settings
from prpgate.core.pipeline import Engine
from prpgate.engine import build_engine
from prpgate.junit import write_junit
from prpgate.validate import ValidateOptions, validate_files
from prpgate.validation.report import (
    CheckKind,
    MessageReport,
    OutputSummary,
    Status,
    ValidationReport,
)
from tests.conftest import FIXED_NOW, MAPPINGS, corpus_dir

P, F, S = Status.PASSED, Status.FAILED, Status.SKIPPED


class FixedClock:
    def now(self):  # type: ignore[no-untyped-def]
        return FIXED_NOW


@dataclass(frozen=True)
class Expect:
    """One corpus message: its disposition, each check's status, and findings that must
    be among the check's findings as (location, part of the reason)."""

    disposition: str
    parse: Status
    conformance: Status
    mapping: Status
    why: tuple[tuple[CheckKind, str, str], ...] = ()


PARSE, CONF, MAP = CheckKind.PARSE, CheckKind.CONFORMANCE, CheckKind.MAPPING
EMPTY_OBX3 = "OBX-3 observation identifier is empty (HL7 error 101)"
ELR_CE7 = "Invalid name for Component: CE_7"  # ELR 2.5.1 sends CWE-style CE with 7 parts

CORPUS: dict[tuple[str, int], Expect] = {
    # OBR-23 (charge to practice, MOC in 2.5) holds a timestamp; 11156-7 is a morphology
    # code, not one of DESIGN's WBC count codes
    ("fhir-converter__LAB-ORU-1.hl7", 1): Expect(
        "accepted",
        P,
        F,
        F,
        (
            (CONF, "OBR[3]-23", "20141006092900+0700 is not an HL7 valid NM value"),
            (MAP, "OBX[4]", 'unmapped-code: LN 11156-7 "LEUKOCYTES"'),
        ),
    ),
    ("fhir-converter__LAB-ORU-2.hl7", 1): Expect(
        "accepted",
        P,
        F,
        F,
        (
            (CONF, "OBR[10]-23", "is not an HL7 valid NM value"),
            (MAP, "OBX[12]", 'unmapped-code: LN 11156-7 "LEUKOCYTES"'),
        ),
    ),
    # NIST LRI: CWE-style codes (9 components) in CE fields; Hb "12.5 g/mL" (sic)
    ("fhir-converter__LRI_2.0-NG_CBC_Typ_Message.hl7", 1): Expect(
        "accepted",
        P,
        F,
        F,
        (
            (CONF, "OBX[5]-3", "Invalid name for Component: CE_9"),
            (MAP, "OBX[6]", 'implausible: LN 718-7 "Hemoglobin [Mass/volume] in Blood"'),
        ),
    ),
    # an OBX with no OBX-3 (AE); PRT is a v2.7+ segment sent in a 2.5.1 message
    ("fhir-converter__ORU-R01-01.hl7", 1): Expect(
        "error",
        F,
        F,
        F,
        (
            (PARSE, "OBX[11]-3", EMPTY_OBX3),
            (CONF, "PRT[4]", "segment PRT is not defined in HL7 v2.5.1"),
            (CONF, "OBX[11]-3", "Missing required child OBX.OBX_3"),
        ),
    ),
    # the local code system name "POST 12H CFST:MCNC:PT:SER/PLAS:QN" is over CE.3's 20
    ("fhir-converter__ORU-R01-RMGEAD.hl7", 1): Expect(
        "accepted",
        P,
        F,
        F,
        (
            (CONF, "OBX[4]-3", "exceed the max length: 20"),
            (MAP, "OBX[4]", '1554-5 "GLUCOSE" from ELAB-3'),
        ),
    ),
    # imaging report: three OBX with an empty OBX-3
    ("linuxforhealth__ORU-multiline-short.hl7", 1): Expect(
        "error",
        F,
        F,
        P,
        (
            (PARSE, "OBX[6]-3", EMPTY_OBX3),
            (PARSE, "OBX[8]-3", EMPTY_OBX3),
            (CONF, "OBX[7]-3", "Missing required child OBX.OBX_3"),
        ),
    ),
    # ADT^A40 before the ORU: not for this adapter; v2.3 has no ADT_A40 structure
    ("mirth-connect__batch03.hl7", 1): Expect(
        "rejected",
        F,
        F,
        S,
        (
            (PARSE, "MSH-9", "unsupported message type ADT^A40"),
            (CONF, "MSH-9", "HL7 v2.3 has no message structure ADT_A40"),
        ),
    ),
    # v2.3 CBC: ORC-7 (required in 2.3) empty, 44 OBR fields where 2.3 defines 43;
    # MCH/MCHC sent with a local code and no coding system
    ("mirth-connect__batch03.hl7", 2): Expect(
        "accepted",
        P,
        F,
        F,
        (
            (CONF, "ORC[4]-7", "Missing required child ORC.ORC_7"),
            (CONF, "OBR[5]-44", "not defined in this version"),
            (MAP, "OBX[17]", 'unmapped-code: (no system) mch "Mch" from SendingFac'),
        ),
    ),
    ("mirth-connect__large.hl7", 1): Expect(
        "accepted",
        P,
        F,
        F,
        (
            (CONF, "NTE[45]-3", "MaxChildLimitReached"),
            (MAP, "OBX[30]", 'L NA "SODIUM", LN 2951-2 "SODIUM" from STRONG'),
        ),
    ),
    # byte-identical to batch03.hl7's ORU: a retransmit, recorded, not evaluated again
    ("mirth-connect__nonbatch_nested_08.hl7", 1): Expect(
        "duplicate", P, F, F, ((CONF, "ORC[4]-7", "Missing required child ORC.ORC_7"),)
    ),
    # NIST ELR blood lead: conforms to base 2.5.1 (only table warnings); lead is not
    # an analyte of the rule pack
    ("ruby-hl7__nist_ORU_R01_2.5.1_SampleTestCase1.er7", 1): Expect(
        "accepted", P, P, F, ((MAP, "OBX[6]", 'LN 10368-9 "Lead BldC-mCnc" from EHR Facility'),)
    ),
    ("ruby-hl7__nist_ORU_R01_2.5.1_SampleTestCase2.er7", 1): Expect(
        "accepted", P, P, F, ((MAP, "OBX[6]", "LN 10368-9"),)
    ),
    ("ruby-hl7__nist_ORU_R01_2.5.1_SampleTestCase3.er7", 1): Expect(
        "accepted", P, P, F, ((MAP, "OBX[6]", "LN 10368-9"),)
    ),
    # v2.2 radiology: MSH-9 "ORU" with no trigger event; OBX-11 (required) empty
    ("ruby-hl7__obxobr.hl7", 1): Expect(
        "accepted",
        P,
        F,
        F,
        (
            (PARSE, "message", "MSH-9 has no trigger event"),
            (CONF, "MSH-9", "has no trigger event"),
            (CONF, "OBX[7]-11", "Missing required child OBX.OBX_11"),
            (MAP, "OBX[7]", 'L FIND "FINDINGS"'),
        ),
    ),
    # SOURCES.md: OBX-3 identifiers blanked -> AE in both messages of the batch
    ("ruby-hl7__realm-bad-batch.hl7", 1): Expect(
        "error", F, F, F, ((PARSE, "OBX[8]-3", EMPTY_OBX3), (CONF, "PID[3]-10", ELR_CE7))
    ),
    ("ruby-hl7__realm-bad-batch.hl7", 2): Expect(
        "error", F, F, P, ((PARSE, "OBX[6]-3", EMPTY_OBX3),)
    ),
    ("ruby-hl7__realm-batch.hl7", 1): Expect(
        "accepted",
        P,
        F,
        F,
        (
            (CONF, "OBR[7]-22", "2008081830 is not an HL7 valid date value"),
            (MAP, "OBX[8]", "LN 625-4"),
        ),
    ),
    ("ruby-hl7__realm-batch.hl7", 2): Expect(
        "accepted", P, F, F, ((CONF, "OBX[6]-3", ELR_CE7), (MAP, "OBX[6]", "LN 10368-9"))
    ),
    # SOURCES.md: the SN value ">^11.0" shifted into OBX-7, units into OBX-8, the range
    # into OBX-9: our tokenizer reads it (the code is unmapped anyway); hl7apy does not
    ("ruby-hl7__realm-hepatitis-c-virus.hl7", 1): Expect(
        "accepted",
        P,
        F,
        F,
        (
            (CONF, "OBX[8]-7", "Field OBX_7 (REFERENCES_RANGE)"),
            (CONF, "OBX[8]-8", "Field OBX_8 (ABNORMAL_FLAGS)"),
            (CONF, "OBX[8]-9", "0.0-0.9 is not an HL7 valid NM value"),
            (MAP, "OBX[8]", 'LN 5198-7 "HCV Ab Ser EIA-aCnc"'),
        ),
    ),
    # SOURCES.md: a segment break inside PID (a line feed in PID-16), PV2 and ORC run
    # together, and the lead OBX runs into OBR: its value is never read as a result
    ("ruby-hl7__realm-lead-laboratory-result.hl7", 1): Expect(
        "accepted",
        P,
        F,
        F,
        (
            (PARSE, "PID[3]-16", "a line feed inside the field"),
            (CONF, "PV2[6]-51", "not defined in this version"),
            (CONF, "PV2[6]-33", "9700123 is not an HL7 valid date value"),
            (CONF, "OBR[7]-35", "Lead BldCmCnc is not an HL7 valid date value"),
            (CONF, "OBR[7]-51", "not defined in this version"),
            (MAP, "OBX[9]", 'LN 35659-2 "Age at specimen collection"'),
        ),
    ),
    # the same bytes as realm-batch.hl7's second message: a retransmit
    ("ruby-hl7__realm-minimal-message.hl7", 1): Expect(
        "duplicate", P, F, F, ((CONF, "OBX[6]-6", ELR_CE7),)
    ),
}

_ENGINE: list[Engine] = []
_REPORT: dict[str, ValidationReport] = {}


def corpus_report() -> ValidationReport:
    folder = corpus_dir("hl7v2")
    if not _REPORT:
        if not _ENGINE:
            _ENGINE.append(build_engine(Settings(mappings=MAPPINGS)))
        options = ValidateOptions(strict=True)
        _REPORT["r"] = validate_files([folder], _ENGINE[0], options, clock=FixedClock())
    return _REPORT["r"]


def by_key(report: ValidationReport) -> dict[tuple[str, int], MessageReport]:
    return {(Path(m.file).name, m.number): m for m in report.messages}


@pytest.mark.corpus
def test_validate_corpus_every_message_is_asserted() -> None:
    assert sorted(by_key(corpus_report())) == sorted(CORPUS)


@pytest.mark.corpus
@pytest.mark.parametrize("key", sorted(CORPUS), ids=lambda k: f"{k[0]}#{k[1]}")
def test_validate_corpus_message_checks_and_why(key: tuple[str, int]) -> None:
    message = by_key(corpus_report())[key]
    want = CORPUS[key]
    got = {c.kind: c for c in message.checks}
    assert message.disposition == want.disposition
    assert (got[PARSE].status, got[CONF].status, got[MAP].status) == (
        want.parse,
        want.conformance,
        want.mapping,
    )
    for kind, location, part in want.why:
        reasons = [f.reason for f in got[kind].findings if f.location == location]
        assert any(part in r for r in reasons), (kind, location, reasons)
    assert message.passed is False


@pytest.mark.corpus
def test_validate_corpus_hepatitis_shift_is_invisible_without_strict() -> None:
    # the tokenizer reads the shifted OBX as a result with an empty value and an
    # unmapped code: without --strict nothing points at OBX-7..9
    message = by_key(corpus_report())[("ruby-hl7__realm-hepatitis-c-virus.hl7", 1)]
    parse = message.check(PARSE)
    assert parse is not None
    assert [f.location for f in parse.findings] == []


@pytest.mark.corpus
def test_validate_corpus_lead_result_is_swallowed_by_obr() -> None:
    message = by_key(corpus_report())[("ruby-hl7__realm-lead-laboratory-result.hl7", 1)]
    mapping = message.check(MAP)
    assert mapping is not None
    # only the age OBX is a result: the lead OBX (10368-9) sits inside OBR's fields
    assert mapping.note == "0 of 1 result(s) mapped"
    assert all("10368-9" not in f.reason for f in mapping.findings)


@pytest.mark.corpus
def test_validate_corpus_lri_decision_is_reported() -> None:
    message = by_key(corpus_report())[("fhir-converter__LRI_2.0-NG_CBC_Typ_Message.hl7", 1)]
    assert sorted(message.outputs, key=lambda o: o.resource) == [
        OutputSummary("DetectedIssue", "leukocytosis", "final", "PATID1234", "high"),
        OutputSummary("Flag", "leukocytosis", "active", "PATID1234"),
    ]


@pytest.mark.corpus
def test_validate_corpus_coverage_names_facilities_and_their_unmapped_codes() -> None:
    coverage = {c.facility: c for c in corpus_report().coverage}
    strong = coverage["STRONG"]  # mirth-connect__large.hl7: a v2.2 panel set
    assert strong.covered == ("crp", "hgb", "plt", "wbc")
    assert strong.missing == ("inr",)
    sodium = next(u for u in strong.unmapped if '2951-2 "SODIUM"' in u.codes)
    assert (sodium.reason, sodium.count) == ("unmapped-code", 3)
    nist = coverage["NIST Lab Facility"]
    assert nist.covered == ("plt", "wbc")
    assert any(u.reason == "implausible" and "718-7" in u.codes for u in nist.unmapped)


@pytest.mark.corpus
def test_validate_corpus_junit_counts_one_testcase_per_message_and_check(tmp_path: Path) -> None:
    report = corpus_report()
    path = tmp_path / "out" / "validate.xml"
    write_junit(report, path)
    xml = JUnitXml.fromfile(str(path))
    cases = [case for suite in xml for case in suite]
    checks = [c for m in report.messages for c in m.checks]
    assert len(report.messages) == len(CORPUS) == 21
    assert len(cases) == len(checks) == 21 * 3
    failed = sum(1 for c in checks if c.status is Status.FAILED)
    skipped = sum(1 for c in checks if c.status is Status.SKIPPED)
    assert sum(1 for case in cases if case.is_failure) == failed
    assert sum(1 for case in cases if case.is_skipped) == skipped == 1  # the ADT's mapping
    assert (xml.tests, xml.failures, xml.skipped) == (63, failed, skipped)
    assert len(list(xml)) == 18  # one suite per file
    hep = next(
        case
        for suite in xml
        for case in suite
        if "hepatitis" in (case.classname or "") and case.name.endswith("conformance")
    )
    assert "OBX[8]-7" in (hep.result[0].text or "")
