"""hl7apy STRICT conformance turned into located findings (``prpgate.conformance``).

The messages are literals built here; each test breaks one thing and asserts where
the finding lands. hl7apy's warnings (a value outside an HL7 table) never fail.
"""

from __future__ import annotations

from prpgate.conformance import check_conformance
from prpgate.core import er7
from prpgate.validation.report import Level

MSH = (
    "MSH|^~\\&|LAB|NORTHLAB|PRPGATE|CLINIC|20250301083000+0100||ORU^R01^ORU_R01|C1|P|2.5.1|||AL|NE"
)
PID = "PID|1||ZQ79901^^^NORTHHOSP^MR||Testwick^Anna||19700101|F"
OBR = "OBR|1|PL1|NF1|58410-2^CBC^LN|||20250301080000+0100|||||||||||||||20250301083000+0100|||F"
OBX = "OBX|1|NM|6690-2^WBC^LN|1|7.2|10*3/uL^10*3/uL^UCUM|4.0-11.0|N|||F|||20250301080000+0100"


def errors(*segments: str, terminator: str = "\r") -> list[tuple[str, str]]:
    msg = er7.parse_message(terminator.join(segments))
    result = check_conformance(msg)
    assert result.checked, result.note
    return [(f.location, f.reason) for f in result.findings if f.level is Level.ERROR]


def test_conformance_clean_message_has_no_errors() -> None:
    assert errors(MSH, PID, OBR, OBX) == []


def test_conformance_reads_lf_terminated_messages_like_cr_ones() -> None:
    assert errors(MSH, PID, OBR, OBX, terminator="\n") == []
    bad = PID.replace("19700101", "notadate")
    assert errors(MSH, bad, OBR, OBX, terminator="\r\n") == errors(MSH, bad, OBR, OBX)


def test_conformance_locates_a_bad_date_at_its_field() -> None:
    found = errors(MSH, PID.replace("19700101", "notadate"), OBR, OBX)
    assert [loc for loc, _ in found] == ["PID[2]-7"]
    assert "notadate is not an HL7 valid date value" in found[0][1]


def test_conformance_locates_a_bad_repetition() -> None:
    pid = PID.replace("NORTHHOSP^MR|", "NORTHHOSP^MR~X2^^^H^MR^a^b^c|")
    found = errors(MSH, pid, OBR, OBX)
    assert [loc for loc, _ in found] == ["PID[2]-3~2"]


def test_conformance_reports_a_missing_required_field_of_the_right_segment() -> None:
    second = "OBX|2|NM||1|7.2|10*3/uL|4.0-11.0|N|||F"
    found = errors(MSH, PID, OBR, OBX, second)
    assert found == [("OBX[5]-3", "Missing required child OBX.OBX_3")]


def test_conformance_reports_a_field_the_version_does_not_define() -> None:
    found = errors(MSH, PID, OBR, OBX + "|" * 21 + "extra")
    assert [loc for loc, _ in found] == ["OBX[4]-35"]
    assert "not defined in this version" in found[0][1]


def test_conformance_reports_a_segment_the_version_does_not_define() -> None:
    found = errors(MSH, PID, "PRT|1|AD", OBR, OBX)
    assert [loc for loc, _ in found] == ["PRT[3]"]
    assert "segment PRT is not defined in HL7 v2.5.1" in found[0][1]


def test_conformance_reports_a_segment_out_of_place_in_the_structure() -> None:
    found = errors(MSH, "EVN|A01|20250301", PID, OBR, OBX)
    assert [loc for loc, _ in found] == ["EVN[2]"]
    assert "does not fit the ORU_R01 structure" in found[0][1]


def test_conformance_leaves_z_segments_alone() -> None:
    assert errors(MSH, PID, "ZXY|1|a^b^c&d|x~y", OBR, OBX) == []


def test_conformance_reads_msh2_without_escape_character() -> None:
    msh = MSH.replace("^~\\&", "^~&")
    # without an escape character a backslash is text, and hl7apy must not choke on it
    obx = OBX.replace("4.0-11.0", "4.0\\11.0")
    assert errors(msh, PID, OBR, obx) == []
    assert errors(msh, PID.replace("19700101", "1970x"), OBR, obx)[0][0] == "PID[2]-7"


def test_conformance_table_values_are_warnings_that_do_not_fail() -> None:
    msg = er7.parse_message("\r".join([MSH, PID, OBR, OBX.replace("|N|", "|ZZZ|")]))
    result = check_conformance(msg)
    flags = [f for f in result.findings if f.location == "OBX[4]-8"]
    assert [f.level for f in flags] == [Level.WARNING]
    assert "Value ZZZ not in table HL70078" in flags[0].reason
    assert [f for f in result.findings if f.level is Level.ERROR] == []


def test_conformance_version_hl7apy_does_not_know_is_not_checked() -> None:
    msg = er7.parse_message("\r".join([MSH.replace("2.5.1", "9.9"), PID, OBR, OBX]))
    result = check_conformance(msg)
    assert result.checked is False
    assert result.findings == ()
    assert "'9.9'" in result.note


def test_conformance_truncation_character_before_v27_is_reported_at_msh2() -> None:
    # MSH-2's fifth character (truncation) exists from v2.7 on
    msh = MSH.replace("^~\\&", "^~\\&#")
    found = errors(msh, PID, OBR, OBX)
    assert [loc for loc, _ in found] == ["MSH-2"]
    assert "Found 5 encoding chars" in found[0][1]
    assert errors(msh.replace("2.5.1", "2.7"), PID, OBR, OBX) == []
