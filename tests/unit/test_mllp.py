"""MLLP framing: frame, and the incremental deframer fed bytes as TCP delivers them."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prpgate.core.mllp import CR, END_BLOCK, START_BLOCK, Deframer, Fault, FaultKind, Frame, frame
from prpgate.errors import ConfigError, FramingError
from tests.conftest import load

MSG_A = b"MSH|^~\\&|A|B|C|D|20250101||ORU^R01|1|P|2.5.1\rPID|1\r"
MSG_B = b"MSH|^~\\&|A|B|C|D|20250101||ORU^R01|2|P|2.5.1\rPID|2\r"


def frames(events: list[Frame | Fault]) -> list[bytes]:
    return [e.data for e in events if isinstance(e, Frame)]


def faults(events: list[Frame | Fault]) -> list[Fault]:
    return [e for e in events if isinstance(e, Fault)]


def test_frame_wraps_in_vt_fs_cr() -> None:
    assert frame(b"MSH|x") == b"\x0bMSH|x\x1c\r"
    assert frame(b"MSH|x") == START_BLOCK + b"MSH|x" + END_BLOCK + CR


def test_frame_refuses_framing_bytes_inside() -> None:
    with pytest.raises(FramingError):
        frame(b"MSH|\x1c|x")


def test_deframer_rejects_non_positive_limit() -> None:
    with pytest.raises(ConfigError):
        Deframer(0)


def test_deframer_one_frame_in_one_read() -> None:
    d = Deframer(1024)
    assert d.feed(frame(MSG_A)) == [Frame(MSG_A)]
    assert d.buffered == 0
    assert d.finish() == []


def test_deframer_message_split_across_many_reads() -> None:
    d = Deframer(1024)
    data = frame(MSG_A)
    events: list[Frame | Fault] = []
    for i in range(len(data)):
        events += d.feed(data[i : i + 1])
    assert events == [Frame(MSG_A)]


def test_deframer_trailer_split_across_two_reads() -> None:
    d = Deframer(1024)
    data = frame(MSG_A)
    first = d.feed(data[:-1])  # ends with <FS>
    assert first == [Frame(MSG_A)]  # the frame is complete at <FS>: no round trip lost
    assert d.feed(data[-1:]) == []  # the <CR> that follows is not stray data
    assert d.feed(frame(MSG_B)) == [Frame(MSG_B)]


def test_deframer_several_messages_in_one_read() -> None:
    d = Deframer(1024)
    events = d.feed(frame(MSG_A) + frame(MSG_B) + frame(MSG_A))
    assert frames(events) == [MSG_A, MSG_B, MSG_A]
    assert faults(events) == []


def test_deframer_ignores_nuls_and_stray_line_feeds_between_frames() -> None:
    d = Deframer(1024)
    data = b"\x00\x00" + frame(MSG_A) + b"\n" + b"\r\n\x00 \t" + frame(MSG_B) + b"\n\x00"
    events = d.feed(data)
    assert events == [Frame(MSG_A), Frame(MSG_B)]
    assert d.finish() == []


def test_deframer_fs_without_cr_still_ends_a_frame() -> None:
    d = Deframer(1024)
    events = d.feed(START_BLOCK + MSG_A + END_BLOCK + START_BLOCK + MSG_B + END_BLOCK)
    assert frames(events) == [MSG_A, MSG_B]


def test_deframer_reports_data_before_vt_as_stray() -> None:
    d = Deframer(1024)
    events = d.feed(b"hello there\r" + frame(MSG_A))
    assert events[0] == Fault(FaultKind.STRAY, b"hello there\r", 12)
    assert events[1] == Frame(MSG_A)


def test_deframer_unframed_message_is_stray_not_answered() -> None:
    d = Deframer(1024)
    events = d.feed(MSG_A + END_BLOCK + CR) + d.finish()
    assert frames(events) == []
    assert [f.kind for f in faults(events)] == [FaultKind.STRAY]
    assert faults(events)[0].data.startswith(b"MSH|")


def test_deframer_stray_run_is_kept_only_up_to_keep_bytes() -> None:
    d = Deframer(1024, keep_bytes=10)
    events: list[Frame | Fault] = []
    for _ in range(100):
        events += d.feed(b"x" * 100)
        assert d.buffered <= 10
    events += d.feed(frame(MSG_A))
    assert events == [Fault(FaultKind.STRAY, b"x" * 10, 10_000), Frame(MSG_A)]


def test_deframer_missing_end_block_reported_when_next_frame_starts() -> None:
    d = Deframer(1024)
    events = d.feed(START_BLOCK + MSG_A + frame(MSG_B))
    assert events == [Fault(FaultKind.UNTERMINATED, MSG_A, len(MSG_A)), Frame(MSG_B)]


def test_deframer_peer_closing_mid_message_is_truncated() -> None:
    d = Deframer(1024)
    assert d.feed(frame(MSG_A) + START_BLOCK + MSG_B[:20]) == [Frame(MSG_A)]
    assert d.in_frame
    assert d.finish() == [Fault(FaultKind.TRUNCATED, MSG_B[:20], 20)]
    assert not d.in_frame


def test_deframer_message_at_the_limit_is_a_frame() -> None:
    d = Deframer(len(MSG_A))
    assert d.feed(frame(MSG_A)) == [Frame(MSG_A)]


def test_deframer_oversize_keeps_head_and_stays_usable() -> None:
    big = MSG_A + b"OBX|" + b"9" * 5000 + b"\r"
    d = Deframer(1000, keep_bytes=100)
    events: list[Frame | Fault] = []
    data = frame(big) + frame(MSG_B)
    for i in range(0, len(data), 333):
        events += d.feed(data[i : i + 333])
        assert d.buffered <= 1000
    assert events == [Fault(FaultKind.OVERSIZE, big[:100], len(big)), Frame(MSG_B)]


def test_deframer_oversize_by_one_byte_in_one_read() -> None:
    d = Deframer(len(MSG_A) - 1, keep_bytes=16)
    assert d.feed(frame(MSG_A)) == [Fault(FaultKind.OVERSIZE, MSG_A[:16], len(MSG_A))]


def test_deframer_memory_bounded_for_endless_frame() -> None:
    d = Deframer(4096, keep_bytes=64)
    d.feed(START_BLOCK)
    for _ in range(1000):
        d.feed(b"A" * 10_000)
    assert d.buffered <= 4096
    [fault] = d.finish()
    assert fault.kind is FaultKind.TRUNCATED
    assert fault.size == 10_000_000
    assert len(fault.data) == 64


def test_deframer_fixture_bytes_round_trip() -> None:
    raw = load("cbc_high_wbc.hl7")
    d = Deframer(1 << 20)
    assert d.feed(frame(raw)) == [Frame(raw)]


@settings(max_examples=200, deadline=None)
@given(
    messages=st.lists(
        st.binary(min_size=1, max_size=300).map(
            lambda b: b.replace(START_BLOCK, b"v").replace(END_BLOCK, b"f")
        ),
        min_size=1,
        max_size=8,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=20),
    padding=st.sampled_from([b"", b"\r", b"\n", b"\x00\x00", b"\r\n"]),
)
def test_deframer_any_split_gives_the_same_frames(
    messages: list[bytes], cuts: list[int], padding: bytes
) -> None:
    data = b"".join(padding + frame(m) for m in messages)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    d = Deframer(1000)
    events: list[Frame | Fault] = []
    for a, b in itertools.pairwise(points):
        events += d.feed(data[a:b])
    events += d.finish()
    assert events == [Frame(m) for m in messages]
