"""The FHIR R4 HTTP listener: an ASGI app (Starlette) that feeds FHIR input into the
same pipeline and store as MLLP, and reads back what was decided.

* ``POST [base]/Observation`` and ``POST [base]`` (transaction or batch Bundle): the
  body, as a request record (``core.fhir_request``), goes to the store writer; the
  answer is written only after its commit (as MLLP ACKs are). Every input is stored,
  bad ones too (406 and 415 with the body, 413 with its first 64 KiB). A created Observation is
  answered with an OperationOutcome saying what was read and decided; with
  ``Prefer: return=representation`` with the Observation as received, with
  ``return=minimal`` with no body.
* ``GET [base]/metadata``: the CapabilityStatement.
* ``GET [base]/DetectedIssue?patient.identifier=…``, ``GET [base]/Flag?…``: on the
  reader given (``serve``'s ``StoreReader``: a search holds up no commit), else between
  the writer's batches.

Errors are OperationOutcomes: malformed JSON or an invalid resource 400, a wrong
resource type or input that cannot be processed 422, an unsupported media type 415
(XML included), a body over ``max_message_bytes`` 413, a failed commit 503. Never a
500 for bad input. With a token configured, every route but ``metadata`` needs
``Authorization: Bearer <token>`` (compared in constant time).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from prpgate.core.fhir_in import read_input
from prpgate.core.fhir_outcome import (
    OutcomeIssue,
    entry_response,
    http_status,
    issues_of,
    operation_outcome,
)
from prpgate.core.fhir_reading import FHIR_APPLICATION, FHIR_VERSION
from prpgate.core.fhir_request import record_request
from prpgate.core.model import Unmapped
from prpgate.core.pipeline import AckCode, Disposition
from prpgate.errors import StoreError
from prpgate.ingest import Ingested
from prpgate.listeners.fhir_capability import capability_statement
from prpgate.listeners.fhir_search import parse_search, run_search, searchset
from prpgate.ports import Clock, MessageRecord, Store

__all__ = ["FhirCommitter", "FhirEvents", "FhirHttpConfig", "FhirReader", "build_app"]

_log = structlog.get_logger("prpgate.fhir_http")
T = TypeVar("T")

_JSON_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir"})
_KEEP_OVERSIZE = 64 * 1024
_LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class FhirReader(Protocol):
    """Where searches run (``store_reader.StoreReader``, a connection of its own, so a
    search over many rows holds up no commit; else the store writer, between batches)."""

    async def call(self, fn: Callable[[Store], T], *, timeout: float = 10.0) -> T:
        """Run a read on the store."""
        ...


class FhirCommitter(FhirReader, Protocol):
    """The store writer as the listener uses it (``serve.StoreWriter``); its ``call``
    runs a read between batches."""

    def submit(self, raw: bytes, *, source: str, received_at: datetime) -> asyncio.Future[Ingested]:
        """Ingest one input; resolves after its commit."""
        ...

    def submit_record(self, record: MessageRecord) -> asyncio.Future[int]:
        """Record an input that is not processed (413, 415); resolves after the commit."""
        ...


class FhirEvents(Protocol):
    """What the listener reports, for metrics (``serve.ServeMetrics``)."""

    def processed(self, item: Ingested) -> None:
        """An input was committed with this outcome."""
        ...


@dataclass(frozen=True, slots=True)
class FhirHttpConfig:
    """The listener's settings: ``base_path`` of the FHIR base, body limit, optional
    token, and how identifiers without a system are scoped (as the engine does)."""

    base_path: str = "/fhir"
    max_body_bytes: int = 4 * 1024 * 1024
    token: str | None = None
    system_base: str = "urn:prpgate:assigning-authority"
    default_offset: str = "+00:00"


class _Metrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        r = registry or CollectorRegistry()
        self.requests = Counter(
            "prpgate_fhir_http_requests",
            "FHIR HTTP requests answered, by route and status.",
            ["route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "prpgate_fhir_http_latency_seconds",
            "From a FHIR request's arrival to its answer (POSTs: after the commit).",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )


def _fhir_response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Response:
    content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(content, status, headers=headers, media_type="application/fhir+json")


def _outcome(status: int, *issues: OutcomeIssue, headers: dict[str, str] | None = None) -> Response:
    return _fhir_response(status, operation_outcome(list(issues)), headers)


def _wants_xml(request: Request) -> bool:
    fmt = request.query_params.get("_format", "").lower()
    if fmt:
        return "xml" in fmt
    accept = request.headers.get("accept", "").lower()
    if not accept:
        return False
    types = [a.split(";", 1)[0].strip() for a in accept.split(",")]
    return all("xml" in t for t in types if t)


def build_app(
    committer: FhirCommitter,
    config: FhirHttpConfig,
    *,
    clock: Clock,
    reader: FhirReader | None = None,
    events: FhirEvents | None = None,
    registry: CollectorRegistry | None = None,
) -> Starlette:
    """The FHIR listener's ASGI app (see the module docstring)."""
    started = clock.now().isoformat(timespec="seconds")
    base = config.base_path.rstrip("/")
    token = config.token.encode() if config.token else None
    metrics = _Metrics(registry)
    reads: FhirReader = reader if reader is not None else committer

    def base_url(request: Request) -> str:
        return f"{str(request.base_url).rstrip('/')}{base}"

    def authorised(request: Request) -> bool:
        if token is None:
            return True
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(credential.strip().encode(), token)

    def guarded(
        route: str, handler: Callable[[Request], Awaitable[Response]], *, open_route: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            arrived = time.perf_counter()
            if not open_route and not authorised(request):
                response = _outcome(
                    401,
                    OutcomeIssue("error", "login", "a valid bearer token is required"),
                    headers={"WWW-Authenticate": 'Bearer realm="prpgate"'},
                )
            elif _wants_xml(request):
                issue = OutcomeIssue(
                    "error", "not-supported", "prpgate answers application/fhir+json only"
                )
                if request.method == "POST":  # a refused input is stored too
                    response = await refuse_post(request, 406, issue)
                else:
                    response = _outcome(406, issue)
            else:
                response = await handler(request)
            metrics.requests.labels(route, str(response.status_code)).inc()
            metrics.latency.labels(route).observe(time.perf_counter() - arrived)
            return response

        return endpoint

    async def read_body(request: Request) -> tuple[bytes, bool]:
        """The body, and whether it stayed within the limit (if not: its first 64 KiB)."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > config.max_body_bytes:
            head = bytearray()
            async for chunk in request.stream():
                head += chunk
                if len(head) >= _KEEP_OVERSIZE:
                    break
            return bytes(head[:_KEEP_OVERSIZE]), False
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > config.max_body_bytes:
                return bytes(body[:_KEEP_OVERSIZE]), False
        return bytes(body), True

    async def record_refusal(
        request: Request, raw: bytes, body: bytes, status: int, issue: OutcomeIssue
    ) -> Response:
        record = MessageRecord(
            received_at=clock.now().isoformat(),
            source=_source(request),
            raw=raw,
            content_hash=hashlib.sha256(body).hexdigest(),
            sending_application=FHIR_APPLICATION,
            sending_facility="",
            control_id="",
            message_type="",
            version=FHIR_VERSION,
            status=Disposition.REJECTED.value,
            ack_code=AckCode.AR.value,
            errors=json.dumps(
                [{"code": 100, "location": "$", "reason": issue.diagnostics}], ensure_ascii=False
            ),
            summary=json.dumps({"http_status": status, "bytes": len(body)}),
        )
        try:
            await committer.submit_record(record)
        except StoreError as exc:
            return _store_failed(exc)
        _log.info("fhir input refused", status=status, issue=issue.code, bytes=len(body))
        return _outcome(status, issue, headers={"Connection": "close"} if status == 413 else None)

    async def refuse_post(request: Request, status: int, issue: OutcomeIssue) -> Response:
        """Read, store and refuse a POST's body (over the limit: 413 instead)."""
        try:
            body, whole = await read_body(request)
        except ClientDisconnect:
            _log.info("fhir client went away before its request was read", status=status)
            return Response(status_code=400)
        raw = record_request(request.url.path, dict(request.headers.items()), body)
        if not whole:
            status = 413
            issue = OutcomeIssue(
                "error", "too-long", f"the body is over the limit of {config.max_body_bytes} bytes"
            )
        return await record_refusal(request, raw, body, status, issue)

    async def post(request: Request, route: str) -> Response:
        try:
            body, whole = await read_body(request)
        except ClientDisconnect:
            _log.info("fhir client went away before its request was read", route=route)
            return Response(status_code=400)
        headers = dict(request.headers.items())
        raw = record_request(request.url.path, headers, body)
        if not whole:
            issue = OutcomeIssue(
                "error",
                "too-long",
                f"the body is over the limit of {config.max_body_bytes} bytes",
            )
            return await record_refusal(request, raw, body, 413, issue)
        ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype not in _JSON_TYPES:
            what = "XML is" if "xml" in ctype else f"{ctype or 'a body without Content-Type'} is"
            issue = OutcomeIssue(
                "error",
                "not-supported",
                f"{what} not supported: send application/fhir+json (or application/json)",
            )
            return await record_refusal(request, raw, body, 415, issue)
        try:
            item = await committer.submit(raw, source=_source(request), received_at=clock.now())
        except StoreError as exc:
            return _store_failed(exc)
        if events is not None:
            events.processed(item)
        if route == "bundle":
            return _bundle_answer(item, raw, config)
        return _observation_answer(item, body, _prefer(request))

    async def post_observation(request: Request) -> Response:
        return await post(request, "observation")

    async def post_bundle(request: Request) -> Response:
        return await post(request, "bundle")

    async def metadata(request: Request) -> Response:
        statement = capability_statement(
            base_url(request), date=started, token_required=token is not None
        )
        return _fhir_response(200, statement)

    def search(resource_type: str) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            query = parse_search(resource_type, request.query_params.multi_items())
            if isinstance(query, OutcomeIssue):
                return _outcome(400, query)
            try:
                rows = await reads.call(lambda store: run_search(store, query))
            except StoreError as exc:
                return _store_failed(exc)
            return _fhir_response(200, searchset(base_url(request), str(request.url), rows))

        return handler

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        if status == 405:
            return _outcome(
                405,
                OutcomeIssue(
                    "error", "not-supported", f"{request.method} is not supported on this path"
                ),
            )
        return _outcome(
            status,
            OutcomeIssue("error", "not-found", f"no such endpoint; see {base}/metadata"),
        )

    async def crashed(request: Request, exc: Exception) -> Response:
        _log.exception("fhir request failed", path=request.url.path)
        return _outcome(500, OutcomeIssue("fatal", "exception", "internal error"))

    routes = [
        Route(f"{base}/Observation", guarded("observation", post_observation), methods=["POST"]),
        Route(base or "/", guarded("bundle", post_bundle), methods=["POST"]),
        Route(f"{base}/metadata", guarded("metadata", metadata, open_route=True), methods=["GET"]),
        Route(
            f"{base}/DetectedIssue",
            guarded("search", search("DetectedIssue")),
            methods=["GET"],
        ),
        Route(f"{base}/Flag", guarded("search", search("Flag")), methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: not_found, Exception: crashed},
    )


def _source(request: Request) -> str:
    client = request.client
    return f"http {client.host}:{client.port}" if client else "http"


def _store_failed(exc: StoreError) -> Response:
    _log.error("fhir input not committed", error=str(exc))
    return _outcome(
        503,
        OutcomeIssue("error", "transient", "the store could not commit the input: send it again"),
        headers={"Retry-After": "1"},
    )


def _warnings(item: Ingested) -> list[OutcomeIssue]:
    reading = item.reading
    out = [
        OutcomeIssue("warning", "processing", f"{u.reason.value}: {u.detail}", u.result.source)
        for u in reading.results
        if isinstance(u, Unmapped) and u.reason.is_problem
    ]
    out += [OutcomeIssue("warning", "informational", w) for w in reading.warnings]
    return out


def _prefer(request: Request) -> str:
    """The ``return`` preference (``minimal``, ``representation``, ``OperationOutcome``)."""
    for part in request.headers.get("prefer", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "return":
            return value.strip().strip('"')
    return "OperationOutcome"


def _observation_answer(item: Ingested, body: bytes, prefer: str) -> Response:
    reading = item.reading
    if item.disposition is Disposition.DUPLICATE and item.ack is not AckCode.AA:
        status = http_status(reading.disposition, reading.errors)
    else:
        status = http_status(item.disposition, reading.errors)
    if status >= 400:
        return _outcome(status, *issues_of(reading.errors))
    if item.disposition is Disposition.DUPLICATE:
        note = (
            f"a retransmit of message {item.duplicate_of} (same key and content): "
            "not processed again"
        )
    else:
        note = (
            f"accepted as message {item.message_id}: {len(reading.results)} result(s) read, "
            f"{len(item.emitted)} DetectedIssue/Flag version(s) created or changed"
        )
    if prefer == "minimal":
        return Response(status_code=status)
    if prefer == "representation":
        # the Observation as received: prpgate keeps no Observation resource of its own
        return Response(body, status, media_type="application/fhir+json")
    return _outcome(status, OutcomeIssue("information", "informational", note), *_warnings(item))


def _bundle_answer(item: Ingested, raw: bytes, config: FhirHttpConfig) -> Response:
    reading = item.reading
    disposition = item.disposition
    if disposition is Disposition.DUPLICATE:
        disposition = Disposition.ACCEPTED if item.ack is AckCode.AA else reading.disposition
    if disposition is not Disposition.ACCEPTED:
        return _outcome(http_status(disposition, reading.errors), *issues_of(reading.errors))
    # The entry verdicts: the same pure reading the pipeline made, read again here.
    found = read_input(raw, system_base=config.system_base, default_offset=config.default_offset)
    unmapped: dict[int, list[OutcomeIssue]] = {}
    for w in _warnings(item):
        index = _entry_index(w.location)
        if index is not None:
            unmapped.setdefault(index, []).append(w)
    entries = []
    for verdict in found.entries:
        response = entry_response(verdict)
        extra = unmapped.get(verdict.index, [])
        if extra:
            response["outcome"]["issue"].extend(operation_outcome(extra)["issue"])
        entries.append({"response": response})
    kind = f"{found.bundle_type}-response"
    return _fhir_response(200, {"resourceType": "Bundle", "type": kind, "entry": entries})


def _entry_index(location: str) -> int | None:
    if not location.startswith("Bundle.entry["):
        return None
    digits = location[len("Bundle.entry[") :].split("]", 1)[0]
    return int(digits) if digits.isdigit() else None
