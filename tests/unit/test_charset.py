"""MSH-18 character-set labels and strict decoding."""

from __future__ import annotations

import codecs

import pytest

from prpgate.core.charset import (
    CHARSET_ALIASES,
    DEFAULT_CHARSET,
    UNSUPPORTED_CHARSETS,
    choose_codec,
    codec_for,
    decode_bytes,
    is_unsupported,
    normalise_label,
)
from prpgate.errors import ParseError


@pytest.mark.parametrize(
    ("label", "codec"),
    [
        ("ASCII", "ascii"),
        ("8859/1", "iso8859-1"),
        ("8859/2", "iso8859-2"),
        ("8859/9", "iso8859-9"),
        ("8859/15", "iso8859-15"),
        ("ISO IR6", "ascii"),
        ("ISO IR100", "iso8859-1"),
        ("ISO IR192", "utf-8"),
        ("ISO-8859-1", "iso8859-1"),
        ("UNICODE UTF-8", "utf-8"),
        ("UNICODE", "utf-8"),
        ("UTF-8", "utf-8"),
        ("UTF8", "utf-8"),
        ("WINDOWS-1252", "cp1252"),
        ("CP1252", "cp1252"),
        ("GB 18030-2000", "gb18030"),
        ("KS X 1001", "euc_kr"),
        ("BIG-5", "big5"),
        ("ISO IR87", "iso2022_jp"),
    ],
)
def test_codec_for_knows_the_spellings_senders_use(label: str, codec: str) -> None:
    assert codec_for(label) == codec


@pytest.mark.parametrize("label", ["unicode utf-8", "  Unicode  UTF-8 ", "iso_ir 100", "utf_8"])
def test_codec_for_ignores_case_spaces_hyphens_and_underscores(label: str) -> None:
    assert codec_for(label) in ("utf-8", "iso8859-1")


def test_normalise_label_drops_case_and_separators() -> None:
    assert normalise_label(" Iso_IR-100 ") == "ISOIR100"


@pytest.mark.parametrize("label", ["latin_1", "cp1250", "koi8_r"])
def test_codec_for_accepts_python_names_of_ascii_compatible_codecs(label: str) -> None:
    assert codec_for(label) == codecs.lookup(label).name


@pytest.mark.parametrize("label", ["", "KLINGON", "rot13", "base64", "utf-16", "cp037"])
def test_codec_for_rejects_unknown_labels_and_unusable_codecs(label: str) -> None:
    assert codec_for(label) is None


@pytest.mark.parametrize("label", ["UNICODE UTF-16", "unicode utf-32", "ISO IR14", "ISO IR159"])
def test_codec_for_rejects_known_but_unsupported_charsets(label: str) -> None:
    assert codec_for(label) is None
    assert is_unsupported(label)


def test_is_unsupported_is_false_for_unknown_labels() -> None:
    assert not is_unsupported("KLINGON")


def test_charset_aliases_name_canonical_python_codecs() -> None:
    assert all(codecs.lookup(codec).name == codec for codec in CHARSET_ALIASES.values())


def test_charset_aliases_and_unsupported_do_not_overlap() -> None:
    assert set(CHARSET_ALIASES) & UNSUPPORTED_CHARSETS == set()


def test_decode_bytes_decodes_strictly() -> None:
    assert decode_bytes("Zoé".encode("latin-1"), "iso8859-1") == "Zoé"


def test_decode_bytes_reports_the_absolute_offset_and_reason() -> None:
    with pytest.raises(ParseError) as err:
        decode_bytes(b"abc\xe9def", "utf-8", base_offset=100)
    assert (err.value.offset, err.value.code) == (103, 102)
    assert "0xE9" in err.value.reason
    assert "utf-8" in err.value.reason


def test_decode_bytes_rejects_an_unknown_codec() -> None:
    with pytest.raises(ParseError) as err:
        decode_bytes(b"abc", "no-such-codec")
    assert err.value.code == 207


def _msh(msh4: str, msh18: str) -> bytes:
    return f"MSH|^~\\&|APP|{msh4}|||20250101||ORU^R01|1|P|2.5||||||{msh18}".encode()


def test_choose_codec_reads_msh18_from_the_raw_segment() -> None:
    codec, source = choose_codec(_msh("LAB", "8859/1~UNICODE UTF-8"), None)
    assert codec == "iso8859-1"
    assert "8859/1" in source


def test_choose_codec_matches_overrides_by_universal_or_namespace_id() -> None:
    msh = _msh("SOUTHLAB^1.2.3^ISO", "")
    assert choose_codec(msh, {"1.2.3": "cp1252"})[0] == "cp1252"
    assert choose_codec(msh, {"SOUTHLAB": "latin-1"})[0] == "iso8859-1"


def test_choose_codec_defaults_to_utf8() -> None:
    assert choose_codec(_msh("LAB", ""), {"OTHER": "cp1252"}, DEFAULT_CHARSET)[0] == "utf-8"


def test_choose_codec_rejects_an_unknown_msh18() -> None:
    with pytest.raises(ParseError) as err:
        choose_codec(_msh("LAB", "EBCDIC"), None)
    assert (err.value.field, err.value.code) == (18, 103)
