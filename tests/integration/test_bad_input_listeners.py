"""The listeners on the bad inputs the catalogue (tests/bad_inputs/) found answered
wrongly: FHIR JSON or an HTTP request inside an MLLP frame (was processed as FHIR and
answered AA), and a FHIR POST asking for an XML answer (was refused with 406 and not
stored). Real sockets on 127.0.0.1, SQLite on disk."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from prpgate.core.fhir_request import record_request
from prpgate.core.mllp import frame
from prpgate.core.pipeline import Engine
from prpgate.store.sqlite import SqliteStore
from tests.integration.test_fhir_http import FHIR_JSON, observation, outcome, scenario
from tests.integration.test_mllp import err, harness, message, msa, read_frames, run


def test_mllp_frame_holding_fhir_json_is_refused_recorded_and_never_processed(
    tmp_path: Path, engine: Engine
) -> None:
    body = json.dumps(observation(7.2, "MLLP-JSON")).encode()
    request = record_request("/fhir/Observation", {"Content-Type": "application/fhir+json"}, body)

    async def go() -> None:
        async with harness(tmp_path, engine) as h:
            reader, writer = await h.connect()
            writer.write(frame(body) + frame(request) + frame(message("AFTERJSON")))
            first, second, good = await read_frames(reader, 3)
            for ack in (first, second):
                assert msa(ack)[1:3] == ["AR", '""']
                error = err(ack)
                assert error[3].split("^")[0] == "100"
                assert "not an HL7 v2 message" in error[8]
            assert msa(good)[1:3] == ["AA", "AFTERJSON"]
            rows = h.rows()
            assert [(r["status"], r["ack_code"], r["raw"]) for r in rows[:2]] == [
                ("rejected", "AR", body),
                ("rejected", "AR", request),
            ]
            assert [r["message_type"] for r in rows[:2]] == ["", ""]  # not read as FHIR
            assert [i.reading.header.control_id for i in h.events.items] == ["AFTERJSON"]
            assert h.events.faults["not-hl7"] == 2
            writer.close()

    run(go())


def test_fhir_http_post_asking_for_xml_is_406_and_stored(engine: Engine, tmp_path: Path) -> None:
    async def body(base: str, store: SqliteStore) -> None:
        sent = json.dumps(observation(7.2, "XML-ACCEPT")).encode()
        async with httpx.AsyncClient(timeout=10) as client:
            by_accept = await client.post(
                f"{base}/Observation",
                content=sent,
                headers={**FHIR_JSON, "Accept": "application/fhir+xml"},
            )
            by_format = await client.post(
                f"{base}/Observation?_format=xml", content=sent, headers=FHIR_JSON
            )
            metadata = await client.get(f"{base}/metadata", params={"_format": "xml"})
        for answer in (by_accept, by_format):
            assert answer.status_code == 406
            assert outcome(answer)[0]["code"] == "not-supported"
        assert metadata.status_code == 406  # a GET has no input to keep
        rows = store.list_messages()
        assert len(rows) == 2
        for row in rows:
            assert row.raw.startswith(b"POST /fhir/Observation HTTP/1.1\r\n")
            assert row.raw.endswith(b"\r\n\r\n" + sent)
            assert (row.status, json.loads(row.summary)["http_status"]) == ("rejected", 406)

    scenario(tmp_path, engine, body)
