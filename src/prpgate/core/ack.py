"""HL7 v2 acknowledgments: what the sender asked for, and the ACK messages that answer it.

``read_context`` reads what an ACK mirrors from the inbound message's MSH segment,
best effort, straight from the bytes: a message that is rejected because its MSH
is unusable still gets an answer. ``plan`` decides which acknowledgments to send
(original mode: one of AA/AE/AR; enhanced mode, when MSH-15/MSH-16 are valued: an
accept acknowledgment CA/CE/CR and then an application acknowledgment, each as
table 0155 asks). ``build_ack`` renders one ACK message.

An ACK mirrors the inbound message: MSH-3/4 are its MSH-5/6 and MSH-5/6 its
MSH-3/4 (as sent), MSH-1/MSH-2 are the sender's own encoding characters, MSH-11,
MSH-12 and MSH-18 are echoed, MSA-2 is its MSH-10. MSH-9 is ``ACK^<trigger>^ACK``
from v2.4 on and ``ACK`` before. Errors go in ERR segments: from v2.5 one per
error with ERR-2 (location, ERL), ERR-3 (HL7 table 0357 code), ERR-4 (severity)
and ERR-8 (text); before v2.5 ERR-1 (ELD, repeating) and MSA-3 (text).

Where the inbound MSH gives nothing usable, the ACK uses ``|^~\\&``, version
``FALLBACK_VERSION`` and an explicit null (``""``) in MSA-2, so that it is still
a well-formed HL7 message. A version this adapter does not support is answered
in ``FALLBACK_VERSION`` too (with the reason in ERR).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from prpgate.core.charset import DEFAULT_CHARSET, choose_codec
from prpgate.core.oru import SUPPORTED_VERSIONS
from prpgate.core.pipeline import AckCode, ErrorInfo
from prpgate.errors import ParseError

__all__ = [
    "FALLBACK_VERSION",
    "AcceptCode",
    "Ack",
    "AckContext",
    "AckMode",
    "build_ack",
    "plan",
    "read_context",
]

FALLBACK_VERSION = "2.5.1"
"""The version of an ACK whose inbound message names no version this adapter supports."""

_DEFAULT_ENCODING = "^~\\&"
_MAX_ERRORS = 20  # ERR segments in one ACK; the rest are summarised in one more
_ST_MAX = 80  # MSA-3 (ST) in v2.3/v2.4
_TX_MAX = 1000  # ERR-8 user message (TX)
_CONTROL_MAX = 199  # MSH-10 (ST) from v2.5
_LINE = re.compile(rb"\r\n?|\n")
_LOCATION = re.compile(r"(?P<seg>[A-Z][A-Z0-9]{2})(?:\[(?P<idx>\d+)\])?(?:-(?P<field>\d+))?")
_TRIGGER = re.compile(r"[A-Z0-9]{3}")
_TRIM = b" \t\r\n\x00\x0b\x1c"
_BOM = b"\xef\xbb\xbf"
_NOT_MIRRORED = {0x00: None, 0x0B: None, 0x1C: None}  # NUL and MLLP framing characters

# HL7 table 0357 (message error condition codes)
_ERROR_TEXT = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    104: "Value too long",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    204: "Unknown key identifier",
    205: "Duplicate key identifier",
    206: "Application record locked",
    207: "Application internal error",
}


class AcceptCode(Enum):
    """HL7 enhanced-mode accept acknowledgment codes (table 0008)."""

    CA = "CA"  # commit accept: the message is safely stored
    CE = "CE"  # commit error: it could not be stored
    CR = "CR"  # commit reject: unsupported type, version or processing id; unusable MSH


class AckMode(Enum):
    """Original mode (one ACK) or enhanced mode (accept ACK, then application ACK)."""

    ORIGINAL = "original"
    ENHANCED = "enhanced"


@dataclass(frozen=True, slots=True)
class AckContext:
    """What an ACK mirrors from an inbound MSH, read best effort from its bytes.

    Field texts are raw (still escaped with the sender's ``encoding`` characters).
    ``usable`` is False when no MSH segment with usable delimiters was found; the
    ACK then uses the default delimiters and mirrors only what is safe.
    """

    usable: bool
    field_separator: str
    encoding: str
    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    trigger: str
    control_id: str
    processing_id: str
    version: str
    accept_ack_type: str
    application_ack_type: str
    charset_field: str
    codec: str

    @property
    def mode(self) -> AckMode:
        """Enhanced when MSH-15 or MSH-16 is valued, else original (HL7 v2 2.9)."""
        if self.accept_ack_type or self.application_ack_type:
            return AckMode.ENHANCED
        return AckMode.ORIGINAL


@dataclass(frozen=True, slots=True)
class Ack:
    """One rendered acknowledgment: MSA-1 code, its own MSH-10, and the encoded bytes."""

    code: AckCode | AcceptCode
    control_id: str
    acknowledged: str
    data: bytes


def _version_key(version: str) -> tuple[int, ...]:
    parts: list[int] = []
    for p in version.split("."):
        if not p.isdigit():
            break
        parts.append(int(p))
    return tuple(parts)


def _head(raw: bytes) -> int:
    """Where the first segment starts: after framing, whitespace and BOMs, in any
    order, as the tokenizer skips them."""
    start = len(raw) - len(raw.lstrip(_TRIM))
    while raw.startswith(_BOM, start):
        start += len(_BOM)
        start = len(raw) - len(raw[start:].lstrip(_TRIM))
    return start


def _msh_line(raw: bytes) -> bytes | None:
    """The first segment's bytes when the input starts with MSH."""
    start = _head(raw)
    if not raw.startswith(b"MSH", start):
        return None
    m = _LINE.search(raw, start)
    return raw[start : m.start() if m else len(raw)]


def _usable_delimiters(fs: str, enc: str) -> bool:
    chars = fs + enc
    return (
        len(fs) == 1
        and 3 <= len(enc) <= 5
        and len(set(chars)) == len(chars)
        and all(c.isprintable() and not c.isalnum() and not c.isspace() for c in chars)
    )


def read_context(
    raw: bytes,
    *,
    charset_overrides: Mapping[str, str] | None = None,
    enhanced: bool = True,
) -> AckContext:
    """Read the inbound MSH best effort; never raises.

    The codec is MSH-18's, else the sending facility's override, else UTF-8 (an
    unknown MSH-18 falls back to UTF-8: the ACK is encoded with replacement
    characters rather than not sent). ``enhanced=False`` ignores MSH-15/MSH-16, so
    every message is answered in original mode. NUL and MLLP framing characters in
    the MSH are not mirrored: the ACK stays an HL7 message.
    """
    line = _msh_line(raw)
    codec = "utf-8"
    if line is not None:
        try:
            codec, _ = choose_codec(line, charset_overrides, DEFAULT_CHARSET)
        except ParseError:
            codec = "utf-8"
    text = line.decode(codec, errors="replace") if line is not None else ""
    if "\x00" in text or "\x0b" in text or "\x1c" in text:
        text = text.translate(_NOT_MIRRORED)  # an ACK holding them would not be HL7 text
    fs = text[3:4]
    fields = text.split(fs) if fs else []
    enc = fields[1] if len(fields) > 1 else ""
    usable = line is not None and _usable_delimiters(fs, enc)

    def f(n: int) -> str:  # MSH-n as sent (fields[0] is "MSH", fields[1] is MSH-2)
        return fields[n - 1] if usable and n - 1 < len(fields) else ""

    comp = enc[0] if usable else "^"
    rep = enc[1] if usable else "~"
    trigger = f(9).split(rep, 1)[0].split(comp)[1:2]
    version = f(12).split(rep, 1)[0].split(comp, 1)[0].strip()
    control = f(10)
    if not usable and len(fields) > 9:
        # delimiters unusable: still echo an MSH-10 that is plainly an identifier
        candidate = fields[9].strip()
        if re.fullmatch(r"[A-Za-z0-9._\-]{1,199}", candidate):
            control = candidate
    return AckContext(
        usable=usable,
        field_separator=fs if usable else "|",
        encoding=enc if usable else _DEFAULT_ENCODING,
        sending_application=f(3),
        sending_facility=f(4),
        receiving_application=f(5),
        receiving_facility=f(6),
        trigger=trigger[0] if trigger and _TRIGGER.fullmatch(trigger[0]) else "",
        control_id=control[:_CONTROL_MAX],
        processing_id=f(11),
        version=version,
        accept_ack_type=f(15).strip().upper() if enhanced else "",
        application_ack_type=f(16).strip().upper() if enhanced else "",
        charset_field=f(18),
        codec=codec,
    )


def _wanted(condition: str, ok: bool, *, default: bool) -> bool:
    """HL7 table 0155: AL always, NE never, ER only on error, SU only on success."""
    if condition == "AL":
        return True
    if condition == "NE":
        return False
    if condition == "ER":
        return not ok
    if condition == "SU":
        return ok
    return default


def plan(ctx: AckContext, code: AckCode, *, committed: bool) -> tuple[AckCode | AcceptCode, ...]:
    """The acknowledgments to send, in order, for a message whose outcome is ``code``.

    ``committed`` says whether the message is durably stored. Original mode: one
    ACK, AR when the store failed. Enhanced mode: CA when stored (CR when rejected,
    CE when the store failed) if MSH-15 asks for it (empty reads as AL), then, after
    a CA, ``code`` if MSH-16 asks for it (empty reads as NE); may be empty.
    """
    if ctx.mode is AckMode.ORIGINAL:
        return (code if committed else AckCode.AR,)
    if not committed:
        accept = AcceptCode.CE
    elif code is AckCode.AR:
        accept = AcceptCode.CR
    else:
        accept = AcceptCode.CA
    out: list[AckCode | AcceptCode] = []
    if _wanted(ctx.accept_ack_type, accept is AcceptCode.CA, default=True):
        out.append(accept)
    if accept is AcceptCode.CA and _wanted(
        ctx.application_ack_type, code is AckCode.AA, default=False
    ):
        out.append(code)
    return tuple(out)


# ------------------------------------------------------------------ rendering

_CONTROL = re.compile("[\x00-\x1f\x7f]")  # C0 controls and DEL: never sent as text


def _escape(text: str, fs: str, enc: str) -> str:
    """Escape ``text`` for a field with the sender's delimiters; line breaks become spaces.

    Other control characters (an error text may quote the bytes it is about: NUL, the
    MLLP framing bytes) become HL7 hex escapes (``\\X1C\\``), or spaces where the sender
    has no escape character: an ACK never carries one, so it cannot break its framing.
    """
    text = text.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")
    comp, rep = enc[0], enc[1]
    esc = enc[2] if len(enc) >= 4 else ""
    sub = enc[3] if len(enc) >= 4 else enc[2]
    if not esc:  # no escape character: delimiters cannot be sent as text
        for ch in (fs, comp, rep, sub):
            text = text.replace(ch, " ")
        return _CONTROL.sub(" ", text)
    codes = {esc: "E", fs: "F", comp: "S", rep: "R", sub: "T"}
    if len(enc) == 5:
        codes[enc[4]] = "P"
    if not any(ch in text for ch in codes) and not _CONTROL.search(text):
        return text
    return "".join(
        f"{esc}{codes[ch]}{esc}"
        if ch in codes
        else f"{esc}X{ord(ch):02X}{esc}"
        if _CONTROL.match(ch)
        else ch
        for ch in text
    )


def _fit(text: str, limit: int, fs: str, enc: str) -> str:
    """Escaped text no longer than ``limit`` characters (cut before escaping)."""
    out = _escape(text, fs, enc)
    cut = text
    while len(out) > limit and cut:
        cut = cut[: len(cut) - max(1, len(out) - limit)].rstrip()
        out = _escape(cut + "...", fs, enc) if cut else ""
    return out


def _timestamp(now: datetime) -> str:
    stamp = now.strftime("%Y%m%d%H%M%S")
    offset = now.strftime("%z")
    return stamp + offset


def _occurrence(raw: bytes, segment: str, index: int) -> int | None:
    """Which occurrence of ``segment`` the ``index``-th segment of the message is."""
    body = raw[_head(raw) :].rstrip(_TRIM)
    lines = body.split(b"\r") if b"\r" in body else body.split(b"\n")
    names = [ln.lstrip(b"\n")[:3] for ln in lines if ln.strip()]
    want = segment.encode("ascii")
    if not 1 <= index <= len(names) or names[index - 1] != want:
        return None
    return sum(1 for n in names[:index] if n == want)


def _where(err: ErrorInfo, raw: bytes) -> tuple[str, int, int | None] | None:
    """(segment, occurrence, field) of an error location, or None when not in a segment."""
    m = _LOCATION.fullmatch(err.location)
    if m is None:
        return None
    seg = m.group("seg")
    field = int(m.group("field")) if m.group("field") else None
    if m.group("idx") is None:
        return seg, 1, field
    occurrence = _occurrence(raw, seg, int(m.group("idx")))
    return None if occurrence is None else (seg, occurrence, field)


def _text(err: ErrorInfo) -> str:
    return err.reason if err.location in ("", "message") else f"{err.location}: {err.reason}"


def _err_segments(
    errors: Sequence[ErrorInfo], raw: bytes, fs: str, enc: str, modern: bool
) -> list[str]:
    comp = enc[0]
    sub = enc[3] if len(enc) >= 4 else enc[2]
    shown = list(errors[:_MAX_ERRORS])
    if len(errors) > _MAX_ERRORS:
        shown.append(
            ErrorInfo(errors[_MAX_ERRORS].code, "message", f"{len(errors) - _MAX_ERRORS} more")
        )
    if modern:  # v2.5+: ERR-2 location, ERR-3 code, ERR-4 severity, ERR-8 text
        out = []
        for e in shown:
            where = _where(e, raw)
            erl = ""
            if where is not None:
                seg, occ, field = where
                erl = f"{seg}{comp}{occ}" + (f"{comp}{field}" if field is not None else "")
            code = comp.join(
                (str(e.code), _escape(_ERROR_TEXT.get(e.code, "Error"), fs, enc), "HL70357")
            )
            text = _fit(_text(e), _TX_MAX, fs, enc)
            out.append(fs.join(("ERR", "", erl, code, "E", "", "", "", text)))
        return out
    # before v2.5: ERR-1 (ELD, repeating): segment^sequence^field^code&text&HL70357
    reps = []
    for e in shown:
        where = _where(e, raw)
        ce = sub.join((str(e.code), _escape(_ERROR_TEXT.get(e.code, "Error"), fs, enc), "HL70357"))
        parts = ["", "", "", ce]
        if where is not None:
            seg, occ, field = where
            parts[:3] = [seg, str(occ), "" if field is None else str(field)]
        reps.append(comp.join(parts))
    return [fs.join(("ERR", enc[1].join(reps)))]


def build_ack(
    ctx: AckContext,
    code: AckCode | AcceptCode,
    errors: Sequence[ErrorInfo] = (),
    *,
    raw: bytes = b"",
    control_id: str,
    now: datetime,
) -> Ack:
    """Render one acknowledgment of the message ``ctx`` was read from.

    ``errors`` become ERR segments (locations resolved against ``raw``, the inbound
    bytes, when they name a segment by position); ``control_id`` is the ACK's own
    MSH-10 and ``now`` its MSH-7. Segments end with ``\\r``; the bytes are encoded
    with the inbound message's codec (unencodable characters replaced). Never raises.
    """
    fs, enc = ctx.field_separator, ctx.encoding
    version = ctx.version if ctx.version in SUPPORTED_VERSIONS else FALLBACK_VERSION
    modern = _version_key(version) >= (2, 5)
    comp = enc[0]
    # MSG (ACK^<trigger>^ACK) from v2.4; before, the trigger is not echoed
    msh9 = comp.join(("ACK", ctx.trigger, "ACK")) if _version_key(version) >= (2, 4) else "ACK"
    enhanced = ctx.mode is AckMode.ENHANCED
    apps = [
        ctx.receiving_application,
        ctx.receiving_facility,
        ctx.sending_application,
        ctx.sending_facility,
    ]
    if _version_key(version) < (2, 3):  # v2.2: MSH-3..6 are ST, not HD
        apps = [a.split(comp, 1)[0] for a in apps]
    msh = [
        "MSH",
        enc,
        *apps,
        _timestamp(now),
        "",
        msh9,
        _escape(control_id, fs, enc),
        ctx.processing_id or "P",
        version,
        "",
        "",
        "NE" if enhanced else "",
        "NE" if enhanced else "",
        "",
        ctx.charset_field,
    ]
    while msh[-1] == "":
        msh.pop()
    acknowledged = ctx.control_id or '""'  # explicit null when MSH-10 was unreadable
    msa = ["MSA", code.value, acknowledged]
    if errors and not modern:
        msa.append(_fit(_text(errors[0]), _ST_MAX, fs, enc))
    segments = [fs.join(msh), fs.join(msa)]
    if errors:
        segments += _err_segments(errors, raw, fs, enc, modern)
    text = "\r".join(segments) + "\r"
    return Ack(code, control_id, ctx.control_id, text.encode(ctx.codec, errors="replace"))
