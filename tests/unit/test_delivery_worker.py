"""The outbox worker and HttpSink: httpx.MockTransport, the memory outbox, a manual clock."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from prpgate.delivery.breaker import CircuitBreaker
from prpgate.delivery.clock import ManualClock
from prpgate.delivery.fhir_sink import HttpSink
from prpgate.delivery.outbox import DeliveryStats, OutboxWorker, WorkerPolicy
from prpgate.delivery.patients import PatientResolver
from prpgate.delivery.write import WriteMode
from prpgate.store.memory_outbox import MemoryOutbox
from tests.conftest import FIXED_NOW
from tests.fhirserver.support import PATIENT_SYSTEM, flag_json, issue_json

BASE = "https://clinic.example/fhir/"
Reply = httpx.Response | Exception


def _outcome(code: str, text: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}],
    }


class FakeFhir:
    """A FHIR server in a MockTransport handler: scripted replies first, then an upsert."""

    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.requests: list[httpx.Request] = []
        self.writes: list[tuple[str, str, str]] = []  # (kind, identifier value, status)
        self.versions: dict[tuple[str, str], int] = {}
        self.inflight: Counter[str] = Counter()
        self.max_inflight: Counter[str] = Counter()
        self.max_total = 0
        self.search_results: dict[str, list[dict[str, Any]]] = {}

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        body = json.loads(request.content) if request.content else {}
        ident = (body.get("identifier") or [{}])[0].get("value", "") if body else ""
        self.inflight[ident] += 1
        self.max_inflight[ident] = max(self.max_inflight[ident], self.inflight[ident])
        self.max_total = max(self.max_total, sum(self.inflight.values()))
        try:
            for _ in range(3):
                await asyncio.sleep(0)
            if self.script:
                reply = self.script.pop(0)
                if isinstance(reply, Exception):
                    raise reply
                return reply
            return self._default(request, body, ident)
        finally:
            self.inflight[ident] -= 1

    def _default(self, request: httpx.Request, body: dict[str, Any], ident: str) -> httpx.Response:
        if request.method == "GET":
            token = request.url.params.get("identifier", "")
            entries = [{"resource": r} for r in self.search_results.get(token, [])]
            return httpx.Response(200, json={"resourceType": "Bundle", "entry": entries})
        kind = request.url.path.split("/")[2]
        parts = request.url.path.split("/")
        rid = parts[3] if len(parts) > 3 else f"srv-{len(self.versions) + 1}"
        version = self.versions.get((kind, rid), 0) + 1
        self.versions[(kind, rid)] = version
        self.writes.append((kind, ident, str(body.get("status"))))
        out = {**body, "id": rid, "meta": {"versionId": str(version)}}
        return httpx.Response(
            201 if version == 1 else 200, json=out, headers={"ETag": f'W/"{version}"'}
        )


def _worker(
    fake: FakeFhir,
    box: MemoryOutbox,
    clock: ManualClock,
    *,
    mode: WriteMode = WriteMode.CLIENT_ID,
    parallel: int = 4,
    max_attempts: int = 50,
    tries: int = 3,
    auth: httpx.Auth | None = None,
    resolver: PatientResolver | None = None,
) -> tuple[OutboxWorker, httpx.AsyncClient]:
    client = httpx.AsyncClient(base_url=BASE, transport=httpx.MockTransport(fake), auth=auth)
    sink = HttpSink(
        client,
        mode=mode,
        clock=clock,
        tries=tries,
        backoff_base=0.5,
        backoff_cap=4.0,
        max_inline_wait=5.0,
        patients=resolver,
        rng=random.Random(7),
    )
    policy = WorkerPolicy(parallel=parallel, max_attempts=max_attempts, backoff_base=1.0)
    worker = OutboxWorker(
        box,
        sink,
        clock,
        policy=policy,
        breaker=CircuitBreaker(threshold=3, cooldown=2.0, max_cooldown=30.0),
        rng=random.Random(3),
    )
    return worker, client


def _run(
    fake: FakeFhir,
    box: MemoryOutbox,
    clock: ManualClock,
    how: Callable[[OutboxWorker], Any],
    **kw: Any,
) -> DeliveryStats:
    async def go() -> DeliveryStats:
        worker, client = _worker(fake, box, clock, **kw)
        async with client:
            stats: DeliveryStats = await how(worker)
            return stats

    return asyncio.run(asyncio.wait_for(go(), timeout=20))


def _add(box: MemoryOutbox, kind: str, ident: str, patient: str, version: int, status: str) -> int:
    res = flag_json(ident, status) if kind == "Flag" else issue_json(ident, status)
    return box.enqueue(
        identifier=ident,
        kind=kind,
        patient_key=patient,
        version=version,
        resource=res,
        received_at=FIXED_NOW,
    )


def _patient_story(box: MemoryOutbox, patient: str) -> None:
    """Issue, Flag active, issue retracted, Flag inactive: the correction fixture's order."""
    _add(box, "DetectedIssue", f"di-{patient}", patient, 1, "final")
    _add(box, "Flag", f"fl-{patient}", patient, 1, "active")
    _add(box, "DetectedIssue", f"di-{patient}", patient, 2, "entered-in-error")
    _add(box, "Flag", f"fl-{patient}", patient, 2, "inactive")


