"""The FHIR reader (core.fhir_in and its helpers) on literal resources written here."""

from __future__ import annotations

import json
from typing import Any

from prpgate.core.fhir_in import EntryKind, read_input
from prpgate.core.fhir_observation import fhir_sort_key
from prpgate.core.fhir_request import looks_like_fhir, record_request, split_ndjson, unwrap
from prpgate.core.model import ResultStatus
from prpgate.core.timestamps import parse_ts

BASE = "https://prpgate.example/fhir/sid/assigning-authority"
MRN_SYSTEM = "urn:oid:2.16.840.1.113883.3.9999.2"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def patient(pid: str = "p1", mrn: str = "ZQ79101") -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [
            {"system": "urn:other", "value": "X-1"},
            {
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}
                    ]
                },
                "system": MRN_SYSTEM,
                "value": mrn,
            },
        ],
        "name": [{"family": "Quarrie", "given": ["Ottoline"]}],
        "birthDate": "1961-02-03",
        "gender": "female",
    }


def observation(**extra: Any) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [{"system": "urn:lab:obs", "value": "O-1"}],
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "6690-2", "display": "WBC"}]},
        "subject": {"identifier": {"system": MRN_SYSTEM, "value": "ZQ79101"}},
        "effectiveDateTime": "2026-01-10T08:00:00+01:00",
        "valueQuantity": {"value": 12.30, "unit": "x10*9/L", "system": UCUM, "code": "10*9/L"},
    }
    obs.update(extra)
    return obs


def read(resource: dict[str, Any] | bytes) -> Any:
    raw = resource if isinstance(resource, bytes) else json.dumps(resource).encode()
    return read_input(raw, system_base=BASE)


def test_read_input_observation_value_quantity_prefers_ucum_code() -> None:
    raw = json.dumps(observation()).replace('"value": 12.3,', '"value": 12.30,').encode()
    assert b"12.30" in raw
    found = read(raw)
    assert found.errors == ()
    (r,) = found.results
    assert r.value_text == "12.30"  # the decimal as sent, precision kept
    assert r.unit_text == "10*9/L"
    assert r.value_type == "NM"
    assert r.status is ResultStatus.FINAL
    assert [(c.system, c.code) for c in r.codes] == [(LOINC, "6690-2")]
    assert r.patient.identifier.key == f"{MRN_SYSTEM}|ZQ79101"
    assert r.key.order == "Observation?identifier=urn:lab:obs|O-1"
    assert r.effective == "2026-01-10T08:00:00+01:00"
    assert found.key == "Observation?identifier=urn:lab:obs|O-1"


def test_read_input_quantity_with_only_a_unit_uses_the_unit_text() -> None:
    found = read(observation(valueQuantity={"value": 7, "unit": "K/uL"}))
    assert found.results[0].unit_text == "K/uL"
    assert found.results[0].value_text == "7"


def test_read_input_comparator_and_value_string() -> None:
    cmp = read(observation(valueQuantity={"value": 20, "comparator": ">", "unit": "10*9/L"}))
    assert (cmp.results[0].comparator_text, cmp.results[0].value_text) == (">", "20")
    obs = observation()
    del obs["valueQuantity"]
    obs["valueString"] = "<5"
    found = read(obs)
    assert (found.results[0].value_type, found.results[0].value_text) == ("ST", "<5")
    assert found.results[0].unit_text == ""


def test_read_input_data_absent_reason_leaves_no_value_and_says_why() -> None:
    obs = observation()
    del obs["valueQuantity"]
    obs["dataAbsentReason"] = {
        "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "error"}
        ]
    }
    found = read(obs)
    assert found.results[0].value_text == ""
    assert any("dataAbsentReason: error" in w for w in found.warnings)


