"""What ``prpgate send`` sends: segment ends normalised as the tokenizer reads them, the
acknowledgments MSH-15/MSH-16 ask for, and inputs that cannot be sent."""

from __future__ import annotations

from pathlib import Path

import pytest

from prpgate.core import er7
from prpgate.core.mllp import Deframer, Frame
from prpgate.send.outgoing import (
    AckWait,
    ack_wait,
    normalise_segment_ends,
    outgoing,
    read_hl7_files,
)
from tests.conftest import FIXTURES

MSH = b"MSH|^~\\&|LAB|NORTH|PRP|CLINIC|20260101120000||ORU^R01^ORU_R01|C1|P|2.5.1|||AL|NE"


def _fields(data: bytes) -> list[tuple[str, ...]]:
    # latin-1 reads any byte: the structure is what is compared, not the charset
    return [s.fields for s in er7.parse_message(data.decode("latin-1")).segments]


def test_normalise_keeps_cr_messages_and_terminates_the_last_segment() -> None:
    assert normalise_segment_ends(MSH + b"\rPID|1\rOBX|1|NM") == MSH + b"\rPID|1\rOBX|1|NM\r"
    assert normalise_segment_ends(MSH + b"\rPID|1\r") == MSH + b"\rPID|1\r"


def test_normalise_turns_crlf_and_lf_ends_into_cr() -> None:
    want = MSH + b"\rPID|1\rOBX|1|NM\r"
    assert normalise_segment_ends(MSH + b"\r\nPID|1\r\nOBX|1|NM\r\n") == want
    assert normalise_segment_ends(MSH + b"\nPID|1\nOBX|1|NM\n") == want
    assert normalise_segment_ends(MSH + b"\n\nPID|1\n\n\nOBX|1|NM\n") == want  # blank lines


def test_normalise_keeps_line_feeds_inside_text_as_text() -> None:
    # CR-terminated: a bare LF is text inside NTE-3
    cr = MSH + b"\rNTE|1||first line\nsecond line\r"
    assert normalise_segment_ends(cr) == cr
    # LF-terminated: a line without a segment id continues the previous segment
    lf = MSH + b"\nNTE|1||first line\nsecond line\nOBX|1|NM\n"
    assert normalise_segment_ends(lf) == MSH + b"\rNTE|1||first line\nsecond line\rOBX|1|NM\r"


def test_normalise_reads_every_fixture_as_the_tokenizer_does() -> None:
    checked = 0
    for path in sorted(FIXTURES.glob("*.hl7")):
        for piece in er7.split_messages(path.read_bytes()):
            sent = normalise_segment_ends(piece.data)
            assert sent.endswith(b"\r"), path
            assert b"\r\n" not in sent, path
            assert _fields(sent) == _fields(piece.data), path
            checked += 1
    assert checked == 67  # fixtures/README.md: 67 ORU messages in the good files


@pytest.mark.parametrize(
    ("msh15", "msh16", "want"),
    [
        ("", "", AckWait(original=True, accept=False, application=False)),
        ("AL", "NE", AckWait(original=False, accept=True, application=False)),
        ("al", "al", AckWait(original=False, accept=True, application=True)),
        ("", "AL", AckWait(original=False, accept=True, application=True)),
        ("NE", "AL", AckWait(original=False, accept=False, application=True)),
        ("SU", "SU", AckWait(original=False, accept=True, application=True)),
        ("ER", "ER", AckWait(original=False, accept=False, application=False)),
        ("NE", "NE", AckWait(original=False, accept=False, application=False)),
    ],
)
def test_ack_wait_follows_table_0155(msh15: str, msh16: str, want: AckWait) -> None:
    got = ack_wait(msh15, msh16)
    assert got == want
    assert got.expects_answer is (want.original or want.accept or want.application)


def test_ack_wait_describes_itself() -> None:
    assert ack_wait("", "").describe() == "original"
    assert ack_wait("AL", "AL").describe() == "accept+application"
    assert ack_wait("NE", "NE").describe() == "none"


def test_outgoing_reads_control_id_and_frames_once() -> None:
    out = outgoing(MSH + b"\nPID|1\n", file="f.hl7", number=1, source="f.hl7")
    assert out.control_id == "C1"
    assert out.wait.describe() == "accept"
    assert out.message_type == "ORU^R01^ORU_R01"
    assert out.version == "2.5.1"
    assert out.problem == ""
    events = Deframer(1 << 20).feed(out.framed)
    assert events == [Frame(MSH + b"\rPID|1\r")]


def test_outgoing_names_what_cannot_be_sent() -> None:
    framing = outgoing(b"MSH|^~\\&|A\x0bB\r", file="g", number=1, source="g")
    assert framing.framed == b""
    assert "framing bytes" in framing.problem
    empty = outgoing(b" \r\n", file="e", number=1, source="e")
    assert empty.problem.startswith("empty input")
    fhir = outgoing(b'{"resourceType": "Observation"}', file="o", number=1, source="o")
    assert "FHIR JSON, not HL7 v2" in fhir.problem
    no_msh = outgoing(b"PID|1||X\r", file="p", number=1, source="p")
    assert (no_msh.problem, no_msh.control_id, no_msh.wait.original) == ("", "", True)


def test_read_hl7_files_follows_replay_order_and_labels(tmp_path: Path) -> None:
    (tmp_path / "b.hl7").write_bytes(MSH + b"\r" + MSH.replace(b"|C1|", b"|C2|") + b"\r")
    (tmp_path / "a.hl7").write_bytes(MSH.replace(b"|C1|", b"|C0|") + b"\n")
    (tmp_path / "notes.md").write_text("not a message")
    got = [
        (o.source.replace(str(tmp_path), ""), o.number, o.control_id)
        for o in read_hl7_files([tmp_path])
    ]
    assert got == [("/a.hl7", 1, "C0"), ("/b.hl7#1", 1, "C1"), ("/b.hl7#2", 2, "C2")]
    with pytest.raises(FileNotFoundError):
        read_hl7_files([tmp_path / "missing"])
