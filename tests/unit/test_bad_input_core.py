"""The pure core on the bad inputs that the catalogue (tests/bad_inputs/) found answered
wrongly: where an ERR points, what an ACK echoes, JSON that is not Unicode text, and
which OperationOutcome issue a broken Bundle or a reference to nothing gets."""

from __future__ import annotations

import json
from typing import Any

import pytest

from prpgate.core import er7
from prpgate.core.ack import build_ack, read_context
from prpgate.core.charset import choose_codec, codec_for
from prpgate.core.fhir_in import read_input
from prpgate.core.fhir_outcome import http_status, issues_of
from prpgate.core.fhir_request import JsonProblem, decode_json
from prpgate.core.fhir_validate import validate
from prpgate.core.pipeline import AckCode, Disposition, Engine, read
from prpgate.errors import ParseError
from tests.conftest import FIXED_NOW

BASE = "urn:test"
MSH = "MSH|^~\\&|LAB|FAC|PRPGATE|CLINIC|20250320080000||ORU^R01^ORU_R01|{}|P|2.5.1"
BODY = (
    "PID|1||ZQ78101^^^NORTHHOSP&2.16.840.1.113883.3.9999.2&ISO^MR||Casebook^Ada\r"
    "OBR|1||FL1^LAB|58410-2^CBC^LN|||20250320070000\r"
    "OBX|1|NM|6690-2^WBC^LN|1|7.2|10*3/uL|||||F\r"
)


def _message(control: str) -> bytes:
    return (MSH.format(control) + "\r" + BODY).encode()


def _err2(raw: bytes, engine: Engine) -> str:
    """ERR-2 of the ACK the pipeline's reading of ``raw`` is answered with."""
    reading = read(raw, engine)
    ack = build_ack(
        read_context(raw), reading.ack, reading.errors, raw=raw, control_id="A1", now=FIXED_NOW
    )
    err = next(s for s in ack.data.decode().split("\r") if s.startswith("ERR"))
    return err.split("|")[2]


# ------------------------------------------------------------------- HL7 v2


def test_parse_error_location_of_a_second_msh_keeps_its_index() -> None:
    assert ParseError("x", segment="MSH", segment_index=1, field=9).location == "MSH-9"
    assert ParseError("x", segment="MSH", segment_index=5).location == "MSH[5]"


def test_build_ack_err_of_two_messages_in_one_input_points_at_the_second_msh(
    engine: Engine,
) -> None:
    raw = _message("FIRST") + _message("SECOND")
    assert read(raw, engine).ack is AckCode.AR
    assert _err2(raw, engine) == "MSH^2"


def test_decode_text_locates_bytes_that_do_not_decode_at_their_segment() -> None:
    raw = _message("BADUTF8").replace(b"Casebook", b"Case\xffbook")
    with pytest.raises(ParseError) as caught:
        er7.decode_text(raw)
    exc = caught.value
    assert (exc.segment, exc.segment_index, exc.code) == ("PID", 2, 102)
    assert exc.offset == raw.index(b"\xff")


def test_build_ack_err_of_invalid_utf8_names_its_segment(engine: Engine) -> None:
    raw = _message("BADUTF8").replace(b"|7.2|", b"|7.2\xc0\xaf|")
    assert read(raw, engine).ack is AckCode.AR
    assert _err2(raw, engine) == "OBX^1"


def test_read_context_echoes_msh10_after_a_bom_and_blank_lines(engine: Engine) -> None:
    for head in (b"\xef\xbb\xbf \r\n", b"\r\n\xef\xbb\xbf", b"\x0b\xef\xbb\xbf\n\xef\xbb\xbf"):
        raw = head + _message("AFTERBOM")
        assert read(raw, engine).ack is AckCode.AA  # the tokenizer skips them all
        ctx = read_context(raw)
        assert (ctx.usable, ctx.control_id) == (True, "AFTERBOM")


def test_build_ack_locates_errors_after_a_bom_and_blank_lines(engine: Engine) -> None:
    raw = b"\xef\xbb\xbf\r\n" + _message("BOMNM").replace(b"|7.2|", b"|abc|")
    assert _err2(raw, engine) == "OBX^1^5"


