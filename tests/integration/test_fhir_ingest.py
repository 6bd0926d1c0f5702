"""FHIR input through ingest into SQLite files on disk: dedup of retransmits, amended
and retracted Observations, and one patient seen through HL7 v2 and FHIR."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prpgate.core.fhir_request import record_request
from prpgate.core.pipeline import Disposition, Engine
from prpgate.ingest import Ingested, ingest
from prpgate.replay import replay
from prpgate.store.sqlite import SqliteStore
from tests.conftest import FIXED_NOW, FIXTURES, FixedClock, load

# fixtures/cbc_high_wbc.hl7: PID-3 ZQ70002^^^NORTHHOSP&2.16.840.1.113883.3.9999.2&ISO^MR,
# WBC 23.4 10*3/uL at 2025-03-14T07:08+01:00 (leukocytosis high)
NORTHHOSP = "urn:oid:2.16.840.1.113883.3.9999.2"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def observation(
    value: float, *, code: str = "6690-2", unit: str = "10*9/L", **extra: Any
) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [{"system": "urn:lab:north:obs", "value": f"OBS-{code}"}],
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"identifier": {"system": NORTHHOSP, "value": "ZQ70002"}},
        "effectiveDateTime": "2025-03-20T07:00:00+01:00",
        "valueQuantity": {"value": value, "system": UCUM, "code": unit},
    }
    obs.update(extra)
    return obs


def run(store: SqliteStore, engine: Engine, raw: bytes) -> Ingested:
    with store.session() as session:
        return ingest(session, engine, raw, source="test", received_at=FIXED_NOW)


def body(resource: dict[str, Any], **dumps: Any) -> bytes:
    return json.dumps(resource, **dumps).encode()


def test_fhir_ingest_retransmit_is_a_duplicate_and_new_content_is_processed(
    engine: Engine, tmp_path: Path
) -> None:
    store = SqliteStore(tmp_path / "s.sqlite")
    try:
        first = run(store, engine, body(observation(23.4)))
        again = run(store, engine, body(observation(23.4), indent=2))  # re-serialised
        amended = run(store, engine, body(observation(9.1, status="amended")))
        rows = {r.id: r for r in store.list_messages()}
        outputs = store.outputs()
    finally:
        store.close()
    assert first.disposition is Disposition.ACCEPTED
    assert [e.kind.value for e in first.emitted] == ["DetectedIssue", "Flag"]
    assert again.disposition is Disposition.DUPLICATE
    assert again.duplicate_of == first.message_id
    assert amended.disposition is Disposition.ACCEPTED
    assert amended.reuse_of == first.message_id  # same identity, new content
    assert (
        rows[first.message_id].control_id == "Observation?identifier=urn:lab:north:obs|OBS-6690-2"
    )
    assert rows[first.message_id].sending_application == "FHIR"
    # the amended value (9.1) no longer supports the finding it replaced
    assert sorted((o.kind, o.status) for o in outputs) == [
        ("DetectedIssue", "entered-in-error"),
        ("Flag", "inactive"),
    ]


def test_fhir_ingest_entered_in_error_retracts_what_it_caused(
    engine: Engine, tmp_path: Path
) -> None:
    store = SqliteStore(tmp_path / "s.sqlite")
    try:
        run(store, engine, body(observation(150, code="1988-5", unit="mg/L")))
        retract = observation(150, code="1988-5", unit="mg/L", status="entered-in-error")
        run(store, engine, body(retract))
        outputs = store.outputs()
    finally:
        store.close()
    assert sorted((o.kind, o.rule, o.status) for o in outputs) == [
        ("DetectedIssue", "inflammation", "entered-in-error"),
        ("Flag", "inflammation", "inactive"),
    ]


def test_fhir_ingest_request_id_retransmit_with_other_bytes_is_a_duplicate(
    engine: Engine, tmp_path: Path
) -> None:
    obs = observation(3.1)
    del obs["identifier"]  # no identity of its own: the client's X-Request-Id keys it
    store = SqliteStore(tmp_path / "s.sqlite")
    try:
        a = run(
            store, engine, record_request("/fhir/Observation", {"X-Request-Id": "q-1"}, body(obs))
        )
        b = run(
            store,
            engine,
            record_request("/fhir/Observation", {"X-Request-Id": "q-1"}, body(obs, indent=1)),
        )
        c = run(
            store, engine, record_request("/fhir/Observation", {"X-Request-Id": "q-2"}, body(obs))
        )
        rows = {r.id: r for r in store.list_messages()}
    finally:
        store.close()
    assert (a.disposition, b.disposition) == (Disposition.ACCEPTED, Disposition.DUPLICATE)
    assert c.disposition is Disposition.ACCEPTED  # another request: processed again
    # the same DetectedIssue (its detail now names the later request), no second one
    assert [(e.identifier, e.version) for e in c.emitted] == [(a.emitted[0].identifier, 2)]
    assert rows[a.message_id].control_id == "request:q-1"
    assert rows[a.message_id].raw.startswith(b"POST /fhir/Observation HTTP/1.1\r\n")


def test_fhir_ingest_invalid_input_is_recorded_with_raw_and_locations(
    engine: Engine, tmp_path: Path
) -> None:
    store = SqliteStore(tmp_path / "s.sqlite")
    raw = body(observation(5.0, status="done"))
    try:
        item = run(store, engine, raw)
        (row,) = store.list_messages()
    finally:
        store.close()
    assert (item.disposition, item.ack.value) == (Disposition.REJECTED, "AR")
    assert row.raw == raw
    assert [e["location"] for e in json.loads(row.errors)] == ["Observation.status"]


def test_fhir_and_hl7_results_of_one_patient_share_identity_and_state(
    engine: Engine, tmp_path: Path
) -> None:
    """HL7 v2 raises leukocytosis for ZQ70002; a later FHIR WBC of 7.2 for the same
    identifier (system urn:oid:… as PID-3's ISO assigning authority gives) clears it,
    and a FHIR CRP of 150 mg/L raises inflammation for the same patient."""
    store = SqliteStore(tmp_path / "s.sqlite")
    try:
        replay(store, engine, [FIXTURES / "cbc_high_wbc.hl7"], clock=FixedClock())
        run(store, engine, body(observation(7.2)))
        run(store, engine, body(observation(150, code="1988-5", unit="mg/L")))
        outputs = store.outputs()
    finally:
        store.close()
    assert {o.patient_key for o in outputs} == {f"{NORTHHOSP}|ZQ70002"}
    states = sorted((o.kind, o.rule, o.status) for o in outputs)
    assert states == [
        ("DetectedIssue", "inflammation", "final"),
        ("DetectedIssue", "leukocytosis", "final"),
        ("Flag", "inflammation", "active"),
        ("Flag", "leukocytosis", "inactive"),
    ]
    subjects = {
        json.dumps(json.loads(o.resource)["subject"], sort_keys=True)
        for o in outputs
        if o.kind == "Flag"
    }
    assert subjects == {json.dumps({"identifier": {"system": NORTHHOSP, "value": "ZQ70002"}})}
    assert b"ZQ70002" in load("cbc_high_wbc.hl7")


def test_fhir_replay_reads_ndjson_lines_as_inputs(engine: Engine, tmp_path: Path) -> None:
    lines = [
        body(observation(23.4, identifier=[{"system": "urn:x", "value": "1"}])),
        body(observation(1.2, code="777-3", identifier=[{"system": "urn:x", "value": "2"}])),
        b'{"resourceType": "Observation", "status": }',
    ]
    path = tmp_path / "results.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    store = SqliteStore(tmp_path / "s.sqlite")
    try:
        stats = replay(store, engine, [path], clock=FixedClock())
        sources = sorted(r.source for r in store.list_messages())
    finally:
        store.close()
    assert dict(stats.dispositions) == {"accepted": 2, "rejected": 1}
    assert sources == [f"{path}#1", f"{path}#2", f"{path}#3"]
    assert stats.outputs == {"DetectedIssue final": 2, "Flag active": 2}
