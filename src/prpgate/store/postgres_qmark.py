"""A psycopg connection that takes the ``?`` placeholders of the statements both SQL stores share.

psycopg binds ``%s``; SQLite binds ``?``. The shared statements (``SqlReads``,
``SqlOutbox``) are written once with ``?`` and contain no literal ``?`` or ``%``, so
replacing each ``?`` with ``%s`` gives the same statement for psycopg.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

__all__ = ["QmarkConnection"]


class QmarkConnection:
    """Runs a ``?``-placeholder statement on a psycopg connection (``SqlConnection``)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[object] = (), /) -> psycopg.Cursor[Any]:
        """Run one statement; its ``?`` placeholders reach psycopg as ``%s``."""
        return self._conn.execute(sql.replace("?", "%s"), params)
