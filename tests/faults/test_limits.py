"""Limits that keep one peer or one input from taking the process: MLLP connections per
peer address, and FHIR Bundle entries (over HTTP, from a ``prpgate serve`` process).

Message size limits are tested where they live: ``test_mllp_oversize_rejected_with_err_
and_connection_kept`` (MLLP) and ``test_fhir_http_chunked_body_over_the_limit``/the 413
cases in tests/integration/test_fhir_http.py.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import httpx
from structlog.testing import capture_logs

from prpgate.core.mllp import frame
from prpgate.core.pipeline import Engine
from tests.faults.serve_process import ServeProcess
from tests.integration.test_mllp import closed_by_server, harness, message, msa, read_frames, run
from tests.unit.test_fhir_bundle_limit import bundle_of


def test_limits_mllp_connections_per_peer_refused_logged_counted(
    tmp_path: Path, engine: Engine
) -> None:
    async def scenario() -> None:
        async with harness(tmp_path, engine, max_connections_per_peer=2) as h:
            admitted = [await h.connect() for _ in range(2)]
            for n, (r, w) in enumerate(admitted):
                w.write(frame(message(f"PEER{n}")))
                [ack] = await read_frames(r, 1)
                assert msa(ack)[1:3] == ["AA", f"PEER{n}"]
            with capture_logs() as logs:
                r3, w3 = await h.connect()
                assert await closed_by_server(r3)  # a third from the same address: refused
            assert h.events.faults["peer_limit"] == 1
            refused = [e for e in logs if e.get("reason") == "per-peer limit"]
            assert [(e["event"], e["open_from_peer"]) for e in refused] == [
                ("mllp connection refused", 2)
            ]
            admitted[0][1].close()
            for _ in range(500):  # the slot is given back when the connection ends
                if h.listener.open_connections == 1:
                    break
                await asyncio.sleep(0.01)
            r4, w4 = await h.connect()
            w4.write(frame(message("PEER4")))
            [ack] = await read_frames(r4, 1)
            assert msa(ack)[1:3] == ["AA", "PEER4"]
            for w in (admitted[1][1], w3, w4):
                w.close()
        assert [r["control_id"] for r in h.rows()] == ["PEER0", "PEER1", "PEER4"]

    run(scenario())


def test_limits_fhir_bundle_over_the_entry_limit_answered_400_and_stored(
    tmp_path: Path, fault_logs: Path
) -> None:
    serve = ServeProcess(tmp_path, fault_logs, PRPGATE_MAX_BUNDLE_ENTRIES="5")
    try:
        serve.start()
        with httpx.Client(timeout=15) as client:
            over = client.post(
                serve.fhir_base,
                content=bundle_of(6).replace(b'"collection"', b'"batch"'),
                headers={"Content-Type": "application/fhir+json", "X-Request-Id": "OVER"},
            )
            at = client.post(
                serve.fhir_base,
                content=bundle_of(5).replace(b'"collection"', b'"batch"'),
                headers={"Content-Type": "application/fhir+json", "X-Request-Id": "AT"},
            )
        assert serve.stop() == 0
    finally:
        serve.kill()
    assert over.status_code == 400
    (issue,) = over.json()["issue"]
    # stored errors carry HL7 codes; 100 reads back as the FHIR issue type "structure"
    assert (issue["code"], issue["expression"], issue["diagnostics"]) == (
        "structure",
        ["Bundle.entry"],
        "the Bundle has 6 entries; the limit is 5",
    )
    assert at.status_code == 200
    assert [e["response"]["status"] for e in at.json()["entry"]] == ["201 Created"] * 5
    db = sqlite3.connect(serve.store)
    try:
        rows = dict(db.execute("SELECT control_id, status FROM messages").fetchall())
        raw = db.execute("SELECT raw FROM messages WHERE control_id = 'request:OVER'").fetchone()
    finally:
        db.close()
    assert rows == {"request:OVER": "rejected", "request:AT": "accepted"}
    assert raw[0].count(b'"fullUrl"') == 6  # the refused input is kept whole
