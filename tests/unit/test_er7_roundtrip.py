"""parse(render(x)) from bytes: generated messages written with their own delimiters,
escapes and character set, several to a stream (MLLP frames, a BOM, FHS/BHS batches,
blank lines between), split with ``split_messages`` and read back with ``parse``.

``test_er7_oracle.py`` round-trips text through ``parse_message`` with a small alphabet;
this goes through the byte layers too (MSH-18 decoding, framing, splitting), with any
Unicode text the charset can carry, line breaks inside values (sent as ``\\X0D\\``,
``\\X0A\\`` and ``\\.br\\``), generated MSH fields, delimiters without an escape
character, and the v2.7 truncation character.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prpgate.core import er7

# Printable ASCII that may be a delimiter; not "/", "-", "." or " ", which MSH-18 labels use
_DELIMITER_POOL = "|^~\\&#!$%*+:;<=>?@[]_{}`'\","
_CHARSETS = {"": "utf-8", "UNICODE UTF-8": "utf-8", "8859/1": "latin-1"}
_NOT_SEGMENTS = frozenset({"MSH", "FHS", "BHS", "BTS", "FTS"})


@dataclass(frozen=True, slots=True)
class Piece:
    """One run of a leaf's text: what it decodes to, and how it is written."""

    decoded: str
    kind: str  # text, hex (\Xhh..\), highlight (\H\ or \N\: nothing), br (\.br\: a line feed)


Leaf = list[Piece]
Field = list[list[list[Leaf]]]  # repetitions -> components -> sub-components (leaves)
_EMPTY_FIELD: Field = [[[[]]]]  # one repetition, one component, one empty leaf


@dataclass(frozen=True, slots=True)
class Drawn:
    """One generated message: its delimiters, codec, MSH-3.. fields and segments."""

    delims: er7.Delimiters
    charset_label: str
    msh: list[Field]  # MSH-3 .. MSH-17; MSH-18 is the label
    segments: list[tuple[str, list[Field]]]
    terminator: str


def _letters(codec: str) -> st.SearchStrategy[str]:
    """Characters a value may carry raw: no controls, no surrogates, within the codec."""
    top = 0xFF if codec == "latin-1" else 0x10FFFF
    return st.characters(max_codepoint=top, exclude_categories=("Cs", "Cc"))


@st.composite
def _delimiters(draw: st.DrawFn, codec: str) -> er7.Delimiters:
    chars = draw(st.permutations(_DELIMITER_POOL))
    shape = draw(st.sampled_from(["no-escape", "standard", "truncation"]))
    if shape == "no-escape":
        return er7.Delimiters(chars[0], chars[1], chars[2], "", chars[3], "", codec)
    truncation = chars[5] if shape == "truncation" else ""
    return er7.Delimiters(chars[0], chars[1], chars[2], chars[3], chars[4], truncation, codec)


def _leaf(d: er7.Delimiters, codec: str) -> st.SearchStrategy[Leaf]:
    letters = _letters(codec)
    if not d.escape:  # no escape character: text without delimiters, nothing else
        specials = {d.field, d.component, d.repetition, d.subcomponent}
        plain = st.text(letters.filter(lambda c: c not in specials), min_size=1, max_size=8)
        return st.lists(plain.map(lambda t: Piece(t, "text")), max_size=2)
    piece = st.one_of(
        st.text(letters, min_size=1, max_size=8).map(lambda t: Piece(t, "text")),
        st.sampled_from("\r\n").map(lambda c: Piece(c, "hex")),
        letters.map(lambda c: Piece(c, "hex")),
        st.sampled_from(["H", "N"]).map(lambda h: Piece(h, "highlight")),
        st.just(Piece("\n", "br")),
    )
    return st.lists(piece, max_size=3)


def _field(d: er7.Delimiters, codec: str) -> st.SearchStrategy[Field]:
    leaf = _leaf(d, codec)
    return st.lists(
        st.lists(st.lists(leaf, min_size=1, max_size=3), min_size=1, max_size=3),
        min_size=1,
        max_size=3,
    )


@st.composite
def _messages(draw: st.DrawFn) -> Drawn:
    label = draw(st.sampled_from(sorted(_CHARSETS)))
    codec = _CHARSETS[label]
    d = draw(_delimiters(codec))
    field = _field(d, codec)
    names = st.from_regex(r"[A-Z][A-Z0-9]{2}", fullmatch=True).filter(
        lambda n: n not in _NOT_SEGMENTS
    )
    msh = draw(st.lists(field, max_size=4))  # MSH-3 .. ; up to MSH-17 empty
    msh += [_EMPTY_FIELD] * (15 - len(msh))
    segments = draw(st.lists(st.tuples(names, st.lists(field, max_size=5)), max_size=4))
    terminator = draw(st.sampled_from(["\r", "\n", "\r\n"]))
    return Drawn(d, label, msh, segments, terminator)


