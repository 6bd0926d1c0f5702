"""The published FHIR samples (../shared/corpus/fhir) and Synthea bundles
(../shared/corpus/synthea) replayed into SQLite files, each alone.

Expectations were derived by hand from the files' values and mappings/rules.yaml (the
arithmetic is in the comments), not from the code's output. 10*3/uL and K/uL are
×10⁹/L (factor 1); g/L is a tenth of g/dL; {cells}/uL is 10⁻³ ×10⁹/L.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from prpgate.core.model import Normalised
from prpgate.core.pipeline import Engine, read
from prpgate.replay import iter_inputs, replay
from prpgate.store.sqlite import SqliteStore
from tests.conftest import FixedClock, corpus_file

Row = tuple[str, str, str, str]


def finding(rule: str, severity: str, *, issues: int = 1, flag: str | None = "active") -> list[Row]:
    rows = [("DetectedIssue", rule, severity, "final")] * issues
    return rows + ([("Flag", rule, "", flag)] if flag else [])


# (folder, file) -> end state, normalised results per analyte (every CBC evaluated)
EXPECTED: dict[tuple[str, str], tuple[list[Row], dict[str, int]]] = {
    # 2012: WBC 4.74, Hb 13.3, PLT 151; 2018: WBC 8.81, Hb 15.5, PLT 306: all inside.
    ("synthea", "Clemente_Kreiger_1484a42d-0eaf-4654-9cbf-6b050a5cd73b.json"): (
        [],
        {"wbc": 2, "hgb": 2, "plt": 2},
    ),
    # WBC 10.50 (not > 11.0), Hb 14.7, PLT 186.
    ("synthea", "Edward_Gulgowski_43481611-2459-44f5-ab20-4b142dac160f.json"): (
        [],
        {"wbc": 1, "hgb": 1, "plt": 1},
    ),
    # 2015 WBC 10.11; 2020 WBC 3.51 < 4.0 (not < 2.0): leukopenia moderate, the latest.
    ("synthea", "Maximina_Hauck_5109ba0d-519a-4847-a39b-733b69311a56.json"): (
        finding("leukopenia", "moderate"),
        {"wbc": 2, "hgb": 2, "plt": 2},
    ),
    # Nine CBCs. WBC: 2012 3.75 moderate; 2017-05 6.37, 2017-11 5.27, 2017-12 4.03 none;
    # 2018-01 0.74 high; 2018-02 1.85 high; 2018-04 0.54 high; 2018-05-02 2.88 moderate;
    # 2018-05-31 3.90 moderate (latest: Flag active). Hb: 2018-01 6.94 < 7.0 high;
    # 2018-02 10.35 none; 2018-05-31 9.12 moderate (latest: Flag active); others > 10.
    # PLT 228..441: none.
    ("synthea", "Micah_Schinner_d4d72610-ec40-42ed-b34f-09e286181ee9.json"): (
        [("DetectedIssue", "leukopenia", "moderate", "final")] * 3
        + [("DetectedIssue", "leukopenia", "high", "final")] * 3
        + [("Flag", "leukopenia", "", "active")]
        + [("DetectedIssue", "anaemia", "high", "final")]
        + finding("anaemia", "moderate"),
        {"wbc": 9, "hgb": 9, "plt": 9},
    ),
    # 2011 WBC 3.53 moderate: a DetectedIssue; 2016 WBC 4.66, the latest, is normal, so
    # the Flag was never raised in the store and none is emitted.
    ("synthea", "Paula_Kuvalis_05fb68a0-f511-4db9-8b0f-338f001f5eff.json"): (
        finding("leukopenia", "moderate", flag=None),
        {"wbc": 2, "hgb": 2, "plt": 2},
    ),
    # NIST LRI CBC as FHIR-Converter wrote it: WBC 105600 {cells}/uL = 105.6 > 20.0
    # high; PLT 210000 {cells}/uL = 210; neutrophils 58 10*3/uL (no rule);
    # Hb 12.5 g/mL = 1250 g/dL: implausible, decides nothing.
    ("fhir", "fhir-converter-expected/LRI_2.0-NG_CBC_Typ_Message-expected.json"): (
        finding("leukocytosis", "high"),
        {"wbc": 1, "plt": 1, "neut": 1},
    ),
    # WBC 4.6 x10*9/L, PLT 444, Hb 176 g/L = 17.6 g/dL, neutrophils 0.9: none.
    ("fhir", "r4-spec/diagnosticreport-example.json"): (
        [],
        {"wbc": 1, "plt": 1, "hgb": 1, "neut": 1},
    ),
    ("fhir", "r4-spec/diagnosticreport-example-ghp.json"): (
        [],
        {"wbc": 1, "plt": 1, "hgb": 1, "neut": 1},
    ),
    # WBC 31.9 K/ul > 20.0 high; PLT 84 K/ul < 105 (not < 50) moderate.
    ("fhir", "r4-spec/diagnosticreport-genetics-comprehensive-bone-marrow-report.json"): (
        finding("leukocytosis", "high") + finding("thrombocytopenia", "moderate"),
        {"wbc": 1, "plt": 1},
    ),
    # Hb 7.2 g/dl < 10.0 (not < 7.0): anaemia moderate.
    ("fhir", "r4-spec/observation-example-f005-hemoglobin.json"): (
        finding("anaemia", "moderate"),
        {"hgb": 1},
    ),
    # Hb 17.0 g/dL: none.
    ("fhir", "us-core/Observation-hemoglobin.json"): ([], {"hgb": 1}),
    # Hb/WBC/PLT under codes the mapping does not hold (20509-6, 11156-7, 11125-2).
    ("fhir", "fhir-converter-expected/LAB-ORU-2-expected.json"): ([], {}),
}


def end_state(store: SqliteStore) -> list[Row]:
    rows = []
    for o in store.outputs():
        severity = json.loads(o.resource).get("severity", "")
        rows.append((o.kind, o.rule, severity, o.status))
    return sorted(rows)


@pytest.mark.corpus
@pytest.mark.parametrize(("folder", "name"), sorted(EXPECTED))
def test_fhir_corpus_file_ends_in_hand_derived_state(
    engine: Engine, folder: str, name: str, tmp_path: Path
) -> None:
    path = corpus_file(folder, name)
    outputs, analytes = EXPECTED[(folder, name)]
    store = SqliteStore(tmp_path / "s.sqlite")
    try:
        stats = replay(store, engine, [path], clock=FixedClock())
        assert end_state(store) == sorted(outputs)
    finally:
        store.close()
    assert dict(stats.dispositions) == {"accepted": 1}
    normalised: Counter[str] = Counter()
    for _, raw in iter_inputs([path]):
        normalised.update(r.analyte for r in read(raw, engine).results if isinstance(r, Normalised))
    assert dict(normalised) == analytes


@pytest.mark.corpus
def test_fhir_corpus_synthea_patient_identity_is_the_mr_identifier(engine: Engine) -> None:
    path = corpus_file("synthea", "Micah_Schinner_d4d72610-ec40-42ed-b34f-09e286181ee9.json")
    reading = read(path.read_bytes(), engine)
    assert {p.identifier.key for p in reading.patients} == {
        "http://hospital.smarthealthit.org|d4d72610-ec40-42ed-b34f-09e286181ee9"
    }


@pytest.mark.corpus
def test_fhir_corpus_resources_that_are_not_lab_results_are_refused(
    engine: Engine, tmp_path: Path
) -> None:
    paths = [
        corpus_file("fhir", "r4-spec/flag-example.json"),
        corpus_file("fhir", "r4-spec/detectedissue-example.json"),
    ]
    store = SqliteStore(tmp_path / "s.sqlite")
    try:
        stats = replay(store, engine, paths, clock=FixedClock())
        rows = store.list_messages()
    finally:
        store.close()
    assert dict(stats.dispositions) == {"rejected": 2}
    assert {json.loads(r.errors)[0]["code"] for r in rows} == {200}
    assert all(r.raw for r in rows)


@pytest.mark.corpus
def test_fhir_corpus_malformed_batch_response_entry_is_reported_not_fatal(
    engine: Engine,
) -> None:
    # entry[1] holds an Encounter directly instead of in entry.resource
    path = corpus_file("fhir", "fhir-converter__ObservationBundle.json")
    reading = read(path.read_bytes(), engine)
    assert reading.disposition.value == "accepted"
    assert len(reading.results) == 1  # the glucose Observation (not a CBC analyte)
    assert any(w.startswith("Bundle.entry[1]") for w in reading.warnings)
    assert reading.patients[0].identifier.key == "urn:oid:1.2.36.146.595.217.0.1|12345"
