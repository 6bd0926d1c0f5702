"""The FHIR reader never raises, whatever JSON it is given: mutated fixtures (hypothesis
picks where and what), deep nesting, and values of every JSON type in every place."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from prpgate.core.fhir_in import read_input
from tests.conftest import ROOT

FIXTURES = [
    json.loads((ROOT / "fixtures-fhir" / name).read_text())
    for name in ("observation_wbc_high.json", "transaction_cbc.json")
]
ODD: list[Any] = [
    None,
    0,
    -1,
    1.5,
    "",
    "x",
    [],
    {},
    [None],
    {"a": 1},
    True,
    {"resourceType": "Patient"},
    {"resourceType": "NoSuchType"},
    {"resourceType": 5},
    {"reference": 3},
    "urn:uuid:",
]


def _mutate(node: Any, path: list[int], value: Any) -> None:
    """Replace the element that ``path`` (indices, wrapped) leads to with ``value``."""
    for step, i in enumerate(path):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            return
        key = keys[i % len(keys)]
        child = node[key]
        if step == len(path) - 1 or not isinstance(child, dict | list) or not child:
            node[key] = copy.deepcopy(value)
            return
        node = child


@settings(max_examples=300, deadline=None)
@given(
    which=st.integers(0, len(FIXTURES) - 1),
    edits=st.lists(
        st.tuples(st.lists(st.integers(0, 50), min_size=1, max_size=7), st.sampled_from(ODD)),
        min_size=1,
        max_size=3,
    ),
)
def test_read_input_never_raises_on_mutated_resources(
    which: int, edits: list[tuple[list[int], Any]]
) -> None:
    doc = copy.deepcopy(FIXTURES[which])
    for path, value in edits:
        _mutate(doc, path, value)
    found = read_input(json.dumps(doc).encode(), system_base="urn:test")
    assert found.content_hash
    if found.rejected:
        assert found.errors
        assert found.results == ()


def test_read_input_deep_nesting_is_an_answer_not_a_crash() -> None:
    for raw in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000):
        found = read_input(raw, system_base="urn:test")
        assert found.rejected
        assert "nested too deeply" in found.errors[0].reason


def test_read_input_unknown_contained_resource_type_is_rejected() -> None:
    doc = copy.deepcopy(FIXTURES[0])
    doc["contained"].append({"resourceType": "NoSuchType", "id": "z"})
    found = read_input(json.dumps(doc).encode(), system_base="urn:test")
    assert found.rejected
    assert "unknown type" in found.errors[0].reason
