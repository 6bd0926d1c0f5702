"""FHIR input bytes: recognising them, the HTTP request record, and JSON decoding.

An input that came over HTTP is stored as a *request record*: the request line, the
few headers that change what the input means, a blank line and the body as sent::

    POST /fhir/Observation HTTP/1.1
    Content-Type: application/fhir+json
    X-Request-Id: 7d1c…

    {"resourceType": "Observation", …}

so the store keeps what arrived and a stored input read again (``messages
reprocess``) means what it meant the first time. Credentials are never part of it.
Files (replay, validate) hold bare JSON: a resource, a Bundle or one NDJSON line.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from decimal import Decimal
from itertools import pairwise
from typing import Any

__all__ = [
    "RECORDED_HEADERS",
    "FhirRequest",
    "JsonProblem",
    "canonical_hash",
    "decode_json",
    "looks_like_fhir",
    "number_text",
    "record_request",
    "split_ndjson",
    "unwrap",
]

_BOM = b"\xef\xbb\xbf"
# A JSON escape of a UTF-16 surrogate (\uD800-\uDFFF): paired, it spells one character
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_REQUEST_PREFIX = b"POST /"
# The headers a request record keeps, in this order (lower case).
RECORDED_HEADERS = ("content-type", "x-request-id", "if-none-exist")


@dataclass(frozen=True, slots=True)
class FhirRequest:
    """FHIR input: ``body`` as sent; ``path`` and ``headers`` when it came over HTTP
    (``path`` empty for a file). Header names are lower case."""

    body: bytes
    path: str = ""
    headers: tuple[tuple[str, str], ...] = ()

    def header(self, name: str) -> str:
        """A recorded header's value ('' when absent)."""
        return next((v for k, v in self.headers if k == name), "")

    @property
    def interaction(self) -> str:
        """``create`` for ``POST [base]/Observation``, ``bundle`` for ``POST [base]``,
        ``file`` for input that did not come over HTTP."""
        if not self.path:
            return "file"
        last = self.path.rstrip("/").rsplit("/", 1)[-1]
        return "create" if last == "Observation" else "bundle"


@dataclass(frozen=True, slots=True)
class JsonProblem:
    """Why bytes are not a JSON object: reason and where (``line 3, column 7``)."""

    reason: str
    location: str


def looks_like_fhir(raw: bytes) -> bool:
    """True when the input is FHIR JSON or a request record rather than HL7 v2.

    Looks at the first bytes only (the HL7 v2 hot path pays for one short slice).
    """
    head = raw[:16]
    if head.startswith(_BOM):
        head = head[3:]
    head = head.lstrip(b" \t\r\n")
    return head[:1] in (b"{", b"[") or head.startswith(_REQUEST_PREFIX)


def record_request(path: str, headers: dict[str, str], body: bytes) -> bytes:
    """The request record stored for an HTTP input (see the module docstring).

    ``headers`` are matched case-insensitively; only RECORDED_HEADERS are kept, with
    CR and LF removed from their values.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    lines = [f"POST {path} HTTP/1.1"]
    for name in RECORDED_HEADERS:
        value = lower.get(name, "").replace("\r", " ").replace("\n", " ").strip()
        if value:
            lines.append(f"{_title(name)}: {value}")
    head = "\r\n".join(lines) + "\r\n\r\n"
    return head.encode("utf-8", "replace") + body


def _title(name: str) -> str:
    return "-".join(p.capitalize() for p in name.split("-"))


def unwrap(raw: bytes) -> FhirRequest:
    """Split a request record into path, headers and body; other input is all body."""
    start = raw.lstrip(b" \t\r\n")
    if not start.startswith(_REQUEST_PREFIX):
        return FhirRequest(raw)
    head, sep, body = start.partition(b"\r\n\r\n")
    if not sep:
        return FhirRequest(raw)
    lines = head.decode("utf-8", "replace").split("\r\n")
    parts = lines[0].split(" ")
    path = parts[1] if len(parts) > 1 else "/"
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers.append((name.strip().lower(), value.strip()))
    return FhirRequest(body, path, tuple(headers))


def decode_json(body: bytes) -> Any | JsonProblem:
    """The JSON value of a body (UTF-8, an optional BOM), or a JsonProblem."""
    data = body[3:] if body.startswith(_BOM) else body
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return JsonProblem(f"the body is not UTF-8: {exc.reason}", f"byte {exc.start}")
    if not text.strip():
        return JsonProblem("the body is empty", "byte 0")
    try:
        # Decimal keeps a FHIR decimal's precision (7.20 stays 7.20), as the mapper reads it
        value = json.loads(text, parse_float=Decimal, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        return JsonProblem(f"malformed JSON: {exc.msg}", f"line {exc.lineno}, column {exc.colno}")
    except ValueError as exc:
        return JsonProblem(f"malformed JSON: {exc}", "byte 0")
    except RecursionError:
        return JsonProblem("JSON nested too deeply to read", "byte 0")
    if "\\u" in text and _SURROGATE_ESCAPE.search(text) and not _is_unicode(value):
        return JsonProblem(
            "a string holds an unpaired surrogate (a \\uD800-\\uDFFF escape without its "
            "partner): not Unicode text",
            _lone_surrogate_at(text),
        )
    return value


def _is_unicode(value: Any) -> bool:
    """Whether every string (and key) of a decoded JSON value is Unicode text; JSON's
    ``\\u`` escapes can spell a lone surrogate, which no UTF-8 text holds."""
    try:
        json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _lone_surrogate_at(text: str) -> str:
    """``line L, column C`` of the first surrogate escape without its partner (a high
    one, D800-DBFF, right before a low one, DC00-DFFF, is a pair)."""
    found = list(_SURROGATE_ESCAPE.finditer(text))
    paired: set[int] = set()
    for a, b in pairwise(found):
        if a.end() == b.start() and a.group()[3] in "89abAB" and b.group()[3] in "cdefCDEF":
            paired.update((a.start(), b.start()))
    for m in found:
        if m.start() not in paired:
            line = text.count("\n", 0, m.start()) + 1
            column = m.start() - (text.rfind("\n", 0, m.start()) + 1) + 1
            return f"line {line}, column {column}"
    return "byte 0"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def number_text(value: object) -> str:
    """A JSON number as decimal text (``7.20`` stays ``7.20``); '' for anything else."""
    if isinstance(value, bool):
        return ""
    if isinstance(value, Decimal):
        text = str(value)
        return format(value, "f") if "E" in text else text
    if isinstance(value, int):
        return str(value)
    return ""


def canonical_hash(value: Any) -> str:
    """SHA-256 of a JSON value serialised canonically (sorted keys, no spaces), so a
    retransmit that differs only in whitespace or key order is the same content."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split_ndjson(data: bytes) -> list[bytes] | None:
    """The lines of an NDJSON file (one JSON value per line), or None when the bytes
    are one JSON document (pretty-printed or not).

    A file is NDJSON when its first non-blank line is a complete JSON value and
    another non-blank line follows.
    """
    body = data[3:] if data.startswith(_BOM) else data
    lines = [line for line in body.split(b"\n") if line.strip()]
    if len(lines) < 2:
        return None
    first = decode_json(lines[0])
    if isinstance(first, JsonProblem):
        return None
    return lines
