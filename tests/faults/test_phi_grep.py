"""The grep the fault suite runs over its logs: it knows every fixture patient, and it
finds one planted in a log."""

from __future__ import annotations

from pathlib import Path

from tests.faults.phi import leaks, patient_strings


def test_phi_grep_list_holds_both_fixture_folders_patients() -> None:
    found = set(patient_strings())
    assert {"ZQ70002", "Blaxandrine", "Cassius", "19480725", "1948-07-25"} <= found
    assert {"ZQ79001", "Fennimore-Quast", "1958-09-14", "ZQ79003"} <= found
    assert {"Søndergaard-Ibáñez", "ZQ70069"} <= found
    assert len(found) > 340  # 69 + 3 patients, five strings each where known


def test_phi_grep_finds_a_planted_name_and_passes_a_clean_log(tmp_path: Path) -> None:
    clean = tmp_path / "clean.log"
    clean.write_text('{"event": "message", "control_id": "PRPFX0002", "facility": "NORTHLAB"}\n')
    leaky = tmp_path / "leaky.log"
    leaky.write_text('{"event": "oops", "detail": "PID|1||ZQ70036^^^X^MR||Kilbarrow^Lucius"}\n')
    assert leaks([clean, leaky]) == {str(leaky): ["ZQ70036", "Kilbarrow", "Lucius"]}
