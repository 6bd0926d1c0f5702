"""Differential tests: the ER7 tokenizer against hl7apy, leaf by leaf.

What is compared, and how the two readers are lined up:

* Leaves are compared **raw** (still escaped): hl7apy does not unescape when it
  parses (``SubComponent.value.value`` is the text as sent; its ``to_er7()``
  re-escapes, e.g. ``\\X41\\`` becomes ``\\E\\X41\\E\\``), so ours
  (``raw_field_tree``) is compared with hl7apy's stored text. Each leaf is then
  compared **decoded**: ``field_tree`` against an independent reference decoder
  applied to hl7apy's raw leaf (``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\H\\ \\N\\ \\Xhh\\``
  and ``\\.br\\``; leaves with other codes are compared raw only).
* hl7apy converts numbers and dates (NM ``001`` reads as ``1``): for such leaves
  we compare hl7apy's rendering of our text with its rendering of its own.
* hl7apy drops whitespace-only fields, components and sub-components, and drops
  empty ones where its datatype names them; positions come from its element
  names (``PID_5``, ``XPN_2``) where it has them and from order otherwise. The
  alignment therefore treats a blank element we return as possibly absent there.
* hl7apy strips whitespace around each segment; we keep it, so our last field is
  compared right-stripped.
* hl7apy needs ``\\r`` terminators: its input is the message with ``\\r\\n`` or
  (when there is no CR) ``\\n`` replaced by ``\\r``, exactly our terminator rule.
* hl7apy cannot read a 3-character MSH-2 (``^~&``, no escape character): it is
  given the message with an escape character added to MSH-2 that occurs nowhere
  in the message, which changes nothing else it reads; MSH-2 is checked apart.
* Where hl7apy raises on a message (e.g. a segment its version does not define),
  the message is skipped with hl7apy's error; a separate test asserts that most
  of the corpus was compared.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hl7apy.base_datatypes import TextualDataType
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.factories import datatype_factory
from hl7apy.parser import parse_message as hl7apy_parse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prpgate.core import er7
from prpgate.errors import ParseError
from tests.conftest import FIXTURES, corpus_dir, corpus_paths

MIN_CORPUS_MESSAGES_COMPARED = 18  # of 21 messages in 18 files (20 compare today)

_NAME_INDEX = re.compile(r"_(\d+)$")
_SPARE_ESCAPES = "\\!$%*@?#"


class Hl7apyReadError(Exception):
    """hl7apy raised while parsing the message; carries its error."""


def _messages(paths: Sequence[Path]) -> list[tuple[str, er7.RawMessage]]:
    out: list[tuple[str, er7.RawMessage]] = []
    for path in paths:
        pieces = er7.split_messages(path.read_bytes())
        out += [(f"{path.name}#{p.number}", p) for p in pieces]
    return out


CORPUS_MESSAGES = _messages(corpus_paths("hl7v2", "*.hl7", "*.er7"))
FIXTURE_MESSAGES = _messages(sorted(FIXTURES.glob("*.hl7")) if FIXTURES.is_dir() else [])


# ------------------------------------------------------------ reading hl7apy


def _hl7apy_text(msg: er7.Message, text: str) -> str:
    """The message as hl7apy can read it (CR terminators, four encoding characters)."""
    body = text.lstrip("\ufeff \t\r\n")
    body = body.replace("\r\n", "\r") if "\r" in body else body.replace("\n", "\r")
    d = msg.delimiters
    if not d.escape:
        spare = next(c for c in _SPARE_ESCAPES if c not in body)
        enc = d.component + d.repetition + spare + d.subcomponent
        body = f"MSH{d.field}{enc}{body[4 + 3 :]}"
    return body


def _read_hl7apy(text: str) -> Any:
    try:
        return hl7apy_parse(text, find_groups=False, validation_level=VALIDATION_LEVEL.TOLERANT)
    except Exception as exc:  # any failure inside hl7apy means "cannot read"
        raise Hl7apyReadError(f"{type(exc).__name__}: {exc}") from exc


def _index(element: Any) -> int | None:
    match = _NAME_INDEX.search(element.name or "")
    return int(match.group(1)) if match else None


def _leaf_text(sub: Any) -> tuple[str, bool]:
    """(text hl7apy holds, whether that is the raw text as sent)."""
    v = sub.value
    if v is None or isinstance(v, str):
        return v or "", True
    if isinstance(v, TextualDataType):
        return str(v.value), True
    return str(v.to_er7()), False


# ------------------------------------------------------- independent decoder


_REFERENCE_CODES = re.compile(r"[FSTREHN]|X(?:[0-9A-Fa-f]{2})+|\.br")


def _reference_decode(raw: str, d: er7.Delimiters) -> str | None:
    """Decode ``raw`` independently of er7; None when it uses codes we do not model."""
    if not d.escape:
        return raw
    e = re.escape(d.escape)
    table = {
        "F": d.field,
        "S": d.component,
        "T": d.subcomponent,
        "R": d.repetition,
        "E": d.escape,
        "H": "",
        "N": "",
        ".br": "\n",
    }
    unknown = False

    def repl(m: re.Match[str]) -> str:
        nonlocal unknown
        code = m.group(1)
        if not _REFERENCE_CODES.fullmatch(code):
            unknown = True
            return m.group(0)
        if code[0] == "X":
            try:
                return bytes.fromhex(code[1:]).decode(d.charset)
            except UnicodeDecodeError:
                return m.group(0)
        return table[code]

    decoded = re.sub(f"{e}([^{e}]*){e}", repl, raw)
    return None if unknown else decoded


# ----------------------------------------------------------------- alignment


@dataclass(frozen=True, slots=True)
class _Ours:
    blank: bool
    tree: Any  # a raw repetition, component or leaf, and its decoded twin
    decoded: Any
    where: str


def _align(ours: list[_Ours], theirs: list[Any], where: str) -> list[tuple[_Ours, Any]]:
    """Pair our elements with hl7apy's (named ones by index, the rest in order)."""
    used = [False] * len(ours)
    pairs: list[tuple[_Ours, Any]] = []
    unnamed: list[Any] = []
    for element, index in theirs:
        if index is None:
            unnamed.append(element)
            continue
        assert 1 <= index <= len(ours), f"{where}: hl7apy has element {index}, we have {len(ours)}"
        assert not used[index - 1], f"{where}: hl7apy has element {index} twice"
        used[index - 1] = True
        pairs.append((ours[index - 1], element))
    pos = 0
    for element in unnamed:
        their_blank = not str(element.to_er7()).strip()
        while pos < len(ours) and (used[pos] or (ours[pos].blank and not their_blank)):
            pos += 1
        assert pos < len(ours), f"{where}: hl7apy has more elements than we do"
        used[pos] = True
        pairs.append((ours[pos], element))
        pos += 1
    missing = [o.where for o, u in zip(ours, used, strict=True) if not u and not o.blank]
    assert missing == [], f"{where}: hl7apy lacks {missing}"
    return pairs


