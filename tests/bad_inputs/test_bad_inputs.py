"""The bad-input catalogue (``hl7_cases.py``, ``fhir_cases.py``) against ONE running
``prpgate serve`` process, its MLLP and FHIR HTTP listeners on 127.0.0.1.

For every case: the answer it must get (MSA-1 codes, ERR code and location; HTTP status,
OperationOutcome issue code and location), its raw input in the SQLite store afterwards,
and a good message right after it answered positively, so one bad input never takes
the server down or wedges a connection. ACKs are read with python-hl7, HTTP with httpx,
OperationOutcomes checked with the fhir.resources R4B model: clients nobody here wrote.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import hl7
import httpx
import pytest
from fhir.resources.R4B.operationoutcome import OperationOutcome

from prpgate.ports import MessageRow
from prpgate.store.sqlite import SqliteStore
from tests.bad_inputs import fhir_cases, hl7_cases
from tests.bad_inputs.fhir_cases import FhirCase, good_observation
from tests.bad_inputs.hl7_cases import LIMIT, Hl7Case, framed, good_message
from tests.integration.test_mllp_serve import IO_TIMEOUT, START_TIMEOUT, Server, start_server

pytestmark = pytest.mark.slow

VT, FS = b"\x0b", b"\x1c"
STORE_WAIT = 10.0  # seconds for an unanswered input's record to be committed


@dataclass
class Served:
    server: Server
    fhir_base: str
    http: httpx.Client


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("bad_inputs")
    server = start_server(
        tmp,
        "bad",
        PRPGATE_FHIR_HTTP_ENABLED="true",
        PRPGATE_FHIR_HTTP_PORT="0",
        PRPGATE_MAX_MESSAGE_BYTES=str(LIMIT),
    )
    port = json.loads((tmp / "bad.ready.json").read_text())["fhir_http_port"]
    try:
        with httpx.Client(timeout=IO_TIMEOUT * 3) as http:
            yield Served(server, f"http://127.0.0.1:{port}/fhir", http)
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(timeout=START_TIMEOUT)


# ------------------------------------------------------------------- helpers


class MllpConnection:
    """A plain MLLP client: writes bytes as given, reads framed answers."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_frame(self) -> bytes | None:
        """The next framed answer, or None when the server closed the connection."""
        while True:
            start = self.buf.find(VT)
            end = self.buf.find(FS, start + 1) if start >= 0 else -1
            if end >= 0:
                payload = self.buf[start + 1 : end]
                self.buf = self.buf[end + 1 :]
                return payload
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk

    def close(self) -> None:
        self.sock.close()


def _field(msg: hl7.Message, seg: str, n: int, field: int, comp: int = 1, sub: int = 1) -> str:
    try:
        return str(msg.extract_field(seg, n, field, 1, comp, sub))
    except (IndexError, KeyError):
        return ""


def _has(msg: hl7.Message, seg: str) -> bool:
    return any(str(s[0]) == seg for s in msg)


def _first_error(ack: hl7.Message) -> tuple[int | None, str]:
    """(HL7 error code, location ``SEG^occurrence^field``) of the first ERR, read as the
    ACK's version writes it (ERR-2/ERR-3 from v2.5, ERR-1 before)."""
    if not _has(ack, "ERR"):
        return None, ""
    version = _field(ack, "MSH", 1, 12)
    modern = tuple(int(p) for p in version.split(".")[:2]) >= (2, 5)
    if modern:
        parts = [_field(ack, "ERR", 1, 2, k) for k in (1, 2, 3)]
        code = _field(ack, "ERR", 1, 3, 1)
    else:
        parts = [_field(ack, "ERR", 1, 1, k) for k in (1, 2, 3)]
        code = _field(ack, "ERR", 1, 1, 4, 1)
    while parts and not parts[-1]:
        parts.pop()
    return (int(code) if code.isdigit() else None), "^".join(parts)


def _rows_after(store: Path, last_id: int) -> list[MessageRow]:
    db = SqliteStore(store, migrate=False)
    try:
        return [r for r in db.list_messages(limit=50) if r.id > last_id]
    finally:
        db.close()


def _last_id(store: Path) -> int:
    db = SqliteStore(store, migrate=False)
    try:
        rows = db.list_messages(limit=1)
        return rows[0].id if rows else 0
    finally:
        db.close()


