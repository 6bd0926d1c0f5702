"""What an HTTP answer means for a delivery, and when to try again. Pure: no I/O, no clock.

FHIR R4 RESTful API (http.html): 200/201 take the write; 409/412 are version
conflicts (and 412 also "several resources match" on a conditional URL); 429 and
5xx are passing; other 4xx will not succeed by trying again.
"""

from __future__ import annotations

import json
from datetime import datetime
from email.utils import parsedate_to_datetime
from enum import Enum

__all__ = ["Verdict", "backoff_delay", "classify", "outcome_text", "parse_retry_after"]


class Verdict(Enum):
    """What to do after one HTTP answer to a write."""

    DELIVERED = "delivered"
    CONFLICT = "conflict"  # re-read and re-apply
    RETRY = "retry"  # may pass: back off and try again
    DEAD = "dead"  # will not pass by trying again: dead letter


_PASSING = frozenset({408, 425, 429})


def classify(status: int) -> Verdict:
    """The verdict for an HTTP status of a write (PUT or POST).

    401 is final here: the auth flow has already refreshed its token once.
    404 is final: on a conditional URL the server does not support it, on
    ``PUT [type]/[id]`` it does not accept client-assigned ids.
    """
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if status in (409, 412):
        return Verdict.CONFLICT
    if status in _PASSING or status >= 500:
        return Verdict.RETRY
    return Verdict.DEAD


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or HTTP-date; RFC 9110
    10.2.3), or None when absent or unreadable. A date in the past gives 0."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


def backoff_delay(attempt: int, *, base: float, cap: float, jitter: float) -> float:
    """Delay before retry number ``attempt`` (1-based): exponential, capped, with
    "equal jitter" — half the step fixed, half scaled by ``jitter`` in [0, 1)."""
    step = min(cap, base * (2 ** max(0, min(attempt - 1, 60))))
    return float(step / 2 + step / 2 * jitter)


def outcome_text(body: bytes) -> str:
    """A one-line summary of an OperationOutcome body (severity, code, diagnostics), or ''."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    if not isinstance(data, dict) or data.get("resourceType") != "OperationOutcome":
        return ""
    parts: list[str] = []
    for issue in data.get("issue") or []:
        if not isinstance(issue, dict):
            continue
        details = issue.get("details")
        detail_text = details.get("text", "") if isinstance(details, dict) else ""
        text = issue.get("diagnostics") or detail_text
        parts.append(
            f"{issue.get('severity', '?')}/{issue.get('code', '?')}" + (f": {text}" if text else "")
        )
    return "; ".join(parts)
