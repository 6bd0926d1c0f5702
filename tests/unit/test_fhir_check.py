"""The shape-learning R4B checker agrees with the full fhir.resources models."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from fhir.resources.R4B.detectedissue import DetectedIssue
from fhir.resources.R4B.flag import Flag
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from prpgate.core.fhir_check import ShapeChecker
from prpgate.core.json_text import interleave
from prpgate.errors import BuildError

MODELS: dict[str, Any] = {"DetectedIssue": DetectedIssue, "Flag": Flag}

ISSUE: dict[str, Any] = {
    "resourceType": "DetectedIssue",
    "id": "prp-di-0123abcd",
    "identifier": [{"system": "https://clinic.example/sid/detected-issue", "value": "0123abcd"}],
    "status": "final",
    "code": {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": "LAB",
                "display": "Lab Alert",
            },
            {"system": "https://clinic.example/rules", "code": "leukocytosis"},
        ],
        "text": "Leukocytosis",
    },
    "severity": "high",
    "patient": {"identifier": {"system": "urn:oid:1.2.3", "value": "MRN77"}},
    "identifiedDateTime": "2026-01-02T08:00:00+01:00",
    "implicated": [{"identifier": {"system": "https://x.example/r", "value": "LAB|F:9"}}],
    "detail": "WBC 23.4 10*9/L > 20.0",
}
FLAG: dict[str, Any] = {
    "resourceType": "Flag",
    "id": "prp-flag-77",
    "status": "active",
    "category": [{"coding": [{"system": "http://x.example/flag-category", "code": "lab"}]}],
    "code": {"text": "PRP on hold: leukocytosis"},
    "subject": {"identifier": {"system": "urn:oid:1.2.3", "value": "MRN77"}},
    "period": {"start": "2026-01-02T08:00:00+01:00"},
}


def _compact(resource: dict[str, Any]) -> str:
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":"))


def _model_accepts(resource: dict[str, Any]) -> bool:
    try:
        MODELS[resource["resourceType"]].model_validate(resource)
    except ValidationError:
        return False
    return True


def _checker_accepts(checker: ShapeChecker, resource: dict[str, Any]) -> bool:
    try:
        checker.check(_compact(resource))
    except BuildError:
        return False
    return True


def _string_paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        return [
            p for k, v in node.items() if k != "resourceType" for p in _string_paths(v, (*path, k))
        ]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _string_paths(v, (*path, i))]
    return [path] if isinstance(node, str) else []


def _replaced(resource: dict[str, Any], path: tuple[Any, ...], value: str) -> dict[str, Any]:
    copy = json.loads(json.dumps(resource))
    node = copy
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return copy


def test_checker_learns_a_shape_once_and_reuses_it() -> None:
    checker = ShapeChecker(MODELS)
    checker.check(_compact(ISSUE))
    checker.check(_compact(_replaced(ISSUE, ("patient", "identifier", "value"), "MRN78")))
    checker.check(_compact(FLAG))
    assert checker.shapes == 2


def test_checker_rejects_a_bad_value_in_a_learnt_shape() -> None:
    checker = ShapeChecker(MODELS)
    checker.check(_compact(ISSUE))
    for path, bad in [
        (("identifiedDateTime",), "yesterday at noon"),
        (("status",), "final  version"),  # a code has single spaces only
        (("detail",), ""),  # FHIR strings are never empty
        (("id",), "no spaces allowed in ids"),
        (("code", "coding", 0, "code"), " LAB"),  # nor leading spaces
    ]:
        with pytest.raises(BuildError):
            checker.check(_compact(_replaced(ISSUE, path, bad)))
    assert checker.shapes == 1


def test_checker_rejects_structure_the_model_rejects() -> None:
    checker = ShapeChecker(MODELS)
    unknown = {**ISSUE, "colour": "red"}
    with pytest.raises(BuildError, match="colour"):
        checker.check(_compact(unknown))
    with pytest.raises(BuildError, match="no R4B model"):
        checker.check(_compact({"resourceType": "Patient", "id": "p"}))
    assert checker.shapes == 0


def test_checker_reads_escapes_and_other_json_layouts() -> None:
    checker = ShapeChecker(MODELS)
    quoted = _replaced(ISSUE, ("detail",), 'sent "12.5 g/mL" \\ read as g/dL, tab\there')
    checker.check(_compact(quoted))
    checker.check(_compact(quoted))
    checker.check(json.dumps(ISSUE, indent=2))  # not compact: validated in full each time
    checker.check(json.dumps(ISSUE, indent=2))
    with pytest.raises(BuildError):
        checker.check(json.dumps(_replaced(ISSUE, ("status",), ""), indent=2))


_TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", " ", "a b", "a  b", " a", "a\n", "2026-01-02", "2026-13-01", "x:y"]),
    st.sampled_from(["2026-01-02T08:00:00Z", "2026-01-02T08:00", "urn:oid:1.2", "final", "ok"]),
)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_checker_agrees_with_the_model_on_mutated_values(data: st.DataObject) -> None:
    checker = ShapeChecker(MODELS)
    base = data.draw(st.sampled_from([ISSUE, FLAG]))
    checker.check(_compact(base))  # learn the shape from a valid resource
    paths = _string_paths(base)
    mutated = base
    for path in data.draw(st.lists(st.sampled_from(paths), min_size=1, max_size=3)):
        mutated = _replaced(mutated, path, data.draw(_TEXT))
    assert _checker_accepts(checker, mutated) == _model_accepts(mutated)


def _composed(
    resource: dict[str, Any], paths: list[tuple[Any, ...]]
) -> tuple[list[str], list[str]]:
    """(parts, values) composing ``resource``'s compact text with the strings at
    ``paths`` as the value slots, in text order."""
    marked = resource
    for i, path in enumerate(paths):
        marked = _replaced(marked, path, f"@@{i}@@")
    pieces = re.split(r'"@@(\d+)@@"', _compact(marked))
    order = [int(i) for i in pieces[1::2]]
    values = []
    for i in order:
        node: Any = resource
        for step in paths[i]:
            node = node[step]
        values.append(node)
    return pieces[0::2], values


def test_composed_check_learns_parts_once_and_checks_their_values() -> None:
    checker = ShapeChecker(MODELS)
    # in text order: id, patient, identifiedDateTime, detail
    paths = [("id",), ("patient", "identifier", "value"), ("identifiedDateTime",), ("detail",)]
    parts, values = _composed(ISSUE, paths)
    assert interleave(parts, values) == _compact(ISSUE)
    checker.check_composed(parts, values)
    checker.check_composed(parts, ["prp-di-x", "MRN78", "2026-02-03", "other text"])
    assert checker.shapes == 1
    with pytest.raises(BuildError):
        checker.check_composed(parts, ["prp-di-x", "MRN78", "next tuesday", "other text"])
    with pytest.raises(BuildError):
        checker.check_composed(parts, ["an id with spaces", "MRN78", "2026-02-03", "t"])
    with pytest.raises(BuildError):
        checker.check_composed(parts, ["prp-di-x", "MRN78", "2026-02-03", ""])
    # other parts are other text: learnt (and here refused) on their own
    bad_parts = [p.replace('"status":"final"', '"colour":"final"') for p in parts]
    assert bad_parts != parts
    with pytest.raises(BuildError):
        checker.check_composed(bad_parts, values)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_composed_check_agrees_with_the_model_on_mutated_values(data: st.DataObject) -> None:
    checker = ShapeChecker(MODELS)
    base = data.draw(st.sampled_from([ISSUE, FLAG]))
    all_paths = _string_paths(base)
    paths = data.draw(st.lists(st.sampled_from(all_paths), min_size=1, max_size=5, unique=True))
    parts, values = _composed(base, paths)
    checker.check_composed(parts, values)  # learn the slots from a valid resource
    mutated = [data.draw(_TEXT) if data.draw(st.booleans()) else v for v in values]
    try:
        checker.check_composed(parts, mutated)
        accepted = True
    except BuildError:
        accepted = False
    assert accepted == _model_accepts(json.loads(interleave(parts, mutated)))
