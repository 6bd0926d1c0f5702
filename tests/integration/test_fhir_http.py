"""The FHIR HTTP listener in process: uvicorn on 127.0.0.1:0, the real StoreWriter on a
SQLite file, httpx as the client. Every answer is checked for its status and
OperationOutcome, and every input — refused ones too — for its stored row."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import trustme

from prpgate.core.pipeline import Engine
from prpgate.errors import StoreError
from prpgate.listeners.asgi_server import AsgiServer
from prpgate.listeners.fhir_http import FhirHttpConfig, build_app
from prpgate.serve import StoreWriter
from prpgate.store.sqlite import SqliteStore
from tests.conftest import FixedClock
from tests.integration.test_mllp import run

MRN = "urn:oid:2.16.840.1.113883.3.9999.2"
FHIR_JSON = {"Content-Type": "application/fhir+json"}


def observation(value: float = 23.4, ident: str = "H-1", **extra: Any) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [{"system": "urn:lab:obs", "value": ident}],
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "6690-2"}]},
        "subject": {"identifier": {"system": MRN, "value": "ZQ79201"}},
        "effectiveDateTime": "2026-01-10T08:00:00Z",
        "valueQuantity": {"value": value, "system": "http://unitsofmeasure.org", "code": "10*9/L"},
    }
    obs.update(extra)
    return obs


@contextlib.asynccontextmanager
async def listening(
    tmp_path: Path, engine: Engine, *, tls: tuple[Path, Path] | None = None, **config: Any
) -> AsyncIterator[tuple[str, SqliteStore]]:
    db = tmp_path / "s.sqlite"
    writer = StoreWriter(SqliteStore(db), engine)
    await writer.start()
    app = build_app(writer, FhirHttpConfig(**config), clock=FixedClock())
    server = AsgiServer(
        app,
        "127.0.0.1",
        0,
        tls_cert=tls[0] if tls else None,
        tls_key=tls[1] if tls else None,
    )
    await server.start()
    reader = SqliteStore(db)
    try:
        scheme = "https" if tls else "http"
        yield f"{scheme}://127.0.0.1:{server.port}/fhir", reader
    finally:
        await server.stop()
        await writer.stop()
        reader.close()


def scenario(
    tmp_path: Path, engine: Engine, body: Callable[[str, SqliteStore], Awaitable[None]], **cfg: Any
) -> None:
    async def go() -> None:
        async with listening(tmp_path, engine, **cfg) as (base, store):
            await body(base, store)

    run(go())


def outcome(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.headers["content-type"].startswith("application/fhir+json")
    data = response.json()
    assert data["resourceType"] == "OperationOutcome"
    issues: list[dict[str, Any]] = data["issue"]
    return issues


def test_fhir_http_post_observation_commits_then_answers_and_reads_back(
    engine: Engine, tmp_path: Path
) -> None:
    async def body(base: str, store: SqliteStore) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            created = await client.post(
                f"{base}/Observation", content=json.dumps(observation()), headers=FHIR_JSON
            )
            assert created.status_code == 201
            (issue,) = outcome(created)
            assert "accepted as message 1" in issue["diagnostics"]
            # committed before the answer: another connection sees it at once
            assert [r.status for r in store.list_messages()] == ["accepted"]
            again = await client.post(
                f"{base}/Observation", content=json.dumps(observation()), headers=FHIR_JSON
            )
            assert again.status_code == 200
            assert "retransmit of message 1" in outcome(again)[0]["diagnostics"]
            found = await client.get(
                f"{base}/DetectedIssue", params={"patient.identifier": f"{MRN}|ZQ79201"}
            )
            assert found.status_code == 200
            bundle = found.json()
            assert (bundle["type"], bundle["total"]) == ("searchset", 1)
            issue_resource = bundle["entry"][0]["resource"]
            assert issue_resource["severity"] == "high"
            assert bundle["entry"][0]["fullUrl"] == f"{base}/DetectedIssue/{issue_resource['id']}"
            flags = await client.get(f"{base}/Flag", params={"subject:identifier": "ZQ79201"})
            assert [e["resource"]["status"] for e in flags.json()["entry"]] == ["active"]
            inactive = await client.get(
                f"{base}/Flag",
                params={"patient.identifier": f"{MRN}|ZQ79201", "status": "inactive"},
            )
            assert inactive.json()["total"] == 0

    scenario(tmp_path, engine, body)


def test_fhir_http_refusals_have_operation_outcomes_and_are_stored(
    engine: Engine, tmp_path: Path
) -> None:
    async def body(base: str, store: SqliteStore) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            post = client.post
            malformed = await post(
                f"{base}/Observation", content=b'{"resourceType":', headers=FHIR_JSON
            )
            assert malformed.status_code == 400
            assert "line 1" in outcome(malformed)[0]["diagnostics"]
            invalid = await post(
                f"{base}/Observation",
                content=json.dumps(observation(status="done", valueQuantity={"value": "x"})),
                headers=FHIR_JSON,
            )
            assert invalid.status_code == 400
            assert sorted(i["expression"][0] for i in outcome(invalid)) == [
                "Observation.status",
                "Observation.valueQuantity.value",
            ]
            wrong = await post(
                f"{base}/Observation",
                content=json.dumps({"resourceType": "Patient"}),
                headers=FHIR_JSON,
            )
            assert wrong.status_code == 422
            assert outcome(wrong)[0]["code"] == "not-supported"
            no_subject = observation(ident="H-2")
            del no_subject["subject"]
            unprocessable = await post(
                f"{base}/Observation", content=json.dumps(no_subject), headers=FHIR_JSON
            )
            assert unprocessable.status_code == 422
            assert outcome(unprocessable)[0]["expression"] == ["Observation.subject"]
            xml = await post(
                f"{base}/Observation",
                content=b"<Observation xmlns='http://hl7.org/fhir'/>",
                headers={"Content-Type": "application/fhir+xml"},
            )
            assert xml.status_code == 415
            assert "XML" in outcome(xml)[0]["diagnostics"]
            plain = await post(f"{base}/Observation", content=b"hello")
            assert plain.status_code == 415
            big = await post(f"{base}/Observation", content=b" " * 5000, headers=FHIR_JSON)
            assert big.status_code == 413
            assert outcome(big)[0]["code"] == "too-long"
            accept_xml = await client.get(
                f"{base}/metadata", headers={"Accept": "application/fhir+xml"}
            )
            assert accept_xml.status_code == 406
            assert (await client.get(f"{base}/Nothing")).status_code == 404
            gone = await client.get(f"{base}/Observation")
            assert gone.status_code == 405
            assert outcome(gone)[0]["code"] == "not-supported"
            search = await client.get(f"{base}/Flag", params={"name": "x"})
            assert search.status_code == 400
            no_patient = await client.get(f"{base}/Flag")
            assert outcome(no_patient)[0]["code"] == "required"
        rows = sorted(store.list_messages(), key=lambda r: r.id)
        assert [(r.status, r.ack_code) for r in rows] == [
            ("rejected", "AR"),  # malformed JSON
            ("rejected", "AR"),  # invalid resource
            ("rejected", "AR"),  # wrong type
            ("error", "AE"),  # no subject
            ("rejected", "AR"),  # XML
            ("rejected", "AR"),  # no content type
            ("rejected", "AR"),  # too large
        ]
        assert all(r.raw.startswith(b"POST /fhir/Observation HTTP/1.1\r\n") for r in rows)
        assert rows[4].raw.endswith(b"<Observation xmlns='http://hl7.org/fhir'/>")
        assert len(rows[6].raw) > 4096  # the oversize body's first bytes are kept

    scenario(tmp_path, engine, body, max_body_bytes=4096)


def _entry(resource: dict[str, Any], url: str) -> dict[str, Any]:
    return {
        "fullUrl": f"urn:uuid:{url}",
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"]},
    }


PATIENT_UUID = "3f1a9c2e-8b7d-4e6f-9a0b-1c2d3e4f5a6b"


def _bundle(kind: str, obs_status: str = "final") -> dict[str, Any]:
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": MRN, "value": "ZQ79202"}],
    }
    obs = observation(2.0, ident="B-1", status=obs_status)
    obs["subject"] = {"reference": f"urn:uuid:{PATIENT_UUID}"}
    plt = observation(
        30, ident="B-2", code={"coding": [{"system": "http://loinc.org", "code": "777-3"}]}
    )
    plt["subject"] = {"reference": f"urn:uuid:{PATIENT_UUID}"}
    claim = {"resourceType": "Claim", "status": "active"}
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            _entry(patient, PATIENT_UUID),
            _entry(obs, "0f0e0d0c-0b0a-4908-8706-050403020100"),
            _entry(plt, "1f0e0d0c-0b0a-4908-8706-050403020101"),
            _entry(claim, "2f0e0d0c-0b0a-4908-8706-050403020102"),
        ],
    }


def test_fhir_http_transaction_and_batch_answer_per_entry(engine: Engine, tmp_path: Path) -> None:
    async def body(base: str, store: SqliteStore) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            ok = await client.post(
                base, content=json.dumps(_bundle("transaction")), headers=FHIR_JSON
            )
            assert ok.status_code == 200
            answer = ok.json()
            assert answer["type"] == "transaction-response"
            statuses = [e["response"]["status"] for e in answer["entry"]]
            assert statuses == ["200 OK", "201 Created", "201 Created", "200 OK"]
            claim_issue = answer["entry"][3]["response"]["outcome"]["issue"][0]
            assert (claim_issue["severity"], claim_issue["code"]) == ("warning", "not-supported")
            failed = await client.post(
                base, content=json.dumps(_bundle("transaction", "nonsense")), headers=FHIR_JSON
            )
            assert failed.status_code == 400
            assert outcome(failed)[0]["expression"] == ["Bundle.entry[1].resource.status"]
            batch = await client.post(
                base, content=json.dumps(_bundle("batch", "nonsense")), headers=FHIR_JSON
            )
            assert batch.status_code == 200
            entries = batch.json()["entry"]
            assert [e["response"]["status"] for e in entries] == [
                "200 OK",
                "400 Bad Request",
                "201 Created",
                "200 OK",
            ]
            wrong = await client.post(
                base,
                content=json.dumps({"resourceType": "Bundle", "type": "collection"}),
                headers=FHIR_JSON,
            )
            assert wrong.status_code == 422
            flags = await client.get(
                f"{base}/Flag", params={"patient.identifier": f"{MRN}|ZQ79202"}
            )
            rules = sorted(
                c["code"]
                for e in flags.json()["entry"]
                for c in e["resource"]["code"]["coding"]
                if c["code"] != "LAB"
            )
            assert rules == ["leukopenia", "thrombocytopenia"]
        assert [r.message_type for r in sorted(store.list_messages(), key=lambda r: r.id)] == [
            "Bundle^transaction",
            "Bundle^transaction",
            "Bundle^batch",
            "Bundle^collection",
        ]

    scenario(tmp_path, engine, body)


def test_fhir_http_bearer_token_guards_everything_but_metadata(
    engine: Engine, tmp_path: Path
) -> None:
    async def body(base: str, store: SqliteStore) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            content = json.dumps(observation())
            missing = await client.post(f"{base}/Observation", content=content, headers=FHIR_JSON)
            assert missing.status_code == 401
            assert missing.headers["www-authenticate"].startswith("Bearer")
            assert outcome(missing)[0]["code"] == "login"
            wrong = await client.post(
                f"{base}/Observation",
                content=content,
                headers={**FHIR_JSON, "Authorization": "Bearer s3cret-but-wrong"},
            )
            assert wrong.status_code == 401
            search = await client.get(f"{base}/Flag", params={"patient.identifier": "x"})
            assert search.status_code == 401
            meta = await client.get(f"{base}/metadata")
            assert meta.status_code == 200
            assert "security" in meta.json()["rest"][0]
            right = await client.post(
                f"{base}/Observation",
                content=content,
                headers={**FHIR_JSON, "Authorization": "Bearer s3cret"},
            )
            assert right.status_code == 201
        (row,) = store.list_messages()  # refused credentials are not stored
        assert b"s3cret" not in row.raw

    scenario(tmp_path, engine, body, token="s3cret")  # noqa: S106 - a token made up for the test


def test_fhir_http_over_tls(engine: Engine, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    chain, key = tmp_path / "chain.pem", tmp_path / "key.pem"
    chain.write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
    key.write_bytes(cert.private_key_pem.bytes())
    trust = ssl.create_default_context()
    ca.configure_trust(trust)

    async def body(base: str, store: SqliteStore) -> None:
        assert base.startswith("https://")
        async with httpx.AsyncClient(timeout=10, verify=trust) as client:
            created = await client.post(
                f"{base}/Observation", content=json.dumps(observation()), headers=FHIR_JSON
            )
            assert created.status_code == 201
        async with httpx.AsyncClient(timeout=10) as untrusting:
            try:
                await untrusting.get(f"{base}/metadata")
            except httpx.ConnectError:
                pass
            else:
                raise AssertionError("a client that does not trust the CA got an answer")

    scenario(tmp_path, engine, body, tls=(chain, key))


def test_fhir_http_request_id_and_if_none_exist_are_retransmit_keys(
    engine: Engine, tmp_path: Path
) -> None:
    anonymous = observation(ident="unused")
    del anonymous["identifier"]

    async def body(base: str, store: SqliteStore) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            for header in ({"X-Request-Id": "req-7"}, {"If-None-Exist": "identifier=urn:x|7"}):
                first = await client.post(
                    f"{base}/Observation",
                    content=json.dumps(anonymous),
                    headers={**FHIR_JSON, **header},
                )
                again = await client.post(
                    f"{base}/Observation",
                    content=json.dumps(anonymous, indent=2),  # the same content, other bytes
                    headers={**FHIR_JSON, **header},
                )
                assert (first.status_code, again.status_code) == (201, 200), header
        rows = sorted(store.list_messages(), key=lambda r: r.id)
        assert [(r.control_id, r.status) for r in rows] == [
            ("request:req-7", "accepted"),
            ("request:req-7", "duplicate"),
            ("if-none-exist:identifier=urn:x|7", "accepted"),
            ("if-none-exist:identifier=urn:x|7", "duplicate"),
        ]

    scenario(tmp_path, engine, body)


def test_fhir_http_chunked_body_over_the_limit_is_413(engine: Engine, tmp_path: Path) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1000

    async def body(base: str, store: SqliteStore) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            big = await client.post(f"{base}/Observation", content=chunks(), headers=FHIR_JSON)
            assert big.status_code == 413
        (row,) = store.list_messages()
        assert json.loads(row.summary)["http_status"] == 413

    scenario(tmp_path, engine, body, max_body_bytes=4096)


class _FailingCommitter:
    """A store writer whose commits fail (the FhirCommitter port, faked)."""

    def submit(self, raw: bytes, *, source: str, received_at: Any) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_exception(StoreError("disk full"))
        return fut

    def submit_record(self, record: Any) -> asyncio.Future[int]:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        fut.set_exception(StoreError("disk full"))
        return fut

    async def call(self, fn: Any, *, timeout: float = 10.0) -> Any:
        raise StoreError("disk full")


def test_fhir_http_store_failure_is_503_send_again() -> None:
    async def go() -> None:
        app = build_app(_FailingCommitter(), FhirHttpConfig(), clock=FixedClock())
        server = AsgiServer(app, "127.0.0.1", 0)
        await server.start()
        base = f"http://127.0.0.1:{server.port}/fhir"
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                posted = await client.post(
                    f"{base}/Observation", content=json.dumps(observation()), headers=FHIR_JSON
                )
                assert posted.status_code == 503
                assert posted.headers["retry-after"] == "1"
                assert outcome(posted)[0]["code"] == "transient"
                refused = await client.post(f"{base}/Observation", content=b"x")
                assert refused.status_code == 503  # the 415 could not be recorded either
                search = await client.get(f"{base}/Flag", params={"patient.identifier": "a|b"})
                assert search.status_code == 503
        finally:
            await server.stop()

    run(go())
