"""The fixture patients' names, MRNs and birth dates (the grep lists in fixtures/README.md
and fixtures-fhir/README.md), and a scan of log files for them."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from tests.conftest import ROOT

_ROW = re.compile(r"^\| `(ZQ\d+)` \| ([^|]+) \| ([^|]+) \| `(\d{8})` \((\S+)\)", re.M)


@cache
def patient_strings() -> tuple[str, ...]:
    """Every MRN, family name, given name and birth date (``YYYYMMDD`` and ``YYYY-MM-DD``)
    of both fixture folders' patients."""
    found: list[str] = []
    for readme in (ROOT / "fixtures" / "README.md", ROOT / "fixtures-fhir" / "README.md"):
        section = readme.read_text(encoding="utf-8").split("## Synthetic patients", 1)[1]
        found += re.findall(r"^\| `(ZQ\d+)`", section, re.M)  # rows without a name too
        for _mrn, family, given, dob, iso in _ROW.findall(section):
            found += [family.strip(), given.strip(), dob, iso]
    return tuple(dict.fromkeys(found))


def leaks(paths: list[Path]) -> dict[str, list[str]]:
    """For each file that holds any patient string: the strings found (empty: clean)."""
    secrets = patient_strings()
    out: dict[str, list[str]] = {}
    for path in paths:
        text = path.read_text(encoding="utf-8", errors="replace")
        hits = [s for s in secrets if s in text]
        if hits:
            out[str(path)] = hits
    return out