def test_worker_delivers_each_patients_outputs_in_order_once() -> None:
    fake, box, clock = FakeFhir(), MemoryOutbox(), ManualClock(FIXED_NOW)
    for p in ("p1", "p2", "p3"):
        _patient_story(box, p)
    stats = _run(fake, box, clock, lambda w: w.run_once())
    assert (stats.delivered, stats.retried, stats.dead) == (12, 0, 0)
    for p in ("p1", "p2", "p3"):
        mine = [(k, s) for k, i, s in fake.writes if i.endswith(p)]
        assert mine == [
            ("DetectedIssue", "final"),
            ("Flag", "active"),
            ("DetectedIssue", "entered-in-error"),
            ("Flag", "inactive"),
        ]
    assert len(fake.writes) == 12
    assert all(r.method == "PUT" for r in fake.requests)
    assert fake.requests[0].url.path.startswith("/fhir/DetectedIssue/prp-di-")
    entry = box.get_outbox(1)
    assert entry is not None
    assert (entry.state, entry.server_version, entry.last_status) == ("delivered", "1", 201)


def test_worker_never_writes_one_identifier_in_parallel() -> None:
    fake, box, clock = FakeFhir(), MemoryOutbox(), ManualClock(FIXED_NOW)
    for p in range(10):
        for v in range(1, 6):
            _add(box, "Flag", f"fl-{p}", f"p{p}", v, "active" if v % 2 else "inactive")
    stats = _run(fake, box, clock, lambda w: w.run_once(), parallel=8)
    assert stats.delivered == 50
    assert max(fake.max_inflight.values()) == 1
    assert fake.max_total > 1  # other patients did go in parallel


def test_sink_waits_retry_after_seconds_then_delivers() -> None:
    fake, box, clock = FakeFhir(), MemoryOutbox(), ManualClock(FIXED_NOW)
    fake.script = [httpx.Response(503, headers={"Retry-After": "3"})]
    _add(box, "Flag", "f", "p", 1, "active")
    stats = _run(fake, box, clock, lambda w: w.run_once())
    assert (stats.delivered, stats.requests) == (1, 2)
    assert 3.0 in clock.slept
    entry = box.get_outbox(1)
    assert entry is not None
    assert entry.attempts == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 422])
