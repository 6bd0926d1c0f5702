"""The FHIR resources ``prpgate send`` posts, read as replay reads them, and what a FHIR
server's answer says about them. Pure apart from ``read_fhir_files``.

A JSON file is one resource or Bundle; an NDJSON file gives one per line (replay's
``iter_inputs``); a stored HTTP request record (``POST /fhir/Observation …``) is posted
as it came. A Bundle is posted to the base URL (a transaction or batch, or a collection
for a receiver that accepts one there), any other resource to ``[base]/[resourceType]``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from prpgate.core.fhir_request import JsonProblem, decode_json, looks_like_fhir, unwrap
from prpgate.replay import discover, iter_inputs

__all__ = ["FhirAnswer", "FhirOutgoing", "fhir_outgoing", "read_answer", "read_fhir_files"]

_SHOWN = 200  # characters of a non-FHIR error body quoted


@dataclass(frozen=True, slots=True)
class FhirOutgoing:
    """One resource to post: its bytes as found, where to post it (``path`` relative to
    the base URL, ``""`` for the base itself), and a label (``Observation/obs-1``, or the
    first identifier's value). ``problem`` says why it cannot be sent."""

    file: str
    number: int
    source: str
    body: bytes
    resource_type: str
    label: str
    path: str
    problem: str = ""


def _label(doc: dict[str, object]) -> str:
    rid = doc.get("id")
    if isinstance(rid, str) and rid:
        return f"{doc['resourceType']}/{rid}"
    ident = doc.get("identifier")
    first = ident[0] if isinstance(ident, list) and ident else ident
    if isinstance(first, dict) and isinstance(first.get("value"), str):
        return str(first["value"])
    return ""


def fhir_outgoing(data: bytes, *, file: str, number: int, source: str) -> FhirOutgoing:
    """One input (JSON, or a request record) ready to post; never raises (a problem is
    recorded instead)."""
    if not looks_like_fhir(data):
        problem = (
            "empty input: nothing to send"
            if not data.strip()
            else "not FHIR JSON (HL7 v2?): send HL7 v2 to an mllp:// or mllps:// target"
        )
        return FhirOutgoing(file, number, source, data, "", "", "", problem)
    request = unwrap(data)
    doc = decode_json(request.body)
    if isinstance(doc, JsonProblem):
        problem = f"not JSON: {doc.reason} ({doc.location})"
        return FhirOutgoing(file, number, source, request.body, "", "", "", problem)
    if not (isinstance(doc, dict) and isinstance(doc.get("resourceType"), str)):
        problem = "not a FHIR resource: no resourceType"
        return FhirOutgoing(file, number, source, request.body, "", "", "", problem)
    rtype = str(doc["resourceType"])
    path = "" if rtype == "Bundle" else rtype
    return FhirOutgoing(file, number, source, request.body, rtype, _label(doc), path)


def read_fhir_files(paths: Sequence[Path]) -> list[FhirOutgoing]:
    """Every input in the files and folders, in replay's order and with replay's labels.

    Raises FileNotFoundError for a path that does not exist.
    """
    out: list[FhirOutgoing] = []
    for path in discover(paths):
        for number, (label, data) in enumerate(iter_inputs([path]), 1):
            out.append(fhir_outgoing(data, file=str(path), number=number, source=label))
    return out


@dataclass(frozen=True, slots=True)
class FhirAnswer:
    """Whether a server's answer accepts what was posted, and the reason when not."""

    positive: bool
    text: str


def _outcome_text(doc: object, *, errors_only: bool) -> str:
    if not isinstance(doc, dict) or doc.get("resourceType") != "OperationOutcome":
        return ""
    texts: list[str] = []
    for issue in doc.get("issue") or []:
        if not isinstance(issue, dict):
            continue
        severity = str(issue.get("severity", ""))
        if errors_only and severity not in ("error", "fatal"):
            continue
        details = issue.get("details") if isinstance(issue.get("details"), dict) else {}
        text = issue.get("diagnostics") or (details or {}).get("text") or issue.get("code") or ""
        where = issue.get("expression") or issue.get("location") or []
        at = f" at {where[0]}" if isinstance(where, list) and where else ""
        texts.append(f"{severity}{at}: {text}")
    return "; ".join(texts)


def _status_code(status: object) -> int | None:
    head = str(status).strip().split(" ", 1)[0]
    return int(head) if head.isdigit() else None


def _failed_entries(doc: dict[str, object]) -> list[str]:
    failed: list[str] = []
    entries = doc.get("entry")
    for n, entry in enumerate(entries if isinstance(entries, list) else [], 1):
        resp = entry.get("response") if isinstance(entry, dict) else None
        if not isinstance(resp, dict):
            failed.append(f"entry {n}: no response")
            continue
        code = _status_code(resp.get("status", ""))
        if code is None or not 200 <= code < 300:
            why = _outcome_text(resp.get("outcome"), errors_only=False)
            failed.append(f"entry {n}: {resp.get('status', '')}" + (f" ({why})" if why else ""))
    return failed


def read_answer(status: int, body: bytes) -> FhirAnswer:
    """Judge a response: positive for a 2xx whose body carries no error.

    An OperationOutcome with an ``error`` or ``fatal`` issue is negative even with a 2xx;
    a transaction-response or batch-response Bundle is negative when an entry's
    ``response.status`` is not 2xx (each failing entry is named with its outcome).
    """
    doc: object = None
    if body.strip():
        try:
            doc = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            doc = None
    if 200 <= status < 300:
        errors = _outcome_text(doc, errors_only=True)
        if errors:
            return FhirAnswer(False, errors)
        if (
            isinstance(doc, dict)
            and doc.get("resourceType") == "Bundle"
            and doc.get("type") in ("transaction-response", "batch-response")
        ):
            failed = _failed_entries(doc)
            if failed:
                return FhirAnswer(False, "; ".join(failed))
        return FhirAnswer(True, "")
    text = _outcome_text(doc, errors_only=False)
    if not text and body.strip():
        text = body[:_SHOWN].decode("utf-8", errors="replace").strip()
    return FhirAnswer(False, f"HTTP {status}" + (f": {text}" if text else ""))
