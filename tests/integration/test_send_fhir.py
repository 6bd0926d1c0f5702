"""``prpgate send http(s)://…`` as a process against real HTTP servers (uvicorn processes):
the receiver in tests/fhirreceiver (R4B validation, batch and transaction Bundles, a
bearer token, slow answers) and the delivery test server in tests/fhirserver."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.fhirserver.process import FhirServer, free_port
from tests.integration.test_mllp_serve import rows, serving
from tests.integration.test_send import send

ROOT = Path(__file__).resolve().parents[2]


def observation(oid: str | None = None, *, value: object = 7.2, **extra: Any) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "6690-2"}]},
        "valueQuantity": {"value": value, "system": "http://unitsofmeasure.org", "code": "10*9/L"},
        **extra,
    }
    if oid:
        obs["id"] = oid
    return obs


def bundle(kind: str, *resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            {"resource": r, "request": {"method": "POST", "url": r["resourceType"]}}
            for r in resources
        ],
    }


@contextlib.contextmanager
def receiver(tmp_path: Path, *args: str) -> Iterator[str]:
    """The tests/fhirreceiver process on a free port; yields its base URL."""
    port = free_port()
    log = (tmp_path / f"receiver-{port}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fhirreceiver", "--port", str(port), *args],
        cwd=ROOT,
        stdout=log,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, "the FHIR receiver exited"
            try:
                if httpx.get(f"{base}/metadata", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the FHIR receiver did not start"
                time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def write(folder: Path, name: str, doc: object) -> None:
    (folder / name).write_text(json.dumps(doc))


def test_send_fhir_posts_resources_and_bundles_and_judges_each_answer(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    write(inputs, "a_obs.json", observation("obs-1"))
    write(inputs, "b_no_code.json", {"resourceType": "Observation", "status": "final"})
    write(inputs, "c_batch.json", bundle("batch", observation(), observation(value="abc")))
    write(inputs, "d_transaction.json", bundle("transaction", observation(), observation()))
    lines = "\n".join(json.dumps(observation(f"nd-{n}")) for n in (1, 2))
    (inputs / "e_lines.ndjson").write_text(lines + "\n")
    (inputs / "f_broken.json").write_text('{"resourceType": "Observation", ')
    (inputs / "g_v2.hl7").write_bytes(
        b"MSH|^~\\&|LAB|NORTH|PRP|CLINIC|20260101||ORU^R01|X1|P|2.5.1\r"
    )
    with receiver(tmp_path) as base:
        code, out, err = send(base, str(inputs), "-c", "2")
        received = httpx.get(base.removesuffix("/fhir") + "/_log", timeout=5).json()
    assert code == 1, err
    got = {(Path(o["file"]).name, o["number"]): o for o in out[:-1]}
    assert {k: (o["status"], o["ack_code"], o["positive"]) for k, o in got.items()} == {
        ("a_obs.json", 1): ("answered", "201", True),
        ("b_no_code.json", 1): ("answered", "422", False),
        ("c_batch.json", 1): ("answered", "200", False),
        ("d_transaction.json", 1): ("answered", "200", True),
        ("e_lines.ndjson", 1): ("answered", "201", True),
        ("e_lines.ndjson", 2): ("answered", "201", True),
        ("f_broken.json", 1): ("not-sent", "", False),
        ("g_v2.hl7", 1): ("not-sent", "", False),
    }
    assert got[("a_obs.json", 1)]["control_id"] == "Observation/obs-1"
    assert got[("b_no_code.json", 1)]["error"].startswith("HTTP 422: error: Observation does not")
    assert got[("c_batch.json", 1)]["error"].startswith("entry 2: 422 Unprocessable Entity (error")
    assert got[("f_broken.json", 1)]["error"].startswith("not JSON")
    assert "mllp://" in got[("g_v2.hl7", 1)]["error"]
    summary = out[-1]
    assert (summary["messages"], summary["sent"], summary["positive"]) == (8, 6, 4)
    assert summary["codes"] == {"200": 2, "201": 3, "422": 1}
    # each resource sent once, to the right place
    assert sorted(r["path"] for r in received) == ["/fhir"] * 2 + ["/fhir/Observation"] * 4


def test_send_fhir_bearer_token_from_the_environment(tmp_path: Path) -> None:
    one = tmp_path / "obs.json"
    one.write_text(json.dumps(observation("obs-t")))
    with receiver(tmp_path, "--bearer", "s3cret") as base:
        code, out, _ = send(base, str(one))
        assert code == 1
        assert (out[0]["ack_code"], out[0]["error"]) == (
            "401",
            "HTTP 401: error: a valid bearer token is required",
        )
        code, out, err = send(base, str(one), env={"PRPGATE_SEND_BEARER_TOKEN": "s3cret"})
        assert code == 0, err
        assert (out[0]["ack_code"], out[0]["positive"]) == ("201", True)
        assert "s3cret" not in json.dumps(out)


def test_send_fhir_timeout_is_retried_then_reported(tmp_path: Path) -> None:
    one = tmp_path / "slow.json"
    one.write_text(json.dumps(observation("obs-s", meta={"tag": [{"code": "slow"}]})))
    with receiver(tmp_path, "--slow", "3") as base:
        code, out, _ = send(base, str(one), "--timeout", "0.5", "--retries", "1")
    assert code == 1
    assert (out[0]["status"], out[0]["attempts"], out[0]["positive"]) == ("timeout", 2, False)
    assert out[0]["error"] == "no answer within the timeout, 2 attempts"


def test_send_fhir_to_the_delivery_test_server(tmp_path: Path) -> None:
    flag = {
        "resourceType": "Flag",
        "identifier": [{"system": "urn:example:prp", "value": "flag-send-1"}],
        "status": "active",
        "code": {"text": "PRP on hold"},
        "subject": {"identifier": {"system": "urn:example:mrn", "value": "T1"}},
    }
    one = tmp_path / "flag.json"
    one.write_text(json.dumps(flag))
    server = FhirServer(tmp_path, persist=False)
    server.start()
    try:
        code, out, err = send(server.base, str(one))
        assert code == 0, err
        assert (out[0]["ack_code"], out[0]["control_id"]) == ("201", "flag-send-1")
        server.fault("503", count=1)
        code, out, _ = send(server.base, str(one))
        assert code == 1
        assert (out[0]["ack_code"], out[0]["attempts"]) == ("503", 1)  # an answer: not retried
        assert out[0]["error"] == "HTTP 503: error: fault 503"
        writes = [w for w in server.snapshot()["log"] if w["method"] == "POST"]
        assert [w["status"] for w in writes] == [201]
    finally:
        server.stop()


def test_send_fhir_to_prpgate_serve_fhir_listener(tmp_path: Path) -> None:
    # fixtures-fhir/README.md: 5 inputs, all accepted
    folder = ROOT / "fixtures-fhir"
    env = {"PRPGATE_FHIR_HTTP_ENABLED": "true", "PRPGATE_FHIR_HTTP_PORT": "0"}
    with serving(tmp_path, **env) as server:
        port = json.loads((tmp_path / "serve.ready.json").read_text())["fhir_http_port"]
        base = f"http://127.0.0.1:{port}/fhir"
        code, out, err = send(base, str(folder), "-c", "2")
        assert code == 0, err
        assert (out[-1]["messages"], out[-1]["positive"]) == (5, 5)
        assert {o["ack_code"] for o in out[:-1]} <= {"200", "201"}
        code, again, err = send(base, str(folder))  # retransmits: answered, stored as duplicates
        assert code == 0, err
        assert again[-1]["positive"] == 5
        assert server.stop() == 0
    stored = rows(server.store)
    assert len(stored) == 10
    assert sorted(r["status"] for r in stored) == ["accepted"] * 5 + ["duplicate"] * 5
