"""The ``prpgate serve`` command (typer), registered on the main app by ``register``."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Annotated

import typer

from prpgate.cli_support import fail as _fail
from prpgate.config import load_settings
from prpgate.engine import end_startup
from prpgate.errors import ConfigError, MappingError, StoreError
from prpgate.logs import configure_logging
from prpgate.serve import serve

__all__ = ["register", "serve_cmd"]


def serve_cmd(
    store: Annotated[Path | None, typer.Option("--store", help="SQLite store file.")] = None,
    mappings: Annotated[Path | None, typer.Option("--mappings", help="Mappings folder.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Settings file (TOML).")] = None,
    host: Annotated[str | None, typer.Option("--host", help="MLLP listener address.")] = None,
    port: Annotated[int | None, typer.Option("--port", help="MLLP port (0: any free).")] = None,
    http_port: Annotated[
        int | None, typer.Option("--http-port", help="Health/metrics HTTP port (0: any free).")
    ] = None,
    fhir_port: Annotated[
        int | None,
        typer.Option(
            "--fhir-port",
            help="Serve the FHIR R4 HTTP listener on this port (0: any free); turns it on.",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            help="Processes serving MLLP connections, this one included (mllp_workers).",
        ),
    ] = None,
    ready_file: Annotated[
        Path | None,
        typer.Option("--ready-file", help="Write the bound ports as JSON here once listening."),
    ] = None,
) -> None:
    """Receive HL7 v2 over MLLP (and FHIR R4 over HTTP when enabled), answer after the
    durable commit; serve /healthz, /readyz and /metrics. Stops cleanly on SIGTERM or
    Ctrl-C.

    Exit code 0 after a clean stop, 2 on a usage or configuration error.
    """
    try:
        settings = load_settings(
            config,
            store=store,
            mappings=mappings,
            mllp_host=host,
            mllp_port=port,
            http_port=http_port,
            fhir_http_port=fhir_port,
            fhir_http_enabled=True if fhir_port is not None else None,
            mllp_workers=workers,
        )
    except ConfigError as exc:
        raise _fail(str(exc)) from exc
    configure_logging(fmt=settings.log_format, level=settings.log_level, log_phi=settings.log_phi)

    def announce(ports: dict[str, int]) -> None:
        end_startup()  # listening: what is loaded now lives as long as the process
        if ready_file is not None:
            tmp = ready_file.with_name(ready_file.name + ".tmp")
            tmp.write_text(json.dumps({**ports, "pid": os.getpid()}))
            tmp.replace(ready_file)  # atomic: a reader never sees half a file

    try:
        asyncio.run(serve(settings, on_ready=announce))
    except (ConfigError, StoreError) as exc:
        raise _fail(str(exc)) from exc
    except MappingError as exc:
        raise _fail(f"mappings: {exc}") from exc


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to the ``prpgate`` app."""
    app.command("serve")(serve_cmd)