def _wait_for_row(
    store: Path, last_id: int, found: Callable[[list[MessageRow]], bool]
) -> list[MessageRow]:
    """Rows stored after ``last_id``, waiting until ``found(rows)`` holds (or timing out)."""
    deadline = time.monotonic() + STORE_WAIT
    while True:
        rows = _rows_after(store, last_id)
        if found(rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


# --------------------------------------------------------------------- tests


def test_bad_input_catalogue_has_at_least_60_named_cases() -> None:
    names = [c.name for c in hl7_cases.CASES] + [c.name for c in fhir_cases.CASES]
    assert len(names) >= 60
    assert len(set(names)) == len(names), "case names must be unique"
    assert len(hl7_cases.CASES) >= 30
    assert len(fhir_cases.CASES) >= 30


@pytest.mark.parametrize("case", hl7_cases.CASES, ids=lambda c: c.name)
def test_serve_answers_each_bad_hl7_input_and_serves_the_next(
    served: Served, case: Hl7Case
) -> None:
    server = served.server
    before = _last_id(server.store)
    conn = MllpConnection(server.mllp_port)
    raw_answers: list[bytes] = []
    try:
        conn.send(framed(case.data) if case.how == "frame" else case.data)
        if case.how == "close":
            conn.sock.shutdown(socket.SHUT_WR)
            while (payload := conn.read_frame()) is not None:
                raw_answers.append(payload)
            conn.close()
            conn = MllpConnection(server.mllp_port)
        good_id = f"GOOD-{case.name}"[:199]
        conn.send(framed(good_message(good_id)))
        while True:
            payload = conn.read_frame()
            assert payload is not None, "the connection closed before the good message's ACK"
            ack = hl7.parse(payload.decode("utf-8", "replace"))
            if _field(ack, "MSA", 1, 2) == good_id:
                break
            raw_answers.append(payload)
        assert _field(ack, "MSA", 1, 1) == "AA", "the good message after it was not accepted"
    finally:
        conn.close()
    answers = [hl7.parse(p.decode("utf-8", "replace")) for p in raw_answers]

    assert tuple(_field(a, "MSA", 1, 1) for a in answers) == case.acks
    if answers:
        last = answers[-1]
        if case.msa2 is not None:
            assert all(_field(a, "MSA", 1, 2) == case.msa2 for a in answers)
        if case.err_code is not None:
            assert _first_error(last) == (case.err_code, case.err_location)
        elif _field(last, "MSA", 1, 1) in ("AA", "CA"):
            assert not _has(last, "ERR")
        if case.ack_prefix:
            assert raw_answers[-1].startswith(case.ack_prefix)

    expected = case.data if case.stored is None else case.stored

    def holds(rows: list[MessageRow]) -> bool:
        return any(r.raw == expected for r in rows)

    rows = _wait_for_row(server.store, before, holds)
    mine = [r for r in rows if r.raw == expected]
    assert mine, f"the raw input was not stored ({len(rows)} new rows)"
    assert mine[0].status == case.status
    assert server.proc.poll() is None, "prpgate serve died"


def _post(served: Served, case: FhirCase) -> httpx.Response:
    headers = dict(case.headers)
    if case.content_type is not None:
        headers["Content-Type"] = case.content_type
    url = served.fhir_base + case.path
    if case.chunked:
        body = case.body
        pieces = (body[i : i + 65536] for i in range(0, len(body), 65536))
        return served.http.post(url, content=pieces, headers=headers)
    return served.http.post(url, content=case.body, headers=headers)


@pytest.mark.parametrize("case", fhir_cases.CASES, ids=lambda c: c.name)
def test_serve_answers_each_bad_fhir_request_and_serves_the_next(
    served: Served, case: FhirCase
) -> None:
    server = served.server
    before = _last_id(server.store)
    resp = _post(served, case)

    assert resp.status_code == case.status, resp.text[:2000]
    assert resp.headers["content-type"].startswith("application/fhir+json")
    body = resp.json()
    if case.status >= 400:
        assert body["resourceType"] == "OperationOutcome"
        outcome = OperationOutcome.model_validate(body)
        errors = [i for i in outcome.issue if i.severity in ("error", "fatal")]
        assert errors, body
        assert errors[0].code == case.issue, body
        if case.location is not None:
            assert errors[0].expression, body
            assert errors[0].expression[0] == case.location, body
    if case.entries is not None:
        assert body["resourceType"] == "Bundle"
        statuses = tuple(int(e["response"]["status"].split()[0]) for e in body["entry"])
        assert statuses == case.entries
    if case.warns:
        assert any(i["severity"] == "warning" for i in body["issue"]), body

    expected = case.body if case.stored_body is None else case.stored_body

    def holds(rows: list[MessageRow]) -> bool:
        return any(
            r.raw.startswith(b"POST ") and r.raw.partition(b"\r\n\r\n")[2] == expected for r in rows
        )

    rows = _wait_for_row(server.store, before, holds)
    assert holds(rows), f"the request was not stored ({len(rows)} new rows)"
    if case.status >= 400:
        mine = [r for r in rows if r.raw.partition(b"\r\n\r\n")[2] == expected]
        assert mine[0].status in ("rejected", "error")

    good = served.http.post(
        served.fhir_base + "/Observation",
        content=good_observation(f"good-{case.name}"),
        headers={"Content-Type": "application/fhir+json"},
    )
    assert good.status_code == 201, good.text[:2000]
    assert server.proc.poll() is None, "prpgate serve died"


def test_serve_logged_no_unexpected_exception_for_bad_input(served: Served) -> None:
    log = served.server.log.read_text(errors="replace")
    assert "Traceback" not in log
    for line in log.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            assert record.get("level") not in ("error", "critical"), record
