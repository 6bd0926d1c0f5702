"""PostgreSQL restarted twice (``pg_ctl stop -m fast``: every connection cut; started
again at once, then after 4 s down) while ``prpgate serve`` takes MLLP and FHIR input:
inputs not committed are answered AR with HL7 error 207 or 503 (never AA or 2xx), the
store reconnects, the senders' retransmits go in, and every acknowledged input is stored
exactly once.

Needs the test server (``PRPGATE_TEST_PG_DSN``) and the folder of the cluster behind it
(``PRPGATE_TEST_PG_CLUSTER``: the DIR given to ``.ci/pg-cluster start``, which ``.ci/run``
exports), since only a cluster the test may restart can be restarted; otherwise it skips
saying why.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from tests.conftest import wait_for
from tests.faults.checks import input_counts, write_report
from tests.faults.inputs import cbc_message, observation
from tests.faults.load import FhirSender, MllpSender, Sender, answered
from tests.faults.serve_process import ServeProcess

pytestmark = [pytest.mark.pg, pytest.mark.slow]

PROGRESS = 200  # answers before each restart, and after the last (the reconnection)


def cluster() -> Path:
    """The test cluster's folder, or skip saying why it cannot be restarted."""
    folder = os.environ.get("PRPGATE_TEST_PG_CLUSTER", "").strip()
    if not folder or not (Path(folder) / "data" / "postmaster.pid").exists():
        pytest.skip(
            "restarting PostgreSQL needs the cluster's folder: set PRPGATE_TEST_PG_CLUSTER to "
            "the DIR of `.ci/pg-cluster start DIR` (.ci/run does) — the server behind "
            "PRPGATE_TEST_PG_DSN may not be ours to restart"
        )
    return Path(folder)


def pg_ctl(folder: Path, *args: str) -> None:
    """Run ``pg_ctl`` on the cluster as its owner (postgres when root)."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    cmd = [str(bins[-1]) if bins else "pg_ctl", "-D", str(folder / "data"), *args]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)


def restart(folder: Path, down: float) -> None:
    """Stop the cluster (``-m fast``: every connection cut), keep it down ``down``
    seconds, start it with the options it ran with (``postmaster.opts``)."""
    argv = shlex.split((folder / "data" / "postmaster.opts").read_text())[1:]
    at = argv.index("-D")
    options = shlex.join(argv[:at] + argv[at + 2 :])
    pg_ctl(folder, "-m", "fast", "-w", "-t", "60", "stop")
    time.sleep(down)  # the outage's length, not an assertion
    pg_ctl(folder, "-l", str(folder / "server.log"), "-o", options, "-w", "-t", "60", "start")


def started_at(url: str) -> object:
    with psycopg.connect(url, connect_timeout=10) as conn:
        return conn.execute("SELECT pg_postmaster_start_time()").fetchone()


def statuses(url: str) -> dict[str, Counter[str]]:
    out: dict[str, Counter[str]] = {}
    with psycopg.connect(url, connect_timeout=10) as conn:
        for control, status in conn.execute("SELECT control_id, status FROM messages"):
            out.setdefault(str(control), Counter())[str(status)] += 1
    return out


@pytest.mark.timeout(600)
def test_pg_restart_under_load_no_aa_for_uncommitted_and_reconnects(
    tmp_path: Path, fault_logs: Path, pg_url: str
) -> None:
    folder = cluster()
    serve = ServeProcess(
        tmp_path, fault_logs, PRPGATE_STORE_URL=pg_url, PRPGATE_STORE_CONNECT_TIMEOUT="1"
    )
    senders: list[Sender] = [
        MllpSender("mllp-a", serve.mllp_port, lambda n: cbc_message("PA", n), window=16),
        MllpSender("mllp-b", serve.mllp_port, lambda n: cbc_message("PB", n), window=16),
        FhirSender("fhir", serve.fhir_base, lambda n: observation("PH", n)),
    ]
    try:
        serve.start()
        for s in senders:
            s.start()
        starts = [started_at(pg_url)]
        # a quick restart (the writer's retry on a fresh connection rides it out), then
        # one down longer than the store's connect timeout (commits fail meanwhile)
        for down in (0.0, 4.0):
            at = answered(senders)
            wait_for("answers", lambda at=at: answered(senders) >= at + PROGRESS, 120)
            restart(folder, down)
            starts.append(started_at(pg_url))
        at = answered(senders)
        wait_for("answers after", lambda: answered(senders) >= at + PROGRESS, 120)
        for s in senders:
            s.finish(timeout=120)
        ready = serve.ready()
        assert serve.stop() == 0
    finally:
        for s in senders:
            s.halt.set()
        serve.kill()
    assert len(set(starts)) == 3  # the server did restart, twice
    stored = statuses(pg_url)
    mllp = input_counts([i for s in senders[:2] for i in s.inputs], stored)
    fhir = input_counts(senders[2].inputs, stored, prefix="request:")
    failures = sum(s.store_failures for s in senders)
    write_report(
        tmp_path / "pg-restart-report.json",
        {"mllp": mllp.as_dict(), "fhir": fhir.as_dict(), "store_failures": failures},
    )
    assert ready[0] == 200  # reconnected: ready again
    assert failures > 0  # commits cut by the restart were answered "send again"
    for counts in (mllp, fhir):
        assert counts.acknowledged == counts.sent == counts.stored
        assert (counts.doubled, counts.acked_not_stored) == (0, 0)
    for s in senders:
        assert s.problems == []
