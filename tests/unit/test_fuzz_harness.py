"""The atheris harness's property (``fuzz/fuzz_er7.py``, ``check``) in plain Python, so CI
keeps it true without running libFuzzer: every fixture message, every bad fixture, and
the inputs fuzzing found (each raised before its fix) pass it."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIXTURES, ROOT, load


def _harness_check() -> Callable[[bytes], None]:
    spec = importlib.util.spec_from_file_location("fuzz_er7", ROOT / "fuzz" / "fuzz_er7.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    check: Callable[[bytes], None] = module.check
    return check


CHECK = _harness_check()
FOUND = {
    # fuzz/run, first minute: a NUL inside MSH-18 made codecs.lookup raise ValueError
    "nul_in_msh18": b"MSH!.$]!SSH!!!$!QQQQQQQQSHH!!!$!!H!&$]!SHH!!!!\x01\x00\x00\x00\x00\x00"
    b"\x00\x02!\rMSH$",
    # hypothesis (tests/unit/test_hl7_fuzz.py): a NUL in MSH-3 was mirrored into the ACK
    "nul_in_msh3": b"MSH|^~\\&|\x00LAB|FAC|||20250101||ORU^R01|C1|P|2.5.1\rPID|1||X\r",
}


@pytest.mark.parametrize(
    "path", sorted(p for p in FIXTURES.rglob("*") if p.suffix in (".hl7", ".bin")), ids=str
)
def test_fuzz_harness_check_holds_for_every_fixture(path: Path) -> None:
    CHECK(path.read_bytes())


@pytest.mark.parametrize("name", sorted(FOUND))
def test_fuzz_harness_check_holds_for_what_fuzzing_found(name: str) -> None:
    CHECK(FOUND[name])


def test_fuzz_harness_check_fails_when_an_ack_does_not_echo_msh10(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prpgate.core import ack

    real = ack.build_ack

    def wrong(*args: Any, **kwargs: Any) -> ack.Ack:
        made = real(*args, **kwargs)
        data = made.data.replace(b"|PRPFX0001", b"|OTHER")
        return ack.Ack(made.code, made.control_id, made.acknowledged, data)

    monkeypatch.setattr(ack, "build_ack", wrong)
    with pytest.raises(AssertionError, match="does not echo MSH-10"):
        CHECK(load("cbc_normal.hl7"))
