"""HL7 v2 TS/DTM values -> FHIR dateTime text and a sortable instant.

HL7 v2 timestamps are ``YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]``. FHIR's
dateTime needs a time zone once it has a time; where the sender gives none, the
deployment's default offset is used and the caller is told so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["Timestamp", "parse_ts"]

_TS = re.compile(
    r"^(?P<y>\d{4})(?P<mo>\d{2})?(?P<d>\d{2})?(?P<h>\d{2})?(?P<mi>\d{2})?(?P<s>\d{2})?"
    r"(?:\.(?P<frac>\d{1,4}))?(?P<tz>[+-]\d{4})?$"
)


@dataclass(frozen=True, slots=True)
class Timestamp:
    """A parsed HL7 timestamp.

    ``fhir`` is a valid FHIR dateTime (date-only precision kept as date-only);
    ``sort_key`` orders instants correctly across offsets (UTC, zero padded);
    ``assumed_offset`` is true when the sender gave a time without an offset.
    """

    fhir: str
    sort_key: str
    assumed_offset: bool


@lru_cache(maxsize=4096)  # pure function; results of one message share their timestamps
def parse_ts(text: str, default_offset: str = "+00:00") -> Timestamp | None:
    """Parse an HL7 v2 TS (component 1 of a TS/DTM field); None when empty or invalid.

    ``default_offset`` (``+HH:MM``) is applied when the value has a time but no offset.
    """
    match = _TS.match(text.strip())
    if match is None:
        return None
    g = match.groupdict()
    year, month, day = g["y"], g["mo"], g["d"]
    if month is not None and not 1 <= int(month) <= 12:
        return None
    if day is not None and not 1 <= int(day) <= 31:
        return None
    if g["h"] is None:
        fhir = "-".join(p for p in (year, month, day) if p is not None)
        total = _minutes(int(year), int(month or 1), int(day or 1), 0, 0)
        return Timestamp(fhir=fhir, sort_key=f"{total:012d}000000", assumed_offset=False)
    if month is None or day is None:
        return None
    hour, minute, second = int(g["h"]), int(g["mi"] or 0), int(g["s"] or 0)
    if hour > 23 or minute > 59 or second > 59:
        return None
    frac = g["frac"] or ""
    if g["tz"] is not None:
        tz = g["tz"]
        offset = f"{tz[0]}{tz[1:3]}:{tz[3:5]}"
        assumed = False
    else:
        offset = default_offset
        assumed = True
    fhir = f"{year}-{month}-{day}T{hour:02d}:{minute:02d}:{second:02d}"
    if frac:
        fhir += f".{frac}"
    fhir += "Z" if offset in ("+00:00", "-00:00") else offset
    sign = -1 if offset[0] == "+" else 1
    shift = sign * (int(offset[1:3]) * 60 + int(offset[4:6]))
    total = _minutes(int(year), int(month), int(day), hour, minute) + shift
    sort_key = f"{total:012d}{second:02d}{frac.ljust(4, '0')}"
    return Timestamp(fhir=fhir, sort_key=sort_key, assumed_offset=assumed)


def _minutes(year: int, month: int, day: int, hour: int, minute: int) -> int:
    """Minutes since 0001-01-01 (proleptic Gregorian), for ordering only."""
    # days_before_month for a non-leap year; leap day added below
    cumulative = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)
    y = year - 1
    days = y * 365 + y // 4 - y // 100 + y // 400 + cumulative[month - 1] + day - 1
    if month > 2 and (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)):
        days += 1
    return (days * 24 + hour) * 60 + minute
