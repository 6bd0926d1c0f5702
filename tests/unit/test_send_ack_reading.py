"""Reading acknowledgments: prpgate's own (every ERR layout), python-hl7's, and answers
that are not acknowledgments."""

from __future__ import annotations

import hl7
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prpgate.core.ack import AcceptCode, build_ack, read_context
from prpgate.core.pipeline import AckCode, ErrorInfo
from prpgate.errors import ParseError
from prpgate.send.ack_reading import read_ack
from tests.conftest import FIXED_NOW


def _inbound(version: str, control: str = "C42") -> bytes:
    return (
        f"MSH|^~\\&|LAB|NORTH|PRP|CLINIC|20260101120000||ORU^R01|{control}|P|{version}\rPID|1\r"
    ).encode()


def test_read_ack_v25_error_text_and_codes() -> None:
    raw = _inbound("2.5.1")
    errors = [
        ErrorInfo(102, "OBX[3]-5", "value 'abc' is not a number"),
        ErrorInfo(101, "PID-3", "no patient identifier"),
    ]
    ack = build_ack(read_context(raw), AckCode.AE, errors, raw=raw, control_id="A1", now=FIXED_NOW)
    got = read_ack(ack.data)
    assert (got.code, got.control_id) == ("AE", "C42")
    assert got.text == "OBX[3]-5: value 'abc' is not a number; PID-3: no patient identifier"
    assert got.error_codes == ("102", "101")
    assert got.is_known


def test_read_ack_before_v25_reads_msa3_and_err1() -> None:
    raw = _inbound("2.3")
    errors = [ErrorInfo(203, "MSH-12", "unsupported")]
    ack = build_ack(read_context(raw), AckCode.AR, errors, raw=raw, control_id="A2", now=FIXED_NOW)
    got = read_ack(ack.data)
    assert got.code == "AR"
    assert got.text.startswith("MSH-12: unsupported")
    assert got.error_codes == ("203",)


def test_read_ack_commit_accept_and_explicit_null() -> None:
    ctx = read_context(b"not hl7 at all")
    ack = build_ack(ctx, AcceptCode.CR, [], control_id="A3", now=FIXED_NOW)
    got = read_ack(ack.data)
    assert (got.code, got.control_id, got.text) == ("CR", "", "")


def test_read_ack_python_hl7_create_ack() -> None:
    msg = hl7.parse(_inbound("2.5.1").decode())
    got = read_ack(str(msg.create_ack("AE", message_id="Z1")).encode())
    assert (got.code, got.control_id) == ("AE", "C42")


def test_read_ack_unknown_code_is_kept_as_sent() -> None:
    got = read_ack(b"MSH|^~\\&|A|B|C|D|20260101||ACK|X|P|2.5.1\rMSA|ok|C42|fine\r")
    assert (got.code, got.is_known, got.text) == ("OK", False, "fine")


@pytest.mark.parametrize(
    "data",
    [
        b"hello",
        b"MSH|^~\\&|A|B|C|D|20260101||ACK|X|P|2.5.1\rERR|||207\r",  # no MSA
        b"",
    ],
)
def test_read_ack_rejects_what_is_not_an_ack(data: bytes) -> None:
    with pytest.raises(ParseError):
        read_ack(data)


_ACK_HEAD = b"MSH|^~\\&|A|B|C|D|20260101||ACK|X|P|2.5.1\r"


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.binary(max_size=200).map(lambda tail: b"MSH" + tail),
        st.binary(max_size=200).map(lambda tail: _ACK_HEAD + b"MSA|" + tail),
        st.text(max_size=200).map(lambda t: (_ACK_HEAD.decode() + "MSA|AA|" + t).encode()),
    )
)
def test_read_ack_raises_only_parse_error_on_any_bytes(data: bytes) -> None:
    try:
        got = read_ack(data)
    except ParseError:
        return
    assert isinstance(got.code, str)
    assert isinstance(got.control_id, str)
