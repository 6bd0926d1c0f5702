"""Generated JSON through ``pipeline.read`` and the answers built from its Reading:
only a Reading with a disposition comes back, never an exception, and every answer a
client would get is a valid OperationOutcome (or per-entry response) that encodes as
UTF-8 JSON.

``test_fhir_robustness.py`` mutates the FHIR fixtures with a fixed list of odd values;
this generates the values (strings with any code point, lone surrogate escapes
included; integers and decimals of any size; nested arrays and objects), puts them
where Observations, Bundles and their entries keep their elements, and sends them as
files and as HTTP request records (with the headers that make retransmit keys).
"""

from __future__ import annotations

import json
from typing import Any

from fhir.resources.R4B.operationoutcome import OperationOutcome
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prpgate.core.fhir_in import read_input
from prpgate.core.fhir_outcome import entry_response, http_status, issues_of, operation_outcome
from prpgate.core.fhir_request import record_request
from prpgate.core.pipeline import AckCode, Disposition, Engine, read

_DISPOSITION_ACK = {
    Disposition.ACCEPTED: AckCode.AA,
    Disposition.ERROR: AckCode.AE,
    Disposition.REJECTED: AckCode.AR,
}
_ELEMENTS = [
    "resourceType",
    "id",
    "meta",
    "identifier",
    "status",
    "code",
    "subject",
    "effectiveDateTime",
    "effectivePeriod",
    "issued",
    "valueQuantity",
    "valueString",
    "valueInteger",
    "dataAbsentReason",
    "interpretation",
    "referenceRange",
    "component",
    "contained",
    "note",
    "type",
    "entry",
    "fullUrl",
    "resource",
    "request",
    "result",
    "reference",
    "system",
    "value",
    "unit",
    "comparator",
    "coding",
]
_TYPES = ["Observation", "Bundle", "DiagnosticReport", "Patient", "Spaceship", ""]

_strings = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=12),  # surrogates included
    st.sampled_from(
        [
            "final",
            "amended",
            "entered-in-error",
            "transaction",
            "batch",
            "collection",
            "http://loinc.org",
            "6690-2",
            "http://unitsofmeasure.org",
            "10*3/uL",
            "#p1",
            "urn:uuid:00000000-0000-4000-8000-000000000001",
            "Patient/1",
            "2025-03-20T07:00:00+01:00",
            "<",
            "7.2",
            "\ud800",  # lone surrogates: JSON can spell them (\\ud800), UTF-8 cannot
            "x\udfff",
            "\ud83d\ude00",  # a pair: one character
        ]
    ),
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(10**400), 10**400),
    st.floats(allow_nan=False, allow_infinity=False),
    st.decimals(allow_nan=False, allow_infinity=False).map(lambda d: float(d)),
    _strings,
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(_ELEMENTS) | _strings, inner, max_size=5)
    ),
    max_leaves=25,
)


def _observation() -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "6690-2"}]},
        "subject": {"identifier": {"system": "urn:x", "value": "ZQ78201"}},
        "valueQuantity": {"value": 7.2, "system": "http://unitsofmeasure.org", "code": "10*3/uL"},
    }


@st.composite
def resources(draw: st.DrawFn) -> Any:
    """A plausible resource (Observation or Bundle of Observations) with generated values
    put in at generated places, or any JSON at all."""
    shape = draw(st.sampled_from(["observation", "bundle", "any"]))
    if shape == "any":
        return draw(_json)
    obs = _observation()
    for key, value in draw(st.dictionaries(st.sampled_from(_ELEMENTS), _json, max_size=3)).items():
        obs[key] = value
    if shape == "observation":
        return obs
    entries: list[Any] = [{"resource": obs, "request": {"method": "POST", "url": "Observation"}}]
    entries += draw(st.lists(_json, max_size=2))
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": draw(st.sampled_from(["transaction", "batch", "collection"]) | _strings),
        "entry": entries,
    }
    if draw(st.booleans()):
        bundle["resourceType"] = draw(st.sampled_from(_TYPES))
    return bundle


@st.composite
def inputs(draw: st.DrawFn) -> bytes:
    """JSON bytes (ASCII escapes or raw UTF-8 with surrogates passed through), as a
    file or as an HTTP request record."""
    value = draw(resources())
    ascii_only = draw(st.booleans())
    text = json.dumps(value, ensure_ascii=ascii_only)
    if draw(st.booleans()):  # indentation and nesting as some senders write it
        text = json.dumps(value, ensure_ascii=ascii_only, indent=1)
    body = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        return body
    path = draw(st.sampled_from(["/fhir/Observation", "/fhir", "/fhir/"]))
    headers = {"Content-Type": "application/fhir+json"}
    if draw(st.booleans()):
        headers["X-Request-Id"] = (
            draw(_strings).encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        )
    return record_request(path, headers, body)


def _encodes(value: Any) -> None:
    """What the listener sends: JSON, UTF-8 (a lone surrogate here would be a 500)."""
    json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=inputs())
def test_pipeline_read_answers_every_generated_fhir_input(raw: bytes, engine: Engine) -> None:
    reading = read(raw, engine)
    assert reading.ack is _DISPOSITION_ACK[reading.disposition]
    if reading.disposition is Disposition.REJECTED:
        assert reading.errors
        assert reading.results == ()
    if reading.disposition is Disposition.ACCEPTED:
        assert not reading.errors
    status = http_status(reading.disposition, reading.errors)
    assert status in (201, 400, 422)
    outcome = operation_outcome(issues_of(reading.errors))
    OperationOutcome.model_validate(outcome)
    _encodes(outcome)
    _encodes([r.result.patient.identifier.key for r in reading.results])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=inputs())
def test_fhir_entry_responses_of_every_generated_input_are_valid(raw: bytes) -> None:
    found = read_input(raw, system_base="urn:test")
    for verdict in found.entries:
        response = entry_response(verdict)
        OperationOutcome.model_validate(response["outcome"])
        _encodes(response)
    _encodes(found.key)
