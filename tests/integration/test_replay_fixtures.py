"""Replay every fixture into a SQLite file and compare the end state with fixtures/README.md.

The expectations below were derived by hand from DESIGN.md's thresholds (the
manifest in fixtures/README.md shows the arithmetic); they are not output of
the code under test.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from prpgate.core.pipeline import Engine
from prpgate.replay import ReplayStats, replay
from prpgate.store.sqlite import SqliteStore
from tests.conftest import FIXTURES, FixedClock


def run(engine: Engine, paths: list[Path], db: Path) -> tuple[ReplayStats, SqliteStore]:
    store = SqliteStore(db)
    stats = replay(store, engine, paths, clock=FixedClock(), batch=7)
    return stats, store


def end_state(store: SqliteStore) -> list[tuple[str, str, str, str]]:
    """(resource, rule, severity, status) of every current output, sorted."""
    rows = []
    for o in store.outputs():
        severity = json.loads(o.resource).get("severity", "")
        rows.append((o.kind, o.rule, severity, o.status))
    return sorted(rows)


def finding(
    rule: str, severity: str, issue: str = "final", flag: str = "active"
) -> list[tuple[str, str, str, str]]:
    return [("DetectedIssue", rule, severity, issue), ("Flag", rule, "", flag)]


EXPECTED: dict[str, list[tuple[str, str, str, str]]] = {
    "cbc_normal.hl7": [],
    "cbc_high_wbc.hl7": finding("leukocytosis", "high"),
    "cbc_low_wbc.hl7": finding("leukopenia", "moderate") + finding("thrombocytopenia", "high"),
    "cbc_anaemia_mmol.hl7": finding("anaemia", "moderate"),
    "crp_inr.hl7": finding("inflammation", "high") + finding("bleeding-risk", "moderate"),
    "units_wbc_spellings.hl7": finding("leukocytosis", "moderate") * 3,
    "units_other_spellings.hl7": (
        finding("thrombocytopenia", "moderate")
        + finding("anaemia", "high")
        + finding("anaemia", "moderate")
        + finding("inflammation", "moderate") * 2
        + finding("bleeding-risk", "moderate")
    ),
    "loinc_codes.hl7": [],
    "v23_cbc.hl7": [],
    "v231_cbc.hl7": [],
    "v24_cbc.hl7": finding("leukopenia", "high"),
    "v25_cbc.hl7": [],
    "v26_cbc.hl7": [],
    "v27_cbc.hl7": finding("thrombocytopenia", "moderate"),
    "v28_cbc.hl7": [],
    "sn_comparators.hl7": (
        finding("leukocytosis", "high")
        + finding("leukocytosis", "moderate")
        + finding("leukopenia", "moderate")
        + finding("thrombocytopenia", "high")
        + finding("bleeding-risk", "high")
        + finding("inflammation", "moderate")
    ),
    "preliminary_then_final.hl7": finding("leukocytosis", "high"),
    "correction.hl7": finding("leukocytosis", "moderate", "entered-in-error", "inactive"),
    "clearance.hl7": finding("thrombocytopenia", "moderate", "final", "inactive"),
    "retraction.hl7": finding("inflammation", "moderate", "entered-in-error", "inactive"),
    "unmapped.hl7": [],
    "two_patients.hl7": finding("leukocytosis", "high"),
    "escapes.hl7": [],
    "batch.hl7": finding("leukocytosis", "moderate"),
    "obx_before_obr.hl7": finding("leukocytosis", "moderate"),
    "nte_zsegments.hl7": finding("inflammation", "moderate"),
    "latin1_sender.hl7": [],
    "charset_8859.hl7": [],
}
MESSAGES = {
    "units_wbc_spellings.hl7": 14,
    "units_other_spellings.hl7": 8,
    "loinc_codes.hl7": 6,
    "sn_comparators.hl7": 9,
    "batch.hl7": 3,
    "preliminary_then_final.hl7": 2,
    "correction.hl7": 2,
    "clearance.hl7": 2,
    "retraction.hl7": 2,
}


def test_fixture_expectations_cover_every_fixture_file() -> None:
    on_disk = {p.name for p in FIXTURES.glob("*.hl7")}
    assert on_disk == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_replay_fixture_ends_in_manifest_state(engine: Engine, name: str, tmp_path: Path) -> None:
    stats, store = run(engine, [FIXTURES / name], tmp_path / "store.sqlite")
    try:
        assert end_state(store) == sorted(EXPECTED[name])
        assert stats.messages == MESSAGES.get(name, 1)
        assert dict(stats.dispositions) == {"accepted": stats.messages}
    finally:
        store.close()


def test_replay_unmapped_fixture_records_each_reason(engine: Engine, tmp_path: Path) -> None:
    stats, store = run(engine, [FIXTURES / "unmapped.hl7"], tmp_path / "s.sqlite")
    store.close()
    assert stats.unmapped == Counter(
        {"unmapped-code": 1, "unknown-unit": 1, "unconvertible-unit": 1, "implausible": 1}
    )
    assert not stats.clean


def test_replay_clean_fixtures_map_everything(engine: Engine, tmp_path: Path) -> None:
    clean = [FIXTURES / n for n in sorted(EXPECTED) if n != "unmapped.hl7"]
    stats, store = run(engine, clean, tmp_path / "s.sqlite")
    store.close()
    assert dict(stats.unmapped) == {}
    assert stats.clean


def test_replay_whole_directory_totals_match_manifest(engine: Engine, tmp_path: Path) -> None:
    stats, store = run(engine, [FIXTURES], tmp_path / "s.sqlite")
    try:
        kinds = Counter((o.kind, o.status) for o in store.outputs())
    finally:
        store.close()
    assert kinds == Counter(
        {
            ("DetectedIssue", "final"): 29,
            ("DetectedIssue", "entered-in-error"): 2,
            ("Flag", "active"): 28,
            ("Flag", "inactive"): 3,
        }
    )
    assert stats.dispositions["accepted"] == 67
    # the bad inputs: none accepted; garbage.bin may split into several pieces at
    # stray MLLP framing bytes, each piece rejected on its own
    assert stats.dispositions["error"] == 3
    assert stats.dispositions["rejected"] >= 4
    assert stats.messages == 67 + 3 + stats.dispositions["rejected"]


BAD = {
    "no_msh.hl7": ("rejected", "AR", None),
    "adt_a01.hl7": ("rejected", "AR", 200),
    "garbage.bin": ("rejected", "AR", None),
    "truncated.hl7": ("error", "AE", 101),
    "not_a_number.hl7": ("error", "AE", 102),
    "bad_version.hl7": ("rejected", "AR", 203),
    "missing_pid.hl7": ("error", "AE", None),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_replay_bad_input_gets_disposition_and_keeps_raw(
    engine: Engine, name: str, tmp_path: Path
) -> None:
    path = FIXTURES / "bad" / name
    stats, store = run(engine, [path], tmp_path / "s.sqlite")
    try:
        rows = store.list_messages()
        outputs = store.outputs()
    finally:
        store.close()
    status, ack, code = BAD[name]
    assert rows
    for row in rows:
        assert (row.status, row.ack_code) == (status, ack)
        errors = json.loads(row.errors)
        assert errors
        assert all(e["reason"] for e in errors)
        if code is not None:
            assert errors[0]["code"] == code
        assert row.raw  # the raw input is kept
        assert row.raw in path.read_bytes()
    assert outputs == []
    assert not stats.clean


def test_replay_twice_gives_identical_resources_and_no_new_outputs(
    engine: Engine, tmp_path: Path
) -> None:
    db = tmp_path / "s.sqlite"
    stats1, store = run(engine, [FIXTURES], db)
    first = {o.identifier: o.resource for o in store.outputs()}
    outbox1 = len(store.outbox(limit=10_000))
    store.close()
    stats2, store = run(engine, [FIXTURES], db)
    second = {o.identifier: o.resource for o in store.outputs()}
    outbox2 = len(store.outbox(limit=10_000))
    store.close()
    assert first == second
    assert outbox1 == outbox2  # nothing re-emitted
    # every message with a usable MSH is a retransmit now; inputs without one
    # (no MSH, garbage bytes) cannot be matched and are rejected again
    unmatched = stats1.dispositions["rejected"] - 2  # minus ADT^A01 and version 9.9
    assert stats2.dispositions["duplicate"] == stats1.messages - unmatched
    assert stats2.dispositions["rejected"] == unmatched


def test_replay_in_two_runs_ends_where_one_run_does(engine: Engine, tmp_path: Path) -> None:
    files = [FIXTURES / "correction.hl7", FIXTURES / "clearance.hl7"]
    _, one = run(engine, files, tmp_path / "one.sqlite")
    together = {o.identifier: o.resource for o in one.outputs()}
    one.close()
    db = tmp_path / "two.sqlite"
    for f in files:
        _, part = run(engine, [f], db)
        part.close()
    two = SqliteStore(db)
    apart = {o.identifier: o.resource for o in two.outputs()}
    two.close()
    assert together == apart