def test_worker_dead_letters_a_final_4xx_at_once_with_the_outcome(status: int) -> None:
    fake, box, clock = FakeFhir(), MemoryOutbox(), ManualClock(FIXED_NOW)
    fake.script = [httpx.Response(status, json=_outcome("invalid", "Flag.code is required"))]
    _add(box, "Flag", "f", "p", 1, "active")
    stats = _run(fake, box, clock, lambda w: w.run_once())
    assert (stats.dead, stats.requests, len(fake.requests)) == (1, 1, 1)
    entry = box.get_outbox(1)
    assert entry is not None
    assert entry.state == "dead"
    assert entry.last_status == status
    assert json.loads(entry.outcome)["issue"][0]["diagnostics"] == "Flag.code is required"
    assert "Flag.code is required" in entry.last_error


def test_worker_dead_letter_blocks_neither_other_patients_nor_later_rows() -> None:
    fake, box, clock = FakeFhir(), MemoryOutbox(), ManualClock(FIXED_NOW)
    _patient_story(box, "p1")
    _patient_story(box, "p2")
    fake.script = [httpx.Response(422, json=_outcome("processing", "bad"))]
    stats = _run(fake, box, clock, lambda w: w.run_once(), parallel=1)
    assert (stats.delivered, stats.dead) == (7, 1)
    assert [e.state for e in box.list_outbox(limit=10)].count("dead") == 1


def test_worker_reschedules_on_5xx_with_backoff_and_gives_up_after_max_attempts() -> None:
    fake, box, clock = FakeFhir(), MemoryOutbox(), ManualClock(FIXED_NOW)
    fake.script = [httpx.Response(500)] * 100
    _add(box, "Flag", "f", "p", 1, "active")
    first = _run(fake, box, clock, lambda w: w.run_once(), max_attempts=7)
    assert (first.retried, first.requests) == (1, 3)
    entry = box.get_outbox(1)
    assert entry is not None
    assert entry.state == "retry"
    assert entry.next_attempt_at > clock.now().isoformat()
    rest = _run(fake, box, clock, lambda w: w.drain(timeout=3600), max_attempts=7)
    entry = box.get_outbox(1)
    assert entry is not None
    assert (entry.state, entry.last_status) == ("dead", 500)
    assert 7 <= entry.attempts < 7 + 3  # checked after each send of up to 3 tries
    assert f"gave up after {entry.attempts} attempts" in entry.last_error
    assert rest.dead == 1


def test_worker_outage_then_recovery_delivers_everything_once_in_order() -> None:
    fake, box, clock = FakeFhir(), MemoryOutbox(), ManualClock(FIXED_NOW)
    for p in range(6):
        _patient_story(box, f"p{p}")
    fake.script = [httpx.ConnectError("refused")] * 40
    with capture_logs() as logs:
        stats = _run(fake, box, clock, lambda w: w.drain(timeout=3600))
    assert (stats.delivered, stats.dead) == (24, 0)
    assert len(fake.writes) == 24
    assert len(set(fake.writes)) == 24  # nothing doubled
    for p in range(6):
        statuses = [s for _, i, s in fake.writes if i.endswith(f"p{p}")]
        assert statuses == ["final", "active", "entered-in-error", "inactive"]
    events = [e["event"] for e in logs if e["log_level"] == "warning"]
    assert events.count("delivery backlog started") == 1
    assert events.count("delivery backlog cleared") == 1
    assert box.outbox_stats().counts == {"delivered": 24}


def test_worker_breaker_stops_hammering_a_down_server() -> None:
    fake, box, clock = FakeFhir(), MemoryOutbox(), ManualClock(FIXED_NOW)
    for p in range(20):
        _add(box, "Flag", f"f{p}", f"p{p}", 1, "active")
    fake.script = [httpx.ConnectError("refused")] * 1000
    stats = _run(fake, box, clock, lambda w: w.run_once(), parallel=2, tries=1)
    # threshold 3: the breaker opens after the third failure; the rest are not tried
    assert stats.claimed <= 4
    assert len(fake.requests) <= 4
    assert box.outbox_stats().counts.get("pending", 0) >= 16


