"""HL7 v2 ER7 tokenizer: bytes -> messages -> segments -> fields, lazily below that.

Three layers, as in python-hl7: ``split_messages`` finds the messages in a file or
stream (MLLP framing, BOMs, FHS/BHS batch envelopes); ``decode_text`` turns one
message's bytes into text with the character set MSH-18 declares; ``parse_message``
splits text into segments and fields. Repetitions, components, sub-components and
escape sequences are split and decoded only when asked for (``value`` and friends),
so the hot path does two ``str.split`` calls per segment.

Segment terminators: when the message text contains a CR, ``\\r`` and ``\\r\\n``
end segments (line feeds right after a CR belong to the terminator) and any other
``\\n`` is text, as inside multi-line OBX-5/NTE text; otherwise ``\\n`` ends
segments, and a line that does not start with a segment id is text continuing the
previous segment (joined with ``\\n``, with a warning).

Escape sequences (decoded after splitting, never before): ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\``
and ``\\P\\`` (v2.7 truncation) become the message's own delimiters; ``\\Xhh..\\``
becomes those bytes decoded in the message charset; ``\\H\\``/``\\N\\`` (highlight)
are dropped; the formatting commands ``\\.br\\``, ``\\.sp n\\`` and ``\\.ce\\`` become
line breaks (``n`` of them, ``n`` up to 99), ``\\.sk n\\`` spaces, ``\\.fi\\ \\.nf\\
\\.in n\\ \\.ti n\\`` nothing (layout only).
Everything else (``\\Cxxyy\\``, ``\\Mxxyyzz\\``, ``\\Zxx\\``, unknown codes, bad hex) is
kept as literal text, escape characters included, and an escape character with no
closing partner is literal text: a reader sees what was sent rather than nothing.
HL7's explicit null ``""`` is text here; meaning belongs to the layer above.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from prpgate.core.charset import DEFAULT_CHARSET, choose_codec, decode_bytes
from prpgate.errors import ParseError

__all__ = [
    "DEFAULT_CHARSET",
    "Delimiters",
    "Message",
    "RawMessage",
    "Segment",
    "components",
    "decode_text",
    "field_tree",
    "parse",
    "parse_message",
    "raw_field_tree",
    "repetitions",
    "split_messages",
    "unescape",
    "value",
]

_BOM = b"\xef\xbb\xbf"
_BATCH = frozenset({b"FHS", b"BHS", b"BTS", b"FTS"})
_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}")
_SEGMENT_IDS = re.compile(r"[A-Z][A-Z0-9]{2}(?:\n[A-Z][A-Z0-9]{2})*")
_FRAMING_RUN = re.compile(rb"\x00*[\x0b\x1c][\x00\x0b\x1c]*|\A\x00+|\x00+\Z")
_LINE_BREAK = re.compile(rb"\r\n?|\n")
_NOT_TEXT = re.compile("[\x00\x0b\x1c]")
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")
_COUNTED = re.compile(r"\.(sp|sk|in|ti)\s*([+-]?\d{0,2})")
_TRIM_HEAD = b" \t\r\n\x00\x0b\x1c"
_DELIMITER_CODES = {
    "F": "field",
    "S": "component",
    "T": "subcomponent",
    "R": "repetition",
    "E": "escape",
    "P": "truncation",
}
_FIXED_CODES = {"H": "", "N": "", ".br": "\n", ".ce": "\n", ".fi": "", ".nf": ""}
_TRIM_TAIL = b"\r\n\x00\x0b\x1c"


@dataclass(frozen=True, slots=True)
class Delimiters:
    """The message's own encoding characters (MSH-1, MSH-2) and its charset.

    ``escape`` is ``""`` when MSH-2 has none (``^~&``: backslashes are then text);
    ``truncation`` is the v2.7+ fifth character (not a delimiter), ``""`` if absent;
    ``charset`` is the codec ``\\Xhh\\`` escapes are decoded with.
    """

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""
    charset: str = "utf-8"


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment: raw (still escaped) fields, ``fields[n]`` is HL7 field n.

    ``fields[0]`` is the segment id; for MSH ``fields[1]`` is the field separator
    and ``fields[2]`` the encoding characters. ``index`` is 1-based in the message.
    """

    name: str
    fields: tuple[str, ...]
    index: int

    def field(self, n: int) -> str:
        """Raw text of field ``n`` (1-based), ``""`` when absent."""
        f = self.fields
        return f[n] if 0 <= n < len(f) else ""


