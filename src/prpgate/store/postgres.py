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

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import class_row
from psycopg_pool import ConnectionPool, PoolTimeout

from prpgate.errors import StoreError
from prpgate.ports import MessageRow, OutboxRow, OutputRow
from prpgate.store.migrations import (
    SchemaReport,
    check_version,
    migrate_postgres,
    postgres_version,
)
from prpgate.store.postgres_errors import describe, translated
from prpgate.store.postgres_outbox import PostgresOutboxMixin
from prpgate.store.postgres_session import PostgresSession

__all__ = ["PostgresStore", "migrate_dsn", "redact_dsn"]

_MSG_COLS = (
    "id, received_at, source, sending_application, sending_facility, control_id,"
    " message_type, version, status, ack_code, errors, summary, duplicate_of, reuse_of, raw"
)
_OUTBOX_COLS = "id, identifier, kind, patient_key, version, message_id, state, attempts, resource"
_OUTPUT_COLS = (
    "identifier, kind, patient_key, rule, result_key, status, version, message_id, resource"
)
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


class PostgresStore(PostgresOutboxMixin):
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

    # --- reads ---------------------------------------------------------------------

    def _rows(self, cls: type[Any], sql: str, args: list[object]) -> list[Any]:
        with (
            translated("read"),
            self._pool.connection() as conn,
            conn.cursor(row_factory=class_row(cls)) as cur,
        ):
            return cur.execute(sql.encode(), args).fetchall()

    def list_messages(
        self,
        *,
        limit: int = 50,
        status: str | None = None,
        control_id: str | None = None,
        patient_hash: str | None = None,
    ) -> list[MessageRow]:
        """Newest first, filtered by indexed keys."""
        where: list[str] = []
        args: list[object] = []
        if status:
            where.append("status=%s")
            args.append(status)
        if control_id:
            where.append("control_id=%s")
            args.append(control_id)
        if patient_hash:
            where.append(
                "id IN (SELECT message_id FROM message_keys WHERE kind='patient' AND value=%s)"
            )
            args.append(patient_hash)
        sql = f"SELECT {_MSG_COLS} FROM messages"  # noqa: S608 - fixed column list
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT %s"
        args.append(limit)
        return self._rows(MessageRow, sql, args)

    def get_message(self, message_id: int) -> MessageRow | None:
        """One message with its raw bytes."""
        sql = f"SELECT {_MSG_COLS} FROM messages WHERE id=%s"  # noqa: S608 - fixed column list
        found = self._rows(MessageRow, sql, [message_id])
        return found[0] if found else None

    def explanation(self, message_id: int) -> list[dict[str, Any]]:
        """The explanation records of a message, in order (empty when it decided nothing)."""
        with translated("read"), self._pool.connection() as conn:
            row = conn.execute(
                "SELECT records FROM explanations WHERE message_id=%s", (message_id,)
            ).fetchone()
        records: list[dict[str, Any]] = json.loads(row[0]) if row else []
        return records

    def outputs(
        self, *, patient_key: str | None = None, message_id: int | None = None
    ) -> list[OutputRow]:
        """Current outputs, by patient or by the message that last changed them."""
        sql = f"SELECT {_OUTPUT_COLS} FROM outputs"  # noqa: S608 - fixed column list
        args: list[object] = []
        if patient_key is not None:
            sql += " WHERE patient_key=%s"
            args.append(patient_key)
        elif message_id is not None:
            sql += " WHERE message_id=%s"
            args.append(message_id)
        sql += " ORDER BY kind, rule, identifier"
        return self._rows(OutputRow, sql, args)

    def outbox(self, *, message_id: int | None = None, limit: int = 1000) -> list[OutboxRow]:
        """Outbox rows in order, optionally of one message."""
        sql = f"SELECT {_OUTBOX_COLS} FROM outbox"  # noqa: S608 - fixed column list
        args: list[object] = []
        if message_id is not None:
            sql += " WHERE message_id=%s"
            args.append(message_id)
        sql += " ORDER BY id LIMIT %s"
        args.append(limit)
        return self._rows(OutboxRow, sql, args)

    def iter_outbox(self, after_id: int = 0) -> Iterator[OutboxRow]:
        """Every outbox row after an id, in order (pages of 500, no cursor held between)."""
        last = after_id
        while True:
            sql = f"SELECT {_OUTBOX_COLS} FROM outbox WHERE id > %s ORDER BY id LIMIT 500"  # noqa: S608 - fixed column list
            page: list[OutboxRow] = self._rows(OutboxRow, sql, [last])
            if not page:
                return
            yield from page
            last = page[-1].id

    def patient_keys(self, value: str) -> list[str]:
        """Patient keys whose identifier value is ``value`` (from results and outputs)."""
        with translated("read"), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT patient_key FROM outputs WHERE right(patient_key, %s) = %s UNION "
                "SELECT patient_key FROM results WHERE right(patient_key, %s) = %s",
                (len(value) + 1, f"|{value}", len(value) + 1, f"|{value}"),
            ).fetchall()
        return sorted(str(r[0]) for r in rows)

    def find_messages(
        self,
        *,
        limit: int = 50,
        status: str | None = None,
        control_id: str | None = None,
        order_number: str | None = None,
        patient_hash: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> list[int]:
        """Ids of messages, newest first, by indexed business keys: control id, order
        (filler/placer) number, patient hash, status, and received time (ISO text)."""
        where: list[str] = []
        args: list[object] = []
        if status:
            where.append("status=%s")
            args.append(status)
        if control_id:
            where.append("control_id=%s")
            args.append(control_id)
        if order_number:
            # stored as F:<filler>^<namespace> or P:<placer>^<namespace>: match the number
            # alone, with its namespace, or as stored (index lookups and range scans)
            where.append(
                "id IN (SELECT message_id FROM message_keys WHERE kind='order' AND"
                " (value IN (%s, %s, %s) OR (value >= %s AND value < %s)"
                " OR (value >= %s AND value < %s)))"
            )
            n = order_number
            args += [n, f"F:{n}", f"P:{n}", f"F:{n}^", f"F:{n}_", f"P:{n}^", f"P:{n}_"]
        if patient_hash:
            where.append(
                "id IN (SELECT message_id FROM message_keys WHERE kind='patient' AND value=%s)"
            )
            args.append(patient_hash)
        if since:
            where.append("received_at >= %s")
            args.append(since)
        if until:
            where.append("received_at < %s")
            args.append(until)
        sql = "SELECT id FROM messages"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT %s"
        args.append(limit)
        with translated("messages"), self._pool.connection() as conn:
            return [int(r[0]) for r in conn.execute(sql.encode(), args)]
