"""Optional patient resolution: turn an identifier reference into a literal one.

DESIGN.md: the patient is referenced by identifier unless resolved. With resolution
on, the sink searches ``Patient?identifier=system|value`` on the clinic server and,
when exactly one Patient matches, adds ``reference: Patient/<id>`` beside the
identifier (kept). No match, several matches or a failed search leave the identifier
reference as it is: resolution never holds a delivery back. Matches are cached.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from prpgate.delivery.write import Write, plan_search
from prpgate.errors import DeliveryError

__all__ = ["PatientResolver"]

_FIELD = {"DetectedIssue": "patient", "Flag": "subject"}


class PatientResolver:
    """Resolves patient identifiers to ``Patient/<id>``; keeps up to ``size`` matches."""

    def __init__(self, size: int = 10_000) -> None:
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._size = size
        self.searches = 0

    async def _lookup(
        self, token: str, request: Callable[[Write], Awaitable[httpx.Response]]
    ) -> str | None:
        if token in self._cache:
            self._cache.move_to_end(token)
            return self._cache[token]
        self.searches += 1
        try:
            resp = await request(plan_search("Patient", token))
        except DeliveryError:
            return None
        if resp.status_code != 200:
            return None
        try:
            bundle: Any = resp.json()
        except ValueError:
            return None
        entries = bundle.get("entry") if isinstance(bundle, dict) else None
        ids = [
            e["resource"]["id"]
            for e in entries or []
            if isinstance(e, dict)
            and isinstance(e.get("resource"), dict)
            and e["resource"].get("resourceType") == "Patient"
            and e["resource"].get("id")
        ]
        if len(ids) != 1:
            return None
        ref = f"Patient/{ids[0]}"
        self._cache[token] = ref
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return ref

    async def resolve_in(
        self, resource: str, request: Callable[[Write], Awaitable[httpx.Response]]
    ) -> str:
        """The resource JSON with a literal patient reference added where one Patient
        matches its identifier; otherwise the resource unchanged."""
        data = json.loads(resource)
        field = _FIELD.get(str(data.get("resourceType")))
        ref = data.get(field) if field else None
        if not isinstance(ref, dict) or ref.get("reference"):
            return resource
        ident = ref.get("identifier")
        if not isinstance(ident, dict) or not ident.get("system") or not ident.get("value"):
            return resource
        literal = await self._lookup(f"{ident['system']}|{ident['value']}", request)
        if literal is None:
            return resource
        data[field] = {"reference": literal, **ref}
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))
