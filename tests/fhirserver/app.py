"""A small FHIR R4 server for delivery tests (Starlette), with switchable faults.

What matters of FHIR REST for DetectedIssue, Flag and Patient: create, conditional
create (``If-None-Exist``), update and upsert by id (``PUT [type]/[id]``, with
``If-Match``), conditional update (``PUT [type]?identifier=``), read, search by
identifier, history, versionId/ETag, 412 when several resources match a conditional
request, errors as OperationOutcome. Faults (``POST /_admin/fault``): 500, 503 and
429 (with ``Retry-After``), 400 with an OperationOutcome, 409 version conflicts,
slow answers. "Down" is the process stopped (see ``process.py``); the state file
keeps what the server held across a restart.

A SMART Backend Services token endpoint (``POST /auth/token``) checks the client
assertion's signature, audience, expiry and jti; with ``auth`` set, FHIR requests
need a bearer token it issued (or the static token).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

FHIR_JSON = "application/fhir+json"
TYPES = frozenset({"DetectedIssue", "Flag", "Patient"})


@dataclass
class Fault:
    kind: str = "none"  # none, 500, 503, 429, 400, 409, slow, reset, reset-after-write
    count: int = 0  # requests affected; -1 until changed
    retry_after: str | None = None
    delay: float = 0.0
    writes_only: bool = True


@dataclass
class ServerConfig:
    state_file: Path | None = None
    auth: str = "none"  # none, bearer, smart
    bearer: str = ""
    client_id: str = ""
    client_public_key: str = ""
    token_lifetime: int = 300


@dataclass
class State:
    # "Type/id" -> every version, oldest first
    resources: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)
    next_id: int = 1
    tokens: dict[str, float] = field(default_factory=dict)
    jtis: set[str] = field(default_factory=set)
    token_requests: list[dict[str, Any]] = field(default_factory=list)
    faults_served: dict[str, int] = field(default_factory=dict)  # requests each fault hit


def _oo(status: int, code: str, text: str, headers: dict[str, str] | None = None) -> Response:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}],
    }
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON, headers=headers)


async def reset_connection(request: Request) -> None:
    """Abort the request's TCP connection with a reset (RST): SO_LINGER 0, then abort."""
    transport = request.scope.get("state", {}).get("transport")
    assert transport is not None, "run with tests.fhirserver.__main__ (transport in state)"
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    await asyncio.sleep(0.01)  # let the server see the connection gone before answering


