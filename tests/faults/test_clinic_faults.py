"""The clinic's FHIR server misbehaving while outputs are delivered: connection resets
(before the write, and after it with the answer lost), and — with ``prpgate serve`` under
MLLP load — a whole sequence: down for a stretch, 500s, 503 and 429 with Retry-After,
answers slower than the timeout, resets. Nothing lost, nothing doubled.

``tests/integration/test_delivery_server.py`` covers each HTTP fault alone on a filled
store; this adds resets, and the faults one after another under a live ``serve``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
import structlog

from prpgate.core.pipeline import Engine
from prpgate.logs import configure_logging
from tests.conftest import wait_for
from tests.faults.checks import (
    delivery_counts,
    input_counts,
    outbox_rows,
    stored_statuses,
    undelivered,
    write_report,
)
from tests.faults.inputs import cbc_message
from tests.faults.load import MllpSender
from tests.faults.serve_process import ServeProcess
from tests.fhirserver.process import FhirServer
from tests.integration.test_delivery_server import deliver, fill, settings

RESETS = 6
DRAIN_TIMEOUT = 120.0
POLL = 0.05  # seconds between looks at the clinic server and the store


@pytest.fixture
def worker_log(fault_logs: Path) -> Iterator[Path]:
    """The in-process delivery worker's structlog output as production writes it (JSON,
    debug level, patient data off), into the fault suite's log folder."""
    path = fault_logs / "worker.log"
    with path.open("w", encoding="utf-8") as out:
        configure_logging(fmt="json", level="debug", stream=out)
        try:
            yield path
        finally:
            structlog.reset_defaults()
            root = logging.getLogger()
            for handler in [h for h in root.handlers if h.get_name() == "prpgate"]:
                root.removeHandler(handler)


@pytest.mark.parametrize("mode", ["client-id", "conditional"])
@pytest.mark.parametrize("kind", ["reset", "reset-after-write"])
def test_clinic_connection_resets_lose_and_double_nothing(
    tmp_path: Path, fault_logs: Path, worker_log: Path, engine: Engine, kind: str, mode: str
) -> None:
    clinic = FhirServer(fault_logs, persist=False)
    clinic.start()
    try:
        path = tmp_path / "s.sqlite"
        db = fill(path, engine, patients=10)
        versions = db.outbox_stats().undelivered
        clinic.fault(kind, count=RESETS)
        # one try per claim: each reset reschedules its row (the retry path, and its logs)
        stats = deliver(settings(path, clinic, fhir_write_mode=mode, delivery_tries=1), db)
        db.close()
        snapshot = clinic.snapshot()
    finally:
        clinic.stop()
    counts = delivery_counts(outbox_rows(path), snapshot)
    write_report(
        tmp_path / f"resets-{kind}-{mode}.json",
        {"faults": snapshot["faults_served"], "requests": stats.requests, **counts.as_dict()},
    )
    assert snapshot["faults_served"] == {kind: RESETS}  # every reset was met ...
    assert stats.dead == 0  # ... and retried, not given up
    assert counts.delivered == counts.versions == versions
    assert (counts.doubled, counts.missing, counts.wrong_order) == (0, 0, 0)
    if kind == "reset":  # the server never saw those writes: nothing to write twice
        assert counts.rewrites == 0
    elif mode == "client-id":  # each lost answer: the same PUT once more, no change
        assert counts.rewrites == RESETS
    else:  # a conditional create sent again finds its resource; an update is re-applied
        assert counts.rewrites <= RESETS
    assert "delivery backlog started" in worker_log.read_text()  # logged, and grepped


def retry_rows(store: Path) -> int:
    """Outbox rows waiting for a retry after a failed delivery."""
    return sum(1 for r in outbox_rows(store) if r["state"] == "retry")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_clinic_faults_in_sequence_under_serve_lose_and_double_nothing(
    tmp_path: Path, fault_logs: Path
) -> None:
    clinic = FhirServer(fault_logs)  # keeps its state across the outage
    clinic.start()
    serve = ServeProcess(
        tmp_path,
        fault_logs,
        PRPGATE_FHIR_BASE_URL=clinic.base,
        PRPGATE_FHIR_TIMEOUT="1",
        PRPGATE_FHIR_CONNECT_TIMEOUT="1",
        PRPGATE_DELIVERY_IDLE_POLL="0.05",
        PRPGATE_DELIVERY_BACKOFF_BASE="0.05",
        PRPGATE_DELIVERY_BACKOFF_CAP="0.5",
        PRPGATE_DELIVERY_MAX_INLINE_WAIT="2",
        PRPGATE_DELIVERY_BREAKER_COOLDOWN="0.2",
        PRPGATE_DELIVERY_BREAKER_MAX_COOLDOWN="1",
    )
    sender = MllpSender("mllp", serve.mllp_port, lambda n: cbc_message("CF", n), 8, rate=40)
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=1), usegmt=True)
    phases = [
        ("500", {"count": 8}),
        ("503", {"count": 4, "retry_after": "1"}),
        ("429", {"count": 4, "retry_after": soon}),
        ("slow", {"count": 3, "delay": 2.0}),  # beyond serve's 1 s timeout
        ("reset", {"count": RESETS}),
        ("reset-after-write", {"count": RESETS}),
    ]
    seen: dict[str, int] = {}
    try:
        serve.start()
        sender.start()
        wait_for("outputs delivered", lambda: len(clinic.snapshot()["log"]) >= 20, 60, POLL)
        clinic.stop()  # down for a stretch: connections refused
        wait_for("a delivery to fail", lambda: retry_rows(serve.store) > 0, 60, POLL)
        clinic.start()
        for kind, extra in phases:
            clinic.fault(kind, **extra)
            wait_for(
                f"the {kind} fault to be met",
                lambda: clinic.snapshot()["fault"]["count"] == 0,
                60,
                POLL,
            )
        sender.finish(timeout=DRAIN_TIMEOUT)
        wait_for("the outbox to drain", lambda: undelivered(serve.store) == 0, DRAIN_TIMEOUT, POLL)
        snapshot = clinic.snapshot()
        assert serve.stop() == 0
    finally:
        sender.halt.set()
        serve.kill()
        clinic.stop()
    seen = snapshot["faults_served"]
    inputs = input_counts(sender.inputs, stored_statuses(serve.store))
    counts = delivery_counts(outbox_rows(serve.store), snapshot)
    write_report(
        tmp_path / "clinic-faults-report.json",
        {"faults": seen, "mllp": inputs.as_dict(), "delivery": counts.as_dict()},
    )
    assert sender.problems == []
    assert seen == {kind: extra["count"] for kind, extra in phases}
    assert inputs.acknowledged == inputs.sent == inputs.stored == len(sender.inputs)
    assert inputs.doubled == 0
    assert counts.delivered == counts.versions > 0
    assert (counts.doubled, counts.missing, counts.wrong_order) == (0, 0, 0)
    assert counts.rewrites >= RESETS  # each lost answer's write went again
