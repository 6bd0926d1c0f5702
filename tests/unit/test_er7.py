"""The ER7 tokenizer, one behaviour per test: literal messages in, assertions out."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prpgate.core import er7
from prpgate.core.er7 import Delimiters
from prpgate.errors import ParseError

MSH = "MSH|^~\\&|LAB|NORTHLAB|CLINIC|PRP|20250101120000||ORU^R01^ORU_R01|CTRL1|P|2.5.1"
D = Delimiters()


def _msg(*segments: str, end: str = "\r") -> er7.Message:
    return er7.parse_message(end.join((MSH, *segments)) + end)


def _seg(text: str, delims: Delimiters = D) -> er7.Segment:
    return er7.Segment(text[:3], tuple(text.split(delims.field)), 2)


# ----------------------------------------------------------------- delimiters


def test_parse_message_reads_standard_delimiters() -> None:
    msg = _msg("PID|1")
    assert msg.delimiters == Delimiters("|", "^", "~", "\\", "&", "", "utf-8")


def test_parse_message_honours_the_message_own_delimiters() -> None:
    msg = er7.parse_message("MSH*:!$%*LAB*FAC\rPID*1**A:B!C%D$S$")
    pid = msg.segments[1]
    assert msg.delimiters == Delimiters("*", ":", "!", "$", "%")
    assert er7.field_tree(pid, 3, msg.delimiters) == [[["A"], ["B"]], [["C", "D:"]]]


def test_parse_message_without_escape_character_keeps_backslashes_as_text() -> None:
    msg = er7.parse_message("MSH|^~&|LAB\rNTE|1||C:\\path\\F\\x^b&c")
    nte = msg.segments[1]
    assert msg.delimiters.escape == ""
    assert er7.value(nte, 3, delims=msg.delimiters) == "C:\\path\\F\\x"
    assert er7.value(nte, 3, 1, 2, 2, delims=msg.delimiters) == "c"


def test_parse_message_reads_truncation_character_and_leaves_it_in_text() -> None:
    msg = er7.parse_message("MSH|^~\\&#|LAB|||||||||2.7\rNTE|1||long text#|a#b")
    nte = msg.segments[1]
    assert msg.delimiters.truncation == "#"
    assert er7.value(nte, 3, delims=msg.delimiters) == "long text#"
    assert er7.field_tree(nte, 4, msg.delimiters) == [[["a#b"]]]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("MSH", 1),  # no field separator at all
        ("MSH\rPID|1", 1),
        ("MSHA^~\\&A", 1),  # alphanumeric field separator
        ("MSH ^~\\& LAB", 1),  # whitespace field separator
        ("MSH||LAB", 2),  # MSH-2 empty
        ("MSH|^~|LAB", 2),  # too few encoding characters
        ("MSH|^~\\&#!|LAB", 2),  # too many
        ("MSH|^^\\&|LAB", 2),  # duplicated
        ("MSH|^~\\A|LAB", 2),  # alphanumeric
        ("MSH|^ \\&|LAB", 2),  # whitespace
    ],
)
def test_parse_message_rejects_unusable_msh1_or_msh2(text: str, field: int) -> None:
    with pytest.raises(ParseError) as err:
        er7.parse_message(text)
    assert (err.value.segment, err.value.field, err.value.code) == ("MSH", field, 102)


def test_value_of_msh1_and_msh2_is_the_delimiters_not_unescaped() -> None:
    msh = _msg().segments[0]
    assert er7.value(msh, 1, delims=D) == "|"
    assert er7.value(msh, 2, delims=D) == "^~\\&"


def test_segment_msh_fields_are_numbered_as_hl7() -> None:
    msh = _msg().segments[0]
    assert msh.fields[:4] == ("MSH", "|", "^~\\&", "LAB")
    assert msh.field(9) == "ORU^R01^ORU_R01"
    assert msh.field(12) == "2.5.1"


def test_segment_field_outside_the_segment_is_empty() -> None:
    pid = _msg("PID|1||MRN").segments[1]
    assert (pid.field(3), pid.field(4), pid.field(99), pid.field(-1)) == ("MRN", "", "", "")


def test_segments_are_the_rows_numbered_from_one_and_made_once() -> None:
    msg = _msg("PID|1||MRN", "OBX|1|NM|6690-2^WBC^LN||7.1")
    assert [r[0] for r in msg.rows] == ["MSH", "PID", "OBX"]
    segments = msg.segments
    assert [(s.name, s.index) for s in segments] == [("MSH", 1), ("PID", 2), ("OBX", 3)]
    assert [s.fields for s in segments] == [tuple(r) for r in msg.rows]
    assert msg.segments is segments  # kept, not made again


def test_reading_an_oru_does_not_build_segment_values() -> None:
    from prpgate.core.oru import read_oru

    msg = _msg("PID|1||MRN", "OBR|1||F1|58410-2^CBC^LN", "OBX|1|NM|6690-2^WBC^LN||7.1|10*3/uL")
    read_oru(msg)
    assert msg._segments is None  # the hot path reads the rows only


def test_field_tree_keeps_msh2_as_one_leaf() -> None:
    msh = _msg().segments[0]
    assert er7.field_tree(msh, 2, D) == [[["^~\\&"]]]
    assert er7.repetitions(msh, 2, D) == ["^~\\&"]


# -------------------------------------------------------------------- escapes


def test_unescape_replaces_delimiter_escapes_with_the_delimiters() -> None:
    assert er7.unescape("a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f", D) == "a|b^c&d~e\\f"


def test_unescape_uses_the_message_delimiters() -> None:
    d = Delimiters("*", ":", "!", "$", "%")
    assert er7.unescape("1$F$2$S$3$T$4$R$5$E$6", d) == "1*2:3%4!5$6"


def test_unescape_decodes_hex_in_the_message_charset() -> None:
    assert er7.unescape("caf\\XC3A9\\", D) == "café"
    latin1 = Delimiters(charset="iso8859-1")
    assert er7.unescape("caf\\XE9\\ \\X4142\\", latin1) == "café AB"


@pytest.mark.parametrize("text", ["\\XZZ\\", "\\X4\\", "\\X\\", "\\XFF\\"])
def test_unescape_keeps_unusable_hex_as_sent(text: str) -> None:
    assert er7.unescape(text, D) == text


def test_unescape_drops_highlight_on_and_off() -> None:
    assert er7.unescape("\\H\\HIGH\\N\\ normal", D) == "HIGH normal"


def test_unescape_turns_formatting_commands_into_line_breaks_and_spaces() -> None:
    text = "a\\.br\\b\\.sp 2\\c\\.ce\\d\\.sk 3\\e\\.in 4\\\\.fi\\\\.nf\\f"
    assert er7.unescape(text, D) == "a\nb\n\nc\nd   ef"


@pytest.mark.parametrize("text", ["\\C2842\\", "\\M2442\\", "\\Zlocal\\", "\\Q\\", "\\\\"])
def test_unescape_keeps_unknown_and_charset_escapes_as_literal_text(text: str) -> None:
    assert er7.unescape(f"x{text}y", D) == f"x{text}y"


def test_unescape_leaves_an_unterminated_escape_as_text() -> None:
    assert er7.unescape("50\\S\\60 \\F", D) == "50^60 \\F"


def test_unescape_truncation_escape_needs_a_truncation_character() -> None:
    assert er7.unescape("a\\P\\b", Delimiters(truncation="#")) == "a#b"
    assert er7.unescape("a\\P\\b", D) == "a\\P\\b"


def test_unescape_escape_sequence_cannot_share_its_closing_character() -> None:
    assert er7.unescape("\\Zab\\F\\", D) == "\\Zab\\F\\"


def test_value_unescapes_only_after_splitting() -> None:
    obx = _seg("OBX|1|ST|||10\\S\\3/uL^x\\T\\y&z~second")
    assert er7.value(obx, 5, delims=D) == "10^3/uL"
    assert er7.value(obx, 5, 1, 2, delims=D) == "x&y"
    assert er7.value(obx, 5, 1, 2, 2, delims=D) == "z"
    assert er7.value(obx, 5, 2, delims=D) == "second"


def test_unescape_of_a_long_run_of_escape_characters_is_linear() -> None:
    text = "\\" * 200_001
    assert er7.unescape(text, D) == "\\" * 200_001


# ---------------------------------------------------------------- terminators


@pytest.mark.parametrize("end", ["\r", "\r\n", "\n"])
def test_parse_message_accepts_each_segment_terminator(end: str) -> None:
    msg = _msg("PID|1", "OBX|1|NM|718-7||13.5", end=end)
    assert [s.name for s in msg.segments] == ["MSH", "PID", "OBX"]
    assert msg.segments[2].field(5) == "13.5"


def test_parse_message_keeps_a_lone_line_feed_as_text_in_a_cr_message() -> None:
    msg = _msg("NTE|1||first line\nsecond line", "OBX|1|TX|||a\nb")
    assert [s.name for s in msg.segments] == ["MSH", "NTE", "OBX"]
    assert msg.segments[1].field(3) == "first line\nsecond line"


def test_parse_message_treats_line_feeds_after_a_cr_as_part_of_the_terminator() -> None:
    msg = er7.parse_message(f"{MSH}\r\n\nPID|1\r\n")
    assert [s.name for s in msg.segments] == ["MSH", "PID"]


@pytest.mark.parametrize("end", ["\r", "\n"])
def test_parse_message_ignores_blank_lines(end: str) -> None:
    msg = er7.parse_message(f"{MSH}{end}{end}PID|1{end}   {end}{end}OBX|1{end}{end}")
    assert [(s.name, s.index) for s in msg.segments] == [("MSH", 1), ("PID", 2), ("OBX", 3)]


def test_parse_message_joins_a_continuation_line_in_an_lf_message_with_a_warning() -> None:
    msg = er7.parse_message(f"{MSH}\nOBX|1|TX|||line one\nline two|x\nNTE|1")
    obx = msg.segments[1]
    assert [s.name for s in msg.segments] == ["MSH", "OBX", "NTE"]
    assert obx.field(5) == "line one\nline two"
    assert obx.field(6) == "x"
    assert len(msg.warnings) == 1
    assert "segment 2 (OBX)" in msg.warnings[0]


def test_parse_message_joins_a_continuation_of_msh_keeping_its_fields() -> None:
    msg = er7.parse_message("MSH|^~\\&|LAB|FAC\nmore|x\nPID|1")
    msh = msg.segments[0]
    assert msh.fields == ("MSH", "|", "^~\\&", "LAB", "FAC\nmore", "x")


@pytest.mark.parametrize("line", ["pid|1", "P1|x", "PIDX|1", "1PD|x", " PID|1", "PI D|1", "5.1|x"])
def test_parse_message_rejects_a_line_without_segment_id_in_a_cr_message(line: str) -> None:
    with pytest.raises(ParseError) as err:
        _msg("PID|1", line)
    assert (err.value.segment_index, err.value.code) == (3, 100)


def test_parse_message_rejects_a_segment_id_with_a_line_feed_inside() -> None:
    with pytest.raises(ParseError) as err:
        _msg("PID|1", "ABC\nDEF|x")
    assert (err.value.segment_index, err.value.code) == (3, 100)


def test_parse_message_rejects_a_second_msh() -> None:
    with pytest.raises(ParseError) as err:
        _msg("PID|1", MSH, "PID|2")
    assert (err.value.segment, err.value.segment_index, err.value.code) == ("MSH", 3, 100)


def test_parse_message_rejects_an_msh_after_a_line_feed_in_a_cr_message() -> None:
    with pytest.raises(ParseError) as err:
        _msg("PID|1\n" + MSH)
    assert err.value.code == 100


# ------------------------------------------------------------------ structure


def test_field_tree_splits_repetitions_components_and_subcomponents() -> None:
    pid = _seg("PID|1||A1^^^HOSP&1.2.3&ISO^MR~B2^^^LAB")
    assert er7.field_tree(pid, 3, D) == [
        [["A1"], [""], [""], ["HOSP", "1.2.3", "ISO"], ["MR"]],
        [["B2"], [""], [""], ["LAB"]],
    ]


def test_raw_field_tree_keeps_escapes() -> None:
    obx = _seg("OBX|1|ST|||10\\S\\3/uL")
    assert er7.raw_field_tree(obx, 5, D) == [[["10\\S\\3/uL"]]]
    assert er7.field_tree(obx, 5, D) == [[["10^3/uL"]]]


def test_parse_message_does_not_care_about_segment_order_or_kind() -> None:
    msg = _msg(
        "OBX|1|NM|6690-2||7.2",
        "ZXY|custom",
        "NTE|1||note",
        "PID|1",
        "OBR|1",
        "OBX|2|NM|777-3||250",
        "ORC|RE",
        "PID|2",
        "OBR|2",
        "Z01|a^b",
    )
    names = [s.name for s in msg.segments]
    assert names == ["MSH", "OBX", "ZXY", "NTE", "PID", "OBR", "OBX", "ORC", "PID", "OBR", "Z01"]
    assert [s.index for s in msg.segments] == list(range(1, 12))


def test_message_first_finds_the_first_segment_of_a_kind() -> None:
    msg = _msg("PID|1", "OBX|1", "OBX|2")
    first = msg.first("OBX")
    assert first is not None
    assert first.field(1) == "1"
    assert msg.first("SPM") is None


def test_repetitions_of_an_empty_field_are_none() -> None:
    pid = _seg("PID|1||~x|")
    assert er7.repetitions(pid, 2, D) == []
    assert er7.repetitions(pid, 3, D) == ["", "x"]
    assert er7.repetitions(pid, 30, D) == []


def test_components_keep_subcomponents_joined_and_decoded() -> None:
    assert er7.components("a&b\\T\\c^d\\S\\e^", D) == ["a&b&c", "d^e", ""]


@pytest.mark.parametrize(
    ("field", "rep", "comp", "sub"),
    [
        (3, 3, 1, 1),
        (3, 1, 9, 1),
        (3, 1, 1, 4),
        (0, 1, 1, 1),
        (-2, 1, 1, 1),
        (3, 0, 1, 1),
        (3, 1, 0, 1),
        (40, 1, 1, 1),
        (2, 2, 1, 1),
    ],
)
def test_value_outside_the_data_is_empty(field: int, rep: int, comp: int, sub: int) -> None:
    pid = _seg("PID|1|x|A^B&C~D")
    assert er7.value(pid, field, rep, comp, sub, delims=D) == ""


def test_value_of_msh_beyond_the_first_leaf_of_msh2_is_empty() -> None:
    msh = _msg().segments[0]
    assert er7.value(msh, 2, 1, 2, delims=D) == ""
    assert er7.value(msh, 9, 1, 2, delims=D) == "R01"


# ---------------------------------------------------------------- split files


def test_split_messages_strips_a_utf8_bom() -> None:
    data = b"\xef\xbb\xbf" + MSH.encode() + b"\rPID|1\r"
    [raw] = er7.split_messages(data)
    assert raw.data == MSH.encode() + b"\rPID|1\r"
    assert raw.offset == 3


def test_split_messages_strips_mllp_framing_and_nul_padding() -> None:
    one = MSH.encode() + b"\rPID|1\r"
    data = b"\x00\x0b" + one + b"\x1c\r\x00\x00\x0b" + one + b"\x1c\r\x00"
    pieces = er7.split_messages(data)
    assert [p.data for p in pieces] == [one, one]
    assert [p.number for p in pieces] == [1, 2]


def test_split_messages_finds_every_message_with_its_offset() -> None:
    one, two = MSH.encode() + b"\nPID|1\n", MSH.encode() + b"\nPID|2\n"
    pieces = er7.split_messages(one + b"\n" + two)
    assert [(p.data, p.offset, p.number) for p in pieces] == [
        (one, 0, 1),
        (two, len(one) + 1, 2),
    ]


@pytest.mark.parametrize("end", [b"\r", b"\n", b"\r\n"])
def test_split_messages_skips_the_batch_envelope(end: bytes) -> None:
    one = end.join([MSH.encode(), b"PID|1", b"OBX|1"]) + end
    data = (
        end.join([b"FHS|^~\\&|LAB", b"BHS|^~\\&|LAB"])
        + end
        + one
        + one
        + end.join([b"BTS|2", b"FTS|1"])
        + end
    )
    pieces = er7.split_messages(data)
    assert [p.data for p in pieces] == [one, one]


def test_split_messages_returns_stray_text_as_its_own_message() -> None:
    one = MSH.encode() + b"\rPID|1\r"
    pieces = er7.split_messages(b"hello world\r" + one)
    assert [p.data for p in pieces] == [b"hello world\r", one]
    with pytest.raises(ParseError, match="no MSH"):
        er7.parse(pieces[0].data)


def test_split_messages_keeps_stray_bytes_with_framing_inside_as_one_piece() -> None:
    data = b"\x89junk\x1c\x0b\rmore\x00junk\r\x0bstill"
    one = MSH.encode() + b"\rPID|1\r"
    pieces = er7.split_messages(data + b"\x1c\r\x0b" + one)
    assert [(p.data, p.offset) for p in pieces] == [(data, 0), (one, len(data) + 3)]


def test_split_messages_splits_only_at_the_start_of_a_segment() -> None:
    data = MSH.encode() + b"\rNTE|1||see MSH|^~\\&|x\r"
    assert len(er7.split_messages(data)) == 1


def test_split_messages_splits_a_file_mixing_terminator_styles() -> None:
    cr, lf = MSH.encode() + b"\rPID|1\r", MSH.encode() + b"\nPID|2\n"
    assert [p.data for p in er7.split_messages(cr + lf)] == [cr, lf]


@pytest.mark.parametrize("data", [b"", b"\r\n \t\r", b"\x0b\x1c\r", b"\x00\x00"])
def test_split_messages_of_whitespace_and_framing_is_empty(data: bytes) -> None:
    assert er7.split_messages(data) == []


def test_split_messages_keeps_text_after_a_message_in_that_message() -> None:
    data = MSH.encode() + b"\rPID|1\rtrailing junk\r"
    [raw] = er7.split_messages(data)
    assert raw.data == data
    with pytest.raises(ParseError):
        er7.parse(raw.data)


# ---------------------------------------------------------------- bytes input


@pytest.mark.parametrize("data", [b"", b"\r\n", b"\x0b\x1c\r", b"\xef\xbb\xbf"])
def test_parse_rejects_empty_input(data: bytes) -> None:
    with pytest.raises(ParseError, match="empty") as err:
        er7.parse(data)
    assert err.value.code == 100


def test_parse_rejects_input_without_msh() -> None:
    with pytest.raises(ParseError, match="PID, not MSH") as err:
        er7.parse(b"PID|1||MRN\rOBX|1\r")
    assert err.value.code == 100


def test_parse_rejects_garbage_bytes() -> None:
    with pytest.raises(ParseError, match="no MSH") as err:
        er7.parse(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    assert err.value.code == 100


def test_parse_rejects_a_nul_byte_inside_a_message() -> None:
    data = MSH.encode() + b"\rPID|1|\x00|x\r"
    with pytest.raises(ParseError) as err:
        er7.parse(data)
    assert (err.value.code, err.value.offset) == (102, data.index(b"\x00"))
    assert (err.value.segment, err.value.segment_index) == ("PID", 2)


def test_parse_message_rejects_a_framing_character_inside_a_message() -> None:
    with pytest.raises(ParseError) as err:
        _msg("PID|1|\x0b|x")
    assert (err.value.segment_index, err.value.code) == (2, 102)


def test_parse_rejects_an_oversized_message_before_decoding_it() -> None:
    data = b"\xff" * 64  # not even HL7: the size check comes first
    with pytest.raises(ParseError) as err:
        er7.parse(data, max_bytes=63)
    assert err.value.code == 207
    assert "64 bytes" in err.value.reason
    assert "63 bytes" in err.value.reason


def test_parse_strips_bom_framing_and_surrounding_whitespace() -> None:
    msg = er7.parse(b"\x0b\xef\xbb\xbf" + MSH.encode() + b"\rPID|1\r\x1c\r")
    assert [s.name for s in msg.segments] == ["MSH", "PID"]


def test_parse_reads_utf8_when_msh18_is_empty() -> None:
    msg = er7.parse(MSH.encode() + "\rPID|1||x||Frémont^Zoé\r".encode())
    pid = msg.segments[1]
    assert msg.charset == "utf-8"
    assert er7.value(pid, 5, 1, 2, delims=msg.delimiters) == "Zoé"


def test_parse_rejects_bytes_that_are_not_utf8_when_msh18_is_empty() -> None:
    data = MSH.encode() + "\rPID|1||x||Frémont\r".encode("latin-1")
    with pytest.raises(ParseError) as err:
        er7.parse(data)
    assert (err.value.code, err.value.offset) == (102, data.index(b"\xe9"))
    assert "utf-8" in err.value.reason
    assert "PID" in err.value.reason


def _msh18(value: str, facility: str = "NORTHLAB") -> bytes:
    return (
        f"MSH|^~\\&|LAB|{facility}|CLINIC|PRP|20250101||ORU^R01|C1|P|2.5.1||||||{value}"
        "\rPID|1||x||Frémont\r"
    ).encode("latin-1")


@pytest.mark.parametrize("label", ["8859/1", "ISO IR100", "iso-8859-1", "8859/1~UNICODE UTF-8"])
def test_parse_decodes_with_the_first_repetition_of_msh18(label: str) -> None:
    msg = er7.parse(_msh18(label))
    assert msg.charset == "iso8859-1"
    assert msg.delimiters.charset == "iso8859-1"
    assert er7.value(msg.segments[1], 5, delims=msg.delimiters) == "Frémont"


def test_parse_rejects_an_unknown_msh18() -> None:
    with pytest.raises(ParseError) as err:
        er7.parse(_msh18("KLINGON-8"))
    assert (err.value.segment, err.value.field, err.value.code) == ("MSH", 18, 103)
    assert "KLINGON-8" in err.value.reason


def test_parse_rejects_a_known_but_unsupported_msh18() -> None:
    with pytest.raises(ParseError, match="unsupported") as err:
        er7.parse(_msh18("UNICODE UTF-16"))
    assert err.value.field == 18


def test_parse_rejects_bytes_that_do_not_fit_the_declared_msh18() -> None:
    with pytest.raises(ParseError, match="ascii") as err:
        er7.parse(_msh18("ASCII"))
    assert err.value.code == 102


@pytest.mark.parametrize("key", ["SOUTHLAB", "2.16.840.1.113883.3.9999.3"])
def test_parse_applies_the_charset_override_of_the_sending_facility(key: str) -> None:
    data = _msh18("", facility="SOUTHLAB^2.16.840.1.113883.3.9999.3^ISO")
    msg = er7.parse(data, charset_overrides={key: "cp1252"})
    assert msg.charset == "cp1252"
    assert er7.value(msg.segments[1], 5, delims=msg.delimiters) == "Frémont"


def test_parse_prefers_msh18_to_a_charset_override() -> None:
    msg = er7.parse(_msh18("8859/15"), charset_overrides={"NORTHLAB": "cp1252"})
    assert msg.charset == "iso8859-15"


def test_parse_ignores_the_override_of_another_facility() -> None:
    with pytest.raises(ParseError) as err:
        er7.parse(_msh18(""), charset_overrides={"SOUTHLAB": "latin-1"})
    assert err.value.code == 102


def test_parse_rejects_an_override_naming_no_usable_codec() -> None:
    with pytest.raises(ParseError) as err:
        er7.parse(_msh18(""), charset_overrides={"NORTHLAB": "rot13"})
    assert err.value.code == 207


def test_parse_decodes_hex_escapes_in_the_message_charset() -> None:
    data = _msh18("8859/1").replace(b"Fr\xe9mont", b"Fr\\XE9\\mont")
    msg = er7.parse(data)
    assert er7.value(msg.segments[1], 5, delims=msg.delimiters) == "Frémont"


def test_decode_text_reports_offsets_within_the_file() -> None:
    good = MSH.encode() + b"\rPID|1\r"
    bad = MSH.encode() + b"\rPID|1||\xff\r"
    raw = er7.split_messages(good + bad)[1]
    with pytest.raises(ParseError) as err:
        er7.decode_text(raw)
    assert err.value.offset == len(good) + bad.index(b"\xff")


def test_decode_text_uses_a_given_default_charset() -> None:
    text, codec = er7.decode_text(_msh18(""), default_charset="latin-1")
    assert codec == "iso8859-1"
    assert "Frémont" in text


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=200).map(lambda t: (MSH + t).encode()))
def test_parse_raises_only_parse_error_on_arbitrary_bytes(data: bytes) -> None:
    for raw in er7.split_messages(data) or [er7.RawMessage(data, 0, 1)]:
        try:
            msg = er7.parse(raw.data)
        except ParseError:
            continue
        for seg in msg.segments:
            for n in range(len(seg.fields)):
                er7.field_tree(seg, n, msg.delimiters)


def _split_by_lines_reference(data: bytes) -> list[tuple[int, int]]:
    """The line-by-line reading of split_messages' docstring, written plainly: the
    oracle the splitter (which iterates lines faster) is checked against."""
    framing = [0]
    for run in re.finditer(rb"\x00*[\x0b\x1c][\x00\x0b\x1c]*|\A\x00+|\x00+\Z", data):
        framing += (run.start(), run.end())
    framing.append(len(data))
    spans: list[tuple[int, int]] = []
    for i in range(0, len(framing), 2):
        piece_start, piece_end, pos, end = -1, -1, framing[i], framing[i + 1]
        while pos < end:
            brk = re.compile(rb"\r\n?|\n").search(data, pos, end)
            line_end, nxt = (brk.start(), brk.end()) if brk else (end, end)
            head = pos
            while head < line_end and data[head] in b" \t\x00":
                head += 1
            if data.startswith(b"\xef\xbb\xbf", head, line_end):
                head += 3
            line = data[head:line_end]
            if not line.strip(b" \t\x00\x0b\x0c"):
                pos = nxt
                continue
            tag = line[:3]
            batch = tag in (b"FHS", b"BHS", b"BTS", b"FTS")
            starts = (tag == b"MSH" or batch) and not line[3:4].isalnum()
            if starts and piece_start >= 0:
                spans.append((piece_start, piece_end))
                piece_start = -1
            if starts and batch:
                pos = nxt
                continue
            if piece_start < 0:
                piece_start = head
            piece_end, pos = nxt, nxt
        if piece_start >= 0:
            spans.append((piece_start, piece_end))
    merged: list[tuple[int, int]] = []  # stray pieces separated by framing only: one piece
    for start, end in spans:
        if (
            merged
            and not data.startswith(b"MSH", start)
            and not data.startswith(b"MSH", merged[-1][0])
            and not data[merged[-1][1] : start].strip(b" \t\r\n\x00\x0b\x0c\x1c")
        ):
            merged[-1] = (merged[-1][0], end)
            continue
        merged.append((start, end))
    return merged


_LINES = st.lists(
    st.tuples(
        st.sampled_from(
            [b"", b" ", b"\t", b"\x00", b"\xef\xbb\xbf", b"  \xef\xbb\xbf", b"\x0c", b"\x0b"]
        ),
        st.sampled_from(
            [
                b"MSH|^~\\&|A",
                b"MSH",
                b"MSHX|",
                b"FHS|^~\\&",
                b"BHS|",
                b"BTS|1",
                b"FTS|1",
                b"PID|1",
                b"OBX|1|NM|x",
                b"",
                b" ",
                b"\x1c",
                b"\x00",
                b"text",
                b"MS",
                b"\xef\xbb",
            ]
        ),
        st.sampled_from([b"\r", b"\n", b"\r\n", b"\r\r\n", b"\n\r", b""]),
    ),
    max_size=12,
)


@settings(max_examples=400, deadline=None)
@given(_LINES)
def test_split_messages_agrees_with_the_line_by_line_reading(
    lines: list[tuple[bytes, ...]],
) -> None:
    data = b"".join(lead + body + end for lead, body, end in lines)
    got = [(p.offset, p.offset + len(p.data)) for p in er7.split_messages(data)]
    assert got == _split_by_lines_reference(data)


def test_header_of_a_repeated_msh_takes_each_message_own_time_and_control_id() -> None:
    """MSH is decoded once per sender's text: MSH-7 and MSH-10 still come from each
    message, and any other difference gives its own reading."""
    from prpgate.core.oru import read_header

    first = read_header(_msg())
    later = MSH.replace("20250101120000", "20250102").replace("CTRL1", "CTRL9")
    second = read_header(er7.parse_message(later + "\r"))
    other = read_header(er7.parse_message(MSH.replace("NORTHLAB", "SOUTHLAB") + "\r"))
    assert (first.timestamp, first.control_id) == ("20250101120000", "CTRL1")
    assert (second.timestamp, second.control_id) == ("20250102", "CTRL9")
    assert (first.sending_facility, other.sending_facility) == ("NORTHLAB", "SOUTHLAB")
    assert (other.control_id, other.version) == ("CTRL1", "2.5.1")
