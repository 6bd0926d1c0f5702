"""``prpgate deliver``, ``outbox`` and ``messages`` run as processes against the test server."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIXTURES, MAPPINGS, run_prpgate
from tests.fhirserver.process import FhirServer

FAST_ENV = {
    "PRPGATE_DELIVERY_BACKOFF_BASE": "0.05",
    "PRPGATE_DELIVERY_BACKOFF_CAP": "0.3",
    "PRPGATE_DELIVERY_BREAKER_COOLDOWN": "0.1",
    "PRPGATE_DELIVERY_BREAKER_MAX_COOLDOWN": "0.4",
    "PRPGATE_DELIVERY_IDLE_POLL": "0.05",
    "PRPGATE_FHIR_TIMEOUT": "2",
    "PRPGATE_FHIR_CONNECT_TIMEOUT": "1",
}


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``prpgate *args`` with JSON logs on a wide terminal, delivery's waits shortened."""
    cli = {"PRPGATE_LOG_FORMAT": "json", "COLUMNS": "200", **FAST_ENV}
    return run_prpgate(*args, env={**cli, **(env or {})}, timeout=60)


def as_json(proc: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(proc.stdout)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FhirServer]:
    s = FhirServer(tmp_path)
    s.start()
    yield s
    s.stop()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "s.sqlite"
    proc = run("replay", "--store", str(path), "--mappings", str(MAPPINGS), str(FIXTURES))
    assert proc.returncode == 1, proc.stderr  # fixtures/bad is rejected on purpose
    return path


def deliver(store: Path, server: FhirServer, *args: str) -> subprocess.CompletedProcess[str]:
    return run(
        "deliver",
        "--store",
        str(store),
        "--json",
        *args,
        env={"PRPGATE_FHIR_BASE_URL": server.base},
    )


def test_cli_deliver_once_sends_the_outbox(store: Path, server: FhirServer) -> None:
    pending = as_json(run("outbox", "list", "--store", str(store), "--json", "--limit", "1000"))
    n = len(pending["rows"])
    assert n > 10
    proc = deliver(store, server, "--once")
    assert proc.returncode == 0, proc.stderr
    summary = as_json(proc)
    assert (summary["delivered"], summary["dead"], summary["undelivered"]) == (n, 0, 0)
    assert summary["outbox"] == {"delivered": n}
    writes = [w for w in server.snapshot()["log"] if w["status"] in (200, 201)]
    assert len(writes) == n
    # the fixture patients' MRNs and names never reach the logs
    assert "ZQ7" not in proc.stderr
    again = deliver(store, server, "--once")
    assert as_json(again)["claimed"] == 0


def test_cli_deliver_outage_then_drain(store: Path, server: FhirServer) -> None:
    server.stop()
    down = deliver(store, server, "--once")
    assert down.returncode == 1
    assert as_json(down)["retried"] > 0
    assert down.stderr.count("delivery backlog started") == 1  # not one per attempt
    server.start()
    up = deliver(store, server, "--drain", "--timeout", "20")
    assert up.returncode == 0, up.stderr
    summary = as_json(up)
    assert summary["undelivered"] == 0
    assert set(summary["outbox"]) == {"delivered"}
    assert up.stderr.count("delivery backlog cleared") <= 1


def test_cli_dead_letter_show_retry_and_purge(store: Path, server: FhirServer) -> None:
    server.fault("400", count=1)
    proc = deliver(store, server, "--once")
    assert proc.returncode == 1
    assert as_json(proc)["dead"] == 1
    dead = as_json(run("outbox", "list", "--state", "dead", "--store", str(store), "--json"))
    (row,) = dead["rows"]
    assert row["last_status"] == 400
    assert row["outcome"]["resourceType"] == "OperationOutcome"
    shown = as_json(run("outbox", "show", str(row["id"]), "--store", str(store), "--json"))
    assert shown["resource"]["resourceType"] == row["kind"]
    assert shown["outcome"]["issue"][0]["code"] == "invalid"
    people = run("outbox", "show", str(row["id"]), "--store", str(store))
    assert "OperationOutcome" in people.stdout
    retried = run("outbox", "retry", "--all-dead", "--store", str(store), "--json")
    assert retried.returncode == 0
    counts = as_json(retried)
    assert counts["retried"] + counts["superseded"] == 1
    assert deliver(store, server, "--once").returncode == 0
    purged = run("outbox", "purge-delivered", "--older-than", "0s", "--store", str(store), "--json")
    assert as_json(purged)["purged"] > 0
    left = as_json(run("outbox", "list", "--store", str(store), "--json"))
    assert left["counts"].get("delivered", 0) == 0


def test_cli_deliver_without_a_base_url_is_a_usage_error(store: Path) -> None:
    proc = run("deliver", "--once", "--store", str(store))
    assert proc.returncode == 2
    assert "fhir_base_url" in proc.stderr


def test_cli_messages_list_show_and_reprocess(store: Path) -> None:
    found = as_json(
        run("messages", "list", "--control-id", "PRPFX0002", "--store", str(store), "--json")
    )
    (msg,) = found["messages"]
    assert msg["control_id"] == "PRPFX0002"
    by_status = as_json(
        run("messages", "list", "--status", "rejected", "--store", str(store), "--json")
    )
    assert by_status["messages"]
    assert {m["status"] for m in by_status["messages"]} == {"rejected"}
    shown = as_json(run("messages", "show", str(msg["id"]), "--store", str(store), "--json"))
    assert shown["message"]["id"] == msg["id"]
    assert shown["outbox"]
    before = as_json(run("outbox", "list", "--store", str(store), "--json", "--limit", "1000"))
    again = run("messages", "reprocess", str(msg["id"]), "--store", str(store), "--json")
    assert again.returncode == 0, again.stderr
    (result,) = as_json(again)["reprocessed"]
    assert result["disposition"] == "accepted"
    assert result["outputs"] == []  # same mappings: same decisions, nothing new to send
    after = as_json(run("outbox", "list", "--store", str(store), "--json", "--limit", "1000"))
    assert len(after["rows"]) == len(before["rows"])


def test_cli_messages_list_by_patient_and_order(store: Path) -> None:
    def ids(*args: str) -> list[str]:
        found = as_json(run("messages", "list", *args, "--store", str(store), "--json"))
        return [m["control_id"] for m in found["messages"]]

    # cbc_high_wbc.hl7: MRN ZQ70002, filler order NF40004^NORTHLAB
    assert ids("--patient", "ZQ70002") == ["PRPFX0002"]
    assert ids("--order", "NF40004") == ["PRPFX0002"]
    assert ids("--order", "NF40004^NORTHLAB") == ["PRPFX0002"]
    assert ids("--patient", "NOSUCHMRN") == []
    assert ids("--since", "2999-01-01") == []
    assert len(ids("--limit", "500")) > 20
