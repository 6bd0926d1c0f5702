"""Versioned schema migrations for both store backends.

The version a store is at lives in its ``schema_version`` table (one row). Migration N
brings a store from version N-1 to N; each backend has its own script for every version
(``schema_sqlite``, ``schema_postgres``), applied in order, each with its version bump in
one transaction. A store newer than this build is refused; an older one is migrated when
the caller allows it (``prpgate store migrate``, or at start with ``store_migrate``), and
refused otherwise, naming the command to run.

On PostgreSQL the whole upgrade runs under an advisory lock, so instances that start
together migrate once; on SQLite the write lock does the same.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prpgate.errors import StoreError
from prpgate.store.schema_postgres import POSTGRES_SCRIPTS
from prpgate.store.schema_sqlite import SQLITE_SCRIPTS

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Migration",
    "SchemaReport",
    "check_version",
    "migrate_postgres",
    "migrate_sqlite",
    "postgres_version",
    "sqlite_version",
    "statements",
]


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema version: what it is for, and the script of each backend."""

    version: int
    title: str
    sqlite: str = field(repr=False)
    postgres: str = field(repr=False)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "messages, results, outputs, outbox, explanations",
        SQLITE_SCRIPTS[1],
        POSTGRES_SCRIPTS[1],
    ),
    Migration(
        2,
        "retransmit dedup by a unique key (MSH-3, MSH-4, MSH-10, content)",
        SQLITE_SCRIPTS[2],
        POSTGRES_SCRIPTS[2],
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1].version

# pg_advisory_xact_lock(classid, objid): prpgate's namespace ('prpg'), object 0 = schema
_LOCK_NAMESPACE = 0x70727067
_MIGRATION_LOCK = 0


@dataclass(frozen=True, slots=True)
class SchemaReport:
    """What a migration run found and did: ``before`` is 0 for an empty store."""

    before: int
    after: int
    applied: tuple[Migration, ...]

    @property
    def pending(self) -> tuple[Migration, ...]:
        """Migrations this build has that the store (at ``after``) lacks."""
        return tuple(m for m in MIGRATIONS if m.version > self.after)


def statements(script: str) -> list[str]:
    """A script's statements (separated by ``;`` at a line end), without empty ones."""
    return [s.strip() for s in script.split(";\n") if s.strip().rstrip(";").strip()]


def check_version(found: int, *, apply: bool = True, target: int = SCHEMA_VERSION) -> None:
    """Raise StoreError for a store newer than this build, or one older than ``target``
    when migrations may not be applied (the message names the command to run)."""
    if found > SCHEMA_VERSION:
        raise StoreError(
            f"store schema version {found} is newer than this prpgate ({SCHEMA_VERSION})"
        )
    if found < target and not apply:
        what = "an empty store" if found == 0 else f"store schema version {found}"
        raise StoreError(
            f"{what} is older than this prpgate ({SCHEMA_VERSION}): run `prpgate store migrate`"
        )


def _targets(found: int, target: int) -> list[Migration]:
    return [m for m in MIGRATIONS if found < m.version <= target]


def migrate_sqlite(
    db: sqlite3.Connection, *, apply: bool = True, target: int = SCHEMA_VERSION
) -> SchemaReport:
    """Bring a SQLite store (connection in autocommit mode) to ``target``.

    Each migration is one ``BEGIN IMMEDIATE`` transaction that re-reads the version first
    (another process may have migrated meanwhile). Raises StoreError for a newer store, or
    an older one when ``apply`` is false.
    """
    before = sqlite_version(db)
    check_version(before, apply=apply, target=target)
    applied: list[Migration] = []
    for m in _targets(before, target):
        db.execute("BEGIN IMMEDIATE")
        try:
            if sqlite_version(db) < m.version:
                for sql in statements(m.sqlite):
                    db.execute(sql)
                db.execute("DELETE FROM schema_version")
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (m.version,))
                applied.append(m)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return SchemaReport(before, max(before, sqlite_version(db)), tuple(applied))


def sqlite_version(db: sqlite3.Connection) -> int:
    """The schema version of a SQLite store (0: empty)."""
    exists = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'"
    ).fetchone()
    if not exists:
        return 0
    row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate_postgres(
    conn: psycopg.Connection[Any],
    *,
    apply: bool = True,
    target: int = SCHEMA_VERSION,
) -> SchemaReport:
    """Bring a PostgreSQL store (the connection's ``search_path`` schema; the connection in
    autocommit mode) to ``target``.

    Under a session-level advisory lock, one transaction re-reads the version and applies
    what is pending, so instances starting together migrate once and a failed migration
    leaves nothing behind. (The lock is taken before the transaction begins: a transaction
    that began before another one's DDL committed may not see its tables.) Raises
    StoreError for a newer store, or an older one when ``apply`` is false.
    """
    before = postgres_version(conn)
    check_version(before, apply=apply, target=target)
    if not _targets(before, target):
        return SchemaReport(before, before, ())
    lock = (_LOCK_NAMESPACE, _MIGRATION_LOCK)
    conn.execute("SELECT pg_advisory_lock(%s::int4, %s::int4)", lock)
    try:
        with conn.transaction():
            before = postgres_version(conn)  # another instance may have migrated meanwhile
            check_version(before, apply=apply, target=target)
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            applied: list[Migration] = []
            for m in _targets(before, target):
                for sql in statements(m.postgres):
                    conn.execute(sql.encode())
                applied.append(m)
            if applied:
                conn.execute("DELETE FROM schema_version")
                conn.execute(
                    "INSERT INTO schema_version (version) VALUES (%s)", (applied[-1].version,)
                )
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s::int4, %s::int4)", lock)
    return SchemaReport(before, max([before, *(m.version for m in applied)]), tuple(applied))


def postgres_version(conn: psycopg.Connection[Any]) -> int:
    """The schema version of a PostgreSQL store in the connection's search path (0: none)."""
    row = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    found = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(str(found[0])) if found and found[0] is not None else 0
