"""``prpgate store migrate``: bring the store's schema to this build's version (typer).

Exit codes: 0 when the store is at this build's version afterwards (``--check``: already
is), 1 when ``--check`` finds migrations pending, 2 on a usage or configuration error or
a store that cannot be reached or is newer than this build.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console

from prpgate.cli_support import (
    EXIT_FAILED,
    EXIT_OK,
    ConfigOpt,
    JsonOpt,
    StoreOpt,
    cli_settings,
    fail,
)
from prpgate.errors import ConfigError, StoreError
from prpgate.store.factory import migrate_store, store_location
from prpgate.store.migrations import SCHEMA_VERSION

__all__ = ["migrate_cmd", "register"]

StoreUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--store-url",
        help="sqlite:///path or postgresql://user:password@host:port/db "
        "(default: PRPGATE_STORE_URL, else --store).",
    ),
]


def migrate_cmd(
    store: StoreOpt = None,
    store_url: StoreUrlOpt = None,
    config: ConfigOpt = None,
    check: Annotated[
        bool, typer.Option("--check", help="Change nothing; exit 1 when migrations are pending.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Apply the schema migrations the store lacks (SQLite file or PostgreSQL database).

    Each migration runs in its own transaction with its version bump; on PostgreSQL under
    an advisory lock, so instances starting at the same time migrate once.
    """
    settings = cli_settings(config, store=store, store_url=store_url)
    try:
        where = store_location(settings)
        report = migrate_store(settings, apply=not check)
    except (ConfigError, StoreError) as exc:
        raise fail(str(exc)) from exc
    pending = [{"version": m.version, "title": m.title} for m in report.pending]
    applied = [{"version": m.version, "title": m.title} for m in report.applied]
    if as_json:
        doc = {
            "store": where.display,
            "backend": where.backend.value,
            "before": report.before,
            "version": report.after,
            "latest": SCHEMA_VERSION,
            "applied": applied,
            "pending": pending,
        }
        sys.stdout.write(json.dumps(doc) + "\n")
    else:
        out = Console(highlight=False)
        for m in report.applied:
            out.print(f"applied {m.version}: {m.title}")
        for m in report.pending:
            out.print(f"pending {m.version}: {m.title}")
        out.print(
            f"{where.display}: schema version {report.after} (this prpgate: {SCHEMA_VERSION})"
        )
    raise typer.Exit(EXIT_FAILED if pending else EXIT_OK)


def register(app: typer.Typer) -> None:
    """Add the ``store`` group (``store migrate``) to the ``prpgate`` app."""
    group = typer.Typer(name="store", help="The store's schema.", no_args_is_help=True)
    group.command("migrate")(migrate_cmd)
    app.add_typer(group, name="store")
