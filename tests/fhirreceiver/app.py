"""A FHIR endpoint that receives what ``prpgate send`` posts and answers as servers do.

``POST /fhir/{type}``: the body is validated with the R4B model of its type; 201 with
the resource and an id, or 400/422 with an OperationOutcome. ``POST /fhir``: a batch
Bundle gets a batch-response (each entry 201 or 422 with its outcome); a transaction
is all or nothing (400 naming the first bad entry); other Bundle types are refused.
A resource carrying ``meta.tag`` code ``slow`` is answered after ``--slow`` seconds.
With ``--bearer TOKEN`` every request needs that token (401 otherwise).
``GET /_log`` lists every request received (path, resource id, answer).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

FHIR_JSON = "application/fhir+json"


@dataclass
class Config:
    bearer: str = ""
    slow: float = 3.0
    log: list[dict[str, Any]] = field(default_factory=list)
    next_id: int = 1


def outcome(status: int, code: str, text: str) -> JSONResponse:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}],
    }
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON)


def check(resource: Any, rtype: str | None = None) -> str:
    """'' when the resource validates (as ``rtype`` if given), else why not."""
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        return "not a FHIR resource"
    if rtype is not None and resource["resourceType"] != rtype:
        return f"resourceType {resource['resourceType']} posted to /{rtype}"
    try:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    except (KeyError, ValueError, ValidationError) as exc:
        return f"{resource['resourceType']} does not validate: {str(exc).splitlines()[0:3]}"
    return ""


def is_slow(resource: Any) -> bool:
    tags = (resource.get("meta") or {}).get("tag") or [] if isinstance(resource, dict) else []
    return any(t.get("code") == "slow" for t in tags)


def create_app(config: Config) -> Starlette:
    async def receive(request: Request) -> tuple[Any, Response | None]:
        if config.bearer and request.headers.get("authorization") != f"Bearer {config.bearer}":
            return None, outcome(401, "login", "a valid bearer token is required")
        if not request.headers.get("content-type", "").startswith(FHIR_JSON):
            return None, outcome(415, "not-supported", "send application/fhir+json")
        try:
            return json.loads(await request.body()), None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return None, outcome(400, "structure", f"not JSON: {exc}")

    def record(request: Request, resource: Any, answer: Response) -> Response:
        rid = resource.get("id") if isinstance(resource, dict) else None
        config.log.append({"path": request.url.path, "id": rid, "status": answer.status_code})
        return answer

    def created(resource: dict[str, Any]) -> dict[str, Any]:
        stored = {**resource, "id": f"srv-{config.next_id}"}
        config.next_id += 1
        return stored

    async def type_level(request: Request) -> Response:
        resource, refused = await receive(request)
        if refused is not None:
            return record(request, resource, refused)
        if is_slow(resource):
            await asyncio.sleep(config.slow)
        problem = check(resource, request.path_params["type"])
        if problem:
            return record(request, resource, outcome(422, "invalid", problem))
        body = created(resource)
        answer = JSONResponse(body, status_code=201, media_type=FHIR_JSON)
        return record(request, resource, answer)

    async def system_level(request: Request) -> Response:
        bundle, refused = await receive(request)
        if refused is not None:
            return record(request, bundle, refused)
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            return record(request, bundle, outcome(400, "invalid", "POST [base] takes a Bundle"))
        kind = bundle.get("type")
        entries = [e.get("resource") for e in bundle.get("entry") or []]
        if kind == "transaction":
            for n, resource in enumerate(entries, 1):
                problem = check(resource)
                if problem:
                    return record(request, bundle, outcome(400, "invalid", f"entry {n}: {problem}"))
            response = [{"response": {"status": "201 Created"}} for _ in entries]
        elif kind == "batch":
            response = []
            for resource in entries:
                problem = check(resource)
                if problem:
                    oo = json.loads(outcome(422, "invalid", problem).body)
                    response.append(
                        {"response": {"status": "422 Unprocessable Entity", "outcome": oo}}
                    )
                else:
                    response.append({"response": {"status": "201 Created"}})
        else:
            return record(request, bundle, outcome(400, "invalid", f"Bundle type {kind} refused"))
        body = {"resourceType": "Bundle", "type": f"{kind}-response", "entry": response}
        return record(request, bundle, JSONResponse(body, media_type=FHIR_JSON))

    async def metadata(request: Request) -> Response:
        body = {"resourceType": "CapabilityStatement", "status": "active", "kind": "instance"}
        return JSONResponse(body, media_type=FHIR_JSON)

    async def log(request: Request) -> Response:
        return JSONResponse(config.log)

    return Starlette(
        routes=[
            Route("/fhir/metadata", metadata, methods=["GET"]),
            Route("/fhir", system_level, methods=["POST"]),
            Route("/fhir/{type}", type_level, methods=["POST"]),
            Route("/_log", log, methods=["GET"]),
        ]
    )
