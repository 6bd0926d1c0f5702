"""Start-up warm-up: every rule of the pack is exercised by the real pipeline."""

from __future__ import annotations

from pathlib import Path

from prpgate.config import Settings
from prpgate.core.model import LabResult, Normalised, Unmapped
from prpgate.core.pipeline import Engine
from prpgate.engine import build_engine
from prpgate.mappings_loader import load_mappings
from prpgate.warmup import warm_up
from tests.conftest import MAPPINGS


def test_warm_up_builds_an_issue_and_a_flag_for_every_rule_of_the_pack() -> None:
    engine = build_engine(Settings(mappings=MAPPINGS))
    done = warm_up(engine)
    rule_ids = [r.id for r in load_mappings(MAPPINGS).rules.rules]
    assert done.messages == len(rule_ids)
    assert sorted(done.outputs) == sorted(
        [("DetectedIssue", rule) for rule in rule_ids] + [("Flag", rule) for rule in rule_ids]
    )
    assert done.units > 0


def test_warm_up_leaves_an_engine_with_another_mapper_alone(engine: Engine) -> None:
    class Fixed:
        def normalise(self, result: LabResult) -> Normalised | Unmapped:
            raise AssertionError("not called")

    other = Engine(
        mapper=Fixed(), rules_by_analyte=engine.rules_by_analyte, deployment=engine.deployment
    )
    done = warm_up(other)
    assert (done.units, done.messages, done.outputs) == (0, 0, ())


def test_warm_up_with_a_pack_rule_whose_analyte_has_no_loinc_code(tmp_path: Path) -> None:
    """An analyte known only by senders' local codes gives no synthetic message; the
    other rules still warm up."""
    for f in MAPPINGS.iterdir():
        (tmp_path / f.name).write_text(f.read_text())
    analytes = (tmp_path / "analytes.yaml").read_text()
    start = analytes.index("  - id: crp")
    loinc = analytes.index("    loinc:", start)
    end = analytes.index("\n\n", loinc)
    (tmp_path / "analytes.yaml").write_text(analytes[:loinc] + "    loinc: []" + analytes[end:])
    engine = build_engine(Settings(mappings=tmp_path))
    done = warm_up(engine)
    rules = {rule for _, rule in done.outputs}
    pack = {r.id for r in load_mappings(tmp_path).rules.rules}
    assert rules == pack - {"inflammation"}  # CRP's one rule
    assert done.messages == len(pack) - 1