def _check_leaf(ours: _Ours, sub: Any, d: er7.Delimiters, version: str) -> None:
    theirs, is_raw = _leaf_text(sub)
    if not is_raw and ours.tree != theirs:
        # hl7apy normalised the value: compare its reading of our text with its own.
        again = datatype_factory(
            sub.value.classname,
            ours.tree,
            version=version,
            validation_level=VALIDATION_LEVEL.TOLERANT,
        )
        assert str(again.to_er7()) == theirs, f"{ours.where}: {ours.tree!r} != {theirs!r}"
        return
    assert ours.tree == theirs, f"{ours.where}: raw {ours.tree!r} != hl7apy {theirs!r}"
    expected = _reference_decode(theirs, d)
    if expected is not None:
        assert ours.decoded == expected, f"{ours.where}: decoded {ours.decoded!r} != {expected!r}"


def _compare_segment(seg: er7.Segment, hseg: Any, d: er7.Delimiters, version: str) -> int:
    fields = list(seg.fields)
    fields[-1] = fields[-1].rstrip()  # hl7apy strips whitespace around segments
    seg = er7.Segment(seg.name, tuple(fields), seg.index)
    flat: list[_Ours] = []
    at: dict[tuple[int, int], int] = {}
    for n in range(1, len(seg.fields)):
        if not seg.fields[n].strip():
            continue  # hl7apy keeps no trace of a blank field
        raw = er7.raw_field_tree(seg, n, d)
        dec = er7.field_tree(seg, n, d)
        for r, (raw_rep, dec_rep) in enumerate(zip(raw, dec, strict=True), 1):
            at[(n, r)] = len(flat)
            flat.append(_Ours(False, raw_rep, dec_rep, f"{seg.name}[{seg.index}]-{n}~{r}"))
    theirs: list[tuple[Any, int | None]] = []
    reps_seen: dict[int, int] = {}
    for f in hseg.children:
        number = _index(f)
        if number is None:
            theirs.append((f, None))
            continue
        reps_seen[number] = reps_seen.get(number, 0) + 1
        key = (number, reps_seen[number])
        assert key in at, f"{seg.name}[{seg.index}]: hl7apy has field {number} rep {key[1]}"
        theirs.append((f, at[key] + 1))
    leaves = 0
    for rep, hfield in _align(flat, theirs, f"{seg.name}[{seg.index}]"):
        comps = [
            _Ours(not d.subcomponent.join(c).strip(), c, dc, f"{rep.where}^{i}")
            for i, (c, dc) in enumerate(zip(rep.tree, rep.decoded, strict=True), 1)
        ]
        hcomps = [(c, _index(c)) for c in hfield.children]
        for comp, hcomp in _align(comps, hcomps, rep.where):
            subs = [
                _Ours(not s.strip(), s, ds, f"{comp.where}&{i}")
                for i, (s, ds) in enumerate(zip(comp.tree, comp.decoded, strict=True), 1)
            ]
            hsubs = [(s, _index(s)) for s in hcomp.children]
            for sub, hsub in _align(subs, hsubs, comp.where):
                _check_leaf(sub, hsub, d, version)
                leaves += 1
    return leaves