def test_codec_for_a_label_with_a_nul_is_unknown_not_an_exception() -> None:
    assert codec_for("UTF\x008") is None
    msh = MSH.format("NUL18").encode() + b"||||||UTF\x008"
    with pytest.raises(ParseError) as caught:
        choose_codec(msh, None)
    assert (caught.value.code, caught.value.location) == (103, "MSH-18")


def test_read_context_of_a_nul_in_msh18_answers_without_mirroring_it(engine: Engine) -> None:
    raw = (MSH.format("NUL18") + "||||||UTF\x008\r" + BODY).encode()
    ctx = read_context(raw)  # raised ValueError before: the frame went unanswered
    assert (ctx.control_id, ctx.codec, "\x00" in ctx.charset_field) == ("NUL18", "utf-8", False)
    assert read(raw, engine).ack is AckCode.AR
    assert _err2(raw, engine) == "MSH^1"


# --------------------------------------------------------------------- FHIR


def _obs(**changes: Any) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "6690-2"}]},
        "subject": {"identifier": {"system": "urn:x", "value": "ZQ78102"}},
        "valueQuantity": {"value": 7.2, "code": "10*3/uL"},
    }
    obs.update(changes)
    return obs


def test_decode_json_refuses_a_lone_surrogate_escape_with_its_place() -> None:
    found = decode_json(b'{"a": "ok \\ud83d\\ude00",\n "b": "x\\udc00y"}')
    assert isinstance(found, JsonProblem)
    assert "unpaired surrogate" in found.reason
    assert found.location == "line 2, column 9"  # ' "b": "x' is 8 characters


def test_decode_json_keeps_surrogate_pairs_and_escaped_backslashes() -> None:
    assert decode_json(b'{"a": "\\ud83d\\ude00", "b": "\\\\ud800"}') == {
        "a": "\U0001f600",
        "b": "\\ud800",
    }


def test_read_input_of_a_lone_surrogate_is_rejected_not_raised(engine: Engine) -> None:
    raw = json.dumps(_obs()).replace('"final"', '"fin\\ud800al"').encode()
    found = read_input(raw, system_base=BASE)
    assert found.rejected
    assert "unpaired surrogate" in found.errors[0].reason
    reading = read(raw, engine)
    assert reading.disposition is Disposition.REJECTED
    assert http_status(reading.disposition, reading.errors) == 400
    assert issues_of(reading.errors)[0].code == "structure"


def test_validate_locates_a_reference_of_the_wrong_type_at_the_element() -> None:
    (issue,) = validate(_obs(subject=5), "Observation")
    assert issue.location == "Observation.subject"


def test_unknown_element_is_answered_as_a_structure_issue(engine: Engine) -> None:
    reading = read(json.dumps(_obs(colour="red")).encode(), engine)
    (issue,) = issues_of(reading.errors)
    assert (issue.code, issue.location) == ("structure", "Observation.colour")


def test_bundle_entry_resource_that_is_not_an_object_is_a_structure_issue(
    engine: Engine,
) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": 5}]}
    reading = read(json.dumps(bundle).encode(), engine)
    (issue,) = issues_of(reading.errors)
    assert (issue.code, issue.location) == ("structure", "Bundle.entry[0].resource")
    assert "not a resource" in issue.diagnostics
    assert http_status(reading.disposition, reading.errors) == 400


def test_subject_reference_to_nothing_is_not_found(engine: Engine) -> None:
    contained = read(json.dumps(_obs(subject={"reference": "#nobody"})).encode(), engine)
    ref = "urn:uuid:3f0b1c7e-0000-4000-8000-00000000dead"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:3f0b1c7e-0000-4000-8000-000000000001",
                "resource": _obs(subject={"reference": ref}),
                "request": {"method": "POST", "url": "Observation"},
            }
        ],
    }
    in_bundle = read(json.dumps(bundle).encode(), engine)
    for reading in (contained, in_bundle):
        (issue,) = issues_of(reading.errors)
        assert issue.code == "not-found"
        assert "resolves to nothing" in issue.diagnostics
        assert http_status(reading.disposition, reading.errors) == 422


def test_subject_reference_to_nothing_with_an_identifier_uses_the_identifier(
    engine: Engine,
) -> None:
    subject = {"reference": "#nobody", "type": "Patient", "identifier": {"value": "ZQ78103"}}
    reading = read(json.dumps(_obs(subject=subject)).encode(), engine)
    assert reading.disposition is Disposition.ACCEPTED
    assert reading.patients[0].identifier.value == "ZQ78103"
