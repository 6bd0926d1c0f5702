"""Shared test helpers: where the corpus and the fixtures are, a fixed clock, the stores
each backend test runs on, the installed ``prpgate`` command run as a process, and
waiting for a condition."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from prpgate.config import Settings
from prpgate.core.pipeline import Engine
from prpgate.engine import build_engine
from prpgate.errors import StoreConflictError, StoreError
from prpgate.ingest import ingest
from prpgate.ports import StoreBackend
from prpgate.store.factory import open_store
from prpgate.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
MAPPINGS = ROOT / "mappings"
CORPUS = Path(os.environ.get("PRPGATE_CORPUS", ROOT.parent / "shared" / "corpus")).resolve()
FIXED_NOW = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)
PRPGATE = str(Path(sys.executable).parent / "prpgate")  # this environment's console script


def load(name: str) -> bytes:
    """Bytes of a fixture file in fixtures/ (the messages the team wrote)."""
    return (FIXTURES / name).read_bytes()


def corpus_dir(sub: str) -> Path:
    """A folder of the published corpus, or skip the test saying why it is absent."""
    path = CORPUS / sub
    if not path.is_dir():
        pytest.skip(f"corpus folder {path} is absent (set PRPGATE_CORPUS to the corpus location)")
    return path


def corpus_file(sub: str, name: str) -> Path:
    """One corpus file, or skip the test saying why it is absent."""
    path = corpus_dir(sub) / name
    if not path.is_file():
        pytest.skip(f"corpus file {path} is absent")
    return path


def corpus_paths(sub: str, *patterns: str) -> list[Path]:
    """Corpus files matching the patterns, sorted, for parametrising at collection time.

    Returns an empty list when the corpus is absent; tests parametrised over it
    then use ``corpus_dir`` to skip with a reason.
    """
    base = CORPUS / sub
    if not base.is_dir():
        return []
    found: set[Path] = set()
    for pattern in patterns or ("*",):
        found.update(p for p in base.glob(pattern) if p.is_file())
    return sorted(found)


def run_prpgate(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """``prpgate *args`` as a process, in this environment with ``env`` added; its exit
    code and text output (not checked)."""
    return subprocess.run(
        [PRPGATE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def ndjson(text: str) -> list[dict[str, Any]]:
    """The JSON objects of a command's output, one a line (blank lines skipped)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def wait_for(
    what: str, condition: Callable[[], object], timeout: float, every: float = 0.02
) -> None:
    """Poll ``condition()`` every ``every`` seconds until it is true; fail naming ``what``
    after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def ingest_cbcs(store: SqliteStore, engine: Engine, count: int, tag: str) -> None:
    """``count`` copies of the fixture CBC, each its own message (``tag`` + number as its
    control id), ingested in one transaction of ``store``."""
    template = load("cbc_high_wbc.hl7")
    with store.session() as session:
        for i in range(count):
            raw = template.replace(b"PRPFX0002", f"{tag}{i:06d}".encode())
            ingest(session, engine, raw, source="test", received_at=FIXED_NOW)


def stored_messages(path: Path) -> int:
    """How many messages the SQLite store at ``path`` holds, read by a store opened anew."""
    reopened = SqliteStore(path)
    try:
        return len(reopened.list_messages(limit=1_000_000))
    finally:
        reopened.close()


class FixedClock:
    """The Clock port, stopped at FIXED_NOW."""

    def now(self) -> datetime:
        return FIXED_NOW


@pytest.fixture(scope="session")
def engine() -> Engine:
    """The pipeline engine on the shipped mappings (built once: the UCUM registry is slow)."""
    return build_engine(Settings(mappings=MAPPINGS))


def pg_server_dsn() -> str:
    """The DSN of the test PostgreSQL server (``PRPGATE_TEST_PG_DSN``).

    Without one the test is skipped saying so, except in CI (``CI`` or ``PRPGATE_CI``
    set), where a missing server fails the run: ``.ci/run`` starts one.
    """
    dsn = os.environ.get("PRPGATE_TEST_PG_DSN", "").strip()
    if dsn:
        return dsn
    reason = (
        "no PostgreSQL server: set PRPGATE_TEST_PG_DSN=postgresql://... "
        "(`.ci/pg-cluster start DIR` starts a throwaway one)"
    )
    if os.environ.get("CI") or os.environ.get("PRPGATE_CI"):
        pytest.fail(f"{reason}; CI must test against PostgreSQL")
    pytest.skip(reason)


def pg_schema_url(dsn: str, schema: str) -> str:
    """The DSN with ``search_path`` set to ``schema`` and ``application_name`` too (libpq
    URL query parameters), so a test can find its own server connections."""
    options = quote(f"-c search_path={schema}", safe="")
    return f"{dsn}{'&' if '?' in dsn else '?'}options={options}&application_name={schema}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A postgresql:// URL whose tables live in a fresh, empty schema of this test's own
    (dropped afterwards), so tests never see each other's rows."""
    dsn = pg_server_dsn()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"'.encode())
    try:
        yield pg_schema_url(dsn, schema)
    finally:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE'.encode())


@dataclass(frozen=True)
class StoreSpec:
    """One store backend under test: its ``store_url``, a way to open it, and direct SQL
    for what the ports do not show (schema version, columns)."""

    kind: str  # "sqlite" or "postgresql"
    url: str

    @property
    def settings(self) -> Settings:
        """Settings naming this store."""
        return Settings(store_url=self.url, mappings=MAPPINGS)

    @property
    def conflict(self) -> type[Exception]:
        """What committing a second first arrival of one message raises: on PostgreSQL a
        conflict to run again; on SQLite, whose writer lock rules the race out, a plain
        store error."""
        return StoreError if self.kind == "sqlite" else StoreConflictError

    def open(self, *, migrate: bool = True) -> StoreBackend:
        """The store through the factory, as every command opens it."""
        return open_store(self.settings, migrate=migrate)

    def sql(self, query: str, *args: object) -> list[tuple[object, ...]]:
        """Run one statement directly (committed); returns its rows."""
        if self.kind == "sqlite":
            db = sqlite3.connect(self.url.removeprefix("sqlite:///"))
            try:
                rows = db.execute(query.replace("%s", "?"), args).fetchall()
                db.commit()
                return rows
            finally:
                db.close()
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            cur = conn.execute(query.encode(), args)
            return list(cur.fetchall()) if cur.description else []


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> StoreSpec:
    """Each store backend in turn (PostgreSQL: a fresh schema on the test server)."""
    if request.param == "sqlite":
        return StoreSpec("sqlite", f"sqlite:///{tmp_path / 'store.sqlite'}")
    return StoreSpec("postgresql", str(request.getfixturevalue("pg_url")))