def render_leaf(leaf: Leaf, d: er7.Delimiters, codec: str) -> str:
    """A leaf as ER7 text: delimiters in text escaped, the rest as its kind says."""
    e = d.escape
    codes = {e: "E", d.field: "F", d.component: "S", d.subcomponent: "T", d.repetition: "R"}
    out: list[str] = []
    for p in leaf:
        if p.kind == "text":
            out.append("".join(f"{e}{codes[c]}{e}" if c in codes else c for c in p.decoded))
        elif p.kind == "hex":
            out.append(f"{e}X{p.decoded.encode(codec).hex().upper()}{e}")
        elif p.kind == "highlight":
            out.append(f"{e}{p.decoded}{e}")
        else:
            out.append(f"{e}.br{e}")
    return "".join(out)


def render_field(field: Field, d: er7.Delimiters, codec: str) -> str:
    return d.repetition.join(
        d.component.join(d.subcomponent.join(render_leaf(s, d, codec) for s in c) for c in r)
        for r in field
    )


def render(m: Drawn) -> bytes:
    """The message as bytes in its own charset."""
    d, codec = m.delims, _CHARSETS[m.charset_label]
    enc = d.component + d.repetition + d.escape + d.subcomponent + d.truncation
    msh_fields = [render_field(f, d, codec) for f in m.msh]
    lines = [d.field.join(["MSH", enc, *msh_fields, m.charset_label])]
    for name, fields in m.segments:
        lines.append(d.field.join([name, *(render_field(f, d, codec) for f in fields)]))
    return (m.terminator.join(lines) + m.terminator).encode(codec)


def decoded(field: Field) -> list[list[list[str]]]:
    """What ``field_tree`` must give for a field: every leaf decoded; [] when the whole
    field is written as nothing."""
    # every piece is written as at least one character: only an empty leaf is nothing
    if len(field) == 1 and len(field[0]) == 1 and len(field[0][0]) == 1 and not field[0][0][0]:
        return []
    return [
        [["".join(p.decoded for p in leaf if p.kind != "highlight") for leaf in c] for c in r]
        for r in field
    ]


def _assert_round_trip(raw: er7.RawMessage, m: Drawn) -> None:
    msg = er7.parse(raw.data)
    d = m.delims
    assert (msg.delimiters.field, msg.delimiters.component, msg.delimiters.repetition) == (
        d.field,
        d.component,
        d.repetition,
    )
    assert (msg.delimiters.escape, msg.delimiters.subcomponent, msg.delimiters.truncation) == (
        d.escape,
        d.subcomponent,
        d.truncation,
    )
    assert [s.name for s in msg.segments] == ["MSH"] + [name for name, _ in m.segments]
    msh = msg.segments[0]
    for n, field in enumerate(m.msh, 3):
        assert er7.field_tree(msh, n, msg.delimiters) == decoded(field), f"MSH-{n}"
    assert er7.value(msh, 18, delims=msg.delimiters) == m.charset_label
    for seg, (_, fields) in zip(msg.segments[1:], m.segments, strict=True):
        for n, field in enumerate(fields, 1):
            assert er7.field_tree(seg, n, msg.delimiters) == decoded(field), f"{seg.name}-{n}"


_WRAPS = st.sampled_from(["bare", "mllp", "bom", "blank-lines", "batch"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_messages(), _WRAPS), min_size=1, max_size=3))
def test_er7_generated_messages_round_trip_through_bytes(
    drawn: list[tuple[Drawn, str]],
) -> None:
    stream = b""
    for m, wrap in drawn:
        data = render(m)
        if wrap == "mllp":
            data = b"\x0b" + data + b"\x1c\r"
        elif wrap == "bom":
            data = b"\xef\xbb\xbf" + data
        elif wrap == "blank-lines":
            data = b"\r\n\n" + data + b"\n\r"
        elif wrap == "batch":
            data = b"FHS|^~\\&|LAB\rBHS|^~\\&|LAB\r" + data + b"BTS|1\rFTS|1\r"
        stream += data
    found = er7.split_messages(stream)
    assert len(found) == len(drawn)
    for raw, (m, _) in zip(found, drawn, strict=True):
        _assert_round_trip(raw, m)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_messages())
def test_er7_unescape_inverts_the_renderer_for_every_leaf(m: Drawn) -> None:
    d = m.delims
    codec = _CHARSETS[m.charset_label]
    for _, fields in m.segments:
        for field in fields:
            for rep in field:
                for comp in rep:
                    for leaf in comp:
                        text = render_leaf(leaf, d, codec)
                        want = "".join(p.decoded for p in leaf if p.kind != "highlight")
                        assert er7.unescape(text, d) == want
