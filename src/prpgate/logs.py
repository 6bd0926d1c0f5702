"""structlog set-up: JSON for production, readable in a terminal, no patient data by default.

The shell logs message-level facts (control id, facility, disposition, counts).
As a safety net, a processor removes event keys that name patient data and
masks anything shaped like an HL7 PID segment, unless ``log_phi`` is enabled.

Libraries that log through the standard ``logging`` module (psycopg's pool, uvicorn,
httpx) go through the same renderer and the same redaction, warnings and errors only:
their info lines name request URLs, and a URL may carry a patient identifier.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

__all__ = ["PHI_KEYS", "configure_logging", "redact_phi"]

PHI_KEYS = frozenset(
    {
        "patient",
        "patient_name",
        "name",
        "birth_date",
        "dob",
        "mrn",
        "patient_key",
        "patient_id",
        "identifier",
        "raw",
        "message_text",
        "address",
        "phone",
    }
)
_PID = re.compile(r"PID\|[^\r\n]*")


def redact_phi(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: drop PHI-named keys and mask PID segments in strings."""
    for key in list(event):
        if key in PHI_KEYS:
            event[key] = "[redacted]"
        elif isinstance(event[key], str) and "PID|" in event[key]:
            event[key] = _PID.sub("PID|[redacted]", event[key])
    return event


def configure_logging(
    *,
    fmt: str = "auto",
    level: str = "info",
    log_phi: bool = False,
    stream: TextIO | None = None,
) -> None:
    """Configure structlog once for the process (called by the CLI, never on import)."""
    out = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if use_json:
        processors.append(structlog.processors.format_exc_info)  # before redaction: masked
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    if not log_phi:
        processors.append(redact_phi)
    _route_stdlib_logging(processors[1:], renderer, out)
    processors.append(renderer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def _route_stdlib_logging(chain: list[Any], renderer: Any, out: TextIO) -> None:
    """Render the standard library's warnings and errors like structlog's own lines."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *chain],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.set_name("prpgate")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "prpgate"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