def test_read_input_components_are_results_of_their_own() -> None:
    obs = observation(
        code={"coding": [{"system": LOINC, "code": "58410-2"}]},
        component=[
            {
                "code": {"coding": [{"system": LOINC, "code": "6690-2"}]},
                "valueQuantity": {"value": 3.1, "system": UCUM, "code": "10*9/L"},
            },
            {
                "code": {"coding": [{"system": LOINC, "code": "777-3"}]},
                "valueQuantity": {"value": 44, "system": UCUM, "code": "10*9/L"},
            },
        ],
    )
    del obs["valueQuantity"]
    found = read(obs)
    assert [(r.codes[0].code, r.value_text, r.source) for r in found.results] == [
        ("6690-2", "3.1", "Observation.component[0]"),
        ("777-3", "44", "Observation.component[1]"),
    ]
    assert len({r.key.text for r in found.results}) == 2


def test_read_input_reference_range_interpretation_status_and_period() -> None:
    obs = observation(
        status="amended",
        referenceRange=[{"low": {"value": 4.0}, "high": {"value": 11.0}}],
        interpretation=[
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                        "code": "H",
                    }
                ]
            }
        ],
    )
    del obs["effectiveDateTime"]
    obs["effectivePeriod"] = {"start": "2026-01-09T07:00:00Z", "end": "2026-01-09T08:00:00Z"}
    (r,) = read(obs).results
    assert r.reference_range == "4.0-11.0"
    assert r.abnormal_flags == ("H",)
    assert r.status is ResultStatus.AMENDED
    assert r.effective == "2026-01-09T07:00:00Z"


def test_fhir_sort_key_orders_like_hl7_timestamps() -> None:
    hl7 = parse_ts("202601100800+0100")
    assert hl7 is not None
    assert fhir_sort_key("2026-01-10T08:00:00+01:00") == hl7.sort_key
    assert fhir_sort_key("2026-01-10T07:00:00Z") == hl7.sort_key
    assert fhir_sort_key("2026-01-10") < fhir_sort_key("2026-01-10T00:30:00Z")
    assert fhir_sort_key("not a date") == ""


def test_read_input_contained_patient_is_the_subject() -> None:
    obs = observation(contained=[patient("pat")], subject={"reference": "#pat"})
    (r,) = read(obs).results
    assert r.patient.identifier.key == f"{MRN_SYSTEM}|ZQ79101"  # the MR identifier wins
    assert r.patient.identifier.type_code == "MR"
    assert [i.key for i in r.patient.other_identifiers] == ["urn:other|X-1"]
    assert r.patient.birth_date == "1961-02-03"


def test_read_input_bundle_patient_by_urn_uuid_and_by_relative_reference() -> None:
    for ref, url in (
        ("urn:uuid:5e1a6b39-8a10-4b52-9a4f-2f4f1b8f0c01", None),
        ("Patient/p1", "http://lab.example/fhir/Patient/p1"),
    ):
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": url or ref,
                    "resource": patient(),
                    "request": {"method": "POST", "url": "Patient"},
                },
                {
                    "fullUrl": "urn:uuid:0b6f3c52-0c7e-4c0e-9a8e-6d0c8c2b1f10",
                    "resource": observation(subject={"reference": ref}),
                    "request": {"method": "POST", "url": "Observation"},
                },
            ],
        }
        found = read(bundle)
        assert found.errors == ()
        assert found.results[0].patient.identifier.key == f"{MRN_SYSTEM}|ZQ79101"
        assert [v.kind for v in found.entries] == [EntryKind.CONTEXT, EntryKind.PROCESSED]


def test_read_input_plain_reference_is_an_identity_of_its_own() -> None:
    found = read(observation(subject={"reference": "Patient/123"}))
    assert found.results[0].patient.identifier.key == f"{BASE}/reference|Patient/123"
    assert any("known only by its reference" in w for w in found.warnings)


