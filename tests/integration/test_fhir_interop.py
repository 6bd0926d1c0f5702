"""``prpgate serve`` as a process with its FHIR listener on, driven by FHIR clients
nobody here wrote: fhirpy (beda.software) posts and searches, fhirclient (SMART on
FHIR) reads the CapabilityStatement with its own R4 models; python-hl7's MLLPClient
sends the HL7 v2 side of the same patient."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fhirclient.server import FHIRServer
from fhirpy import SyncFHIRClient
from hl7.client import MLLPClient

from tests.conftest import load
from tests.integration.test_mllp_serve import IO_TIMEOUT, Server, start_server

# fixtures/cbc_high_wbc.hl7: ZQ70002 with PID-3's assigning authority
# NORTHHOSP&2.16.840.1.113883.3.9999.2&ISO, WBC 23.4 (leukocytosis high)
NORTHHOSP = "urn:oid:2.16.840.1.113883.3.9999.2"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Server, str]]:
    server = start_server(
        tmp_path, "fhir", PRPGATE_FHIR_HTTP_ENABLED="true", PRPGATE_FHIR_HTTP_PORT="0"
    )
    try:
        port = json.loads((tmp_path / "fhir.ready.json").read_text())["fhir_http_port"]
        yield server, f"http://127.0.0.1:{port}/fhir"
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(timeout=IO_TIMEOUT)


def crp(value: float, ident: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "identifier": [{"system": "urn:lab:north:obs", "value": ident}],
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "1988-5"}]},
        "subject": {"identifier": {"system": NORTHHOSP, "value": "ZQ70002"}},
        "effectiveDateTime": "2025-03-20T07:00:00+01:00",
        "valueQuantity": {"value": value, "system": "http://unitsofmeasure.org", "code": "mg/L"},
    }


@pytest.mark.slow
def test_fhir_interop_fhirpy_posts_and_reads_back_beside_hl7(served: tuple[Server, str]) -> None:
    server, base = served
    with MLLPClient("127.0.0.1", server.mllp_port) as mllp:
        ack = mllp.send_message(load("cbc_high_wbc.hl7"))
    assert b"MSA|CA|PRPFX0002" in ack or b"MSA|AA|PRPFX0002" in ack
    client = SyncFHIRClient(
        base,
        extra_headers={"Prefer": "return=representation"},
        requests_config={"timeout": IO_TIMEOUT},
    )
    created = client.resource("Observation", **crp(150, "CRP-1"))
    created.save()
    assert created["valueQuantity"]["value"] == 150  # the representation came back
    plain = SyncFHIRClient(base, requests_config={"timeout": IO_TIMEOUT})
    answer = plain.execute("Observation", method="post", data=crp(150, "CRP-1"))
    assert answer["resourceType"] == "OperationOutcome"
    assert "retransmit" in answer["issue"][0]["diagnostics"]
    issues = (
        client.resources("DetectedIssue")
        .search(**{"patient.identifier": f"{NORTHHOSP}|ZQ70002"})
        .fetch_all()
    )
    assert sorted((i["code"]["coding"][1]["code"], i["severity"]) for i in issues) == [
        ("inflammation", "high"),
        ("leukocytosis", "high"),
    ]
    flags = client.resources("Flag").search(**{"patient.identifier": "ZQ70002"}).fetch_all()
    assert {f["subject"]["identifier"]["system"] for f in flags} == {NORTHHOSP}
    assert sorted(f["status"] for f in flags) == ["active", "active"]
    status, _, metrics = server.http("/metrics")
    assert status == 200
    assert 'prpgate_fhir_http_requests_total{route="observation",status="201"} 1.0' in metrics
    assert 'prpgate_fhir_http_requests_total{route="observation",status="200"} 1.0' in metrics
    assert 'prpgate_messages_total{disposition="accepted",type="Observation"} 1.0' in metrics
    assert server.stop(signal.SIGTERM) == 0


@pytest.mark.slow
def test_fhir_interop_transaction_with_fhirpy_and_capability_with_fhirclient(
    served: tuple[Server, str],
) -> None:
    server, base = served
    patient_url = "urn:uuid:7c5e1b2a-4d3f-4e8a-9b1c-2d3e4f5a6b7c"
    obs = crp(4.0, "CRP-2")
    obs["subject"] = {"reference": patient_url}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": patient_url,
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": NORTHHOSP, "value": "ZQ79301"}],
                },
                "request": {"method": "POST", "url": "Patient"},
            },
            {"resource": obs, "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    client = SyncFHIRClient(base, requests_config={"timeout": IO_TIMEOUT})
    answer = client.execute("", method="post", data=bundle)
    assert answer["type"] == "transaction-response"
    assert [e["response"]["status"] for e in answer["entry"]] == ["200 OK", "201 Created"]
    # CRP 4.0 mg/L decides nothing: no finding for that patient
    assert client.resources("Flag").search(**{"patient.identifier": "ZQ79301"}).fetch_all() == []
    smart = FHIRServer(None, base_uri=f"{base}/")
    smart.get_capability()
    statement = smart.capabilityStatement
    assert statement.fhirVersion == "4.0.1"
    assert statement.format == ["application/fhir+json", "json"]
    rest = statement.rest[0]
    kinds = {r.type: [i.code for i in r.interaction] for r in rest.resource}
    assert kinds == {
        "Observation": ["create"],
        "DetectedIssue": ["search-type"],
        "Flag": ["search-type"],
    }
    assert [i.code for i in rest.interaction] == ["transaction", "batch"]
    status, _, ready = server.http("/readyz")
    assert status == 200
    assert json.loads(ready)["fhir_http"] is True
    assert server.stop(signal.SIGTERM) == 0
