"""FHIR resources read for posting, and how a server's answer is judged."""

from __future__ import annotations

import json
from pathlib import Path

from prpgate.send.fhir_input import fhir_outgoing, read_answer, read_fhir_files


def _oo(severity: str, text: str) -> dict[str, object]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": "invalid", "diagnostics": text}],
    }


def test_fhir_outgoing_targets_and_labels() -> None:
    obs = fhir_outgoing(
        b'{"resourceType": "Observation", "id": "o1"}', file="f", number=1, source="f"
    )
    assert (obs.path, obs.label, obs.problem) == ("Observation", "Observation/o1", "")
    bundle = fhir_outgoing(
        b'{"resourceType": "Bundle", "type": "batch", "identifier": {"value": "B7"}}',
        file="f",
        number=1,
        source="f",
    )
    assert (bundle.path, bundle.label) == ("", "B7")
    assert fhir_outgoing(b"{nope", file="f", number=1, source="f").problem.startswith("not JSON")
    assert "no resourceType" in fhir_outgoing(b"[1]", file="f", number=1, source="f").problem
    hl7 = fhir_outgoing(b"MSH|^~\\&|A\r", file="f", number=1, source="f")
    assert "send HL7 v2 to an mllp://" in hl7.problem


def test_fhir_outgoing_posts_a_request_record_body() -> None:
    record = (
        b"POST /fhir/Observation HTTP/1.1\r\nContent-Type: application/fhir+json\r\n\r\n"
        b'{"resourceType": "Observation", "identifier": [{"value": "X9"}]}'
    )
    got = fhir_outgoing(record, file="r", number=1, source="r")
    assert (got.path, got.label, got.problem) == ("Observation", "X9", "")
    assert got.body.startswith(b'{"resourceType"')


def test_read_fhir_files_json_and_ndjson(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"resourceType": "Observation"}))
    (tmp_path / "b.ndjson").write_text(
        '{"resourceType": "Observation", "id": "1"}\n\n{"resourceType": "Flag", "id": "2"}\n'
    )
    got = [(o.source.replace(str(tmp_path), ""), o.label) for o in read_fhir_files([tmp_path])]
    assert got == [("/a.json", ""), ("/b.ndjson#1", "Observation/1"), ("/b.ndjson#2", "Flag/2")]


def test_read_answer_2xx_is_positive_unless_it_carries_an_error() -> None:
    assert read_answer(201, b'{"resourceType": "Observation", "id": "x"}').positive
    assert read_answer(204, b"").positive
    warn = json.dumps(_oo("warning", "unknown code system")).encode()
    assert read_answer(200, warn).positive
    err = read_answer(200, json.dumps(_oo("error", "rejected")).encode())
    assert (err.positive, err.text) == (False, "error: rejected")


def test_read_answer_names_failing_batch_entries() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch-response",
        "entry": [
            {"response": {"status": "201 Created"}},
            {"response": {"status": "422 Unprocessable Entity", "outcome": _oo("error", "bad")}},
        ],
    }
    got = read_answer(200, json.dumps(bundle).encode())
    assert not got.positive
    assert got.text == "entry 2: 422 Unprocessable Entity (error: bad)"


def test_read_answer_error_statuses() -> None:
    got = read_answer(400, json.dumps(_oo("error", "not JSON")).encode())
    assert (got.positive, got.text) == (False, "HTTP 400: error: not JSON")
    assert (
        read_answer(502, b"<html>Bad gateway</html>").text == "HTTP 502: <html>Bad gateway</html>"
    )
    assert read_answer(500, b"").text == "HTTP 500"
