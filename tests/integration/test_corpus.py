"""The published corpus (../shared/corpus/hl7v2) through replay: what each message decided.

Every corpus message that carries a WBC result is asserted here. The expected
values come from reading the messages (see ../shared/corpus/SOURCES.md) and
DESIGN.md's rule pack, not from running the code.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prpgate.core.explanation import expand_result
from prpgate.core.pipeline import Engine
from prpgate.replay import replay
from prpgate.store.sqlite import SqliteStore
from tests.conftest import FixedClock, corpus_file


def replay_one(engine: Engine, name: str, tmp_path: Path) -> SqliteStore:
    path = corpus_file("hl7v2", name)
    store = SqliteStore(tmp_path / "corpus.sqlite")
    replay(store, engine, [path], clock=FixedClock())
    return store


def results(store: SqliteStore) -> list[dict[str, object]]:
    out = []
    for row in reversed(store.list_messages()):
        for rec in store.explanation(row.id):
            if rec["kind"] == "result":
                out.append(expand_result(rec))
    return out


def by_code(store: SqliteStore, code: str) -> dict[str, object]:
    (hit,) = [r for r in results(store) if any(f"^{code}^" in c for c in r["code"])]  # type: ignore[union-attr]
    return hit


def test_corpus_lri_cbc_wbc_105600_cells_is_leukocytosis_high(
    engine: Engine, tmp_path: Path
) -> None:
    store = replay_one(engine, "fhir-converter__LRI_2.0-NG_CBC_Typ_Message.hl7", tmp_path)
    try:
        wbc = by_code(store, "26464-8")
        hb = by_code(store, "718-7")
        plt = by_code(store, "26515-7")
        outputs = sorted((o.kind, o.rule, o.status) for o in store.outputs())
        issue = next(json.loads(o.resource) for o in store.outputs() if o.kind == "DetectedIssue")
    finally:
        store.close()
    # 105600 {cells}/uL = 105.6 x10^9/L > 20.0: high; the lab flagged it HH too
    assert (wbc["value"], wbc["unit"]) == ("105.6", "10*9/L")
    assert [(j["rule"], j["met"], j["severity"]) for j in wbc["judgements"]] == [
        ("leukocytosis", True, "high"),
        ("leukopenia", False, None),
    ]
    # Hb "12.5 g/mL" = 1250 g/dL: a unit error at the sender, recorded, not decided
    assert hb["unmapped"] == "implausible"
    assert (plt["value"], plt["unit"]) == ("210", "10*9/L")
    assert outputs == [
        ("DetectedIssue", "leukocytosis", "final"),
        ("Flag", "leukocytosis", "active"),
    ]
    assert issue["severity"] == "high"
    assert "HH" in issue["detail"]


@pytest.mark.parametrize(
    ("name", "wbc_value"),
    [
        ("fhir-converter__LAB-ORU-1.hl7", ""),  # preliminary order, OBX-5 empty on the WBC line
        ("fhir-converter__LAB-ORU-2.hl7", "8.2"),
    ],
)
def test_corpus_lab_oru_wbc_under_morphology_code_is_not_guessed(
    engine: Engine, name: str, wbc_value: str, tmp_path: Path
) -> None:
    store = replay_one(engine, name, tmp_path)
    try:
        wbc = by_code(store, "11156-7")
        outputs = store.outputs()
        (row,) = store.list_messages()
    finally:
        store.close()
    # 11156-7 is not one of DESIGN's WBC count codes: unmapped, reported, no decision
    assert wbc["unmapped"] == "unmapped-code"
    assert wbc["sent"] == wbc_value
    assert outputs == []
    assert row.status == "accepted"


def test_corpus_mirth_large_v22_panel_is_normal(engine: Engine, tmp_path: Path) -> None:
    store = replay_one(engine, "mirth-connect__large.hl7", tmp_path)
    try:
        wbc = by_code(store, "WBC")
        crp = by_code(store, "CRP")
        outputs = store.outputs()
    finally:
        store.close()
    assert (wbc["value"], wbc["unit"], wbc["sent_unit"]) == ("5.8", "10*9/L", "THOU/uL")
    assert all(j["met"] is False for j in wbc["judgements"])
    # CRP "< 1" mg/L: the comparator settles "not > 10"
    assert (crp["comparator"], crp["value"]) == ("<", "1")
    assert [(j["rule"], j["met"]) for j in crp["judgements"]] == [("inflammation", False)]
    assert outputs == []


def test_corpus_mirth_nested_wbc_per_nanolitre_is_normal(engine: Engine, tmp_path: Path) -> None:
    store = replay_one(engine, "mirth-connect__nonbatch_nested_08.hl7", tmp_path)
    try:
        wbc = by_code(store, "wbc")
        plt = by_code(store, "plt")
        outputs = store.outputs()
    finally:
        store.close()
    assert (wbc["value"], wbc["unit"], wbc["sent_unit"]) == ("7.0", "10*9/L", "/nl")
    assert (plt["value"], plt["unit"]) == ("221", "10*9/L")
    assert outputs == []


def test_corpus_mirth_batch_rejects_adt_and_evaluates_oru(engine: Engine, tmp_path: Path) -> None:
    store = replay_one(engine, "mirth-connect__batch03.hl7", tmp_path)
    try:
        rows = list(reversed(store.list_messages()))
        wbc = by_code(store, "wbc")
        outputs = store.outputs()
    finally:
        store.close()
    assert [(r.message_type, r.status, r.ack_code) for r in rows] == [
        ("ADT^A40", "rejected", "AR"),
        ("ORU^R01", "accepted", "AA"),
    ]
    assert json.loads(rows[0].errors)[0]["code"] == 200
    assert wbc["value"] == "7.0"
    assert outputs == []


@pytest.mark.parametrize(
    ("name", "location"),
    [
        ("fhir-converter__ORU-R01-01.hl7", "OBX[11]-3"),
        ("linuxforhealth__ORU-multiline-short.hl7", "OBX[6]-3"),
    ],
)
def test_corpus_obx_without_identifier_is_answered_ae(
    engine: Engine, name: str, location: str, tmp_path: Path
) -> None:
    store = replay_one(engine, name, tmp_path)
    try:
        (row,) = store.list_messages()
    finally:
        store.close()
    assert (row.status, row.ack_code) == ("error", "AE")
    first = json.loads(row.errors)[0]
    assert (first["location"], first["code"]) == (location, 101)
    assert row.raw  # kept for inspection


def test_corpus_realm_bad_batch_blanked_obx3_gets_ae_for_both_messages(
    engine: Engine, tmp_path: Path
) -> None:
    store = replay_one(engine, "ruby-hl7__realm-bad-batch.hl7", tmp_path)
    try:
        rows = store.list_messages()
    finally:
        store.close()
    assert sorted((r.status, r.ack_code) for r in rows) == [("error", "AE"), ("error", "AE")]
