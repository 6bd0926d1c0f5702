"""The listeners on the bad inputs the catalogue (tests/bad_inputs/) and fuzzing found
answered wrongly: FHIR JSON or an HTTP request inside an MLLP frame (was processed as
FHIR and answered AA), a FHIR POST asking for an XML answer (was refused with 406 and
not stored), and a failure while reading a connection (was silent). Real sockets on
127.0.0.1, SQLite on disk."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path

import httpx
import structlog

from prpgate.core.fhir_request import record_request
from prpgate.core.mllp import frame
from prpgate.core.pipeline import Engine
from prpgate.ingest import Ingested
from prpgate.listeners.mllp import MllpConfig, MllpListener
from prpgate.ports import MessageRecord
from prpgate.store.sqlite import SqliteStore
from tests.conftest import FixedClock
from tests.integration.test_fhir_http import FHIR_JSON, observation, outcome, scenario
from tests.integration.test_mllp import (
    READ_TIMEOUT,
    Events,
    err,
    harness,
    message,
    msa,
    read_frames,
    run,
)


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
            headers = [i.reading.header for i in h.events.items]  # what was processed
            assert [x.control_id if x else None for x in headers] == ["AFTERJSON"]
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


class BrokenCommitter:
    """A Committer with a bug: submitting raises something that is not a StoreError."""

    def submit(self, raw: bytes, *, source: str, received_at: datetime) -> asyncio.Future[Ingested]:
        raise RuntimeError("a bug in the committer")

    def submit_record(self, record: MessageRecord) -> asyncio.Future[int]:
        raise RuntimeError("a bug in the committer")


def test_mllp_reader_failure_is_logged_and_counted_not_silent() -> None:
    async def go() -> None:
        events = Events()
        listener = MllpListener(
            MllpConfig(host="127.0.0.1", port=0),
            BrokenCommitter(),
            clock=FixedClock(),
            events=events,
        )
        await listener.start()
        try:
            with structlog.testing.capture_logs() as logs:
                reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
                writer.write(frame(message("BROKEN1")))
                closed = await asyncio.wait_for(reader.read(), READ_TIMEOUT)
                writer.close()
                for _ in range(100):  # the handler logs as the connection closes
                    if any(e["event"] == "mllp connection closed" for e in logs):
                        break
                    await asyncio.sleep(0.02)
            assert closed == b""  # nothing could be committed, so nothing is acknowledged
            failed = [e for e in logs if e["event"] == "mllp reader failed"]
            assert [(e["log_level"], e["error"]) for e in failed] == [("error", "RuntimeError")]
            assert "a bug in the committer" not in str(failed)  # the type only
            assert events.faults["reader"] == 1
        finally:
            await listener.stop(5.0)

    run(go())
