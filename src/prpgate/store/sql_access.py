"""What the statements written once for both SQL stores run on, and how a store hands it out.

A shared statement uses ``?`` placeholders. SQLite's connection takes them as they are;
the PostgreSQL store hands out its connection wrapped so that they reach psycopg as
``%s`` (no shared statement has a literal ``?`` or ``%``). A store gives a connection for
a read, for one write committed on its own, or for a transaction; a database error leaves
the block as StoreError (StoreConflictError when PostgreSQL reports a lost race),
labelled with what was being done.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

__all__ = ["SqlAccess", "SqlConnection", "SqlCursor"]


class SqlCursor(Protocol):
    """The part of a DB-API cursor the shared statements use."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class SqlConnection(Protocol):
    """A connection that runs one statement with ``?`` placeholders."""

    def execute(self, sql: str, params: Sequence[object] = ..., /) -> SqlCursor: ...


class SqlAccess:
    """The connections a SQL store gives the methods written once (``SqlReads``,
    ``SqlOutbox``); each store implements the three."""

    def _reading(self, what: str) -> AbstractContextManager[SqlConnection]:
        """A connection for reads (no transaction of their own)."""
        raise NotImplementedError

    def _writing(self, what: str) -> AbstractContextManager[SqlConnection]:
        """A connection for one write statement, committed when the block ends."""
        raise NotImplementedError

    def _transaction(self, what: str) -> AbstractContextManager[SqlConnection]:
        """A connection in a write transaction, committed when the block ends normally
        and rolled back when it raises."""
        raise NotImplementedError
