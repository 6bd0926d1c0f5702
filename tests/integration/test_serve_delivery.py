"""`prpgate serve` end to end: ORU^R01 in over MLLP, DetectedIssue and Flag out to a
real FHIR server process, exactly once."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hl7.client import MLLPClient

from tests.conftest import load
from tests.fhirserver.process import FhirServer
from tests.integration.test_mllp_serve import ack_fields, serving


def _resources(snapshot: dict[str, Any]) -> list[dict[str, Any]]:
    """The current version of every resource the test server holds."""
    held: dict[str, list[dict[str, Any]]] = snapshot["resources"]
    return [versions[-1] for versions in held.values()]


def test_serve_delivers_what_it_acked_to_the_clinic_server(tmp_path: Path) -> None:
    fhir = FhirServer(tmp_path)
    fhir.start()
    try:
        with serving(
            tmp_path,
            PRPGATE_FHIR_BASE_URL=fhir.base,
            PRPGATE_DELIVERY_IDLE_POLL="0.05",
        ) as server:
            with MLLPClient("127.0.0.1", server.mllp_port) as client:
                ack = client.send_message(load("cbc_high_wbc.hl7").decode())
            # the fixture asks for enhanced mode (MSH-15 AL, MSH-16 NE): commit accept
            assert ack_fields(ack if isinstance(ack, bytes) else ack.encode()) == (
                "CA",
                "PRPFX0002",
            )
            deadline = time.monotonic() + 20
            held: list[dict[str, Any]] = []
            while time.monotonic() < deadline:
                held = _resources(fhir.snapshot())
                if len(held) >= 2:
                    break
                time.sleep(0.1)
            time.sleep(0.5)  # a duplicate write, were there one, would land by now
            depth = ""
            while time.monotonic() < deadline:  # the gauge reads the store at scrape time
                text = server.http("/metrics")[2]
                depth = next(
                    line for line in text.splitlines() if line.startswith("prpgate_outbox_depth ")
                )
                if depth == "prpgate_outbox_depth 0.0":
                    break
                time.sleep(0.1)
            snapshot = fhir.snapshot()
            held = _resources(snapshot)
            versions = snapshot["resources"]
            server.stop()
    finally:
        fhir.stop()
    assert depth == "prpgate_outbox_depth 0.0"  # delivered rows leave the depth
    # exactly one resource per output, each written once
    assert sorted(r["resourceType"] for r in held) == ["DetectedIssue", "Flag"]
    assert all(len(v) == 1 for v in versions.values())
    issue = next(r for r in held if r["resourceType"] == "DetectedIssue")
    flag = next(r for r in held if r["resourceType"] == "Flag")
    assert issue["severity"] == "high"
    assert flag["status"] == "active"
    assert flag["code"]["text"] == "PRP on hold: leukocytosis"