def create_app(config: ServerConfig) -> Starlette:
    """The test server's ASGI app."""
    state = State()
    fault = Fault()
    if config.state_file and config.state_file.exists():
        saved = json.loads(config.state_file.read_text())
        state.resources = saved["resources"]
        state.log = saved["log"]
        state.next_id = saved["next_id"]

    def save() -> None:
        if config.state_file:
            tmp = config.state_file.with_suffix(".tmp")
            data = {"resources": state.resources, "log": state.log, "next_id": state.next_id}
            tmp.write_text(json.dumps(data))
            tmp.replace(config.state_file)

    def current(key: str) -> dict[str, Any]:
        return state.resources[key][-1]

    def search(kind: str, token: str) -> list[dict[str, Any]]:
        system, _, value = token.partition("|")
        found = []
        for key, versions in state.resources.items():
            if not key.startswith(f"{kind}/"):
                continue
            res = versions[-1]
            for ident in res.get("identifier") or []:
                if ident.get("value") == value and (not system or ident.get("system") == system):
                    found.append(res)
                    break
        return found

    def stored(res: dict[str, Any], status: int) -> Response:
        vid = res["meta"]["versionId"]
        return JSONResponse(
            res,
            status_code=status,
            media_type=FHIR_JSON,
            headers={
                "ETag": f'W/"{vid}"',
                "Location": f"/fhir/{res['resourceType']}/{res['id']}/_history/{vid}",
            },
        )

    def put_version(kind: str, rid: str, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        key = f"{kind}/{rid}"
        versions = state.resources.setdefault(key, [])
        res = {**body, "id": rid, "meta": {"versionId": str(len(versions) + 1)}}
        versions.append(res)
        return res, 201 if len(versions) == 1 else 200

    def new_id() -> str:
        rid = f"s{state.next_id}"
        state.next_id += 1
        return rid

    def authorised(request: Request) -> bool:
        if config.auth == "none":
            return True
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip()
        if config.auth == "bearer":
            return bool(token) and secrets.compare_digest(token, config.bearer)
        expires = state.tokens.get(token)
        return expires is not None and expires > time.time()

    async def apply_fault(request: Request) -> Response | None:
        if fault.kind == "none" or fault.count == 0:
            return None
        if fault.writes_only and request.method not in ("PUT", "POST"):
            return None
        if fault.kind == "reset-after-write":
            return None  # taken by ``answer`` once the write is applied
        if fault.count > 0:
            fault.count -= 1
        state.faults_served[fault.kind] = state.faults_served.get(fault.kind, 0) + 1
        if fault.kind == "reset":
            await reset_connection(request)
            return Response(status_code=500)  # never reaches the client
        if fault.kind == "slow":
            await asyncio.sleep(fault.delay)
            return None
        headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
        if fault.kind == "400":
            return _oo(400, "invalid", "Flag.code: minimum required = 1, but only found 0", headers)
        if fault.kind == "409":
            return _oo(409, "conflict", "resource was modified by another request")
        if fault.kind == "429":
            return _oo(429, "throttled", "too many requests", headers)
        return _oo(int(fault.kind), "transient", f"fault {fault.kind}", headers)

    async def answer(request: Request, response: Response) -> Response:
        """A write's answer, or a reset in its place (``reset-after-write``)."""
        if fault.kind == "reset-after-write" and fault.count != 0:
            if fault.count > 0:
                fault.count -= 1
            state.faults_served[fault.kind] = state.faults_served.get(fault.kind, 0) + 1
            await reset_connection(request)
        return response

    def record(
        request: Request, body: dict[str, Any], status: int, res: dict[str, Any] | None
    ) -> None:
        ident = (body.get("identifier") or [{}])[0]
        state.log.append(
            {
                "method": request.method,
                "path": request.url.path,
                "query": str(request.url.query),
                "status": status,
                "identifier": ident.get("value", ""),
                "resource_status": body.get("status", ""),
                "id": res["id"] if res else None,
                "version": res["meta"]["versionId"] if res else None,
            }
        )
        save()

    async def metadata(request: Request) -> Response:
        return JSONResponse(
            {
                "resourceType": "CapabilityStatement",
                "status": "active",
                "kind": "instance",
                "fhirVersion": "4.0.1",
                "format": ["json"],
            },
            media_type=FHIR_JSON,
        )

    async def read_body(request: Request, kind: str) -> dict[str, Any] | Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _oo(400, "structure", "body is not JSON")
        if not isinstance(body, dict) or body.get("resourceType") != kind:
            return _oo(400, "structure", f"body is not a {kind}")
        if kind != "Patient" and (not body.get("identifier") or not body.get("status")):
            return _oo(422, "required", f"{kind}.identifier and {kind}.status are required")
        return body

    async def type_level(request: Request) -> Response:
        kind = request.path_params["type"]
        if kind not in TYPES:
            return _oo(404, "not-supported", f"unknown resource type {kind}")
        if not authorised(request):
            return _oo(401, "login", "no valid bearer token")
        if (failed := await apply_fault(request)) is not None:
            return failed
        token = request.query_params.get("identifier")
        if request.method == "GET":
            found = search(kind, token or "") if token else []
            bundle = {
                "resourceType": "Bundle",
                "type": "searchset",
                "total": len(found),
                "entry": [{"resource": r} for r in found],
            }
            return JSONResponse(bundle, media_type=FHIR_JSON)
        body = await read_body(request, kind)
        if isinstance(body, Response):
            return body
        if request.method == "POST":
            cond = request.headers.get("If-None-Exist")
            if cond:
                found = search(kind, cond.removeprefix("identifier="))
                if len(found) > 1:
                    record(request, body, 412, None)
                    return _oo(412, "multiple-matches", f"{len(found)} resources match {cond}")
                if found:
                    record(request, body, 200, found[0])
                    return stored(found[0], 200)
            body.pop("id", None)
            res, status = put_version(kind, new_id(), body)
            record(request, body, status, res)
            return await answer(request, stored(res, status))
        # PUT [type]?identifier= : conditional update
        if not token:
            return _oo(400, "required", "conditional update needs search parameters")
        found = search(kind, token)
        if len(found) > 1:
            record(request, body, 412, None)
            return _oo(412, "multiple-matches", f"{len(found)} resources match")
        rid = found[0]["id"] if found else (body.get("id") or new_id())
        if body.get("id") and body["id"] != rid:
            return _oo(400, "invalid", "resource id does not match the resource found")
        res, status = put_version(kind, rid, body)
        record(request, body, status, res)
        return await answer(request, stored(res, status))

    async def instance_level(request: Request) -> Response:
        kind, rid = request.path_params["type"], request.path_params["id"]
        if kind not in TYPES:
            return _oo(404, "not-supported", f"unknown resource type {kind}")
        if not authorised(request):
            return _oo(401, "login", "no valid bearer token")
        if (failed := await apply_fault(request)) is not None:
            return failed
        key = f"{kind}/{rid}"
        if request.method == "GET":
            if key not in state.resources:
                return _oo(404, "not-found", f"{key} is not known")
            return stored(current(key), 200)
        body = await read_body(request, kind)
        if isinstance(body, Response):
            return body
        if body.get("id") != rid:
            return _oo(400, "invalid", "resource id does not match the URL")
        match = request.headers.get("If-Match")
        if match is not None:
            have = current(key)["meta"]["versionId"] if key in state.resources else None
            if match.strip().removeprefix("W/").strip('"') != have:
                record(request, body, 412, None)
                return _oo(412, "conflict", f"version {match} is not current ({have})")
        res, status = put_version(kind, rid, body)
        record(request, body, status, res)
        return await answer(request, stored(res, status))

    async def history(request: Request) -> Response:
        key = f"{request.path_params['type']}/{request.path_params['id']}"
        versions = state.resources.get(key, [])
        bundle = {
            "resourceType": "Bundle",
            "type": "history",
            "total": len(versions),
            "entry": [{"resource": r} for r in reversed(versions)],
        }
        return JSONResponse(bundle, media_type=FHIR_JSON)

    async def token(request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        entry: dict[str, Any] = {"ok": False}
        state.token_requests.append(entry)
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        if form.get("client_assertion_type") != (
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        ):
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        try:
            claims = jwt.decode(
                str(form.get("client_assertion", "")),
                config.client_public_key,
                algorithms=["RS384", "ES384"],
                audience=str(request.url),
                options={"require": ["exp", "iss", "sub", "aud", "jti"]},
            )
        except jwt.PyJWTError as exc:
            entry["error"] = type(exc).__name__
            return JSONResponse({"error": "invalid_client", "detail": str(exc)}, status_code=401)
        if claims["iss"] != config.client_id or claims["sub"] != config.client_id:
            entry["error"] = "wrong client"
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        if claims["exp"] > time.time() + 300 + 30 or claims["jti"] in state.jtis:
            entry["error"] = "lifetime or replay"
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        state.jtis.add(claims["jti"])
        access = secrets.token_urlsafe(24)
        state.tokens[access] = time.time() + config.token_lifetime
        entry["ok"] = True
        return JSONResponse(
            {
                "access_token": access,
                "token_type": "bearer",
                "expires_in": config.token_lifetime,
                "scope": str(form.get("scope", "")),
            }
        )

    async def admin_fault(request: Request) -> Response:
        data = await request.json()
        fault.kind = str(data.get("kind", "none"))
        fault.count = int(data.get("count", -1))
        fault.retry_after = data.get("retry_after")
        fault.delay = float(data.get("delay", 0.0))
        fault.writes_only = bool(data.get("writes_only", True))
        return JSONResponse({"ok": True})

    async def admin_state(request: Request) -> Response:
        return JSONResponse(
            {
                "resources": state.resources,
                "log": state.log,
                "token_requests": state.token_requests,
                "tokens": len(state.tokens),
                "fault": {"kind": fault.kind, "count": fault.count},
                "faults_served": state.faults_served,
            }
        )

    async def admin_seed(request: Request) -> Response:
        res = await request.json()
        kind = res["resourceType"]
        rid = res.get("id") or new_id()
        put_version(kind, rid, res)
        save()
        return JSONResponse({"id": rid})

    async def admin_revoke(request: Request) -> Response:
        state.tokens.clear()
        return JSONResponse({"ok": True})

    routes = [
        Route("/fhir/metadata", metadata, methods=["GET"]),
        Route("/fhir/{type}", type_level, methods=["GET", "POST", "PUT"]),
        Route("/fhir/{type}/{id}", instance_level, methods=["GET", "PUT"]),
        Route("/fhir/{type}/{id}/_history", history, methods=["GET"]),
        Route("/auth/token", token, methods=["POST"]),
        Route("/_admin/fault", admin_fault, methods=["POST"]),
        Route("/_admin/state", admin_state, methods=["GET"]),
        Route("/_admin/seed", admin_seed, methods=["POST"]),
        Route("/_admin/revoke", admin_revoke, methods=["POST"]),
    ]
    return Starlette(routes=routes)
