"""ACK messages: mirrored header, MSA/ERR per version, enhanced-mode plans; hl7apy STRICT."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message as HapyMessage
from hl7apy.parser import get_message_info, parse_message, parse_segments

from prpgate.core import er7
from prpgate.core.ack import (
    FALLBACK_VERSION,
    AcceptCode,
    Ack,
    AckMode,
    build_ack,
    plan,
    read_context,
)
from prpgate.core.oru import SUPPORTED_VERSIONS
from prpgate.core.pipeline import AckCode, Engine, ErrorInfo, read
from tests.conftest import FIXED_NOW, load

HAPY_VERSIONS = {"2.7.1": "2.7"}  # hl7apy has no 2.7.1; its ACK is 2.7's


def strict(ack: Ack, codec: str = "utf-8") -> Any:
    """Parse and validate an ACK with hl7apy at STRICT level (raises on any fault)."""
    text = ack.data.decode(codec)
    enc, structure, version = get_message_info(text)
    if version in HAPY_VERSIONS:
        version = HAPY_VERSIONS[version]
        msh, rest = text.split("\r", 1)
        parts = msh.split("|")
        parts[11] = version  # MSH-12
        text = "|".join(parts) + "\r" + rest
    if structure:
        msg = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT)
    else:
        # MSH-9 is plain "ACK" before v2.4: hl7apy's parse_message cannot infer the
        # structure from it, so name it; every segment is still parsed strictly.
        msg = HapyMessage("ACK", version=version, validation_level=VALIDATION_LEVEL.STRICT)
        msg.children = parse_segments(
            text, version, enc, VALIDATION_LEVEL.STRICT, msg.reference, False
        )
    assert msg.validate() is True
    return msg


def fields(ack: Ack, segment: str, codec: str = "utf-8") -> list[str]:
    """Raw fields of the first ``segment`` of an ACK: ``[n]`` is field n (MSH-1 included)."""
    for line in ack.data.decode(codec).split("\r"):
        if line.startswith(segment):
            parts = line.split("|")
            return [parts[0], "|", *parts[1:]] if segment == "MSH" else parts
    raise AssertionError(f"no {segment} in {ack.data!r}")


def segments(ack: Ack, name: str) -> list[list[str]]:
    return [ln.split("|") for ln in ack.data.decode().split("\r") if ln.startswith(name)]


def ack_for(raw: bytes, code: AckCode | AcceptCode, errors: tuple[ErrorInfo, ...] = ()) -> Ack:
    ctx = read_context(raw)
    return build_ack(ctx, code, errors, raw=raw, control_id="PG000001", now=FIXED_NOW)


@pytest.mark.parametrize(
    ("fixture", "version", "msh9"),
    [
        ("v23_cbc.hl7", "2.3", "ACK"),
        ("v231_cbc.hl7", "2.3.1", "ACK"),
        ("v24_cbc.hl7", "2.4", "ACK^R01^ACK"),
        ("v25_cbc.hl7", "2.5", "ACK^R01^ACK"),
        ("cbc_high_wbc.hl7", "2.5.1", "ACK^R01^ACK"),
        ("v26_cbc.hl7", "2.6", "ACK^R01^ACK"),
        ("v27_cbc.hl7", "2.7", "ACK^R01^ACK"),
        ("v28_cbc.hl7", "2.8", "ACK^R01^ACK"),
    ],
)
def test_build_ack_aa_mirrors_header_per_version(fixture: str, version: str, msh9: str) -> None:
    raw = load(fixture)
    ack = ack_for(raw, AckCode.AA)
    msg = strict(ack)
    msh = fields(ack, "MSH")
    assert msh[1:3] in (["|", "^~\\&"], ["|", "^~\\&#"])
    assert msh[3:7] == ["PRPGATE", "CLINIC", "PRPLAB", "NORTHLAB^2.16.840.1.113883.3.9999.1^ISO"]
    assert msh[7] == "20260115093000+0000"
    assert msh[9] == msh9
    assert msh[10] == "PG000001"
    assert msh[12] == version
    inbound_id = er7.parse(raw).segments[0].field(10)
    assert fields(ack, "MSA")[1:3] == ["AA", inbound_id]
    assert msg.msa.msa_2.to_er7() == inbound_id
    assert segments(ack, "ERR") == []


def test_build_ack_keeps_truncation_character_of_v27_sender() -> None:
    ack = ack_for(load("v27_cbc.hl7"), AckCode.AA)
    assert ack.data.startswith(b"MSH|^~\\&#|")
    strict(ack)


def test_build_ack_ae_v251_has_err_location_code_severity_text(engine: Engine) -> None:
    raw = load("bad/not_a_number.hl7")
    reading = read(raw, engine)
    assert reading.ack is AckCode.AE
    ack = ack_for(raw, reading.ack, reading.errors)
    strict(ack)
    err = segments(ack, "ERR")[0]
    # the NM value that is not a number is in the message's first OBX, field 5
    body = raw.replace(b"\r\n", b"\r").split(b"\r")
    obx_index = next(i for i, s in enumerate(body, 1) if s.startswith(b"OBX|") and b"|NM|" in s)
    assert reading.errors[0].location.startswith(f"OBX[{obx_index}]")
    obx_before = sum(1 for s in body[: obx_index - 1] if s.startswith(b"OBX|"))
    assert err[2] == f"OBX^{obx_before + 1}^5"
    assert err[3] == "102^Data type error^HL70357"
    assert err[4] == "E"
    assert "not a number" in err[8]
    assert fields(ack, "MSA")[1] == "AE"
    assert len(fields(ack, "MSA")) == 3  # no MSA-3 from v2.5 on


def test_build_ack_before_v25_uses_err1_and_msa3() -> None:
    raw = load("v23_cbc.hl7")
    errors = (
        ErrorInfo(102, "OBX[5]-5", "NM value is not a number"),
        ErrorInfo(101, "message", "something else"),
    )
    ack = ack_for(raw, AckCode.AE, errors)
    strict(ack)
    assert fields(ack, "MSA")[3] == "OBX[5]-5: NM value is not a number"
    err = fields(ack, "ERR")
    assert err[1] == "OBX^1^5^102&Data type error&HL70357~^^^101&Required field missing&HL70357"


@pytest.mark.parametrize(
    ("fixture", "code"),
    [("bad/adt_a01.hl7", 200), ("bad/bad_version.hl7", 203), ("bad/missing_pid.hl7", 100)],
)
def test_build_ack_for_rejected_or_error_fixture_parses_strictly(
    engine: Engine, fixture: str, code: int
) -> None:
    raw = load(fixture)
    reading = read(raw, engine)
    assert reading.ack in (AckCode.AR, AckCode.AE)
    ack = ack_for(raw, reading.ack, reading.errors)
    strict(ack)
    assert fields(ack, "ERR")[3].startswith(f"{code}^")
    assert fields(ack, "MSA")[2] == er7.parse(raw).segments[0].field(10)


def test_build_ack_unsupported_version_answers_in_fallback_version(engine: Engine) -> None:
    raw = load("bad/bad_version.hl7")
    ack = ack_for(raw, AckCode.AR, read(raw, engine).errors)
    assert fields(ack, "MSH")[12] == FALLBACK_VERSION
    assert "unsupported HL7 version" in fields(ack, "ERR")[8]


def test_build_ack_adt_echoes_its_trigger(engine: Engine) -> None:
    raw = load("bad/adt_a01.hl7")
    ack = ack_for(raw, AckCode.AR, read(raw, engine).errors)
    assert fields(ack, "MSH")[9] == "ACK^A01^ACK"


@pytest.mark.parametrize("fixture", ["bad/garbage.bin", "bad/no_msh.hl7", "bad/truncated.hl7"])
def test_build_ack_for_unusable_input_still_answers(engine: Engine, fixture: str) -> None:
    raw = load(fixture)
    reading = read(raw, engine)
    ack = ack_for(raw, reading.ack, reading.errors)
    strict(ack)
    assert fields(ack, "MSA")[1] in ("AR", "AE")


def test_build_ack_without_msh_uses_defaults_and_explicit_null() -> None:
    ack = ack_for(b"PID|1||X\r", AckCode.AR, (ErrorInfo(100, "message", "no MSH segment"),))
    strict(ack)
    msh = fields(ack, "MSH")
    assert msh[2] == "^~\\&"
    assert msh[12] == FALLBACK_VERSION
    assert fields(ack, "MSA")[2] == '""'
    assert ack.acknowledged == ""


def test_build_ack_with_unusable_delimiters_echoes_a_plain_control_id() -> None:
    raw = b"MSH|^^^^|LAB|FAC|||20250101||ORU^R01|CTRL42|P|2.5.1\rPID|1\r"
    ctx = read_context(raw)
    assert ctx.usable is False
    ack = build_ack(ctx, AckCode.AR, (), control_id="PG1", now=FIXED_NOW)
    strict(ack)
    assert ack.data.startswith(b"MSH|^~\\&|||||2026")
    assert fields(ack, "MSA")[2] == "CTRL42"


def test_build_ack_escapes_delimiters_in_error_text() -> None:
    raw = load("cbc_normal.hl7")
    ack = ack_for(raw, AckCode.AE, (ErrorInfo(102, "OBX[5]-5", r"value 'a|b^c~d&e\f'"),))
    strict(ack)
    text = fields(ack, "ERR")[8]
    assert text == r"OBX[5]-5: value 'a\F\b\S\c\R\d\T\e\E\f'"


def test_build_ack_hex_escapes_control_characters_in_error_text() -> None:
    # an error about a framing byte may quote it: the ACK must not carry it (it would
    # end the ACK's MLLP frame early), so it goes as an HL7 hex escape
    raw = load("cbc_normal.hl7")
    reason = "NUL byte at byte 5 (segment 2, \x1c\x00\x0b)"
    ack = ack_for(raw, AckCode.AR, (ErrorInfo(102, "MSH", reason),))
    strict(ack)
    assert not any(ch in ack.data for ch in (b"\x00", b"\x0b", b"\x1c"))
    text = fields(ack, "ERR")[8]
    assert text == r"MSH: NUL byte at byte 5 (segment 2, \X1C\\X00\\X0B\)"


def test_build_ack_without_escape_character_sends_control_characters_as_spaces() -> None:
    raw = load("cbc_normal.hl7").replace(b"MSH|^~\\&|", b"MSH|^~&|", 1)
    ctx = read_context(raw)
    assert ctx.encoding == "^~&"
    ack = build_ack(
        ctx, AckCode.AE, (ErrorInfo(102, "OBX[5]-5", "a\x1cb\x00c"),), control_id="P", now=FIXED_NOW
    )
    assert b"\x1c" not in ack.data
    assert b"\x00" not in ack.data
    assert fields(ack, "ERR")[8] == "OBX[5]-5: a b c"


def test_build_ack_caps_error_segments() -> None:
    errors = tuple(ErrorInfo(102, f"OBX[{i}]-5", "bad") for i in range(5, 45))
    ack = ack_for(load("cbc_normal.hl7"), AckCode.AE, errors)
    strict(ack)
    errs = segments(ack, "ERR")
    assert len(errs) == 21
    assert errs[-1][8] == "20 more"


def test_build_ack_long_text_is_cut_to_fit() -> None:
    raw = load("v24_cbc.hl7")
    ack = ack_for(raw, AckCode.AE, (ErrorInfo(207, "message", "x|" * 200),))
    strict(ack)
    msa3 = fields(ack, "MSA")[3]
    assert len(msa3) <= 80
    assert msa3.endswith("...")


def test_build_ack_encodes_in_sender_charset_and_echoes_msh18() -> None:
    raw = load("charset_8859.hl7")
    ctx = read_context(raw)
    assert ctx.codec == "iso8859-1"
    ack = build_ack(
        ctx,
        AckCode.AE,
        (ErrorInfo(102, "message", "Größe"),),
        raw=raw,
        control_id="PG1",
        now=FIXED_NOW,
    )
    assert "Größe".encode("latin-1") in ack.data
    assert fields(ack, "MSH", "latin-1")[18] == "8859/1"
    strict(ack, "latin-1")


def test_build_ack_uses_sender_override_codec() -> None:
    raw = load("latin1_sender.hl7")
    ctx = read_context(raw, charset_overrides={"SOUTHLAB": "latin-1"})
    assert ctx.codec == "iso8859-1"


def test_build_ack_timestamp_keeps_offset() -> None:
    now = datetime(2026, 3, 1, 8, 5, 9, tzinfo=timezone(timedelta(hours=1)))
    ack = build_ack(read_context(load("cbc_normal.hl7")), AckCode.AA, control_id="X", now=now)
    assert fields(ack, "MSH")[7] == "20260301080509+0100"


def test_build_ack_enhanced_accept_ack_asks_for_no_ack_back() -> None:
    ack = ack_for(load("cbc_normal.hl7"), AcceptCode.CA)
    strict(ack)
    msh = fields(ack, "MSH")
    assert msh[15:17] == ["NE", "NE"]
    assert fields(ack, "MSA")[1] == "CA"


def test_read_context_mode_follows_msh15_msh16() -> None:
    assert read_context(load("cbc_normal.hl7")).mode is AckMode.ENHANCED  # AL/NE
    assert read_context(load("v23_cbc.hl7")).mode is AckMode.ORIGINAL  # no MSH-15/16
    assert read_context(load("cbc_normal.hl7"), enhanced=False).mode is AckMode.ORIGINAL


def _ctx(accept: str, app: str) -> Any:
    raw = f"MSH|^~\\&|L|F|R|C|20250101||ORU^R01|C1|P|2.5.1|||{accept}|{app}\r".encode()
    return read_context(raw)


@pytest.mark.parametrize(
    ("accept", "app", "code", "committed", "expected"),
    [
        ("", "", AckCode.AA, True, (AckCode.AA,)),
        ("", "", AckCode.AE, True, (AckCode.AE,)),
        ("", "", AckCode.AA, False, (AckCode.AR,)),
        ("AL", "NE", AckCode.AA, True, (AcceptCode.CA,)),
        ("AL", "NE", AckCode.AE, True, (AcceptCode.CA,)),
        ("AL", "AL", AckCode.AA, True, (AcceptCode.CA, AckCode.AA)),
        ("AL", "AL", AckCode.AR, True, (AcceptCode.CR,)),
        ("AL", "ER", AckCode.AA, True, (AcceptCode.CA,)),
        ("AL", "ER", AckCode.AE, True, (AcceptCode.CA, AckCode.AE)),
        ("AL", "SU", AckCode.AA, True, (AcceptCode.CA, AckCode.AA)),
        ("NE", "AL", AckCode.AA, True, (AckCode.AA,)),
        ("NE", "NE", AckCode.AA, True, ()),
        ("ER", "NE", AckCode.AA, True, ()),
        ("ER", "NE", AckCode.AA, False, (AcceptCode.CE,)),
        ("SU", "NE", AckCode.AR, True, ()),
        ("", "AL", AckCode.AA, True, (AcceptCode.CA, AckCode.AA)),
        ("AL", "", AckCode.AA, True, (AcceptCode.CA,)),
        ("XX", "NE", AckCode.AA, True, (AcceptCode.CA,)),
    ],
)
def test_plan_follows_table_0155(
    accept: str,
    app: str,
    code: AckCode,
    committed: bool,
    expected: tuple[AckCode | AcceptCode, ...],
) -> None:
    assert plan(_ctx(accept, app), code, committed=committed) == expected


def test_plan_every_acceptance_code_renders_strictly() -> None:
    ctx = _ctx("AL", "AL")
    now = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)
    for code in (*AckCode, *AcceptCode):
        ack = build_ack(ctx, code, (), control_id="PG9", now=now)
        assert fields(ack, "MSA")[1] == code.value
        strict(ack)


@pytest.mark.parametrize("version", sorted(SUPPORTED_VERSIONS))
@pytest.mark.parametrize("code", [AckCode.AA, AckCode.AE, AckCode.AR])
def test_build_ack_every_supported_version_parses_strictly(version: str, code: AckCode) -> None:
    raw = (
        f"MSH|^~\\&|LAB|FAC^1.2.3^ISO|APP|CLINIC|20250101120000||ORU^R01|C{version}|P|{version}\r"
        "PID|1||X\rOBR|1\rOBX|1|NM|1^A^LN||abc\r"
    ).encode()
    errors = () if code is AckCode.AA else (ErrorInfo(102, "OBX[4]-5", "not a number"),)
    ack = build_ack(read_context(raw), code, errors, raw=raw, control_id="PG7", now=FIXED_NOW)
    strict(ack)
    assert fields(ack, "MSH")[12] == version
    assert fields(ack, "MSA")[1:3] == [code.value, f"C{version}"]
    if errors:
        where = fields(ack, "ERR")[1 if version < "2.5" else 2]
        assert where.startswith("OBX^1^5")
