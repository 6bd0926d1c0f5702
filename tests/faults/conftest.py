"""The fault suite's shared fixture: a folder for every log its processes write, grepped
after each test for the fixture patients' names, MRNs and birth dates (none may appear
with the default settings)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.phi import leaks


@pytest.fixture
def fault_logs(tmp_path: Path) -> Iterator[Path]:
    """A folder for the logs of this test's processes (``*.log``); after the test every
    one of them is grepped for patient data, and the test fails on a hit."""
    folder = tmp_path / "logs"
    folder.mkdir()
    yield folder
    found = leaks(sorted(folder.glob("*.log")))
    assert found == {}, f"patient data in logs: {found}"
