"""How one outbox row is written to a FHIR server: method, URL, headers and body. Pure.

Two write modes (issue 7):

* ``client-id``: ``PUT [type]/[id]`` with the deterministic id the pipeline put in
  the resource (``core.build.resource_id``) — an upsert, immune to the races of
  conditional create under concurrency.
* ``conditional``: the first version is a conditional create (``POST [type]`` with
  ``If-None-Exist: identifier=system|value``); later versions a conditional update
  (``PUT [type]?identifier=system|value``). The server assigns ids, so the body
  carries none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from prpgate.core.build import resource_id
from prpgate.errors import DeliveryError

__all__ = [
    "FHIR_JSON",
    "Write",
    "WriteMode",
    "identifier_token",
    "plan_reapply",
    "plan_search",
    "plan_write",
]

FHIR_JSON = "application/fhir+json"


class WriteMode(Enum):
    """How outputs are made idempotent on the server."""

    CLIENT_ID = "client-id"
    CONDITIONAL = "conditional"


@dataclass(frozen=True, slots=True)
class Write:
    """One HTTP request, relative to the FHIR base URL."""

    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None

    @property
    def is_conditional(self) -> bool:
        """True for a conditional create or update (the server resolves the target)."""
        return "If-None-Exist" in self.headers or (self.method == "PUT" and "/" not in self.path)


def _load(resource: str) -> dict[str, Any]:
    try:
        data = json.loads(resource)
    except ValueError as exc:
        raise DeliveryError(f"outbox resource is not JSON: {exc}", retryable=False) from exc
    if not isinstance(data, dict):
        raise DeliveryError("outbox resource is not a JSON object", retryable=False)
    return data


def identifier_token(resource: dict[str, Any]) -> str:
    """The ``system|value`` search token of a resource's first identifier.

    Raises DeliveryError (not retryable) when the resource has none.
    """
    idents = resource.get("identifier") or []
    first = idents[0] if idents and isinstance(idents[0], dict) else {}
    system, value = first.get("system"), first.get("value")
    if not system or not value:
        raise DeliveryError("resource has no identifier system and value", retryable=False)
    return f"{system}|{value}"


def _body(resource: dict[str, Any]) -> bytes:
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":")).encode()


def plan_write(
    kind: str, identifier: str, version: int, resource: str, mode: WriteMode
) -> tuple[Write, str]:
    """The request that writes one resource version, and its identifier search token."""
    data = _load(resource)
    token = identifier_token(data)
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
    if mode is WriteMode.CLIENT_ID:
        rid = str(data.get("id") or resource_id(kind, identifier))
        data["id"] = rid
        return Write("PUT", f"{kind}/{rid}", headers=headers, body=_body(data)), token
    data.pop("id", None)
    if version <= 1:
        headers["If-None-Exist"] = f"identifier={token}"
        return Write("POST", kind, headers=headers, body=_body(data)), token
    return Write(
        "PUT", kind, params={"identifier": token}, headers=headers, body=_body(data)
    ), token


def plan_search(kind: str, token: str) -> Write:
    """``GET [type]?identifier=system|value`` — what the server holds for this output."""
    return Write("GET", kind, params={"identifier": token}, headers={"Accept": FHIR_JSON})


def plan_reapply(kind: str, resource: str, server_id: str, version_id: str | None) -> Write:
    """``PUT [type]/[id]`` of the resource the server already holds under ``server_id``,
    guarded by ``If-Match`` on the version just read (re-apply after a conflict)."""
    data = _load(resource)
    data["id"] = server_id
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
    if version_id:
        headers["If-Match"] = f'W/"{version_id}"'
    return Write("PUT", f"{kind}/{server_id}", headers=headers, body=_body(data))