def test_sink_long_retry_after_reschedules_the_row_for_then() -> None:
    fake, box, clock = FakeFhir(), MemoryOutbox(), ManualClock(FIXED_NOW)
    fake.script = [httpx.Response(429, headers={"Retry-After": "120"})]
    _add(box, "Flag", "f", "p", 1, "active")
    stats = _run(fake, box, clock, lambda w: w.run_once())
    assert (stats.retried, len(fake.requests)) == (1, 1)
    entry = box.get_outbox(1)
    assert entry is not None
    assert entry.next_attempt_at == (FIXED_NOW + timedelta(seconds=120)).isoformat(
        timespec="microseconds"
    )


def test_sink_timeout_is_retried_in_place() -> None:
    fake, box, clock = FakeFhir(), MemoryOutbox(), ManualClock(FIXED_NOW)
    fake.script = [httpx.ReadTimeout("slow"), httpx.ReadTimeout("slow")]
    _add(box, "Flag", "f", "p", 1, "active")
    stats = _run(fake, box, clock, lambda w: w.run_once())
    assert (stats.delivered, stats.requests) == (1, 3)
    assert len(clock.slept) == 2


def test_sink_conditional_mode_creates_then_updates_by_identifier() -> None:
    fake, box, clock = FakeFhir(), MemoryOutbox(), ManualClock(FIXED_NOW)
    _add(box, "Flag", "f", "p", 1, "active")
    _add(box, "Flag", "f", "p", 2, "inactive")
    stats = _run(fake, box, clock, lambda w: w.run_once(), mode=WriteMode.CONDITIONAL)
    assert stats.delivered == 2
    create, update = fake.requests
    assert (create.method, create.url.path) == ("POST", "/fhir/Flag")
    assert create.headers["If-None-Exist"] == "identifier=https://prpgate.example/fhir/sid/flag|f"
    assert "id" not in json.loads(create.content)
    assert (update.method, update.url.path) == ("PUT", "/fhir/Flag")
    assert update.url.params["identifier"] == "https://prpgate.example/fhir/sid/flag|f"


def test_sink_conditional_412_with_several_matches_is_a_dead_letter() -> None:
    fake, box, clock = FakeFhir(), MemoryOutbox(), ManualClock(FIXED_NOW)
    search = "https://prpgate.example/fhir/sid/flag|f"
    fake.search_results[search] = [
        {"resourceType": "Flag", "id": "a", "meta": {"versionId": "1"}},
        {"resourceType": "Flag", "id": "b", "meta": {"versionId": "4"}},
    ]
    fake.script = [httpx.Response(412, json=_outcome("multiple-matches", "2 matches"))]
    _add(box, "Flag", "f", "p", 2, "inactive")
    stats = _run(fake, box, clock, lambda w: w.run_once(), mode=WriteMode.CONDITIONAL)
    assert stats.dead == 1
    entry = box.get_outbox(1)
    assert entry is not None
    assert "2 resources on the server match" in entry.last_error
    assert entry.last_status == 412


def test_sink_version_conflict_is_re_read_and_re_applied() -> None:
    fake, box, clock = FakeFhir(), MemoryOutbox(), ManualClock(FIXED_NOW)
    search = "https://prpgate.example/fhir/sid/flag|f"
    fake.search_results[search] = [{"resourceType": "Flag", "id": "s9", "meta": {"versionId": "3"}}]
    fake.script = [httpx.Response(409, json=_outcome("conflict", "version conflict"))]
    _add(box, "Flag", "f", "p", 2, "inactive")
    stats = _run(fake, box, clock, lambda w: w.run_once(), mode=WriteMode.CONDITIONAL)
    assert stats.delivered == 1
    methods = [(r.method, r.url.path) for r in fake.requests]
    assert methods == [("PUT", "/fhir/Flag"), ("GET", "/fhir/Flag"), ("PUT", "/fhir/Flag/s9")]
    assert fake.requests[-1].headers["If-Match"] == 'W/"3"'
    assert json.loads(fake.requests[-1].content)["id"] == "s9"


