"""FHIR input as the pipeline's Reading (core.fhir_reading, through pipeline.read)."""

from __future__ import annotations

import dataclasses
import json

from prpgate.core.fhir_request import record_request
from prpgate.core.model import Normalised
from prpgate.core.pipeline import AckCode, Disposition, Engine, read

OBSERVATION = {
    "resourceType": "Observation",
    "identifier": [{"system": "urn:lab:obs", "value": "R-1"}],
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "777-3"}]},
    "subject": {"identifier": {"system": "urn:oid:1.2.3", "value": "ZQ79401"}},
    "effectiveDateTime": "2026-01-10T08:00:00Z",
    "valueQuantity": {"value": 41, "unit": "K/uL"},
    "meta": {"source": "urn:lab:north"},
}


def test_read_dispatches_fhir_json_and_fills_the_header(engine: Engine) -> None:
    reading = read(json.dumps(OBSERVATION).encode(), engine)
    assert (reading.disposition, reading.ack) == (Disposition.ACCEPTED, AckCode.AA)
    h = reading.header
    assert h is not None
    assert (h.sending_application, h.sending_facility, h.message_type, h.version) == (
        "FHIR",
        "urn:lab:north",
        "Observation",
        "4.0.1",
    )
    assert h.control_id == "Observation?identifier=urn:lab:obs|R-1"
    (result,) = reading.results
    assert isinstance(result, Normalised)
    assert (result.analyte, str(result.value), result.unit) == ("plt", "41", "10*9/L")
    assert [p.identifier.key for p in reading.patients] == ["urn:oid:1.2.3|ZQ79401"]


def test_read_fhir_dispositions(engine: Engine) -> None:
    no_subject = {k: v for k, v in OBSERVATION.items() if k != "subject"}
    error = read(json.dumps(no_subject).encode(), engine)
    assert (error.disposition, error.ack) == (Disposition.ERROR, AckCode.AE)
    rejected = read(b"[1, 2]", engine)
    assert (rejected.disposition, rejected.header) == (Disposition.REJECTED, None)


def test_read_fhir_limit_applies_to_the_body_not_the_request_record(engine: Engine) -> None:
    body = json.dumps(OBSERVATION).encode()
    small = dataclasses.replace(engine, max_message_bytes=len(body))
    record = record_request("/fhir/Observation", {"X-Request-Id": "r" * 40}, body)
    assert len(record) > len(body)
    assert read(record, small).disposition is Disposition.ACCEPTED
    tiny = dataclasses.replace(engine, max_message_bytes=len(body) - 1)
    refused = read(record, tiny)
    assert refused.disposition is Disposition.REJECTED
    assert "over the limit" in refused.errors[0].reason
