"""Delivery to a real HTTP server: the test FHIR server as a uvicorn process on 127.0.0.1.

Outage and recovery, each fault class, conditional mode, SMART Backend Services. Each
test asserts what ends up on the server: every output exactly once (one resource per
identifier, one version per outbox row), in order per patient.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from prpgate.config import Settings
from prpgate.core.pipeline import Engine
from prpgate.delivery.clock import SystemClock
from prpgate.delivery.outbox import DeliveryStats
from prpgate.delivery.wiring import open_worker
from prpgate.replay import discover, replay
from prpgate.store.sqlite import SqliteStore
from tests.conftest import FIXTURES
from tests.fhirserver.process import FhirServer
from tests.fhirserver.support import SqliteFiller, resource_for

FAST = {
    "delivery_backoff_base": 0.05,
    "delivery_backoff_cap": 0.3,
    "delivery_max_inline_wait": 2.0,
    "delivery_breaker_threshold": 3,
    "delivery_breaker_cooldown": 0.1,
    "delivery_breaker_max_cooldown": 0.4,
    "delivery_idle_poll": 0.05,
    "fhir_timeout": 2.0,
    "fhir_connect_timeout": 1.0,
}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FhirServer]:
    s = FhirServer(tmp_path)
    s.start()
    yield s
    s.stop()


def fill(path: Path, engine: Engine, *, patients: int = 20, fixtures: bool = True) -> SqliteStore:
    """The fixtures replayed through the pipeline, then four outputs for each of
    ``patients`` synthetic patients (issue, flag on, issue retracted, flag off)."""
    db = SqliteStore(path, durable=False)
    if fixtures:
        files = [f for f in discover([FIXTURES]) if "bad" not in f.parts]
        replay(db, engine, files, clock=SystemClock())
    filler = SqliteFiller(db)
    now = datetime.now(UTC)
    for p in range(patients):
        mrn = f"SYN{p:04d}"
        for kind, ident, version, status in (
            ("DetectedIssue", f"di{p:04d}", 1, "final"),
            ("Flag", f"fl{p:04d}", 1, "active"),
            ("DetectedIssue", f"di{p:04d}", 2, "entered-in-error"),
            ("Flag", f"fl{p:04d}", 2, "inactive"),
        ):
            filler.enqueue(
                identifier=ident,
                kind=kind,
                patient_key=f"urn:oid:1.2.3|{mrn}",
                version=version,
                resource=resource_for(kind, ident, status, mrn),
                received_at=now,
            )
    return db


def settings(path: Path, server: FhirServer, **kw: Any) -> Settings:
    return Settings(store=path, fhir_base_url=server.base, **{**FAST, **kw})


def deliver(
    cfg: Settings, db: SqliteStore, how: str = "drain", timeout: float = 20
) -> DeliveryStats:
    async def go() -> DeliveryStats:
        async with open_worker(cfg, db) as worker:
            if how == "once":
                return await worker.run_once()
            return await worker.drain(timeout=timeout)

    return asyncio.run(asyncio.wait_for(go(), timeout=timeout + 10))


def _ident(res: dict[str, Any]) -> str:
    return str(res["identifier"][0]["value"])


def check_exactly_once(db: SqliteStore, snap: dict[str, Any]) -> dict[str, int]:
    """Assert the server holds each output once, as its latest outbox version, with one
    version per delivered outbox row, written in outbox order per patient."""
    rows = list(db.iter_outbox())
    by_ident: dict[str, list[Any]] = defaultdict(list)
    for r in rows:
        by_ident[r.identifier].append(r)
    on_server: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for versions in snap["resources"].values():
        if versions[-1]["resourceType"] != "Patient":
            on_server[_ident(versions[-1])].append(versions)
    assert set(on_server) == set(by_ident)
    duplicated = sum(len(v) - 1 for v in on_server.values())
    assert duplicated == 0
    for ident, (versions,) in on_server.items():
        mine = sorted(by_ident[ident], key=lambda r: r.version)
        assert len(versions) == len(mine)  # one server version per outbox version
        for server_version, row in zip(versions, mine, strict=True):
            sent = json.loads(row.resource)
            assert server_version["status"] == sent["status"]
    # per patient, successful writes arrive in outbox order
    writes = [w for w in snap["log"] if w["status"] in (200, 201)]
    seen: dict[str, int] = defaultdict(int)
    order: dict[str, list[int]] = defaultdict(list)
    for w in writes:
        seen[w["identifier"]] += 1
        row = sorted(by_ident[w["identifier"]], key=lambda r: r.version)[seen[w["identifier"]] - 1]
        order[row.patient_key].append(row.id)
    for ids in order.values():
        assert ids == sorted(ids)
    return {"sent": len(rows), "on_server": len(on_server), "duplicated": duplicated}


def test_delivery_server_outage_then_recovery_every_output_once_in_order(
    tmp_path: Path, server: FhirServer, engine: Engine
) -> None:
    path = tmp_path / "s.sqlite"
    db = fill(path, engine)
    cfg = settings(path, server)
    sent = db.outbox_stats().undelivered
    server.stop()  # the clinic server is down
    down = deliver(cfg, db, "once")
    assert down.delivered == 0
    assert down.dead == 0
    assert down.retried > 0
    # the breaker kept the worker from trying every row against a dead server
    assert down.claimed < sent
    server.start()  # back, with nothing received
    up = deliver(cfg, db, "drain")
    assert db.outbox_stats().counts == {"delivered": sent}
    assert up.dead == 0
    numbers = check_exactly_once(db, server.snapshot())
    assert (numbers["sent"], numbers["duplicated"]) == (sent, 0)
    db.close()


def test_delivery_server_outage_mid_stream_every_output_once_in_order(
    tmp_path: Path, server: FhirServer, engine: Engine
) -> None:
    path = tmp_path / "s.sqlite"
    db = fill(path, engine, patients=60)
    sent = db.outbox_stats().undelivered
    cfg = settings(path, server, delivery_parallel=4)
    result: list[DeliveryStats] = []
    worker = threading.Thread(target=lambda: result.append(deliver(cfg, db, "drain", 40)))
    worker.start()
    deadline = time.monotonic() + 20
    while len(server.snapshot()["log"]) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.stop()
    probe = SqliteStore(path)
    while probe.outbox_stats().counts.get("retry", 0) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    probe.close()
    server.start()
    worker.join(timeout=45)
    assert not worker.is_alive()
    (stats,) = result
    assert stats.retried > 0  # the outage was seen
    assert stats.dead == 0
    assert db.outbox_stats().counts == {"delivered": sent}
    numbers = check_exactly_once(db, server.snapshot())
    assert numbers["duplicated"] == 0
    assert numbers["sent"] == sent
    db.close()


@pytest.mark.parametrize(
    ("fault", "extra"),
    [
        ("500", {"count": 4}),
        ("503", {"count": 2, "retry_after": "1"}),
        ("429", {"count": 2, "retry_after": "http-date"}),
        ("slow", {"count": 2, "delay": 3.0}),
    ],
)
def test_delivery_server_passing_faults_end_delivered(
    tmp_path: Path, server: FhirServer, engine: Engine, fault: str, extra: dict[str, Any]
) -> None:
    path = tmp_path / "s.sqlite"
    db = fill(path, engine, patients=3)
    sent = db.outbox_stats().undelivered
    if extra.get("retry_after") == "http-date":
        extra = {**extra, "retry_after": format_datetime(datetime.now(UTC), usegmt=True)}
    server.fault(fault, **extra)
    stats = deliver(settings(path, server, fhir_timeout=1.0), db)
    assert db.outbox_stats().counts == {"delivered": sent}
    assert stats.requests > sent  # the faults were met and retried
    assert check_exactly_once(db, server.snapshot())["duplicated"] == 0
    db.close()


def test_delivery_server_400_is_a_dead_letter_with_the_outcome(
    tmp_path: Path, server: FhirServer, engine: Engine
) -> None:
    path = tmp_path / "s.sqlite"
    db = fill(path, engine, patients=2)
    sent = db.outbox_stats().undelivered
    server.fault("400", count=1)
    stats = deliver(settings(path, server), db)
    assert (stats.dead, stats.delivered) == (1, sent - 1)
    (dead,) = db.list_outbox(state="dead")
    assert dead.last_status == 400
    assert json.loads(dead.outcome)["issue"][0]["code"] == "invalid"
    assert "HTTP 400" in dead.last_error
    # nothing else was held back; retrying the dead letter delivers it
    assert db.retry_outbox([dead.id], now=datetime.now(UTC)) in (0, 1)
    deliver(settings(path, server), db)
    counts = db.outbox_stats().counts
    assert counts.get("dead", 0) == 0
    assert counts["delivered"] + counts.get("superseded", 0) == sent
    db.close()


def test_delivery_server_422_from_validation_is_a_dead_letter(
    tmp_path: Path, server: FhirServer, engine: Engine
) -> None:
    path = tmp_path / "s.sqlite"
    db = fill(path, engine, patients=0)
    SqliteFiller(db).enqueue(
        identifier="nostatus",
        kind="Flag",
        patient_key="urn:oid:1.2.3|X",
        version=1,
        resource=json.dumps(
            {
                "resourceType": "Flag",
                "id": "prp-flag-nostatus",
                "identifier": [{"system": "urn:x", "value": "nostatus"}],
            }
        ),
        received_at=datetime.now(UTC),
    )
    stats = deliver(settings(path, server), db)
    assert stats.dead == 1
    (dead,) = db.list_outbox(state="dead")
    assert dead.last_status == 422
    assert dead.attempts == 1
    db.close()


def test_delivery_server_gives_up_after_max_attempts(
    tmp_path: Path, server: FhirServer, engine: Engine
) -> None:
    path = tmp_path / "s.sqlite"
    db = fill(path, engine, patients=2, fixtures=False)
    server.fault("500")  # for good
    stats = deliver(
        settings(path, server, delivery_max_attempts=4, delivery_breaker_threshold=50), db
    )
    assert stats.delivered == 0
    counts = db.outbox_stats().counts
    assert counts == {"dead": counts["dead"]}  # every row ended a dead letter, none lost
    assert all(e.last_status == 500 for e in db.list_outbox(state="dead", limit=1000))
    db.close()


def test_delivery_server_conditional_mode_every_output_once(
    tmp_path: Path, server: FhirServer, engine: Engine
) -> None:
    path = tmp_path / "s.sqlite"
    db = fill(path, engine, patients=5)
    sent = db.outbox_stats().undelivered
    stats = deliver(settings(path, server, fhir_write_mode="conditional"), db)
    assert stats.delivered == sent
    snap = server.snapshot()
    assert {w["method"] for w in snap["log"]} == {"POST", "PUT"}
    before = check_exactly_once(db, snap)
    # a second adapter instance with the same outputs creates no second resource
    twin = fill(tmp_path / "twin.sqlite", engine, patients=5)
    assert (
        deliver(
            settings(tmp_path / "twin.sqlite", server, fhir_write_mode="conditional"), twin
        ).dead
        == 0
    )
    twin.close()
    after = server.snapshot()
    idents = [_ident(v[-1]) for v in after["resources"].values()]
    assert len(idents) == len(set(idents)) == before["on_server"]
    db.close()


def test_delivery_server_conditional_several_matches_is_a_dead_letter(
    tmp_path: Path, server: FhirServer, engine: Engine
) -> None:
    path = tmp_path / "s.sqlite"
    db = fill(path, engine, patients=1)
    flag = next(r for r in db.iter_outbox() if r.kind == "Flag" and r.version == 1)
    body = json.loads(flag.resource)
    body.pop("id")
    server.seed(body)
    server.seed(body)  # two resources with the output's identifier
    stats = deliver(settings(path, server, fhir_write_mode="conditional"), db)
    assert stats.dead >= 1
    dead = db.list_outbox(state="dead", limit=10)
    assert {d.identifier for d in dead} == {flag.identifier}
    assert all(d.last_status == 412 for d in dead)
    assert "match" in dead[0].last_error
    db.close()


def _keypair(tmp_path: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = tmp_path / "client.pem"
    public = tmp_path / "client.pub.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def test_delivery_server_smart_backend_services(tmp_path: Path, engine: Engine) -> None:
    private, public = _keypair(tmp_path)
    (tmp_path / "other").mkdir()
    other, _ = _keypair(tmp_path / "other")
    srv = FhirServer(
        tmp_path, "--auth", "smart", "--client-id", "prpgate", "--client-public-key", str(public)
    )
    srv.start()
    try:
        path = tmp_path / "s.sqlite"
        db = fill(path, engine, patients=3)
        sent = db.outbox_stats().undelivered
        smart = {
            "fhir_auth": "smart",
            "fhir_smart_token_url": f"{srv.origin}/auth/token",
            "fhir_smart_client_id": "prpgate",
            "fhir_smart_private_key": private,
        }
        # a key the server does not know: the token endpoint refuses, nothing is sent
        wrong = deliver(settings(path, srv, **{**smart, "fhir_smart_private_key": other}), db)
        assert wrong.delivered == 0
        assert db.outbox_stats().counts.get("delivered", 0) == 0
        db.retry_outbox((), now=datetime.now(UTC), all_dead=True)
        stats = deliver(settings(path, srv, **smart), db)
        snap = srv.snapshot()
        assert stats.delivered + wrong.delivered == sent
        oks = [t for t in snap["token_requests"] if t["ok"]]
        assert len(oks) == 1  # one token, cached for every write
        assert any(not t["ok"] for t in snap["token_requests"])
        check_exactly_once(db, snap)
        db.close()
    finally:
        srv.stop()


def test_delivery_server_smart_token_refreshed_once_on_401(tmp_path: Path, engine: Engine) -> None:
    private, public = _keypair(tmp_path)
    srv = FhirServer(
        tmp_path, "--auth", "smart", "--client-id", "prpgate", "--client-public-key", str(public)
    )
    srv.start()
    try:
        path = tmp_path / "s.sqlite"
        db = fill(path, engine, patients=2, fixtures=False)
        smart = {
            "fhir_auth": "smart",
            "fhir_smart_token_url": f"{srv.origin}/auth/token",
            "fhir_smart_client_id": "prpgate",
            "fhir_smart_private_key": private,
            "delivery_parallel": 1,
        }

        async def go() -> tuple[DeliveryStats, DeliveryStats]:
            async with open_worker(settings(path, srv, **smart), db) as worker:
                first = await worker.run_once()
                srv.revoke_tokens()  # the server forgets the token: 401, refresh, resend
                SqliteFiller(db).enqueue(
                    identifier="late",
                    kind="Flag",
                    patient_key="urn:oid:1.2.3|LATE",
                    version=1,
                    resource=resource_for("Flag", "late", "active", "LATE"),
                    received_at=datetime.now(UTC),
                )
                return first, await worker.run_once()

        first, second = asyncio.run(asyncio.wait_for(go(), timeout=30))
        assert second.delivered == 1
        assert second.dead == 0
        oks = [t for t in srv.snapshot()["token_requests"] if t["ok"]]
        assert len(oks) == 2
        assert first.dead == 0
        db.close()
    finally:
        srv.stop()


def test_delivery_server_max_age_makes_old_failures_dead(
    tmp_path: Path, server: FhirServer, engine: Engine
) -> None:
    path = tmp_path / "s.sqlite"
    db = fill(path, engine, patients=0, fixtures=False)
    SqliteFiller(db).enqueue(
        identifier="old",
        kind="Flag",
        patient_key="urn:oid:1.2.3|OLD",
        version=1,
        resource=resource_for("Flag", "old", "active", "OLD"),
        received_at=datetime.now(UTC) - timedelta(days=30),
    )
    server.fault("503")
    stats = deliver(settings(path, server, delivery_max_age=86400.0), db)
    assert stats.dead == 1
    (dead,) = db.list_outbox(state="dead")
    assert "gave up" in dead.last_error
    db.close()


def _enqueue_story(db: SqliteStore, versions: tuple[int, ...]) -> None:
    story = {
        1: (("DetectedIssue", "di", "final"), ("Flag", "fl", "active")),
        2: (("DetectedIssue", "di", "entered-in-error"), ("Flag", "fl", "inactive")),
    }
    for version in versions:
        for kind, ident, status in story[version]:
            SqliteFiller(db).enqueue(
                identifier=ident,
                kind=kind,
                patient_key="urn:oid:1.2.3|CONFLICT",
                version=version,
                resource=resource_for(kind, ident, status, "CONFLICT"),
                received_at=datetime.now(UTC),
            )


def test_delivery_server_conditional_409_is_re_read_and_re_applied(
    tmp_path: Path, server: FhirServer, engine: Engine
) -> None:
    path = tmp_path / "s.sqlite"
    db = fill(path, engine, patients=0, fixtures=False)
    cfg = settings(path, server, fhir_write_mode="conditional")
    _enqueue_story(db, (1,))
    server.fault("409", count=1)  # the conditional create meets a conflict: write again
    assert deliver(cfg, db).delivered == 2
    _enqueue_story(db, (2,))
    server.fault("409", count=1)  # the conditional update meets one: re-read, If-Match
    assert deliver(cfg, db).delivered == 2
    snap = server.snapshot()
    check_exactly_once(db, snap)
    reapplied = [w for w in snap["log"] if w["method"] == "PUT" and w["query"] == ""]
    assert len(reapplied) == 1
    assert reapplied[0]["status"] == 200
    assert reapplied[0]["resource_status"] == "entered-in-error"


def test_delivery_server_resolves_the_patient_reference(
    tmp_path: Path, server: FhirServer, engine: Engine
) -> None:
    path = tmp_path / "s.sqlite"
    db = fill(path, engine, patients=2, fixtures=False)
    pid = server.seed(
        {"resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2.3", "value": "SYN0000"}]}
    )
    stats = deliver(settings(path, server, fhir_resolve_patients=True), db)
    assert stats.delivered == 8
    current = [v[-1] for v in server.snapshot()["resources"].values()]
    refs = {
        (r.get("patient") or r.get("subject") or {}).get("identifier", {}).get("value"): (
            r.get("patient") or r.get("subject") or {}
        ).get("reference")
        for r in current
        if r["resourceType"] != "Patient"
    }
    assert refs == {"SYN0000": f"Patient/{pid}", "SYN0001": None}
    db.close()
