"""A FHIR Bundle over the entry limit is refused whole, unread, with a reason."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from prpgate.core.fhir_in import read_input
from prpgate.core.fhir_outcome import http_status
from prpgate.core.fhir_reading import read_fhir
from prpgate.core.pipeline import Disposition, Engine
from tests.conftest import ROOT

SYSTEM = "urn:prpgate:assigning-authority"


def bundle_of(entries: int) -> bytes:
    """A collection Bundle of ``entries`` copies of the fixture WBC Observation."""
    obs: dict[str, Any] = json.loads(
        (ROOT / "fixtures-fhir" / "observation_wbc_high.json").read_text()
    )
    out = []
    for n in range(entries):
        res = json.loads(json.dumps(obs))
        res["identifier"][0]["value"] = f"FO-LIMIT-{n}"
        out.append({"fullUrl": f"urn:uuid:00000000-0000-0000-0000-{n:012d}", "resource": res})
    return json.dumps({"resourceType": "Bundle", "type": "collection", "entry": out}).encode()


def test_fhir_bundle_at_the_limit_is_read_one_over_is_refused() -> None:
    at = read_input(bundle_of(3), system_base=SYSTEM, max_entries=3)
    assert not at.rejected
    assert len(at.results) == 3
    over = read_input(bundle_of(4), system_base=SYSTEM, max_entries=3)
    assert over.rejected
    assert over.results == ()
    (issue,) = over.errors
    assert (issue.location, issue.code, issue.issue_type) == ("Bundle.entry", 100, "too-costly")
    assert issue.reason == "the Bundle has 4 entries; the limit is 3"
    assert not read_input(bundle_of(4), system_base=SYSTEM).rejected  # no limit given


def test_fhir_bundle_limit_comes_from_the_engine_and_answers_400(engine: Engine) -> None:
    assert engine.max_bundle_entries == 5000  # the setting's default
    small = dataclasses.replace(engine, max_bundle_entries=2)
    reading = read_fhir(bundle_of(3), small)
    assert reading.disposition is Disposition.REJECTED
    assert [e.code for e in reading.errors] == [100]
    assert http_status(reading.disposition, reading.errors) == 400
    assert read_fhir(bundle_of(3), engine).disposition is Disposition.ACCEPTED
