"""SIGKILL of ``prpgate serve`` under MLLP and HTTP load, 20 times at seeded random
moments, restarted each time on the same store and ports, with the test FHIR server (a
uvicorn process) as the clinic server.

Two MLLP senders (a window of 16 each) and two FHIR senders keep sending through every
crash, sending again whatever was not answered. Afterwards: every acknowledged input is
stored exactly once, no input is stored as accepted twice (retransmits of committed but
unanswered inputs are recorded as duplicates), every input was answered in the end, and
every output reached the clinic server exactly once in effect (``checks``).
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.faults.checks import (
    delivery_counts,
    input_counts,
    integrity,
    outbox_rows,
    stored_statuses,
    undelivered,
    write_report,
)
from tests.faults.inputs import cbc_message, observation
from tests.faults.load import FhirSender, MllpSender, Sender, answered
from tests.faults.serve_process import ServeProcess
from tests.fhirserver.process import FhirServer

KILLS = int(os.environ.get("PRPGATE_FAULT_KILLS", "20"))
SEED = int(os.environ.get("PRPGATE_FAULT_SEED", "20260115"))
PROGRESS = 10  # answers after a start before a kill may come (so it lands under load)
DRAIN_TIMEOUT = 180.0

DELIVERY = {
    "PRPGATE_DELIVERY_IDLE_POLL": "0.05",
    "PRPGATE_DELIVERY_LEASE": "2",  # rows a killed worker held are claimed again soon
    "PRPGATE_DELIVERY_BACKOFF_BASE": "0.05",
    "PRPGATE_DELIVERY_BACKOFF_CAP": "0.5",
    "PRPGATE_DELIVERY_BREAKER_COOLDOWN": "0.2",
    "PRPGATE_DELIVERY_BREAKER_MAX_COOLDOWN": "1",
    "PRPGATE_FHIR_TIMEOUT": "5",
}


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_sigkill_twenty_times_under_load_loses_and_doubles_nothing(
    tmp_path: Path, fault_logs: Path
) -> None:
    rng = random.Random(SEED)
    clinic = FhirServer(fault_logs, persist=False)  # never restarted: no state file to rewrite
    clinic.start()
    serve = ServeProcess(tmp_path, fault_logs, PRPGATE_FHIR_BASE_URL=clinic.base, **DELIVERY)
    senders: list[Sender] = [
        MllpSender("mllp-a", serve.mllp_port, lambda n: cbc_message("KA", n), window=16),
        MllpSender("mllp-b", serve.mllp_port, lambda n: cbc_message("KB", n), window=16),
        FhirSender("fhir-a", serve.fhir_base, lambda n: observation("KH", n)),
        FhirSender("fhir-b", serve.fhir_base, lambda n: observation("KJ", n)),
    ]
    kills: list[dict[str, float | int]] = []
    try:
        serve.start()
        for s in senders:
            s.start()
        for _ in range(KILLS):
            before = answered(senders)
            wait_for(
                "answers after a start", lambda b=before: answered(senders) >= b + PROGRESS, 120
            )
            pause = rng.uniform(0.0, 1.0)
            time.sleep(pause)  # the random moment: load is flowing, not an assertion
            serve.kill()
            kills.append({"after_s": round(pause, 3), "answered": answered(senders)})
            serve.start()
        for s in senders:
            s.finish(timeout=DRAIN_TIMEOUT)
        wait_for("the outbox to drain", lambda: undelivered(serve.store) == 0, DRAIN_TIMEOUT)
        snapshot = clinic.snapshot()
        assert serve.stop() == 0
    finally:
        for s in senders:
            s.halt.set()
        serve.kill()
        clinic.stop()

    for s in senders:
        assert s.problems == [], s.name
    statuses = stored_statuses(serve.store)
    mllp = [i for s in senders[:2] for i in s.inputs]
    fhir = [i for s in senders[2:] for i in s.inputs]
    mllp_counts = input_counts(mllp, statuses)
    fhir_counts = input_counts(fhir, statuses, prefix="request:")
    rows = outbox_rows(serve.store)
    delivery = delivery_counts(rows, snapshot)
    write_report(
        tmp_path / "sigkill-report.json",
        {
            "seed": SEED,
            "kills": len(kills),
            "starts": serve.starts,
            "mllp": mllp_counts.as_dict(),
            "fhir": fhir_counts.as_dict(),
            "delivery": delivery.as_dict(),
            "sender_failures": {s.name: s.failures for s in senders},
            "kill_moments": kills,
        },
    )
    assert len(kills) == KILLS
    for counts, inputs in ((mllp_counts, mllp), (fhir_counts, fhir)):
        assert {i.answer for i in inputs} <= {"AA", "200", "201"}  # all answered, positively
        assert counts.acknowledged == counts.sent == len(inputs)
        assert counts.stored == counts.sent  # every input stored ...
        assert counts.doubled == 0  # ... once
        assert counts.acked_not_stored == 0
        assert counts.transmissions > counts.sent  # the crashes did cut inputs off
    # each duplicate row is a retransmit of an input committed before a crash
    assert mllp_counts.duplicates_recorded + fhir_counts.duplicates_recorded <= (
        mllp_counts.transmissions - mllp_counts.sent + fhir_counts.transmissions - fhir_counts.sent
    )
    assert delivery.versions > 0
    assert delivery.delivered == delivery.versions
    assert (delivery.doubled, delivery.missing, delivery.wrong_order) == (0, 0, 0)
    assert integrity(serve.store) == "ok"
