"""PostgresStore: the store several prpgate instances share (psycopg 3, a connection pool).

The same Store, OutboxStore and message-search contract as SqliteStore, over the schema in
``schema_postgres``. A session is one transaction on a pooled connection
(``PostgresSession``: per-patient locks, retransmit dedup by a unique key); the outbox
claims with ``FOR UPDATE SKIP LOCKED`` (``PostgresOutboxMixin``).

Durability: a session's commit returns once PostgreSQL has flushed it
(``synchronous_commit`` as the server sets it, ``on`` by default); ``durable=False`` turns
it off for this store's connections, for benchmarks only. Connections are checked when
taken from the pool: after a lost connection or a server restart the next unit of work
gets a fresh one, and one that breaks mid-transaction fails that transaction with
StoreError (nothing of it is acknowledged).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from prpgate.errors import StoreError
from prpgate.store.migrations import (
    SchemaReport,
    check_version,
    migrate_postgres,
    postgres_version,
)
from prpgate.store.postgres_errors import describe, translated
from prpgate.store.postgres_outbox import PostgresOutboxMixin
from prpgate.store.postgres_qmark import QmarkConnection
from prpgate.store.postgres_session import PostgresSession
from prpgate.store.sql_reads import SqlReads

__all__ = ["PostgresStore", "migrate_dsn", "redact_dsn"]

# A transaction waiting longer than this for a lock held elsewhere gives up (a conflict)
_LOCK_TIMEOUT = "10s"


def redact_dsn(dsn: str) -> str:
    """The DSN as ``postgresql://user@host:port/dbname``, without password or options (for
    logs and messages)."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "postgresql://?"
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"


def migrate_dsn(dsn: str, *, apply: bool = True, connect_timeout: float = 5.0) -> SchemaReport:
    """Bring the PostgreSQL store at ``dsn`` to this build's schema on one connection
    (``apply=False``: report the version found, change nothing). Raises StoreError."""
    where = redact_dsn(dsn)
    try:
        with psycopg.connect(
            dsn, autocommit=True, connect_timeout=max(1, round(connect_timeout))
        ) as conn:
            if apply:
                return migrate_postgres(conn)
            found = postgres_version(conn)
    except psycopg.Error as exc:
        raise StoreError(f"PostgreSQL store {where}: {describe(exc)}") from exc
    check_version(found)
    return SchemaReport(found, found, ())


class PostgresStore(PostgresOutboxMixin, SqlReads):
    """A PostgreSQL database as the store (see the module docstring).

    Raises StoreError when the server cannot be reached within ``connect_timeout``
    seconds, or the schema is newer than this build, or older and ``migrate`` is false.
    """

    def __init__(
        self,
        dsn: str,
        *,
        durable: bool = True,
        migrate: bool = True,
        pool_size: int = 4,
        connect_timeout: float = 5.0,
    ) -> None:
        self.location = redact_dsn(dsn)
        self._durable = durable
        try:
            conninfo = make_conninfo(dsn, connect_timeout=max(1, round(connect_timeout)))
        except psycopg.ProgrammingError as exc:
            raise StoreError(f"invalid PostgreSQL URL {self.location}: {describe(exc)}") from exc
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=max(1, pool_size),
            open=False,
            timeout=connect_timeout,
            kwargs={"autocommit": True},
            configure=self._configure,
            check=ConnectionPool.check_connection,
            name="prpgate-store",
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
        except PoolTimeout as exc:
            self._pool.close()
            raise StoreError(f"cannot connect to the PostgreSQL store {self.location}") from exc
        try:
            with self._pool.connection() as conn:
                self.schema: SchemaReport = migrate_postgres(conn, apply=migrate)
        except StoreError:
            self._pool.close()
            raise
        except psycopg.Error as exc:
            self._pool.close()
            raise StoreError(f"PostgreSQL store {self.location}: {describe(exc)}") from exc

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(f"SET lock_timeout = '{_LOCK_TIMEOUT}'")
        if not self._durable:
            conn.execute("SET synchronous_commit = off")

    @contextmanager
    def session(self) -> Iterator[PostgresSession]:
        """A transaction, committed (and flushed by the server) when the block exits
        normally. Raises StoreError when no connection can be had or the commit fails,
        StoreConflictError when it lost a race (run the block again)."""
        with (
            translated("transaction"),
            self._pool.connection() as conn,
            conn.transaction(),
            conn.pipeline(),
        ):
            yield PostgresSession(conn)

    def close(self) -> None:
        """Close the pool's connections."""
        self._pool.close()

    # --- connections for the statements both SQL stores share (SqlAccess) -----

    @contextmanager
    def _reading(self, what: str) -> Iterator[QmarkConnection]:
        with translated(what), self._pool.connection() as conn:
            yield QmarkConnection(conn)

    _writing = _reading  # autocommit: one statement commits on its own

    @contextmanager
    def _transaction(self, what: str) -> Iterator[QmarkConnection]:
        with translated(what), self._pool.connection() as conn, conn.transaction():
            yield QmarkConnection(conn)

    # --- reads ---------------------------------------------------------------------

    def patient_keys(self, value: str) -> list[str]:
        """Patient keys whose identifier value is ``value`` (from results and outputs)."""
        with translated("read"), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT patient_key FROM outputs WHERE right(patient_key, %s) = %s UNION "
                "SELECT patient_key FROM results WHERE right(patient_key, %s) = %s",
                (len(value) + 1, f"|{value}", len(value) + 1, f"|{value}"),
            ).fetchall()
        return sorted(str(r[0]) for r in rows)
