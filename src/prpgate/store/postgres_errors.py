"""psycopg's errors translated at the store's edge: lost races become StoreConflictError
(run the unit of work again), everything else StoreError.

Only the server's primary message and SQLSTATE are kept: a DETAIL line can quote the
values of a key, and store errors reach logs and ACK ERR segments.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import errors as pg_errors

from prpgate.errors import StoreConflictError, StoreError

__all__ = ["CONFLICTS", "describe", "translated"]

# Races another transaction won: running the same work again is expected to succeed.
CONFLICTS: tuple[type[psycopg.Error], ...] = (
    pg_errors.DeadlockDetected,  # 40P01
    pg_errors.SerializationFailure,  # 40001
    pg_errors.LockNotAvailable,  # 55P03: lock_timeout, NOWAIT
    pg_errors.UniqueViolation,  # 23505: the same first arrival or version committed first
)


def describe(exc: psycopg.Error) -> str:
    """The error's primary message and SQLSTATE, never its DETAIL (which may hold data)."""
    primary = exc.diag.message_primary
    text = primary or next(iter(str(exc).splitlines()), "") or type(exc).__name__
    return f"{text} ({exc.sqlstate})" if exc.sqlstate else text


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Run the block; a psycopg error leaves it as StoreConflictError or StoreError."""
    try:
        yield
    except CONFLICTS as exc:
        raise StoreConflictError(f"{what}: {describe(exc)}") from exc
    except psycopg.Error as exc:
        raise StoreError(f"{what}: {describe(exc)}") from exc