def test_read_input_identifier_without_system_is_scoped_to_the_sender() -> None:
    obs = observation(subject={"identifier": {"value": "M-7"}}, meta={"source": "urn:lab:northlab"})
    (r,) = read(obs).results
    assert r.patient.identifier.key == f"{BASE}/facility/urn%3Alab%3Anorthlab|M-7"
    assert r.sending_facility == "urn:lab:northlab"


def test_read_input_observation_without_subject_cannot_be_processed() -> None:
    obs = observation()
    del obs["subject"]
    found = read(obs)
    assert not found.rejected
    assert [(e.location, e.code) for e in found.errors] == [("Observation.subject", 101)]


def test_read_input_subject_that_is_not_a_patient_cannot_be_processed() -> None:
    found = read(observation(subject={"reference": "Group/g1"}))
    assert found.errors
    assert "not a Patient" in found.errors[0].reason


def test_read_input_invalid_resource_is_rejected_with_fhirpath_locations() -> None:
    obs = observation(status="done", valueQuantity={"value": "twelve"}, colour="red")
    found = read(obs)
    assert found.rejected
    assert sorted(e.location for e in found.errors) == [
        "Observation.colour",
        "Observation.status",
        "Observation.valueQuantity.value",
    ]


def test_read_input_malformed_json_names_line_and_column() -> None:
    found = read(b'{"resourceType": "Observation",\n  "status": }')
    assert found.rejected
    assert found.errors[0].location == "line 2, column 13"
    assert found.key == ""


def test_read_input_bom_and_whitespace_are_accepted() -> None:
    found = read(b"\xef\xbb\xbf\n  " + json.dumps(observation()).encode())
    assert found.errors == ()
    assert len(found.results) == 1


def test_read_input_wrong_types_are_refused_with_not_supported() -> None:
    refused = read(patient())
    assert refused.rejected
    assert refused.errors[0].code == 200
    posted = read_input(
        record_request("/fhir/Observation", {}, json.dumps(patient()).encode()), system_base=BASE
    )
    assert posted.errors[0].code == 200
    document = read({"resourceType": "Bundle", "type": "document"})
    assert document.errors[0].location == "Bundle.type"
    collection = read_input(
        record_request("/fhir", {}, b'{"resourceType":"Bundle","type":"collection"}'),
        system_base=BASE,
    )
    assert "transaction or batch" in collection.errors[0].reason


def _two_entry_bundle(kind: str) -> dict[str, Any]:
    bad = observation(identifier=[{"value": "O-2"}], status="nonsense")
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            {"resource": observation(), "request": {"method": "POST", "url": "Observation"}},
            {"resource": bad, "request": {"method": "POST", "url": "Observation"}},
            {"resource": {"resourceType": "Claim"}, "request": {"method": "POST", "url": "Claim"}},
        ],
    }


def test_read_input_transaction_is_all_or_nothing() -> None:
    found = read(_two_entry_bundle("transaction"))
    assert found.rejected
    assert [e.location for e in found.errors] == ["Bundle.entry[1].resource.status"]
    assert found.results == ()


def test_read_input_batch_entries_stand_alone() -> None:
    found = read(_two_entry_bundle("batch"))
    assert not found.rejected
    assert found.errors == ()
    assert len(found.results) == 1
    assert [v.kind for v in found.entries] == [
        EntryKind.PROCESSED,
        EntryKind.INVALID,
        EntryKind.IGNORED,
    ]
    assert any(w.startswith("Bundle.entry[1].resource.status") for w in found.warnings)


def test_read_input_unsupported_request_method_in_a_batch_entry() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "DELETE", "url": "Observation/1"}}],
    }
    (verdict,) = read(bundle).entries
    assert verdict.kind is EntryKind.UNSUPPORTED


