"""What every `prpgate` command shares: exit codes, the error exit, settings, common options."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from prpgate.config import Settings, load_settings
from prpgate.errors import ConfigError, StoreError
from prpgate.logs import configure_logging
from prpgate.ports import StoreBackend
from prpgate.store.factory import Backend, store_location
from prpgate.store.factory import open_store as open_backend

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "ConfigOpt",
    "JsonOpt",
    "MappingsOpt",
    "StoreOpt",
    "cli_settings",
    "fail",
    "open_store",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

StoreOpt = Annotated[
    Path | None,
    typer.Option("--store", help="SQLite store file (PRPGATE_STORE_URL names any store)."),
]
MappingsOpt = Annotated[Path | None, typer.Option("--mappings", help="Mappings folder.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="Settings file (TOML).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print ``error: message`` on stderr and return the Exit to raise (2: usage/config)."""
    Console(stderr=True, highlight=False).print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code)


def cli_settings(config: Path | None, **overrides: Any) -> Settings:
    """Settings for a command (file < environment < flags), with logging configured;
    a configuration error exits 2 saying what is wrong."""
    try:
        settings = load_settings(config, **overrides)
    except ConfigError as exc:
        raise fail(str(exc)) from exc
    configure_logging(fmt=settings.log_format, level=settings.log_level, log_phi=settings.log_phi)
    return settings


@contextmanager
def open_store(settings: Settings, *, must_exist: bool = True) -> Iterator[StoreBackend]:
    """The configured store (SQLite or PostgreSQL) for one command, closed afterwards. A
    SQLite file that is missing (when it must exist), a bad store URL or a store that
    cannot open exits 2; a store error while in use exits 1."""
    try:
        where = store_location(settings)
        sqlite_file = where.path if where.backend is Backend.SQLITE else None
        if must_exist and sqlite_file is not None and not sqlite_file.exists():
            raise fail(f"no store at {where.display}")
        db = open_backend(settings)
    except (ConfigError, StoreError) as exc:
        raise fail(str(exc)) from exc
    try:
        yield db
    except StoreError as exc:
        raise fail(f"store: {exc}", EXIT_FAILED) from exc
    finally:
        db.close()