def test_sink_resolves_the_patient_to_a_literal_reference_once() -> None:
    fake, box, clock = FakeFhir(), MemoryOutbox(), ManualClock(FIXED_NOW)
    fake.search_results[f"{PATIENT_SYSTEM}|MRN1"] = [{"resourceType": "Patient", "id": "pat-7"}]
    _add(box, "DetectedIssue", "d", "p", 1, "final")
    _add(box, "Flag", "f", "p", 1, "active")
    resolver = PatientResolver()
    stats = _run(fake, box, clock, lambda w: w.run_once(), resolver=resolver)
    assert stats.delivered == 2
    assert resolver.searches == 1
    issue = json.loads(fake.requests[1].content)
    flag = json.loads(fake.requests[2].content)
    assert issue["patient"]["reference"] == "Patient/pat-7"
    assert flag["subject"]["reference"] == "Patient/pat-7"
    assert flag["subject"]["identifier"]["value"] == "MRN1"


def test_sink_keeps_the_identifier_reference_without_a_single_match() -> None:
    fake, box, clock = FakeFhir(), MemoryOutbox(), ManualClock(FIXED_NOW)
    _add(box, "Flag", "f", "p", 1, "active")
    stats = _run(fake, box, clock, lambda w: w.run_once(), resolver=PatientResolver())
    assert stats.delivered == 1
    assert "reference" not in json.loads(fake.requests[-1].content)["subject"]


def test_worker_logs_no_patient_data() -> None:
    fake, box, clock = FakeFhir(), MemoryOutbox(), ManualClock(FIXED_NOW)
    fake.script = [
        httpx.Response(400, json=_outcome("invalid", "patient MRN1 unknown")),
        httpx.ConnectError("refused"),
    ] + [httpx.ConnectError("refused")] * 5
    _add(box, "Flag", "f", "p", 1, "active")
    _add(box, "Flag", "g", "q", 1, "active")
    with capture_logs() as logs:
        _run(fake, box, clock, lambda w: w.run_once(), parallel=1)
    assert logs
    assert "MRN1" not in json.dumps(logs, default=str)


def test_worker_run_delivers_until_stopped_then_returns() -> None:
    fake, box, clock = FakeFhir(), MemoryOutbox(), ManualClock(FIXED_NOW)
    _patient_story(box, "p1")

    async def go() -> DeliveryStats:
        worker, client = _worker(fake, box, clock)
        stop = asyncio.Event()
        async with client:
            task = asyncio.create_task(worker.run(stop))
            # store calls run on the worker's thread: wait for the outcome, not for a
            # number of loop turns (a loaded machine needs more turns than a quiet one)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 15
            while box.outbox_stats().counts != {"delivered": 4} and loop.time() < deadline:
                await asyncio.sleep(0.005)
            stop.set()
            return await task

    stats = asyncio.run(asyncio.wait_for(go(), timeout=20))
    assert stats.delivered == 4
    assert box.outbox_stats().counts == {"delivered": 4}


def test_worker_cancelled_mid_write_hands_its_rows_back() -> None:
    box, clock = MemoryOutbox(), ManualClock(FIXED_NOW)
    _add(box, "Flag", "f", "p", 1, "active")
    started = asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def go() -> None:
        client = httpx.AsyncClient(base_url=BASE, transport=httpx.MockTransport(hang))
        sink = HttpSink(client, mode=WriteMode.CLIENT_ID, clock=clock)
        worker = OutboxWorker(box, sink, clock)
        async with client:
            task = asyncio.create_task(worker.run_once())
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(asyncio.wait_for(go(), timeout=20))
    entry = box.get_outbox(1)
    assert entry is not None
    assert (entry.state, entry.next_attempt_at) == ("pending", "")