def test_read_input_diagnostic_report_lends_subject_and_panel_code() -> None:
    obs = observation()
    del obs["subject"]
    report = {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "58410-2"}]},
        "subject": {"reference": "urn:uuid:6a2c0e57-6e0a-4c7d-8c57-0f4b6f0a1e21"},
        "effectiveDateTime": "2026-01-10T07:30:00Z",
        "result": [{"reference": "urn:uuid:9d2f3a11-1a4b-4c55-8f77-3b3f3e7f2a90"}],
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:6a2c0e57-6e0a-4c7d-8c57-0f4b6f0a1e21", "resource": patient()},
            {"fullUrl": "urn:uuid:1f0e0d0c-0b0a-4909-8807-060504030201", "resource": report},
            {"fullUrl": "urn:uuid:9d2f3a11-1a4b-4c55-8f77-3b3f3e7f2a90", "resource": obs},
        ],
    }
    (r,) = read(bundle).results
    assert r.order_code == "58410-2"
    assert r.patient.identifier.value == "ZQ79101"


def test_read_input_diagnostic_report_contained_observations_are_read() -> None:
    obs = observation(id="wbc")
    report = {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "58410-2"}]},
        "subject": {"identifier": {"system": MRN_SYSTEM, "value": "ZQ79101"}},
        "contained": [obs],
        "result": [{"reference": "#wbc"}, {"reference": "Observation/elsewhere"}],
    }
    found = read(report)
    assert [r.source for r in found.results] == ["DiagnosticReport.contained[0]"]
    assert any("Observation/elsewhere is not in this input" in w for w in found.warnings)


def test_read_input_keys_prefer_the_clients_request_id_then_if_none_exist() -> None:
    body = json.dumps(observation()).encode()
    with_id = unwrap(
        record_request("/fhir/Observation", {"X-Request-Id": "r-1", "Authorization": "x"}, body)
    )
    assert with_id.header("x-request-id") == "r-1"
    assert with_id.header("authorization") == ""  # credentials are never recorded
    assert with_id.body == body
    assert with_id.interaction == "create"
    keyed = read_input(
        record_request("/fhir/Observation", {"x-request-id": "r-1"}, body), system_base=BASE
    )
    assert keyed.key == "request:r-1"
    conditional = read_input(
        record_request("/fhir/Observation", {"If-None-Exist": "identifier=a|b"}, body),
        system_base=BASE,
    )
    assert conditional.key == "if-none-exist:identifier=a|b"
    anonymous = observation()
    del anonymous["identifier"]
    assert read(anonymous).key.startswith("sha256:")


def test_read_input_content_hash_ignores_whitespace_and_key_order() -> None:
    obs = observation()
    compact = json.dumps(obs, separators=(",", ":")).encode()
    spread = json.dumps(dict(reversed(list(obs.items()))), indent=2).encode()
    assert read(compact).content_hash == read(spread).content_hash
    assert read(compact).content_hash != read(observation(status="corrected")).content_hash


def test_looks_like_fhir_tells_json_and_records_from_hl7() -> None:
    assert looks_like_fhir(b'\xef\xbb\xbf  {"resourceType":"Observation"}')
    assert looks_like_fhir(b"POST /fhir HTTP/1.1\r\n\r\n{}")
    assert not looks_like_fhir(b"MSH|^~\\&|LAB")
    assert not looks_like_fhir(b"\x0bMSH|^~\\&|LAB")


def test_split_ndjson_lines_and_single_documents() -> None:
    lines = split_ndjson(b'{"a":1}\n\n{"b":2}\n')
    assert lines == [b'{"a":1}', b'{"b":2}']
    assert split_ndjson(b'{\n  "a": 1\n}\n') is None  # pretty-printed: one document
    assert split_ndjson(b'{"a":1}\n') is None


def test_read_input_every_observation_status_maps_to_its_result_status() -> None:
    for status in (
        "registered",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "cancelled",
        "entered-in-error",
        "unknown",
    ):
        (r,) = read(observation(status=status)).results
        assert r.status.value == status
    assert [s.value for s in ResultStatus if s.is_deciding] == ["final", "amended", "corrected"]
