"""The content hash that retransmit dedup keys on: the same message in any line-ending
style or framing is the same content; anything else is not."""

from __future__ import annotations

import hashlib

import pytest

from prpgate.core.pipeline import content_hash

SEGMENTS = [
    b"MSH|^~\\&|LAB|NORTHLAB|PRPGATE|CLINIC|20250314075127||ORU^R01|C1|P|2.5.1",
    b"PID|1||MRN1",
    b"OBX|1|NM|6690-2^WBC^LN||6.8|10*3/uL",
]
CR_FORM = b"\r".join(SEGMENTS)


@pytest.mark.parametrize(
    "raw",
    [
        CR_FORM + b"\r",
        CR_FORM,
        b"\r\n".join(SEGMENTS) + b"\r\n",
        b"\n".join(SEGMENTS) + b"\n",
        b"\x0b" + CR_FORM + b"\r\x1c\r",
        b"\r\n".join(SEGMENTS[:2]) + b"\r" + SEGMENTS[2] + b"\n",
    ],
    ids=["cr", "no-final-cr", "crlf", "lf", "mllp-framed", "mixed"],
)
def test_line_endings_and_framing_do_not_change_the_hash(raw: bytes) -> None:
    assert content_hash(raw) == hashlib.sha256(CR_FORM).hexdigest()


def test_a_changed_value_changes_the_hash() -> None:
    assert content_hash(CR_FORM.replace(b"6.8", b"6.9")) != content_hash(CR_FORM)


def test_a_line_feed_inside_a_cr_message_is_normalised_like_a_segment_end() -> None:
    # the hash is of the bytes, not of the parsed segments: LF and CR count alike
    assert content_hash(CR_FORM.replace(b"|6.8|", b"|6.8\n|")) == content_hash(
        CR_FORM.replace(b"|6.8|", b"|6.8\r|")
    )
