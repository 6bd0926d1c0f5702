"""MSH-18 character sets: the labels senders write, and strict byte -> text decoding.

HL7 table 0211 (Alternate Character Sets) names the character sets a message may
declare in MSH-18. Senders also write the ISO-IR registration numbers DICOM uses
(``ISO IR100``) and plain IANA/Windows names (``UTF-8``, ``WINDOWS-1252``). Labels
are compared case-, space-, hyphen- and underscore-insensitively (``iso_ir 100`` ==
``ISO IR100``, ``utf8`` == ``UTF-8``).

``choose_codec`` picks a message's codec from its raw MSH segment (MSH-18, else a
per-sender override, else UTF-8). prpgate reads MSH before decoding, so only
ASCII-compatible encodings are usable:
a table-0211 value that is not (UTF-16/32) or that Python cannot decode is *known
but unsupported*, which callers report differently from an unknown label. Nothing
here guesses: bytes that do not decode in the chosen codec are a ParseError.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Mapping
from types import MappingProxyType

from prpgate.core.values import remember
from prpgate.errors import ParseError

__all__ = [
    "CHARSET_ALIASES",
    "DEFAULT_CHARSET",
    "UNSUPPORTED_CHARSETS",
    "choose_codec",
    "codec_for",
    "decode_bytes",
    "is_unsupported",
    "normalise_label",
]

DEFAULT_CHARSET = "ascii-compatible"
"""Default for a message with MSH-18 empty and no override: UTF-8 (a superset of
ASCII), strictly; bytes that are not UTF-8 are an error, never a guess."""

_STRIP = re.compile(r"[\s_\-]+")


def normalise_label(label: str) -> str:
    """The comparison key of a character-set label: upper case, without spaces, ``_`` or ``-``."""
    return _STRIP.sub("", label).upper()


def _table() -> dict[str, str]:
    table: dict[str, str] = {}

    def add(codec: str, *labels: str) -> None:
        for label in labels:
            table[normalise_label(label)] = codec

    # HL7 table 0211 codes and the other spellings senders use. (0211 makes ASCII the
    # default for an empty MSH-18; prpgate reads its superset UTF-8 then.)
    add("ascii", "ASCII", "US-ASCII", "ISO IR6", "ISO 646")
    add("utf-8", "UNICODE UTF-8", "UTF-8", "ISO IR192")
    # "UNICODE" (ISO/IEC 10646, deprecated in 0211): a message whose MSH segment we
    # could read byte-wise is ASCII-compatible, which for Unicode means UTF-8.
    add("utf-8", "UNICODE")
    # ISO 8859 parts in 0211 (1-9, 15) and their ISO-IR registration numbers.
    iso_ir = {1: 100, 2: 101, 3: 109, 4: 110, 5: 144, 6: 127, 7: 126, 8: 138, 9: 148, 15: 203}
    for part, reg in iso_ir.items():
        add(
            f"iso8859-{part}", f"8859/{part}", f"ISO-8859-{part}", f"ISO8859-{part}", f"ISO IR{reg}"
        )
    add("iso8859-1", "LATIN1", "LATIN-1")
    add("iso8859-15", "LATIN9", "LATIN-9")
    add("gb18030", "GB 18030-2000", "GB18030")
    add("euc_kr", "KS X 1001")
    add("big5", "BIG-5", "BIG5")
    # JIS X 0208 is sent in its ISO 2022 (7-bit, escape-switched) form.
    add("iso2022_jp", "ISO IR87")
    for cp in range(1250, 1259):
        add(f"cp{cp}", f"WINDOWS-{cp}", f"CP{cp}")
    return table


CHARSET_ALIASES: Mapping[str, str] = MappingProxyType(_table())
"""Normalised label -> Python codec name."""

UNSUPPORTED_CHARSETS: frozenset[str] = frozenset(
    normalise_label(label)
    for label in (
        "UNICODE UTF-16",  # not ASCII-compatible: MSH could not have been read byte-wise
        "UNICODE UTF-32",
        "ISO IR14",  # JIS X 0201 as a G1 set under ISO 2022; no Python codec
        "ISO IR159",  # JIS X 0212 supplementary kanji; no plain Python codec
        "CNS 11643-1992",  # no Python codec
        "JAS2020",
        "JIS X 0202",
    )
)
"""Normalised table-0211 labels prpgate recognises but cannot decode."""

_ASCII_PROBE = bytes(range(0x20, 0x7F)) + b"\r\n\t"


def is_unsupported(label: str) -> bool:
    """True when ``label`` is a known HL7 character set that prpgate cannot decode."""
    return normalise_label(label) in UNSUPPORTED_CHARSETS


def codec_for(label: str) -> str | None:
    """Python codec name for a character-set label; None when unknown or unsupported.

    Accepts the HL7 table 0211 codes and the spellings in ``CHARSET_ALIASES``, then
    any Python name of an ASCII-compatible text codec (``"latin_1"``, ``"cp1252"``).
    """
    key = normalise_label(label)
    if not key or key in UNSUPPORTED_CHARSETS:
        return None
    known = CHARSET_ALIASES.get(key)
    if known is not None:
        return known
    try:
        name = codecs.lookup(label.strip()).name
        # codecs.lookup also finds bytes-to-bytes transforms (rot13, base64); decoding
        # a probe both rejects those and proves ASCII compatibility.
        if _ASCII_PROBE.decode(name) != _ASCII_PROBE.decode("ascii"):
            return None
    except (LookupError, ValueError, TypeError):  # ValueError: a NUL in the label, bad bytes
        return None
    return name


def decode_bytes(data: bytes, codec: str, *, base_offset: int = 0) -> str:
    """Decode ``data`` strictly with ``codec``.

    Raises ParseError (code 102) naming the absolute byte offset
    (``base_offset + position``) and the codec's reason when the bytes do not
    decode, or (code 207) when ``codec`` is not a codec at all.
    """
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        at = base_offset + exc.start
        raise ParseError(
            f"byte {at} (0x{data[exc.start]:02X}) is not valid {codec}: {exc.reason}",
            code=102,
            offset=at,
        ) from exc
    except LookupError as exc:
        raise ParseError(f"unknown codec {codec!r}", code=207) from exc


def _facility_ids(msh4: bytes, enc: bytes, fs: bytes) -> tuple[str, ...]:
    """MSH-4 universal id (component 2) and namespace id (component 1), as sent."""
    key = (msh4, enc, fs)
    found = _FACILITY_IDS.get(key)
    if found is None:
        rep, comp = enc[1:2] or fs, enc[0:1] or fs
        hd = msh4.split(rep, 1)[0].split(comp)
        ids = [hd[i].decode("latin-1").strip() for i in (1, 0) if i < len(hd)]
        found = remember(_FACILITY_IDS, key, tuple(i for i in ids if i), 1024)
    return found


_FACILITY_IDS: dict[tuple[bytes, bytes, bytes], tuple[str, ...]] = {}


def choose_codec(
    msh: bytes, overrides: Mapping[str, str] | None, default: str = DEFAULT_CHARSET
) -> tuple[str, str]:
    """The codec for a message, from its raw MSH segment: ``(codec, where it came from)``.

    MSH-18 (first repetition) wins; when it is empty, ``overrides`` keyed by the
    sending facility (MSH-4 universal id, else namespace id, as sent); else
    ``default`` (``DEFAULT_CHARSET``: UTF-8). The second item explains the choice
    for error messages.

    Raises ParseError: MSH-18 unknown or unsupported (103, MSH-18); an override
    or default that names no usable codec (207).
    """
    fs = msh[3:4]
    parts = msh.split(fs) if fs else []
    enc = parts[1] if len(parts) > 1 else b""
    label = ""
    if len(parts) > 17 and parts[17]:
        label = parts[17].split(enc[1:2] or fs, 1)[0].decode("latin-1").strip()
    if label:
        codec = codec_for(label)
        if codec is None:
            what = "a known but unsupported" if is_unsupported(label) else "an unknown"
            raise ParseError(
                f"MSH-18 {label!r} is {what} character set (HL7 table 0211)",
                segment="MSH",
                segment_index=1,
                field=18,
                code=103,
            )
        return codec, f"MSH-18 is {label!r}"
    if overrides and len(parts) > 3:
        for key in _facility_ids(parts[3], enc, fs):
            if key in overrides:
                codec = codec_for(overrides[key])
                if codec is None:
                    raise ParseError(
                        f"charset override for sending facility {key!r} names an "
                        f"unusable codec {overrides[key]!r}",
                        code=207,
                    )
                return codec, f"MSH-18 is empty; the override for {key!r} is {codec}"
    if default == DEFAULT_CHARSET:
        return "utf-8", "MSH-18 is empty and no override applies: read as UTF-8"
    codec = codec_for(default)
    if codec is None:
        raise ParseError(f"default charset {default!r} is not a usable codec", code=207)
    return codec, f"MSH-18 is empty: read as the default {codec}"
