"""Settings -> the store backend: SQLite (embedded default) or PostgreSQL (shared).

``store_url`` names the store when set (``sqlite:///relative/path``,
``sqlite:////absolute/path``, ``postgresql://…`` or ``postgres://…``); otherwise the
``store`` setting is the SQLite file. Every command and ``serve`` open their store here,
so the choice is made in one place.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from prpgate.config import Settings
from prpgate.errors import ConfigError, StoreError
from prpgate.ports import StoreBackend
from prpgate.store.migrations import SchemaReport, check_version, migrate_sqlite, sqlite_version

__all__ = ["Backend", "StoreLocation", "migrate_store", "open_store", "store_location"]

_SQLITE_PREFIX = "sqlite:///"
_POSTGRES_PREFIXES = ("postgresql://", "postgres://")


class Backend(Enum):
    """Which kind of store."""

    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


@dataclass(frozen=True, slots=True)
class StoreLocation:
    """Where the store is: a SQLite file (``path``) or a PostgreSQL DSN (``dsn``, secret).

    ``display`` is safe to print and log (no password)."""

    backend: Backend
    display: str
    path: Path | None = None
    dsn: str = ""


def store_location(settings: Settings) -> StoreLocation:
    """Parse the store settings. Raises ConfigError for a URL of another scheme."""
    if settings.store_url is None:
        return StoreLocation(Backend.SQLITE, str(settings.store), path=settings.store)
    url = settings.store_url.get_secret_value().strip()
    if url.startswith(_SQLITE_PREFIX) and len(url) > len(_SQLITE_PREFIX):
        path = Path(url[len(_SQLITE_PREFIX) :])
        return StoreLocation(Backend.SQLITE, str(path), path=path)
    if url.startswith(_POSTGRES_PREFIXES):
        from prpgate.store.postgres import redact_dsn  # psycopg only when PostgreSQL is used

        return StoreLocation(Backend.POSTGRESQL, redact_dsn(url), dsn=url)
    if url.startswith("sqlite:"):
        raise ConfigError("store_url: a SQLite URL is sqlite:///relative/path or sqlite:////abs")
    scheme = url.split(":", 1)[0] if ":" in url else url[:20]
    raise ConfigError(
        f"store_url: unsupported scheme {scheme!r} (sqlite:///path or postgresql://...)"
    )


def open_store(
    settings: Settings, *, migrate: bool | None = None, long_running: bool = False
) -> StoreBackend:
    """The configured store, open, at this build's schema version.

    ``migrate`` (default: the ``store_migrate`` setting) applies pending migrations;
    without it an older store is refused. ``long_running`` (a server's writer): SQLite
    checkpoints its WAL from a background thread instead of inside commits. With
    several MLLP workers (``mllp_workers``), every SQLite writer of those settings takes
    the store's writer lock around its transactions. Raises
    ConfigError (bad URL) or StoreError.
    """
    where = store_location(settings)
    apply = settings.store_migrate if migrate is None else migrate
    if where.backend is Backend.SQLITE:
        from prpgate.store.sqlite import SqliteStore

        assert where.path is not None
        return SqliteStore(
            where.path,
            durable=settings.durable,
            migrate=apply,
            background_checkpoints=long_running,
            writer_lock=settings.mllp_workers > 1,
            wal_reserve=settings.sqlite_wal_reserve_mb * 1024 * 1024,
            wal_restart=settings.sqlite_wal_restart_mb * 1024 * 1024,
        )
    from prpgate.store.postgres import PostgresStore

    return PostgresStore(
        where.dsn,
        durable=settings.durable,
        migrate=apply,
        pool_size=settings.store_pool_size,
        connect_timeout=settings.store_connect_timeout,
    )


def migrate_store(settings: Settings, *, apply: bool = True) -> SchemaReport:
    """Bring the configured store to this build's schema; ``apply=False`` changes nothing
    and reports the version found (``pending`` lists what a run would apply). Raises
    ConfigError, or StoreError (unreachable, or a store newer than this build)."""
    where = store_location(settings)
    if where.backend is Backend.POSTGRESQL:
        from prpgate.store.postgres import migrate_dsn

        return migrate_dsn(where.dsn, apply=apply, connect_timeout=settings.store_connect_timeout)
    assert where.path is not None
    if not apply and not where.path.exists():
        return SchemaReport(0, 0, ())
    try:
        if where.path.parent != Path():
            where.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(where.path), isolation_level=None)
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"cannot open SQLite store {where.display}: {exc}") from exc
    try:
        db.execute("PRAGMA busy_timeout=10000")
        if apply:
            db.execute("PRAGMA journal_mode=WAL")
            return migrate_sqlite(db)
        found = sqlite_version(db)
        check_version(found)
        return SchemaReport(found, found, ())
    except sqlite3.Error as exc:
        raise StoreError(f"SQLite store {where.display}: {exc}") from exc
    finally:
        db.close()
