"""fast_init: the same construction as the generated __init__, still frozen."""

from __future__ import annotations

import dataclasses

import pytest

from prpgate.core.model import Coding, LabResult, Patient, PatientId, ResultKey, ResultStatus
from prpgate.core.values import fast_init, remember


@dataclasses.dataclass(frozen=True, slots=True)
class _Point:
    x: int
    y: int = 2
    tags: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class _Reference:
    x: int
    y: int = 2
    tags: tuple[str, ...] = ()


fast_init(_Point)


def test_fast_init_builds_what_the_generated_init_builds() -> None:
    for args, kwargs in [((1,), {}), ((1, 5), {}), ((1,), {"tags": ("a",)}), ((), {"x": 3})]:
        fast = _Point(*args, **kwargs)
        plain = _Reference(*args, **kwargs)
        assert (fast.x, fast.y, fast.tags) == (plain.x, plain.y, plain.tags)
    assert _Point(1) == _Point(1, 2, ())
    assert hash(_Point(1)) == hash(_Point(1, 2))


def test_fast_init_keeps_the_class_frozen_and_refuses_bad_calls() -> None:
    p = _Point(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.x = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        _Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        _Point(1, z=3)  # type: ignore[call-arg]


def test_fast_init_refuses_classes_it_cannot_reproduce() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class WithFactory:
        items: list[int] = dataclasses.field(default_factory=list)

    @dataclasses.dataclass(slots=True)
    class Mutable:
        x: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class WithPostInit:
        x: int

        def __post_init__(self) -> None:
            pass

    for cls in (WithFactory, Mutable, WithPostInit):
        with pytest.raises(TypeError):
            fast_init(cls)


def test_hot_path_values_construct_as_declared() -> None:
    key = ResultKey("LAB", "F:1", "LN^6690-2")
    assert key.sub_id == ""
    patient = Patient(PatientId("urn:x", "M1"))
    result = LabResult(
        key=key,
        patient=patient,
        codes=(Coding("LN", "6690-2"),),
        value_type="NM",
        value_text="5.0",
        unit_text="K/uL",
        status=ResultStatus.FINAL,
        effective="2026-01-01",
        sending_facility="LAB",
        source="OBX[1]",
    )
    assert (result.comparator_text, result.abnormal_flags, result.effective_sort) == ("", (), "")
    assert result.key.text == "LAB|F:1|LN^6690-2|"
    moved = dataclasses.replace(key, sub_id="2")  # text is derived again, not copied
    assert moved.text == "LAB|F:1|LN^6690-2|2"
    assert moved != key
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.value_text = "6"  # type: ignore[misc]


def test_patient_key_is_system_and_value_and_follows_a_replace() -> None:
    mrn = PatientId("urn:oid:1.2.3", "M1", "MR")
    assert mrn.key == "urn:oid:1.2.3|M1"
    assert PatientId(system="urn:x", value="M1").type_code == ""
    other = dataclasses.replace(mrn, value="M2")
    assert (other.key, other.type_code) == ("urn:oid:1.2.3|M2", "MR")
    assert other != mrn
    assert mrn == PatientId("urn:oid:1.2.3", "M1", "MR")
    with pytest.raises(dataclasses.FrozenInstanceError):
        mrn.key = "x"  # type: ignore[misc]


def test_remember_keeps_a_value_and_starts_afresh_at_its_bound() -> None:
    memo: dict[str, int] = {}
    assert remember(memo, "a", 1, limit=2) == 1
    remember(memo, "b", 2, limit=2)
    assert memo == {"a": 1, "b": 2}
    remember(memo, "c", 3, limit=2)  # full: what was kept goes, the new value stays
    assert memo == {"c": 3}