def compare_with_hl7apy(text: str, *, charset: str = "utf-8") -> int:
    """Parse ``text`` with both readers and compare every leaf; returns the leaf count.

    Raises Hl7apyReadError when hl7apy cannot parse the message.
    """
    msg = er7.parse_message(text, charset=charset)
    h = _read_hl7apy(_hl7apy_text(msg, text))
    hsegs = list(h.children)
    assert [s.name for s in msg.segments] == [s.name for s in hsegs]
    d = msg.delimiters
    segments = list(msg.segments)
    if not d.escape:
        # hl7apy read our MSH-2 plus the spare escape character, and nothing else changed
        msh = segments[0]
        hmsh2 = str(hsegs[0].children[1].to_er7())
        assert hmsh2[:2] + hmsh2[3:] == msh.fields[2]
        segments[0] = er7.Segment("MSH", (*msh.fields[:2], hmsh2, *msh.fields[3:]), 1)
    return sum(
        _compare_segment(seg, hseg, d, h.version) for seg, hseg in zip(segments, hsegs, strict=True)
    )


def _compare_raw(raw: er7.RawMessage) -> int:
    try:
        text, codec = er7.decode_text(raw)
    except ParseError as exc:
        if exc.code != 102 or exc.offset is None:
            raise
        # MSH-18 empty and not UTF-8: a deployment sets a charset override for such a
        # sender; the tokenizer comparison reads it as Latin-1.
        text, codec = er7.decode_text(raw, default_charset="latin-1")
    return compare_with_hl7apy(text, charset=codec)


# --------------------------------------------------------------------- corpus


def _params(messages: list[tuple[str, er7.RawMessage]], absent: str) -> list[Any]:
    if not messages:
        return [pytest.param(None, id=absent)]
    return [pytest.param(raw, id=label) for label, raw in messages]


@pytest.mark.corpus
@pytest.mark.parametrize("raw", _params(CORPUS_MESSAGES, "no-corpus"))
def test_oracle_corpus_message_matches_hl7apy(raw: er7.RawMessage | None) -> None:
    if raw is None:
        corpus_dir("hl7v2")
        pytest.skip("the corpus hl7v2 folder holds no messages")
    try:
        assert _compare_raw(raw) > 0
    except Hl7apyReadError as exc:
        pytest.skip(f"hl7apy cannot read this message: {exc}")


@pytest.mark.parametrize("raw", _params(FIXTURE_MESSAGES, "no-fixtures"))
def test_oracle_fixture_message_matches_hl7apy(raw: er7.RawMessage | None) -> None:
    if raw is None:
        pytest.skip(f"no *.hl7 fixtures in {FIXTURES}")
    try:
        assert _compare_raw(raw) > 0
    except Hl7apyReadError as exc:
        pytest.skip(f"hl7apy cannot read this message: {exc}")


@pytest.mark.corpus
def test_oracle_compares_most_corpus_messages() -> None:
    corpus_dir("hl7v2")
    compared = 0
    unreadable: dict[str, str] = {}
    for label, raw in CORPUS_MESSAGES:
        try:
            _compare_raw(raw)
        except Hl7apyReadError as exc:
            unreadable[label] = str(exc)
        else:
            compared += 1
    assert compared >= MIN_CORPUS_MESSAGES_COMPARED, unreadable


# ----------------------------------------------------------------- generated


_DELIMITER_POOL = "|^~\\&#!$%*+/:;<=>?@[]_{}`"
_TEXT = string.ascii_letters + string.digits + " .-éü中"


@dataclass(frozen=True, slots=True)
class _Piece:
    decoded: str
    kind: str  # "text", "highlight" (\H\ or \N\) or "hex" (one character as \X..\)


@st.composite
def _delimiters(draw: st.DrawFn) -> er7.Delimiters:
    chars = draw(st.permutations(_DELIMITER_POOL))
    truncation = draw(st.booleans())
    return er7.Delimiters(
        chars[0], chars[1], chars[2], chars[3], chars[4], chars[5] if truncation else ""
    )


