"""The HL7 v2 half of the bad-input catalogue: named inputs sent to ``prpgate serve`` over
MLLP, each with the answer it must get.

Every expectation was written from what the documentation promises, not from a run:
README.md ("Serving MLLP": acknowledgments, the wire; "replay": dispositions),
fixtures/README.md (the ``bad/`` manifest), DESIGN.md ("ACK"), and HL7 v2 itself where
those are silent (table 0357 error codes; ERR-2 is ``segment^occurrence^field``, empty
when the fault is not inside a segment). ``why`` says which.

A case is sent one of three ways (``how``):

* ``frame``: the bytes in one MLLP block ``<VT> … <FS><CR>``;
* ``wire``: the bytes written as they are (framing faults), on a connection that then
  carries a good message;
* ``close``: the bytes written, then the connection closed by the client.

``acks`` are the MSA-1 codes the input must get, in order (``()``: no answer, as MLLP
tells a receiver to do with framing faults). ``err_code``/``err_location`` are the first
ERR's HL7 error code and location of the last acknowledgment (``""``: no ERR-2).
``msa2`` is MSA-2 (``None``: not checked). ``status`` is the disposition the store must
record, and ``stored`` the raw bytes it must hold for the input (default: the bytes
between the framing).

The server runs in original mode unless MSH-15/MSH-16 are valued, with
``max_message_bytes = LIMIT``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

__all__ = ["CASES", "LIMIT", "Hl7Case", "good_message"]

LIMIT = 2 * 1024 * 1024  # PRPGATE_MAX_MESSAGE_BYTES for the catalogue's server
KEEP = 64 * 1024  # what is kept of an oversize frame (README: "its first 64 KiB")

VT, FS, CR = b"\x0b", b"\x1c", b"\r"

# The synthetic patient of the catalogue (not a real person; not in any fixture).
MRN = "ZQ78001"
PID_3 = f"{MRN}^^^NORTHHOSP&2.16.840.1.113883.3.9999.2&ISO^MR"
WHEN = "20250320070000+0100"


def msh(
    control: str,
    *,
    fs: str = "|",
    enc: str = "^~\\&",
    msg_type: str = "ORU^R01^ORU_R01",
    version: str = "2.5.1",
    accept: str = "",
    application: str = "",
    charset: str = "",
    sender: str = "BADLAB",
    facility: str = "BADFAC",
) -> str:
    """An MSH segment (MSH-1 … MSH-18) with the given delimiters and values."""
    fields = [
        enc,
        sender,
        facility,
        "PRPGATE",
        "CLINIC",
        "20250320080000+0100",
        "",
        msg_type,
        control,
        "P",
        version,
        "",
        "",
        accept,
        application,
        "",
        charset,
    ]
    while fields and fields[-1] == "":
        fields.pop()
    return "MSH" + fs + fs.join(fields)


def seg(name: str, values: dict[int, str], fs: str = "|") -> str:
    """A segment with field n = ``values[n]`` (the rest empty)."""
    top = max(values) if values else 0
    return fs.join([name, *(values.get(n, "") for n in range(1, top + 1))])


def pid(ident: str = PID_3, n: int = 1) -> str:
    return seg("PID", {1: str(n), 3: ident, 5: "Casebook^Ada", 7: "19700101", 8: "F"})


def orc(order: str = "78001") -> str:
    return seg("ORC", {1: "RE", 2: f"PL{order}^PRPGATE", 3: f"FL{order}^BADLAB"})


def obr(order: str = "78001", n: int = 1) -> str:
    return seg(
        "OBR",
        {
            1: str(n),
            2: f"PL{order}^PRPGATE",
            3: f"FL{order}^BADLAB",
            4: "58410-2^CBC panel^LN",
            7: WHEN,
            22: "20250320075000+0100",
            25: "F",
        },
    )


def obx(
    value: str = "7.2",
    *,
    n: int = 1,
    vtype: str = "NM",
    code: str = "6690-2^Leukocytes^LN",
    unit: str = "10*3/uL^10*3/uL^UCUM",
    flags: str = "N",
    when: str = WHEN,
) -> str:
    return seg(
        "OBX",
        {
            1: str(n),
            2: vtype,
            3: code,
            4: "1",
            5: value,
            6: unit,
            7: "4.0-11.0",
            8: flags,
            11: "F",
            14: when,
        },
    )


def text(*segments: str, end: str = "\r") -> bytes:
    return (end.join(segments) + end).encode()


def oru(control: str, *body: str, end: str = "\r", **header: str) -> bytes:
    """An ORU^R01 with the given MSH values and body (default: one normal WBC result)."""
    segments = body or (pid(), orc(), obr(), obx())
    return text(msh(control, **header), *segments, end=end)


def good_message(control: str) -> bytes:
    """The good message sent after every bad one: a normal CBC, answered AA."""
    return oru(control)


def framed(data: bytes) -> bytes:
    return VT + data + FS + CR


@dataclass(frozen=True)
class Hl7Case:
    """One bad input and the answer it must get (see the module docstring)."""

    name: str
    data: bytes
    acks: tuple[str, ...]
    status: str
    why: str
    how: str = "frame"  # frame, wire or close
    err_code: int | None = None
    err_location: str = ""
    msa2: str | None = None
    stored: bytes | None = None  # None: the bytes inside the frame (``data``)
    ack_prefix: bytes = b""  # what the (last) ACK must start with, when it matters


def _garbage() -> bytes:
    rnd = random.Random(97_531)
    return bytes(b for b in rnd.randbytes(400) if b not in (0x0B, 0x1C))[:300]


def _huge_nte(control: str, size: int) -> bytes:
    return oru(control, pid(), orc(), obr(), obx(), seg("NTE", {1: "1", 3: "x" * size}))


def _cases() -> list[Hl7Case]:
    c: list[Hl7Case] = []

    def add(
        name: str, data: bytes, acks: tuple[str, ...], status: str, why: str, **kw: Any
    ) -> None:
        c.append(Hl7Case(name, data, acks, status, why, **kw))

    # ------------------------------------------------------------------ framing
    add(
        "framing_stray_bytes_before_a_frame",
        b"THIS IS NOT MLLP\r",
        (),
        "rejected",
        "README, The wire: bytes before <VT> are a framing fault, recorded as rejected "
        "and not answered, as the MLLP specification says",
        how="wire",
    )
    add(
        "framing_http_request_on_the_mllp_port",
        b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        (),
        "rejected",
        "README, The wire: bytes outside a frame are recorded and not answered",
        how="wire",
    )
    unterminated = oru("framing_unterminated_frame")
    add(
        "framing_unterminated_frame",
        VT + unterminated,
        (),
        "rejected",
        "README, The wire: a frame cut short by the next <VT> is recorded, not answered",
        how="wire",
        stored=unterminated,
    )
    partial = oru("framing_peer_closes_mid_frame")[:120]
    add(
        "framing_peer_closes_mid_frame",
        VT + partial,
        (),
        "rejected",
        "README, The wire: a peer closing mid-frame is recorded, not answered",
        how="close",
        stored=partial,
    )
    fs_only = oru("framing_fs_without_cr")
    add(
        "framing_fs_without_cr",
        VT + fs_only + FS,
        ("AA",),
        "accepted",
        "core/mllp.py docstring and README: a frame ends at <FS>; the <CR> is optional",
        how="wire",
        msa2="framing_fs_without_cr",
        stored=fs_only,
    )
    padded = oru("framing_nul_and_newlines_between_frames")
    add(
        "framing_nul_and_newlines_between_frames",
        b"\x00\x00\r\n" + framed(padded) + b"\x00\n",
        ("AA",),
        "accepted",
        "README, The wire: NULs, CR or LF between frames are handled",
        how="wire",
        msa2="framing_nul_and_newlines_between_frames",
        stored=padded,
    )
    add(
        "framing_empty_frame",
        b"",
        ("AR",),
        "rejected",
        'README: a message without a usable MSH is still answered AR with MSA-2 ""; '
        "er7.decode_text: empty input is error 100",
        err_code=100,
        msa2='""',
    )
    add(
        "framing_whitespace_only_frame",
        b"\r\n \t\r",
        ("AR",),
        "rejected",
        "as the empty frame: nothing besides whitespace is no message (100)",
        err_code=100,
        msa2='""',
    )
    big = _huge_nte("framing_oversize_frame", LIMIT + 1000)
    add(
        "framing_oversize_frame",
        big,
        ("AR",),
        "rejected",
        "README, The wire: a frame over max_message_bytes is answered AR with an ERR "
        "(207), its first 64 KiB recorded, the connection stays usable",
        err_code=207,
        msa2="framing_oversize_frame",
        stored=big[:KEEP],
    )
    two = oru("framing_two_messages_in_one_frame") + oru("framing_second_in_the_frame")
    add(
        "framing_two_messages_in_one_frame",
        two,
        ("AR",),
        "rejected",
        "MLLP carries one message per block; er7.parse_message: a second MSH is a "
        "segment sequence error (100) at the second MSH",
        err_code=100,
        err_location="MSH^2",
        msa2="framing_two_messages_in_one_frame",
    )
    batch = (
        b"FHS|^~\\&|BADLAB\rBHS|^~\\&|BADLAB\r"
        + oru("framing_batch_in_one_frame")
        + b"BTS|1\rFTS|1\r"
    )
    add(
        "framing_batch_in_one_frame",
        batch,
        ("AR",),
        "rejected",
        "batches are for files (replay); over MLLP the frame must start with MSH: "
        'no MSH first is error 100 (fixtures/README bad/no_msh.hl7), MSA-2 ""',
        err_code=100,
        msa2='""',
    )

    # ---------------------------------------------------------- MSH and encoding
    add(
        "msh_field_separator_is_a_letter",
        oru("msh_field_separator_is_a_letter").replace(b"MSH|", b"MSHX", 1),
        ("AR",),
        "rejected",
        "README: an unusable MSH is AR; er7: MSH-1 not a usable delimiter, 102 at MSH-1",
        err_code=102,
        err_location="MSH^1^1",
        msa2='""',
    )
    add(
        "msh_field_separator_is_a_space",
        b"MSH ^~\\& BADLAB BADFAC\rPID 1\r",
        ("AR",),
        "rejected",
        "as above: a space is not a usable field separator (102 at MSH-1)",
        err_code=102,
        err_location="MSH^1^1",
        msa2='""',
    )
    add(
        "msh_id_only",
        b"MSH\r",
        ("AR",),
        "rejected",
        "MSH with no field separator: unusable MSH, 102 at MSH-1",
        err_code=102,
        err_location="MSH^1^1",
        msa2='""',
    )
    add(
        "msh_encoding_characters_missing",
        oru("msh_encoding_characters_missing", enc=""),
        ("AR",),
        "rejected",
        "README: unusable MSH is AR; er7: MSH-2 needs 3 to 5 characters (102 at MSH-2)",
        err_code=102,
        err_location="MSH^1^2",
    )
    add(
        "msh_two_encoding_characters",
        oru("msh_two_encoding_characters", enc="^~"),
        ("AR",),
        "rejected",
        "as above: two encoding characters are too few (102 at MSH-2)",
        err_code=102,
        err_location="MSH^1^2",
    )
    add(
        "msh_repeated_encoding_character",
        oru("msh_repeated_encoding_character", enc="^^\\&"),
        ("AR",),
        "rejected",
        "a delimiter used twice cannot separate anything (102 at MSH-2)",
        err_code=102,
        err_location="MSH^1^2",
    )
    add(
        "msh_six_encoding_characters",
        oru("msh_six_encoding_characters", enc="^~\\&#!"),
        ("AR",),
        "rejected",
        "at most five encoding characters (v2.7 truncation is the fifth): 102 at MSH-2",
        err_code=102,
        err_location="MSH^1^2",
    )
    add(
        "msh_own_delimiters",
        ("\r".join(_own_delimiter_segments()) + "\r").encode(),
        ("AA",),
        "accepted",
        "DESIGN: honour the message's own encoding characters; README: the ACK mirrors "
        "the sender's encoding characters",
        msa2="msh_own_delimiters",
        ack_prefix=b"MSH#$%@*#",
    )
    add(
        "msh_without_escape_character",
        oru(
            "msh_without_escape_character",
            pid(),
            orc(),
            obr(),
            obx(),
            seg("NTE", {1: "1", 3: "a backslash \\ is text here"}),
            enc="^~&",
        ),
        ("AA",),
        "accepted",
        "er7: MSH-2 may omit the escape character; backslashes are then text",
        msa2="msh_without_escape_character",
    )
    add(
        "msh_message_type_empty",
        oru("msh_message_type_empty", msg_type=""),
        ("AR",),
        "rejected",
        "README: wrong type is AR; MSH-9 is required (101 at MSH-9)",
        err_code=101,
        err_location="MSH^1^9",
        msa2="msh_message_type_empty",
    )
    add(
        "msh_message_type_adt",
        oru("msh_message_type_adt", msg_type="ADT^A01^ADT_A01"),
        ("AR",),
        "rejected",
        "fixtures/README bad/adt_a01.hl7: AR, unsupported message type (200)",
        err_code=200,
        err_location="MSH^1^9",
        msa2="msh_message_type_adt",
    )
    add(
        "msh_trigger_event_r30",
        oru("msh_trigger_event_r30", msg_type="ORU^R30^ORU_R30"),
        ("AR",),
        "rejected",
        "README: wrong type is AR; HL7 table 0357: 201 unsupported event code",
        err_code=201,
        err_location="MSH^1^9",
        msa2="msh_trigger_event_r30",
    )
    add(
        "msh_control_id_empty",
        oru(""),
        ("AR",),
        "rejected",
        "README: unusable MSH is AR; MSH-10 is required (101), MSA-2 the explicit null",
        err_code=101,
        err_location="MSH^1^10",
        msa2='""',
    )
    add(
        "msh_version_empty",
        oru("msh_version_empty", version=""),
        ("AR",),
        "rejected",
        "README: unusable MSH is AR; MSH-12 is required (101)",
        err_code=101,
        err_location="MSH^1^12",
        msa2="msh_version_empty",
    )
    add(
        "msh_version_unsupported",
        oru("msh_version_unsupported", version="9.9"),
        ("AR",),
        "rejected",
        "fixtures/README bad/bad_version.hl7: AR, 203 unsupported version id; README: "
        "answered in 2.5.1",
        err_code=203,
        err_location="MSH^1^12",
        msa2="msh_version_unsupported",
    )
    add(
        "msh_charset_unknown",
        oru("msh_charset_unknown", charset="KLINGON-8"),
        ("AR",),
        "rejected",
        "er7.decode_text: an unknown MSH-18 is 103 (table value not found) at MSH-18",
        err_code=103,
        err_location="MSH^1^18",
        msa2="msh_charset_unknown",
    )
    add(
        "msh_control_id_of_500_characters",
        oru("C" * 500),
        ("AA",),
        "accepted",
        "nothing in MSH-10's length makes a message unprocessable; it is read and ACKed",
    )
    bom = b"\xef\xbb\xbf \r\n" + oru("msh_after_a_bom_and_blank_lines")
    add(
        "msh_after_a_bom_and_blank_lines",
        bom,
        ("AA",),
        "accepted",
        "README (replay): a UTF-8 BOM is read; fixtures/README: v25_cbc.hl7 starts with a BOM",
        msa2="msh_after_a_bom_and_blank_lines",
    )
    add(
        "first_segment_not_msh",
        text(pid(), orc(), obr(), obx()),
        ("AR",),
        "rejected",
        "fixtures/README bad/no_msh.hl7: AR, no MSH (100), nothing to echo in MSA-2",
        err_code=100,
        msa2='""',
    )
    add(
        "garbage_bytes",
        _garbage(),
        ("AR",),
        "rejected",
        "fixtures/README bad/garbage.bin: not HL7 (no MSH, 100), AR",
        err_code=100,
        msa2='""',
    )
    add(
        "fhir_json_in_an_mllp_frame",
        b'{"resourceType": "Observation", "status": "final", "code": {"coding": [{"system":'
        b' "http://loinc.org", "code": "6690-2"}]}, "subject": {"identifier": {"value": '
        b'"ZQ78001"}}, "valueQuantity": {"value": 7.2, "code": "10*3/uL"}}',
        ("AR",),
        "rejected",
        "DESIGN: MLLP carries HL7 v2 ORU^R01; README: AR for input that is not HL7 "
        "(no MSH, 100); FHIR has its own listener",
        err_code=100,
        msa2='""',
    )

    # ------------------------------------------------------ segments and lines
    add(
        "segment_id_lower_case",
        oru("segment_id_lower_case", pid().replace("PID", "pid"), orc(), obr(), obx()),
        ("AR",),
        "rejected",
        "er7.parse_message: in a CR-terminated message a segment must start with a "
        "segment id (100); no ERR-2, as the segment has no id to name",
        err_code=100,
        msa2="segment_id_lower_case",
    )
    add(
        "segment_id_two_letters",
        oru("segment_id_two_letters", pid(), "PI|1", orc(), obr(), obx()),
        ("AR",),
        "rejected",
        "as above (100)",
        err_code=100,
        msa2="segment_id_two_letters",
    )
    mixed = msh("msh_after_a_line_feed") + "\r" + pid() + "\n" + msh("msh_hidden") + "\r"
    add(
        "msh_after_a_line_feed",
        (mixed + obr() + "\r" + obx() + "\r").encode(),
        ("AR",),
        "rejected",
        "er7.parse_message: an MSH after a line feed in a CR-terminated message is mixed "
        "terminators (100)",
        err_code=100,
        err_location="MSH^1",
        msa2="msh_after_a_line_feed",
    )
    add(
        "segments_end_with_line_feeds",
        oru("segments_end_with_line_feeds", end="\n"),
        ("AA",),
        "accepted",
        "DESIGN: accept \\r, \\n or \\r\\n segment ends",
        msa2="segments_end_with_line_feeds",
    )
    add(
        "segments_end_with_crlf",
        oru("segments_end_with_crlf", end="\r\n"),
        ("AA",),
        "accepted",
        "DESIGN: accept \\r, \\n or \\r\\n segment ends",
        msa2="segments_end_with_crlf",
    )
    add(
        "blank_lines_between_segments",
        text(msh("blank_lines_between_segments"), "", pid(), "", orc(), obr(), "", obx()),
        ("AA",),
        "accepted",
        "er7: blank lines are dropped",
        msa2="blank_lines_between_segments",
    )
    add(
        "continuation_line_in_an_lf_message",
        oru(
            "continuation_line_in_an_lf_message",
            pid(),
            orc(),
            obr(),
            obx(),
            "NTE|1||first line",
            "second line of the note",
            end="\n",
        ),
        ("AA",),
        "accepted",
        "er7: in an LF-only message a line without a segment id continues the segment",
        msa2="continuation_line_in_an_lf_message",
    )
    add(
        "z_segments_and_unknown_segments",
        oru(
            "z_segments_and_unknown_segments",
            "ZXY|1|whatever",
            pid(),
            "PV1|1|O",
            orc(),
            obr(),
            "ZZZ|a^b~c",
            obx(),
            "SPM|1",
        ),
        ("AA",),
        "accepted",
        "DESIGN: Z-segments are accepted; oru: segments the adapter does not use are skipped",
        msa2="z_segments_and_unknown_segments",
    )

    # ------------------------------------------------------------------ escapes
    note = "NTE|1||{}"
    add(
        "escape_unterminated",
        oru("escape_unterminated", pid(), orc(), obr(), obx(), note.format("open \\F")),
        ("AA",),
        "accepted",
        "er7: an escape character with no closing partner is literal text",
        msa2="escape_unterminated",
    )
    add(
        "escape_bad_hex",
        oru("escape_bad_hex", pid(), orc(), obr(), obx(), note.format("\\XZZ9\\ and \\X1\\")),
        ("AA",),
        "accepted",
        "er7: bad hex is kept as literal text",
        msa2="escape_bad_hex",
    )
    add(
        "escape_hex_not_in_the_charset",
        oru("escape_hex_not_in_the_charset", pid(), orc(), obr(), obx(), note.format("\\XFF\\")),
        ("AA",),
        "accepted",
        "er7: \\Xhh\\ that is not text in the message charset is kept as sent",
        msa2="escape_hex_not_in_the_charset",
    )
    add(
        "escape_unknown_codes",
        oru(
            "escape_unknown_codes",
            pid(),
            orc(),
            obr(),
            obx(),
            note.format("\\Q\\ \\C2842\\ \\M2442\\ \\Zabc\\ \\.sp 999\\ \\.in -5\\"),
        ),
        ("AA",),
        "accepted",
        "er7: unknown and charset escapes are literal text; formatting commands are read",
        msa2="escape_unknown_codes",
    )
    add(
        "escape_inside_a_numeric_value",
        oru("escape_inside_a_numeric_value", pid(), orc(), obr(), obx("7\\S\\2")),
        ("AE",),
        "error",
        "er7 unescapes after splitting: 7\\S\\2 is the text 7^2, not a number: README: AE "
        "for an NM value that is not a number, 102 at OBX-5",
        err_code=102,
        err_location="OBX^1^5",
        msa2="escape_inside_a_numeric_value",
    )
    add(
        "escape_characters_200k_in_a_row",
        oru(
            "escape_characters_200k_in_a_row",
            pid(),
            orc(),
            obr(),
            obx(),
            note.format("\\" * 200_000),
        ),
        ("AA",),
        "accepted",
        "er7: a run of escape characters is decoded in linear time; each pair is text",
        msa2="escape_characters_200k_in_a_row",
    )
    add(
        "escaped_delimiters_in_the_code_text",
        oru(
            "escaped_delimiters_in_the_code_text",
            pid(),
            orc(),
            obr(),
            obx(code="6690-2^WBC \\T\\ \\F\\ \\S\\ \\R\\ \\E\\^LN"),
        ),
        ("AA",),
        "accepted",
        "fixtures/README escapes.hl7: the code still maps after its text is unescaped",
        msa2="escaped_delimiters_in_the_code_text",
    )

    # ------------------------------------------------------------------- sizes
    add(
        "huge_note_just_under_the_limit",
        _huge_nte("huge_note_just_under_the_limit", LIMIT - 4096),
        ("AA",),
        "accepted",
        "README: only messages over max_message_bytes are rejected",
        msa2="huge_note_just_under_the_limit",
    )
    many = [obx(n=i, code="789-8^Erythrocytes^LN", unit="10*6/uL") for i in range(1, 3001)]
    add(
        "huge_3000_results",
        oru("huge_3000_results", pid(), orc(), obr(), obx(), *many),
        ("AA",),
        "accepted",
        "DESIGN: multiple OBX; 789-8 is known and not used (mappings/analytes.yaml)",
        msa2="huge_3000_results",
    )
    add(
        "huge_100k_fields_in_a_segment",
        oru("huge_100k_fields_in_a_segment", pid(), orc(), obr(), obx(), "ZZZ" + "|" * 100_000),
        ("AA",),
        "accepted",
        "a Z-segment is skipped whatever its size",
        msa2="huge_100k_fields_in_a_segment",
    )
    ntes = [f"NTE|{i}||line {i}" for i in range(1, 50_001)]
    add(
        "huge_50k_note_segments",
        oru("huge_50k_note_segments", pid(), orc(), obr(), obx(), *ntes),
        ("AA",),
        "accepted",
        "DESIGN: NTE segments are accepted",
        msa2="huge_50k_note_segments",
    )

    # ------------------------------------------------------------ repetitions
    many_ids = "~".join(f"{MRN}X{i}^^^OTHER" for i in range(20_000))
    add(
        "deep_repetition_20k_patient_ids",
        oru(
            "deep_repetition_20k_patient_ids",
            pid(PID_3 + "~" + many_ids),
            orc(),
            obr(),
            obx(),
        ),
        ("AA",),
        "accepted",
        "PID-3 repeats; the MR identifier is the patient",
        msa2="deep_repetition_20k_patient_ids",
    )
    add(
        "deep_repetition_50k_numeric_values",
        oru(
            "deep_repetition_50k_numeric_values",
            pid(),
            orc(),
            obr(),
            obx("~".join(["7.2"] * 50_000)),
        ),
        ("AE",),
        "error",
        "README: AE for an NM value that is not a number; 50 000 repetitions are not one "
        "number (102 at OBX-5)",
        err_code=102,
        err_location="OBX^1^5",
        msa2="deep_repetition_50k_numeric_values",
    )
    add(
        "deep_50k_components_in_the_code",
        oru(
            "deep_50k_components_in_the_code",
            pid(),
            orc(),
            obr(),
            obx(code="6690-2^Leukocytes^LN" + "^x" * 50_000),
        ),
        ("AA",),
        "accepted",
        "OBX-3 components 1-3 (and 4-6) are the codings; the rest is not read",
        msa2="deep_50k_components_in_the_code",
    )
    add(
        "deep_50k_subcomponents_in_the_authority",
        oru(
            "deep_50k_subcomponents_in_the_authority",
            pid(PID_3.replace("&ISO", "&ISO" + "&x" * 50_000)),
            orc(),
            obr(),
            obx(),
        ),
        ("AA",),
        "accepted",
        "HD sub-components past the third are not read",
        msa2="deep_50k_subcomponents_in_the_authority",
    )
    add(
        "deep_repetition_50k_abnormal_flags",
        oru(
            "deep_repetition_50k_abnormal_flags",
            pid(),
            orc(),
            obr(),
            obx(flags="~".join(["N"] * 50_000)),
        ),
        ("AA",),
        "accepted",
        "OBX-8 repeats; the flags are kept and shown",
        msa2="deep_repetition_50k_abnormal_flags",
    )

    # ------------------------------------------------------------ bytes, charset
    bad_name = oru("invalid_utf8_in_the_patient_name").replace(b"Casebook", b"Case\xffbook")
    add(
        "invalid_utf8_in_the_patient_name",
        bad_name,
        ("AR",),
        "rejected",
        "README: AR for bytes that are not valid in the message's character set (MSH-18 "
        "empty: UTF-8); 102, located at the segment that holds them",
        err_code=102,
        err_location="PID^1",
        msa2="invalid_utf8_in_the_patient_name",
    )
    overlong = oru("invalid_utf8_overlong_slash").replace(b"|7.2|", b"|7.2 \xc0\xaf|")
    add(
        "invalid_utf8_overlong_slash",
        overlong,
        ("AR",),
        "rejected",
        "an overlong encoding is not UTF-8: AR, 102 at the segment",
        err_code=102,
        err_location="OBX^1",
        msa2="invalid_utf8_overlong_slash",
    )
    add(
        "invalid_utf8_encoded_surrogate",
        oru("invalid_utf8_encoded_surrogate").replace(b"Ada", b"A\xed\xa0\x80da"),
        ("AR",),
        "rejected",
        "a UTF-8 encoded surrogate is not UTF-8: AR, 102 at the segment",
        err_code=102,
        err_location="PID^1",
        msa2="invalid_utf8_encoded_surrogate",
    )
    add(
        "invalid_utf8_in_msh",
        oru("invalid_utf8_in_msh").replace(b"BADFAC", b"BAD\xfeFAC"),
        ("AR",),
        "rejected",
        "README: AR for bytes not valid in the charset; 102 at MSH; the ACK still echoes MSH-10",
        err_code=102,
        err_location="MSH^1",
        msa2="invalid_utf8_in_msh",
    )
    add(
        "invalid_utf8_cut_at_the_end",
        oru("invalid_utf8_cut_at_the_end", pid(), orc(), obr(), obx(), "NTE|1||euro \xe2")[:-2]
        + b"\r",
        ("AR",),
        "rejected",
        "a multi-byte sequence cut short is not UTF-8: AR, 102 at the segment",
        err_code=102,
        err_location="NTE^1",
        msa2="invalid_utf8_cut_at_the_end",
    )
    add(
        "latin1_bytes_declared_utf8",
        oru("latin1_bytes_declared_utf8", charset="UNICODE UTF-8").replace(
            b"Casebook", "Cäsebook".encode("latin-1")
        ),
        ("AR",),
        "rejected",
        "README: AR for bytes not valid in the charset MSH-18 declares; 102 at the segment",
        err_code=102,
        err_location="PID^1",
        msa2="latin1_bytes_declared_utf8",
    )
    add(
        "latin1_bytes_declared_8859_1",
        oru("latin1_bytes_declared_8859_1", charset="8859/1").replace(
            b"Casebook", "Cäsebook".encode("latin-1")
        ),
        ("AA",),
        "accepted",
        "fixtures/README charset_8859.hl7: MSH-18 8859/1 is honoured",
        msa2="latin1_bytes_declared_8859_1",
    )
    add(
        "utf16_message",
        oru("utf16_message").decode().encode("utf-16"),
        ("AR",),
        "rejected",
        "UTF-16 bytes do not start with MSH: not HL7 as sent (100)",
        err_code=100,
        msa2='""',
    )
    add(
        "nul_byte_in_a_result",
        oru("nul_byte_in_a_result").replace(b"|7.2|", b"|7.\x002|"),
        ("AR",),
        "rejected",
        "er7.decode_text: a NUL byte is 102, with its segment",
        err_code=102,
        err_location="OBX^1",
        msa2="nul_byte_in_a_result",
    )
    add(
        "nul_byte_in_msh",
        oru("nul_byte_in_msh").replace(b"BADLAB", b"BAD\x00LAB", 1),
        ("AR",),
        "rejected",
        "er7.decode_text: a NUL byte is 102, with its segment",
        err_code=102,
        err_location="MSH^1",
        msa2="nul_byte_in_msh",
    )
    add(
        "nul_byte_in_the_charset_field",
        oru("nul_byte_in_the_charset_field", charset="UNICODE UTF\x008"),
        ("AR",),
        "rejected",
        "er7.decode_text: a NUL byte is 102, with its segment (found by fuzz/fuzz_er7.py: "
        "the ACK context raised, the connection closed unanswered, nothing stored)",
        err_code=102,
        err_location="MSH^1",
        msa2="nul_byte_in_the_charset_field",
    )
    trailing = oru("nul_padding_after_the_message")
    add(
        "nul_padding_after_the_message",
        trailing + b"\x00" * 64,
        ("AA",),
        "accepted",
        "er7: NULs around a message are framing padding, not content",
        msa2="nul_padding_after_the_message",
    )
    add(
        "nul_bytes_only",
        b"\x00" * 32,
        ("AR",),
        "rejected",
        "no bytes besides padding: empty message (100)",
        err_code=100,
        msa2='""',
    )

    # -------------------------------------------------------------- wrong types
    for name, value in (
        ("numeric_value_is_text", "abc"),
        ("numeric_value_with_an_exponent", "7.2E0"),
        ("numeric_value_nan", "NaN"),
        ("numeric_value_infinity", "Infinity"),
        ("numeric_value_with_a_decimal_comma", "7,2"),
        ("numeric_value_two_numbers", "7.2 8.1"),
        ("numeric_value_hex", "0x1F"),
    ):
        add(
            name,
            oru(name, pid(), orc(), obr(), obx(value)),
            ("AE",),
            "error",
            "README/DESIGN: AE for an NM value that is not a number (HL7 NM: optional sign, "
            "digits, a decimal point), 102 at OBX-5 (fixtures/README bad/not_a_number.hl7)",
            err_code=102,
            err_location="OBX^1^5",
            msa2=name,
        )
    add(
        "numeric_value_empty",
        oru("numeric_value_empty", pid(), orc(), obr(), obx("")),
        ("AA",),
        "accepted",
        "fixtures/README: no-value is an unmapped reason (recorded, decides nothing), not "
        "a value that is not a number",
        msa2="numeric_value_empty",
    )
    add(
        "v23_numeric_value_is_text",
        oru(
            "v23_numeric_value_is_text",
            pid(),
            orc(),
            obr(),
            obx("abc"),
            msg_type="ORU^R01",
            version="2.3",
        ),
        ("AE",),
        "error",
        "README: before v2.5 the ERR is ERR-1 (segment^sequence^field^code); 102 at OBX-5",
        err_code=102,
        err_location="OBX^1^5",
        msa2="v23_numeric_value_is_text",
    )

    # ------------------------------------------------------- patients and orders
    add(
        "missing_pid",
        oru("missing_pid", orc(), obr(), obx()),
        ("AE",),
        "error",
        "fixtures/README bad/missing_pid.hl7: AE, required segment PID missing (100), "
        "reported at the first OBX",
        err_code=100,
        err_location="OBX^1",
        msa2="missing_pid",
    )
    add(
        "result_before_the_patient",
        oru("result_before_the_patient", orc(), obr(), obx(), pid(), obr("78002", 2), obx()),
        ("AE",),
        "error",
        "README: AE for a result with no patient; the first OBX comes before any PID (100)",
        err_code=100,
        err_location="OBX^1",
        msa2="result_before_the_patient",
    )
    add(
        "msh_only",
        oru("msh_only", ""),
        ("AE",),
        "error",
        "a message with no PID has no patient (100, table 0357 required segment missing: "
        "ERR-2 names the PID that is missing)",
        err_code=100,
        err_location="PID^1",
        msa2="msh_only",
    )
    add(
        "patient_without_identifier",
        oru("patient_without_identifier", pid(""), orc(), obr(), obx()),
        ("AE",),
        "error",
        "README: AE for a result with no patient; PID-3 is required (101 at PID-3)",
        err_code=101,
        err_location="PID^1^3",
        msa2="patient_without_identifier",
    )
    add(
        "second_patient_without_identifier",
        oru(
            "second_patient_without_identifier",
            pid(),
            orc(),
            obr(),
            obx(),
            pid("", 2),
            orc("78003"),
            obr("78003"),
            obx(),
        ),
        ("AE",),
        "error",
        "as above, at the second PID (101 at PID-3 of the 2nd PID)",
        err_code=101,
        err_location="PID^2^3",
        msa2="second_patient_without_identifier",
    )
    add(
        "missing_obr_and_orc",
        oru("missing_obr_and_orc", pid(), obx()),
        ("AA",),
        "accepted",
        "oru: an OBX without any OBR is read with a warning (its identity has no order)",
        msa2="missing_obr_and_orc",
    )
    add(
        "missing_observation_identifier",
        oru("missing_observation_identifier", pid(), orc(), obr(), obx(code="")),
        ("AE",),
        "error",
        "README (replay): AE for a result with no OBX-3 (101 at OBX-3)",
        err_code=101,
        err_location="OBX^1^3",
        msa2="missing_observation_identifier",
    )
    cut = oru("message_cut_inside_the_second_result", pid(), orc(), obr(), obx(), "OBX|2|NM")
    add(
        "message_cut_inside_the_second_result",
        cut[:-1],
        ("AE",),
        "error",
        "fixtures/README bad/truncated.hl7: AE, OBX-3 missing in the 2nd OBX (101 at OBX^2^3)",
        err_code=101,
        err_location="OBX^2^3",
        msa2="message_cut_inside_the_second_result",
    )

    # ----------------------------------------------------------- enhanced mode
    add(
        "enhanced_unsupported_version",
        oru("enhanced_unsupported_version", version="9.9", accept="AL", application="NE"),
        ("CR",),
        "rejected",
        "README: enhanced mode answers CR for what original mode rejects (203 at MSH-12)",
        err_code=203,
        err_location="MSH^1^12",
        msa2="enhanced_unsupported_version",
    )
    add(
        "enhanced_not_a_number_application_ack_always",
        oru(
            "enhanced_not_a_number_application_ack_always",
            pid(),
            orc(),
            obr(),
            obx("abc"),
            accept="AL",
            application="AL",
        ),
        ("CA", "AE"),
        "error",
        "README: CA on commit, then the application ACK (AE, 102 at OBX-5) as MSH-16 AL asks",
        err_code=102,
        err_location="OBX^1^5",
        msa2="enhanced_not_a_number_application_ack_always",
    )
    add(
        "enhanced_not_a_number_application_ack_never",
        oru(
            "enhanced_not_a_number_application_ack_never",
            pid(),
            orc(),
            obr(),
            obx("abc"),
            accept="AL",
            application="NE",
        ),
        ("CA",),
        "error",
        "README: MSH-16 NE asks for no application ACK; the commit ACK is CA",
        msa2="enhanced_not_a_number_application_ack_never",
    )
    return c


def _own_delimiter_segments() -> list[str]:
    """A normal CBC written with MSH-1 ``#`` and MSH-2 ``$%@*``."""
    return [
        msh("msh_own_delimiters", fs="#", enc="$%@*", msg_type="ORU$R01$ORU_R01"),
        "PID#1##ZQ78001$$$NORTHHOSP*2.16.840.1.113883.3.9999.2*ISO$MR##Casebook$Ada##19700101#F",
        "ORC#RE#PL78001$PRPGATE#FL78001$BADLAB",
        "OBR#1#PL78001$PRPGATE#FL78001$BADLAB#58410-2$CBC panel$LN###" + WHEN,
        "OBX#1#NM#6690-2$Leukocytes$LN#1#7.2#10*3/uL$10*3/uL$UCUM#4.0-11.0#N###F###" + WHEN,
    ]


CASES: tuple[Hl7Case, ...] = tuple(_cases())
