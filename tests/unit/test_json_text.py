"""compact(): orjson's text, checked against the standard library's encoder."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prpgate.core.json_text import compact, interleave

REFERENCE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

# What prpgate encodes: strings (any code point but lone surrogates), 64-bit
# integers, booleans, null, lists, tuples and string-keyed objects.
_text = st.text(st.characters(exclude_categories=("Cs",)))
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1), _text
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.lists(inner, max_size=5).map(tuple),
        st.dictionaries(_text, inner, max_size=5),
    ),
    max_leaves=30,
)


@given(_values)
def test_compact_writes_what_the_standard_encoder_writes(value: Any) -> None:
    assert compact(value) == REFERENCE.encode(value)


@pytest.mark.parametrize(
    "value",
    [
        2**64,  # beyond orjson's 64 bits
        {1: "a", 2: ["b"]},  # non-string keys: json turns them into strings
        [{"nested": -(2**70)}],
    ],
)
def test_values_orjson_refuses_are_written_by_the_standard_encoder(value: Any) -> None:
    assert compact(value) == REFERENCE.encode(value)


def test_a_lone_surrogate_is_kept_as_the_standard_encoder_keeps_it() -> None:
    # orjson refuses it; the text is the standard encoder's, which SQLite then refuses
    assert compact({"a": "x\ud800"}) == '{"a":"x\ud800"}'


def test_what_json_cannot_represent_raises_type_error() -> None:
    with pytest.raises(TypeError):
        compact({"a": object()})


def test_control_characters_and_quotes_are_escaped_as_json_requires() -> None:
    text = compact({"k": 'a"b\\c\n\x01é\u2028'})
    assert text == '{"k":"a\\"b\\\\c\\n\\u0001é\u2028"}'
    assert json.loads(text) == {"k": 'a"b\\c\n\x01é\u2028'}


@given(st.lists(_text, max_size=6))
def test_interleave_quotes_values_as_compact_does(values: list[str]) -> None:
    parts = ["[", *([","] * (len(values) - 1)), "]"] if values else ["[]"]
    assert interleave(parts, values) == compact(values)