def _pieces(d: er7.Delimiters) -> st.SearchStrategy[list[_Piece]]:
    alphabet = (
        _TEXT + d.field + d.component + d.repetition + d.escape + d.subcomponent + (d.truncation)
    )
    piece = st.one_of(
        st.text(alphabet, min_size=1, max_size=6).map(lambda t: _Piece(t, "text")),
        st.sampled_from(["H", "N"]).map(lambda h: _Piece(h, "highlight")),
        st.sampled_from("Aé中&|").map(lambda c: _Piece(c, "hex")),
    )
    return st.lists(piece, max_size=3)


def _render(pieces: list[_Piece], d: er7.Delimiters) -> str:
    e = d.escape
    codes = {d.escape: "E", d.field: "F", d.component: "S", d.subcomponent: "T", d.repetition: "R"}
    out: list[str] = []
    for p in pieces:
        if p.kind == "text":
            out.append("".join(f"{e}{codes[c]}{e}" if c in codes else c for c in p.decoded))
        elif p.kind == "highlight":
            out.append(f"{e}{p.decoded}{e}")
        else:
            out.append(f"{e}X{p.decoded.encode('utf-8').hex().upper()}{e}")
    return "".join(out)


def _decoded(pieces: list[_Piece]) -> str:
    return "".join(p.decoded for p in pieces if p.kind != "highlight")


Tree = list[list[list[list[_Piece]]]]  # repetitions -> components -> sub-components


@st.composite
def _messages_drawn(draw: st.DrawFn) -> tuple[str, er7.Delimiters, list[tuple[str, list[Tree]]]]:
    d = draw(_delimiters())
    leaf = _pieces(d)
    field = st.lists(
        st.lists(st.lists(leaf, min_size=1, max_size=3), min_size=1, max_size=3),
        min_size=1,
        max_size=3,
    )
    names = st.sampled_from(["ZAA", "ZB1", "ZZZ", "NTE", "OBX"])
    segments = draw(st.lists(st.tuples(names, st.lists(field, max_size=6)), min_size=1, max_size=5))
    terminator = draw(st.sampled_from(["\r", "\n", "\r\n"]))
    enc = d.component + d.repetition + d.escape + d.subcomponent + d.truncation
    version = "2.7" if d.truncation else "2.5"
    msg_type = d.component.join(["ORU", "R01"])
    msh = d.field.join(
        ["MSH", enc, "APP", "FAC", "", "", "20240101", "", msg_type, "MSG1", "P", version]
    )
    lines = [msh]
    for name, fields in segments:
        rendered = [
            d.repetition.join(
                d.component.join(d.subcomponent.join(_render(s, d) for s in c) for c in r)
                for r in f
            )
            for f in fields
        ]
        lines.append(d.field.join([name, *rendered]))
    return terminator.join(lines) + terminator, d, segments


def _is_empty_render(field: Tree, d: er7.Delimiters) -> bool:
    return (
        len(field) == 1
        and len(field[0]) == 1
        and len(field[0][0]) == 1
        and not _render(field[0][0][0], d)
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_messages_drawn())
def test_oracle_generated_message_round_trips(
    drawn: tuple[str, er7.Delimiters, list[tuple[str, list[Tree]]]],
) -> None:
    text, d, segments = drawn
    msg = er7.parse_message(text)
    assert msg.delimiters == d
    assert [s.name for s in msg.segments[1:]] == [name for name, _ in segments]
    for seg, (_, fields) in zip(msg.segments[1:], segments, strict=True):
        for n, field in enumerate(fields, 1):
            expected = (
                []
                if _is_empty_render(field, d)
                else [[[_decoded(s) for s in c] for c in r] for r in field]
            )
            assert er7.field_tree(seg, n, d) == expected
            _assert_value_agrees(seg, n, expected, d)


def _assert_value_agrees(
    seg: er7.Segment, n: int, tree: list[list[list[str]]], d: er7.Delimiters
) -> None:
    for r, rep in enumerate(tree, 1):
        for c, comp in enumerate(rep, 1):
            for s, leaf in enumerate(comp, 1):
                assert er7.value(seg, n, r, c, s, delims=d) == leaf
        assert er7.components(er7.repetitions(seg, n, d)[r - 1], d) == [
            d.subcomponent.join(comp) for comp in rep
        ]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_messages_drawn())
def test_oracle_generated_message_matches_hl7apy(
    drawn: tuple[str, er7.Delimiters, list[tuple[str, list[Tree]]]],
) -> None:
    text = drawn[0]
    assert compare_with_hl7apy(text) > 0