@dataclass(frozen=True, slots=True, init=False)
class Message:
    """A tokenized message: its rows of raw fields, delimiters, and the codec used.

    ``rows[i]`` is segment ``i + 1``'s raw fields as ``Segment.fields`` has them
    (``rows[i][0]`` the segment id). The message owns the lists: readers index them
    and never change them. ``segments`` wraps them as ``Segment`` values on first use:
    the hot path (``core.oru``) reads the rows and never needs them.
    """

    rows: tuple[list[str], ...]
    delimiters: Delimiters
    charset: str
    warnings: tuple[str, ...]
    _segments: tuple[Segment, ...] | None = field(compare=False, repr=False)

    def __init__(
        self,
        rows: tuple[list[str], ...],
        delimiters: Delimiters,
        charset: str,
        warnings: tuple[str, ...] = (),
    ) -> None:
        _message_rows(self, rows)
        _message_delimiters(self, delimiters)
        _message_charset(self, charset)
        _message_warnings(self, warnings)
        _message_segments(self, None)

    @property
    def segments(self) -> tuple[Segment, ...]:
        """The segments in order (made from ``rows`` on first use, then kept)."""
        found = self._segments
        if found is None:
            found = tuple(
                Segment(row[0], tuple(row), index) for index, row in enumerate(self.rows, 1)
            )
            _message_segments(self, found)
        return found

    def first(self, name: str) -> Segment | None:
        """The first segment with id ``name``, or None."""
        for seg in self.segments:
            if seg.name == name:
                return seg
        return None


