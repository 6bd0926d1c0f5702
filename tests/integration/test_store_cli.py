"""The `prpgate` commands as processes on each store backend, named by PRPGATE_STORE_URL:
replay, explain, messages list, outbox list, deliver (to the test FHIR server)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import FIXTURES, MAPPINGS, StoreSpec, run_prpgate
from tests.fhirserver.process import FhirServer


def run(spec: StoreSpec, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``prpgate *args`` on the store ``spec`` names, with JSON logs."""
    store = {"PRPGATE_STORE_URL": spec.url, "PRPGATE_MAPPINGS": str(MAPPINGS)}
    return run_prpgate(*args, env={**store, "PRPGATE_LOG_FORMAT": "json", **env})


def test_commands_work_on_the_store_the_url_names(store_spec: StoreSpec, tmp_path: Path) -> None:
    replayed = run(store_spec, "replay", "--json", str(FIXTURES / "cbc_high_wbc.hl7"))
    assert replayed.returncode == 0, replayed.stderr
    summary = json.loads(replayed.stdout.splitlines()[-1])
    assert summary["messages"] == 1
    assert "password" not in summary["store"]
    assert summary["store"].startswith(("postgresql://", "/"))

    explained = run(store_spec, "explain", "--json", "PRPFX0002")
    assert explained.returncode == 0, explained.stderr
    assert "leukocytosis" in explained.stdout

    listed = run(store_spec, "messages", "list", "--json", "--order", "NF40004")
    assert listed.returncode == 0, listed.stderr
    assert [m["control_id"] for m in json.loads(listed.stdout)["messages"]] == ["PRPFX0002"]

    fhir = FhirServer(tmp_path)
    fhir.start()
    try:
        delivered = run(store_spec, "deliver", "--once", "--json", PRPGATE_FHIR_BASE_URL=fhir.base)
        held = fhir.snapshot()["resources"]
    finally:
        fhir.stop()
    assert delivered.returncode == 0, delivered.stderr
    assert json.loads(delivered.stdout)["delivered"] == 2
    assert len(held) == 2
    outbox = run(store_spec, "outbox", "list", "--json", "--state", "delivered")
    assert outbox.returncode == 0, outbox.stderr
    assert len(json.loads(outbox.stdout)["rows"]) == 2
