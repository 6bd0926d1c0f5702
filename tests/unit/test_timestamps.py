"""HL7 v2 timestamps to FHIR dateTime and a cross-offset sort key."""

from __future__ import annotations

import pytest

from prpgate.core.timestamps import parse_ts


@pytest.mark.parametrize(
    ("text", "fhir"),
    [
        ("2008", "2008"),
        ("200808", "2008-08"),
        ("20080818", "2008-08-18"),
        ("200808181830", "2008-08-18T18:30:00Z"),
        ("20080818183002.1-0700", "2008-08-18T18:30:02.1-07:00"),
        ("20141006092900+0700", "2014-10-06T09:29:00+07:00"),
    ],
)
def test_parse_ts_gives_fhir_datetime(text: str, fhir: str) -> None:
    ts = parse_ts(text)
    assert ts is not None
    assert ts.fhir == fhir


def test_parse_ts_uses_default_offset_and_says_so() -> None:
    ts = parse_ts("201204101625", default_offset="+01:00")
    assert ts is not None
    assert ts.fhir == "2012-04-10T16:25:00+01:00"
    assert ts.assumed_offset is True


@pytest.mark.parametrize("text", ["", "abc", "20081318", "2008081825", "20080818183099"])
def test_parse_ts_rejects_invalid(text: str) -> None:
    assert parse_ts(text) is None


def test_parse_ts_sort_key_orders_across_offsets() -> None:
    early = parse_ts("202601011000+0200")  # 08:00 UTC
    late = parse_ts("202601010900+0000")  # 09:00 UTC
    date_only = parse_ts("20260101")  # midnight UTC
    assert early is not None
    assert late is not None
    assert date_only is not None
    assert date_only.sort_key < early.sort_key < late.sort_key
