"""Store faults under a live ``prpgate serve``: the SQLite file's file system full (a
small tmpfs, filled), the store's directory read-only (a read-only bind mount), and
PostgreSQL restarted under load. No positive answer for what was not committed, a clear
error, and recovery once the fault is gone.

A file system cannot be made read-only while the store holds files open for writing (the
kernel refuses with EBUSY), so the read-only case is tested at start. The same failures
at the store seam, without a mount, are in tests/integration/test_mllp.py
(``test_mllp_store_failure_answers_ar_or_ce_so_sender_retries``) and test_fhir_http.py.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx
import pytest
from hl7.client import MLLPClient

from tests.conftest import load
from tests.faults.checks import integrity, stored_statuses
from tests.faults.inputs import cbc_message, observation
from tests.faults.load import ack_of
from tests.faults.mounts import fill, read_only, small_tmpfs
from tests.faults.serve_process import START_TIMEOUT, ServeProcess

IO_TIMEOUT = 15.0


def answer(client: MLLPClient, raw: bytes) -> tuple[str, str, str]:
    """Send one message with python-hl7's client: (MSA-1, MSA-2, HL7 error code)."""
    ack = client.send_message(raw)
    return ack_of((ack if isinstance(ack, bytes) else ack.encode()).strip(b"\x0b\x1c\r"))


def post(serve: ServeProcess, raw: bytes, key: str) -> httpx.Response:
    return httpx.post(
        f"{serve.fhir_base}/Observation",
        content=raw,
        headers={"Content-Type": "application/fhir+json", "X-Request-Id": key},
        timeout=IO_TIMEOUT,
    )


@pytest.mark.slow
def test_store_disk_full_answers_207_then_recovers(tmp_path: Path, fault_logs: Path) -> None:
    with small_tmpfs(tmp_path / "small", "4m") as small:
        serve = ServeProcess(tmp_path, fault_logs, store=small / "store.sqlite")
        before = [cbc_message("DF", n) for n in range(3)]
        during = [cbc_message("DF", n) for n in range(3, 23)]
        enhanced = load("cbc_high_wbc.hl7")  # MSH-15/16 AL/NE: commit ACKs
        obs = observation("DF", 1)
        try:
            serve.start()
            with MLLPClient("127.0.0.1", serve.mllp_port) as client:
                client.socket.settimeout(IO_TIMEOUT)
                assert [answer(client, m.raw)[0] for m in before] == ["AA"] * 3
                filler = fill(small)
                full = [answer(client, m.raw) for m in during]
                full_enhanced = answer(client, enhanced)
                full_fhir = post(serve, obs.raw, obs.key)
                metrics = serve.metrics()
                ready_full = serve.ready()
                filler.unlink()  # space is back
                again = [answer(client, m.raw) for m in during]
                ready_again = serve.ready()
                again_enhanced = answer(client, enhanced)
                again_fhir = post(serve, obs.raw, obs.key)
            assert serve.stop() == 0
        finally:
            serve.kill()
        stored = stored_statuses(serve.store)
        assert integrity(serve.store) == "ok"
    # while full: no positive answer, HL7 error 207 (send again), 503 over HTTP
    assert full == [("AR", m.key, "207") for m in during]
    assert full_enhanced == ("CE", "PRPFX0002", "207")
    assert (full_fhir.status_code, full_fhir.headers["Retry-After"]) == (503, "1")
    assert 'prpgate_mllp_faults_total{kind="store"} 21.0' in metrics
    # a load balancer is told: the store answers reads, but the last commit failed
    assert ready_full[0] == 503
    assert "the last commit failed" in str(ready_full[1]["error"])
    assert ready_again[0] == 200  # a commit succeeded since
    log = serve.log.read_text() if serve.log else ""
    assert "database or disk is full" in log  # the clear error, in the log
    # space back: the same messages accepted, each stored once
    assert again == [("AA", m.key, "") for m in during]
    assert again_enhanced == ("CA", "PRPFX0002", "")
    assert again_fhir.status_code == 201
    for key in [m.key for m in before + during] + ["PRPFX0002", f"request:{obs.key}"]:
        assert stored[key] == Counter({"accepted": 1}), key


@pytest.mark.slow
def test_store_read_only_directory_refused_at_start_then_served(
    tmp_path: Path, fault_logs: Path
) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    serve = ServeProcess(tmp_path, fault_logs, store=folder / "store.sqlite")
    serve.start()  # the store exists, with one message
    with MLLPClient("127.0.0.1", serve.mllp_port) as client:
        client.socket.settimeout(IO_TIMEOUT)
        assert answer(client, cbc_message("RO", 0).raw)[0] == "AA"
    assert serve.stop() == 0
    with read_only(folder):
        for store in (folder / "store.sqlite", folder / "new.sqlite"):
            ro = ServeProcess(tmp_path, fault_logs, store=store)
            proc = ro.spawn()
            assert proc.wait(timeout=START_TIMEOUT) == 2  # a configuration error: no listener
            assert ro.log is not None
            text = "".join(ro.log.read_text().split())  # the terminal wraps lines
            said = f"cannot open SQLite store {store}: unable to open database file"
            assert "".join(f"{said} (its folder {folder} is read-only)".split()) in text
    serve.start()  # writable again: served, nothing lost
    with MLLPClient("127.0.0.1", serve.mllp_port) as client:
        client.socket.settimeout(IO_TIMEOUT)
        assert answer(client, cbc_message("RO", 1).raw)[0] == "AA"
    assert serve.stop() == 0
    stored = stored_statuses(serve.store)
    assert integrity(serve.store) == "ok"
    assert stored["RO000000"] == stored["RO000001"] == Counter({"accepted": 1})
    assert not (folder / "new.sqlite").exists()