# the slots' own setters: the class is frozen (``_segments`` is written once, later)
_message_rows = Message.__dict__["rows"].__set__
_message_delimiters = Message.__dict__["delimiters"].__set__
_message_charset = Message.__dict__["charset"].__set__
_message_warnings = Message.__dict__["warnings"].__set__
_message_segments = Message.__dict__["_segments"].__set__


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One message's bytes as found in a file or stream (framing and BOM removed).

    ``offset`` is the byte offset of ``data`` in the input; ``number`` is 1-based.
    """

    data: bytes
    offset: int
    number: int


# --------------------------------------------------------------------- messages


def split_messages(data: bytes) -> list[RawMessage]:
    """Split a file or stream into messages, in order; never raises.

    A message starts at an ``MSH`` segment at the start of a line (after CR, LF or
    CRLF, MLLP framing or a BOM) and runs to the end of its last non-blank line.
    MLLP framing bytes (0x0B, 0x1C, with NULs next to them), blank lines and
    FHS/BHS/BTS/FTS batch segments separate messages and are dropped. Any other
    run of text outside a message (framing bytes inside it included) comes back as
    its own RawMessage, which ``parse`` rejects ("no MSH segment"): no content is
    silently lost.
    """
    spans: list[tuple[int, int]] = []
    bounds = [0]
    if b"\x0b" in data or b"\x1c" in data or b"\x00" in data:  # most files have none
        for run in _FRAMING_RUN.finditer(data):
            bounds += (run.start(), run.end())
    bounds.append(len(data))
    for i in range(0, len(bounds), 2):
        _split_chunk(data, bounds[i], bounds[i + 1], spans)
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and _is_stray(data, start) and _is_stray(data, merged[-1][0]):
            gap = data[merged[-1][1] : start]
            if not gap.strip(b" \t\r\n\x00\x0b\x0c\x1c"):  # only framing between
                merged[-1] = (merged[-1][0], end)
                continue
        merged.append((start, end))
    return [RawMessage(data[a:b], a, n) for n, (a, b) in enumerate(merged, 1)]


def _is_stray(data: bytes, start: int) -> bool:
    return not data.startswith(b"MSH", start)


def _split_chunk(data: bytes, start: int, end: int, out: list[tuple[int, int]]) -> None:
    """Append (start, end) of the messages and stray text between ``start`` and ``end``."""
    piece_start = -1
    piece_end = -1
    pos = start
    # bytes.splitlines splits on exactly CR, LF and CRLF: the segment terminators
    for text in data[start:end].splitlines(keepends=True):
        nxt = pos + len(text)
        head = pos
        first = text[:1]
        if first in _LINE_LEAD:
            body = text.lstrip(b" \t\x00")
            head = nxt - len(body)
            if body.startswith(_BOM):
                body = body[3:]
                head += 3
        else:
            body = text
        if not body.strip(b" \t\x00\x0b\x0c\r\n"):
            pos = nxt
            continue
        tag = body[:3]
        if (tag == b"MSH" or tag in _BATCH) and not body[3:4].isalnum():
            if piece_start >= 0:
                out.append((piece_start, piece_end))
                piece_start = -1
            if tag != b"MSH":
                pos = nxt
                continue
        if piece_start < 0:
            piece_start = head
        piece_end = nxt
        pos = nxt
    if piece_start >= 0:
        out.append((piece_start, piece_end))


_LINE_LEAD = frozenset((b" ", b"\t", b"\x00", b"\xef"))  # a line whose head must be skipped


# ----------------------------------------------------------------------- bytes


def decode_text(
    raw: RawMessage | bytes,
    *,
    charset_overrides: Mapping[str, str] | None = None,
    default_charset: str = DEFAULT_CHARSET,
) -> tuple[str, str]:
    """Decode one message's bytes; returns ``(text, codec)``.

    The codec comes from MSH-18 (first repetition; HL7 table 0211 and common
    spellings, see ``prpgate.core.charset``), else from ``charset_overrides`` keyed
    by the sending facility (MSH-4 universal id, component 2, else its namespace id,
    component 1, as sent: a key may name either), else ``default_charset``
    (``"ascii-compatible"``: strict UTF-8). MSH-4 and MSH-18 are read from the raw
    bytes first. A BOM, surrounding whitespace and MLLP framing are removed.

    Raises ParseError: empty input or no MSH first (100); a NUL byte (102); an
    unknown or unsupported MSH-18 (103, MSH-18); an unusable override or default
    (207); bytes that do not decode (102, at their segment, with the byte offset and
    the reason).
    """
    data, base = (raw.data, raw.offset) if isinstance(raw, RawMessage) else (raw, 0)
    start, end = _trim(data)
    if start >= end:
        raise ParseError(
            "empty message: no bytes besides whitespace and framing", code=100, offset=base
        )
    if not data.startswith(b"MSH", start, end):
        raise ParseError(
            _no_msh(data[start : start + 4].decode("latin-1")),
            code=100,
            segment_index=1,
            offset=base + start,
        )
    nul = data.find(b"\x00", start, end)
    if nul >= 0:
        seg, idx = _segment_at(data, start, nul)
        raise ParseError(
            f"NUL byte at byte {base + nul} (segment {idx}, {seg})",
            segment=seg,
            segment_index=idx,
            code=102,
            offset=base + nul,
        )
    first_end = end
    for terminator in (b"\r", b"\n"):
        at = data.find(terminator, start, first_end)
        if at >= 0:
            first_end = at
    codec, source = choose_codec(data[start:first_end], charset_overrides, default_charset)
    try:
        text = decode_bytes(data[start:end], codec, base_offset=base + start)
    except ParseError as exc:
        at = (exc.offset or base + start) - base
        seg, idx = _segment_at(data, start, at)
        raise ParseError(
            f"{exc.reason} (segment {idx}, {seg}; {source})",
            segment=seg if _SEGMENT_ID.fullmatch(seg) else None,
            segment_index=idx,
            code=102,
            offset=exc.offset,
        ) from exc
    return text, codec


def _trim(data: bytes) -> tuple[int, int]:
    """(start, end) of ``data`` without surrounding whitespace, framing and BOMs."""
    start, end = 0, len(data)
    while True:
        start = end - len(data[start:end].lstrip(_TRIM_HEAD))
        if not data.startswith(_BOM, start, end):
            break
        start += 3
    end = start + len(data[start:end].rstrip(_TRIM_TAIL))
    return start, end


def _no_msh(head: str) -> str:
    if _SEGMENT_ID.fullmatch(head[:3]) and not head[3:4].isalnum():
        return f"the first segment is {head[:3]}, not MSH: no MSH segment"
    return "no MSH segment: the input does not start with MSH"


def _segment_at(data: bytes, start: int, at: int) -> tuple[str, int]:
    """(segment id, 1-based index) of the segment holding byte ``at``."""
    lines = [ln for ln in _LINE_BREAK.split(data[start:at]) if ln.strip()]
    if not lines:
        return "MSH", 1
    return lines[-1][:3].decode("latin-1"), len(lines)


def parse(
    data: bytes,
    *,
    charset_overrides: Mapping[str, str] | None = None,
    max_bytes: int = 4 * 1024 * 1024,
) -> Message:
    """Decode and tokenize one message from bytes.

    Raises ParseError: over ``max_bytes`` (207, checked first), and everything
    ``decode_text`` and ``parse_message`` raise.
    """
    if len(data) > max_bytes:
        raise ParseError(f"message is {len(data)} bytes; the limit is {max_bytes} bytes", code=207)
    text, codec = decode_text(data, charset_overrides=charset_overrides)
    return parse_message(text, charset=codec)


# ------------------------------------------------------------------------ text


def parse_message(text: str, *, charset: str = "utf-8") -> Message:
    """Tokenize one message's text into segments and raw fields.

    ``charset`` is recorded on the Message and used for ``\\X..\\`` escapes.
    Surrounding whitespace, a BOM and MLLP framing characters are ignored.

    Raises ParseError: empty text or no MSH first (100); MSH-1/MSH-2 missing or
    unusable (102, MSH-1/MSH-2); a NUL or framing character inside (102); in a
    CR-terminated message a segment that does not start with a segment id, or a
    second MSH (100, with the segment index).
    """
    body = text.lstrip(" \t\r\n\x00\x0b\x1c\ufeff").rstrip("\r\n\x00\x0b\x1c")
    if not body:
        raise ParseError("empty message", code=100)
    if not body.startswith("MSH"):
        raise ParseError(_no_msh(body[:4]), code=100, segment_index=1)
    cr = "\r" in body
    if cr:
        while "\r\n" in body:  # LFs right after a terminator belong to it
            body = body.replace("\r\n", "\r")
        lines = body.split("\r")
    else:
        lines = body.split("\n")
    delims = _read_delimiters(lines[0], charset)
    fs = delims.field
    if "\x00" in body or "\x0b" in body or "\x1c" in body:
        _raise_not_text(lines)
    if cr and "\n" in body and f"\nMSH{fs}" in body:
        raise ParseError(
            "an MSH segment follows a line feed inside a CR-terminated "
            "message: mixed segment terminators",
            segment="MSH",
            code=100,
        )
    rows = [line.split(fs) for line in lines]
    rows[0][0:1] = ["MSH", fs]
    names = [row[0] for row in rows]
    ids = set(names)
    joined = "\n".join(ids)  # one regex call checks every distinct segment id
    warnings: list[str] = []
    if (
        names.count("MSH") != 1
        or len(joined) != 4 * len(ids) - 1
        or not _SEGMENT_IDS.fullmatch(joined)
    ):
        rows = _segment_rows(lines, cr, fs, warnings)
    return Message(tuple(rows), delims, charset, tuple(warnings))


def _segment_rows(lines: list[str], cr: bool, fs: str, warnings: list[str]) -> list[list[str]]:
    """Split fields of a message with blank lines, bad segment ids or a second MSH.

    Blank lines are dropped; a line not starting with a segment id is an error in
    a CR-terminated message and text continuing the previous segment otherwise.
    """
    texts: list[str] = []
    for line in lines:
        name = line.split(fs, 1)[0]
        if _SEGMENT_ID.fullmatch(name):
            if name == "MSH" and texts:
                raise ParseError(
                    f"segment {len(texts) + 1} is a second MSH: one message "
                    "per parse (split files with split_messages)",
                    segment="MSH",
                    segment_index=len(texts) + 1,
                    code=100,
                )
            texts.append(line)
        elif not line or line.isspace():
            continue
        elif cr:
            raise ParseError(
                f"segment {len(texts) + 1} does not start with a segment id "
                "(3 characters, [A-Z][A-Z0-9]{2}, then the field separator)",
                segment_index=len(texts) + 1,
                code=100,
            )
        else:
            texts[-1] = f"{texts[-1]}\n{line}"
            warnings.append(
                f"segment {len(texts)} ({texts[-1][:3]}) continues on a line "
                "that does not start with a segment id: joined to it as text "
                "after a line feed"
            )
    rows = [text.split(fs) for text in texts]
    rows[0][0:1] = ["MSH", fs]
    return rows


def _read_delimiters(msh: str, charset: str) -> Delimiters:
    fs = msh[3:4]
    return _delimiters(fs, msh[4:].split(fs, 1)[0] if fs else "", charset)


@lru_cache(maxsize=256)
def _delimiters(fs: str, enc: str, charset: str) -> Delimiters:
    """Validated delimiters (memoised: a sender repeats the same MSH-1/MSH-2)."""
    if not fs or fs.isalnum() or not fs.isprintable() or fs.isspace():
        shown = repr(fs) if fs else "missing"
        raise ParseError(
            f"MSH-1 field separator is {shown}: not a usable delimiter",
            segment="MSH",
            segment_index=1,
            field=1,
            code=102,
        )
    if len(enc) not in (3, 4, 5):
        raise ParseError(
            f"MSH-2 has {len(enc)} encoding characters ({enc!r}); expected "
            "component, repetition, escape, subcomponent (escape may be "
            "omitted; a 5th is the truncation character)",
            segment="MSH",
            segment_index=1,
            field=2,
            code=102,
        )
    chars = fs + enc
    if len(set(chars)) != len(chars):
        raise ParseError(
            f"MSH-1/MSH-2 repeat a delimiter ({chars!r})",
            segment="MSH",
            segment_index=1,
            field=2,
            code=102,
        )
    for ch in enc:
        if ch.isalnum() or not ch.isprintable() or ch.isspace():
            raise ParseError(
                f"MSH-2 encoding character {ch!r} is not a usable delimiter",
                segment="MSH",
                segment_index=1,
                field=2,
                code=102,
            )
    if len(enc) == 3:
        return Delimiters(fs, enc[0], enc[1], "", enc[2], "", charset)
    return Delimiters(fs, enc[0], enc[1], enc[2], enc[3], enc[4:], charset)


def _raise_not_text(lines: list[str]) -> None:
    index = 0
    for line in lines:
        if line and not line.isspace():
            index += 1
        bad = _NOT_TEXT.search(line)
        if bad:
            kind = "NUL" if bad.group() == "\x00" else f"framing 0x{ord(bad.group()):02X}"
            name = line[:3] if _SEGMENT_ID.match(line) else None
            raise ParseError(
                f"{kind} character inside the message (segment {index})",
                segment=name,
                segment_index=index,
                code=102,
            )


# ------------------------------------------------------------ fields, lazily


def repetitions(seg: Segment, field: int, delims: Delimiters) -> list[str]:
    """Raw repetitions of a field; ``[]`` when the field is empty or absent.

    MSH-1 and MSH-2 are returned whole (they contain the repetition character).
    """
    raw = seg.field(field) if field > 0 else ""
    if not raw:
        return []
    if field <= 2 and seg.name == "MSH":
        return [raw]
    return raw.split(delims.repetition)


def components(raw: str, delims: Delimiters) -> list[str]:
    """Decoded components of one raw repetition (``[""]`` for empty text).

    Sub-components stay joined by the subcomponent character; each component is
    unescaped after splitting.
    """
    esc = delims.escape
    parts = raw.split(delims.component)
    if esc and esc in raw:
        return [unescape(p, delims) for p in parts]
    return parts


def value(
    seg: Segment,
    field: int,
    rep: int = 1,
    comp: int = 1,
    sub: int = 1,
    *,
    delims: Delimiters,
) -> str:
    """Decoded text at field/repetition/component/sub-component (1-based); ``""`` if absent.

    ``value(msh, 1)`` and ``value(msh, 2)`` are the delimiters themselves, not unescaped.
    """
    fields = seg.fields
    if field < 1 or field >= len(fields):
        return ""
    raw = fields[field]
    if not raw:
        return ""
    if field <= 2 and seg.name == "MSH":
        return raw if rep == comp == sub == 1 else ""
    d = delims
    if rep == 1 and comp == 1 and sub == 1:  # the common case: cut at the first separator
        if d.repetition in raw:
            raw = raw.split(d.repetition, 1)[0]
        if d.component in raw:
            raw = raw.split(d.component, 1)[0]
        if d.subcomponent in raw:
            raw = raw.split(d.subcomponent, 1)[0]
    else:
        raw = _pick(_pick(_pick(raw, d.repetition, rep), d.component, comp), d.subcomponent, sub)
    esc = d.escape
    if esc and esc in raw:
        return unescape(raw, d)
    return raw


def _pick(raw: str, sep: str, n: int) -> str:
    """Part ``n`` (1-based) of ``raw`` split on ``sep``; ``""`` when there is none."""
    if n == 1:
        return raw.split(sep, 1)[0] if sep in raw else raw
    if n < 1 or sep not in raw:
        return ""
    parts = raw.split(sep, n)
    return parts[n - 1] if n <= len(parts) else ""


def raw_field_tree(seg: Segment, field: int, delims: Delimiters) -> list[list[list[str]]]:
    """Repetitions -> components -> sub-components of a field, leaves still escaped.

    ``[]`` for an empty or absent field; MSH-1/MSH-2 are one leaf each.
    """
    d = delims
    return [
        [c.split(d.subcomponent) for c in r.split(d.component)]
        if field > 2 or seg.name != "MSH"
        else [[r]]
        for r in repetitions(seg, field, d)
    ]


def field_tree(seg: Segment, field: int, delims: Delimiters) -> list[list[list[str]]]:
    """Like ``raw_field_tree`` with every leaf decoded (MSH-1/MSH-2 left as sent)."""
    tree = raw_field_tree(seg, field, delims)
    if delims.escape and (field > 2 or seg.name != "MSH"):
        return [[[unescape(s, delims) for s in c] for c in r] for r in tree]
    return tree


# ------------------------------------------------------------------- escapes


def unescape(text: str, delims: Delimiters) -> str:
    """Decode the escape sequences in one leaf of text (see the module docstring).

    Call it after splitting on delimiters; never raises.
    """
    esc = delims.escape
    if not esc or esc not in text:
        return text
    out: list[str] = []
    pos = 0
    n = len(text)
    while pos < n:
        i = text.find(esc, pos)
        if i < 0:
            break
        j = text.find(esc, i + 1)
        if j < 0:  # unterminated: literal text
            break
        out.append(text[pos:i])
        out.append(_expand(text[i + 1 : j], delims))
        pos = j + 1
    out.append(text[pos:])
    return "".join(out)


def _expand(code: str, d: Delimiters) -> str:
    """The text one escape sequence (between the escape characters) stands for."""
    attr = _DELIMITER_CODES.get(code)
    if attr is not None:
        text: str = getattr(d, attr)
        if text:
            return text
    fixed = _FIXED_CODES.get(code)
    if fixed is not None:
        return fixed
    if code[:1] == "X" and _HEX.fullmatch(code, 1):
        try:
            return bytes.fromhex(code[1:]).decode(d.charset)
        except (UnicodeDecodeError, LookupError):
            pass  # not text in the message charset: keep what was sent
    counted = _COUNTED.fullmatch(code)
    if counted:
        kind, num = counted.groups()
        count = abs(int(num)) if num.strip("+-") else 1
        if kind == "sp":
            return "\n" * max(count, 1)
        if kind == "sk":
            return " " * count
        return ""  # .in / .ti: indentation only
    return f"{d.escape}{code}{d.escape}"
