"""The FHIR listener as ``prpgate serve`` runs it: settings -> app -> uvicorn server."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from prpgate.config import Settings
from prpgate.core.pipeline import Engine
from prpgate.listeners.asgi_server import AsgiServer
from prpgate.listeners.fhir_http import (
    FhirCommitter,
    FhirEvents,
    FhirHttpConfig,
    FhirReader,
    build_app,
)
from prpgate.ports import Clock

__all__ = ["fhir_listener"]


def fhir_listener(
    settings: Settings,
    engine: Engine,
    committer: FhirCommitter,
    *,
    reader: FhirReader | None = None,
    clock: Clock,
    events: FhirEvents | None = None,
    registry: CollectorRegistry | None = None,
) -> AsgiServer | None:
    """The FHIR HTTP listener when ``fhir_http_enabled``, else None (not started).

    Raises ConfigError for a TLS certificate without its key (or the reverse).
    """
    if not settings.fhir_http_enabled:
        return None
    token = settings.fhir_http_token.get_secret_value() if settings.fhir_http_token else None
    app = build_app(
        committer,
        reader=reader,
        config=FhirHttpConfig(
            base_path=settings.fhir_http_base_path,
            max_body_bytes=settings.max_message_bytes,
            token=token or None,
            system_base=engine.identifier_system_base,
            default_offset=engine.default_offset,
        ),
        clock=clock,
        events=events,
        registry=registry,
    )
    return AsgiServer(
        app,
        settings.fhir_http_host,
        settings.fhir_http_port,
        tls_cert=settings.fhir_http_tls_cert,
        tls_key=settings.fhir_http_tls_key,
        max_concurrency=settings.fhir_http_max_concurrency,
        shutdown_grace=settings.shutdown_grace,
    )
