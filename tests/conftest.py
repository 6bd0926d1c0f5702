"""Shared test helpers: where the corpus and the fixtures are, and a fixed clock."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from prpgate.config import Settings
from prpgate.core.pipeline import Engine
from prpgate.engine import build_engine

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
MAPPINGS = ROOT / "mappings"
CORPUS = Path(os.environ.get("PRPGATE_CORPUS", ROOT.parent / "shared" / "corpus")).resolve()
FIXED_NOW = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)


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


class FixedClock:
    """The Clock port, stopped at FIXED_NOW."""

    def now(self) -> datetime:
        return FIXED_NOW


@pytest.fixture(scope="session")
def engine() -> Engine:
    """The pipeline engine on the shipped mappings (built once: the UCUM registry is slow)."""
    return build_engine(Settings(mappings=MAPPINGS))
