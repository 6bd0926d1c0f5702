"""Mutated HL7 v2 messages through everything that reads them: the tokenizer raises only
ParseError and its accessors nothing; ``pipeline.read`` never raises and gives every
input a disposition that agrees with its ACK code and errors; the ACK built for it is
itself a message the tokenizer reads, echoing MSH-10.

Seeds are the team's fixtures (every message of every file); hypothesis picks the edits:
delimiters, escapes, segment starts, line ends, NULs, framing bytes, BOMs, invalid UTF-8
and random bytes inserted, ranges deleted or repeated, the message cut short.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prpgate.core import er7
from prpgate.core.ack import build_ack, read_context
from prpgate.core.pipeline import AckCode, Disposition, Engine, read
from prpgate.errors import ParseError
from tests.conftest import FIXED_NOW, FIXTURES

SEEDS = [
    raw.data
    for path in sorted(FIXTURES.rglob("*.hl7"))
    for raw in er7.split_messages(path.read_bytes())
]
INSERTS = [
    b"|",
    b"^",
    b"~",
    b"\\",
    b"&",
    b"#",
    b"\r",
    b"\n",
    b"\r\n",
    b"\x00",
    b"\x0b",
    b"\x1c",
    b"\xef\xbb\xbf",
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\\X",
    b"\\XZZ\\",
    b"\\X0D0A\\",
    b"\\.sp 99\\",
    b"\\H\\",
    b'""',
    b"MSH|^~\\&|",
    b"MSH|",
    b"PID|1||",
    b"OBR|1|||",
    b"OBX|1|NM|6690-2^WBC^LN|1|",
    b"OBX|2|SN|6690-2^WBC^LN|1|^>^20|",
    b"-1e400",
    b"9" * 40,
    b"NaN",
]
_DISPOSITION_ACK = {
    Disposition.ACCEPTED: AckCode.AA,
    Disposition.ERROR: AckCode.AE,
    Disposition.REJECTED: AckCode.AR,
}


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["insert", "delete", "repeat", "byte", "cut"]))
        at = draw(st.integers(0, len(data)))
        if kind == "insert":
            chunk = draw(st.sampled_from(INSERTS) | st.binary(min_size=1, max_size=8))
            data[at:at] = chunk
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 40))]
        elif kind == "repeat":
            piece = data[at : at + draw(st.integers(1, 60))]
            data[at:at] = piece * draw(st.integers(1, 50))
        elif kind == "byte" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at:]
    return bytes(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=mutated())
def test_er7_parse_raises_only_parse_error_on_mutated_messages(raw: bytes) -> None:
    try:
        msg = er7.parse(raw)
    except ParseError as exc:
        failure: ParseError | None = exc
    else:
        failure = None
    if failure is not None:
        assert failure.code in (100, 101, 102, 103, 207)
        assert failure.location
        return
    d = msg.delimiters
    for seg in msg.segments:
        for n in range(len(seg.fields) + 1):
            er7.field_tree(seg, n, d)
            for rep in er7.repetitions(seg, n, d):
                er7.components(rep, d)
            er7.value(seg, n, 2, 3, 2, delims=d)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=mutated())
def test_pipeline_read_answers_every_mutated_message(raw: bytes, engine: Engine) -> None:
    reading = read(raw, engine)
    assert reading.ack is _DISPOSITION_ACK[reading.disposition]
    assert bool(reading.errors) == (reading.disposition is not Disposition.ACCEPTED)
    for e in reading.errors:
        assert e.code in (100, 101, 102, 103, 200, 201, 203, 207)
    assert len(reading.content_hash) == 64


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=mutated(), enhanced=st.booleans())
def test_ack_of_every_mutated_message_is_a_message_echoing_msh10(
    raw: bytes, enhanced: bool, engine: Engine
) -> None:
    reading = read(raw, engine)
    ctx = read_context(raw, enhanced=enhanced)
    ack = build_ack(ctx, reading.ack, reading.errors, raw=raw, control_id="A1", now=FIXED_NOW)
    msg = er7.parse_message(ack.data.decode(ctx.codec))
    assert msg.segments[0].name == "MSH"
    msa = msg.first("MSA")
    assert msa is not None
    assert msa.field(1) == reading.ack.value
    assert msa.field(2) == (ctx.control_id or '""')
    assert bool(msg.first("ERR")) == bool(reading.errors)
