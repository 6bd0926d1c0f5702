"""Where ``prpgate send`` sends: the target URL, the rate, and the client TLS context."""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from prpgate.errors import ConfigError

__all__ = ["MLLP_DEFAULT_PORT", "Target", "client_tls_context", "parse_rate", "parse_target"]

MLLP_DEFAULT_PORT = 2575
"""The port IANA registered for HL7 over MLLP."""

_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*s)?\s*")


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed target: ``kind`` is ``mllp`` or ``fhir``; ``tls`` for mllps/https;
    ``host``/``port`` for MLLP, ``url`` (no trailing slash) for FHIR."""

    kind: str
    tls: bool
    host: str = ""
    port: int = 0
    url: str = ""

    def __str__(self) -> str:
        if self.kind == "fhir":
            return self.url
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mllps' if self.tls else 'mllp'}://{host}:{self.port}"


def parse_target(text: str) -> Target:
    """``mllp://HOST[:PORT]``, ``mllps://HOST[:PORT]`` (port 2575 by default),
    ``http(s)://HOST[:PORT]/PATH`` (a FHIR base URL). Raises ConfigError otherwise."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"target {text!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if not parts.hostname:
        raise ConfigError(
            f"target {text!r} names no host: use mllp://HOST:PORT, mllps://HOST:PORT "
            "or https://HOST/fhir"
        )
    if scheme in ("mllp", "mllps"):
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigError(f"target {text!r}: an MLLP target has no path or query")
        return Target("mllp", scheme == "mllps", parts.hostname, port or MLLP_DEFAULT_PORT)
    if scheme in ("http", "https"):
        if parts.query or parts.fragment:
            raise ConfigError(f"target {text!r}: a FHIR base URL has no query or fragment")
        return Target("fhir", scheme == "https", url=text.strip().rstrip("/"))
    raise ConfigError(
        f"target {text!r}: the scheme must be mllp, mllps, http or https, not {scheme or 'none'!r}"
    )


def parse_rate(text: str | None) -> float | None:
    """``"50"`` or ``"50/s"`` -> 50.0 messages per second; None or ``"max"`` -> None.

    Raises ConfigError for anything else or a rate that is not positive.
    """
    if text is None or text.strip().lower() in ("", "max"):
        return None
    m = _RATE.fullmatch(text)
    if m is None or float(m.group(1)) <= 0:
        raise ConfigError(f"rate {text!r}: give messages per second, e.g. 50 or 50/s")
    return float(m.group(1))


def client_tls_context(
    *, ca: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """A client context verifying the server (against ``ca``, else the system store),
    presenting ``cert``/``key`` for mutual TLS when given.

    Raises ConfigError for a key without a certificate or files that cannot be loaded.
    """
    if key is not None and cert is None:
        raise ConfigError("--key needs --cert (the client certificate chain)")
    try:
        ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert is not None:
            ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"TLS files cannot be loaded: {exc}") from exc
    return ctx
