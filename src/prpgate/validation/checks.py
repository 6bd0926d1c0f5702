"""The parse and mapping checks, and the mapping coverage per sending facility.

All pure: they read what the pipeline recorded (a ``Reading``, the tokenized message)
and return report values.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

from prpgate.core import er7
from prpgate.core.model import Coding, Normalised, Unmapped, UnmappedReason
from prpgate.core.pipeline import Disposition, Reading
from prpgate.validation.report import (
    CheckKind,
    CheckResult,
    FacilityCoverage,
    Finding,
    Level,
    Status,
    UnmappedCode,
)

__all__ = [
    "describe_codings",
    "facility_coverage",
    "line_feed_warnings",
    "mapping_check",
    "parse_check",
]

# Fields where a line break is text a reader may meet (multi-line results, notes).
_TEXT_FIELDS = frozenset({("OBX", 5), ("NTE", 3)})
# The mapper's detail ends by naming code and facility, which the finding names first.
_SAID_ALREADY = re.compile(r"\s*\(codes? [^()]* from (?:no facility|facility .*)\)$")


def describe_codings(codes: Sequence[Coding]) -> str:
    """Every coding of a result as sent: ``LN 11156-7 "LEUKOCYTES", L WBC "WBC"``."""
    parts = [f'{c.system or "(no system)"} {c.code or "(no code)"} "{c.display}"' for c in codes]
    return ", ".join(parts) or "(no code)"


def line_feed_warnings(msg: er7.Message) -> list[Finding]:
    """A line feed inside a field of a CR-terminated message: often a segment broken in
    two by an editor or a transfer (the tokenizer keeps it as text). Text fields
    (OBX-5, NTE-3) are left out: a line break there is content."""
    out: list[Finding] = []
    for seg in msg.segments:
        for n, raw in enumerate(seg.fields):
            if "\n" in raw and n > 0 and (seg.name, n) not in _TEXT_FIELDS:
                where = "MSH" if seg.name == "MSH" else f"{seg.name}[{seg.index}]"
                out.append(
                    Finding(
                        f"{where}-{n}",
                        "a line feed inside the field of a CR-terminated message "
                        "(a segment broken across lines?)",
                        Level.WARNING,
                        code="line-feed",
                    )
                )
    return out


def parse_check(reading: Reading, disposition: Disposition, msg: er7.Message | None) -> CheckResult:
    """Did the message parse and read as an acceptable ORU^R01?

    Passes when the pipeline accepted it (a duplicate passes when its content read
    as accepted). Fails with the pipeline's located errors (HL7 table 0357 code in
    ``code``) when it was answered AE or AR. Reader warnings are warnings.
    """
    warnings = [Finding("message", w, Level.WARNING, code="reader") for w in reading.warnings]
    if msg is not None:
        warnings += line_feed_warnings(msg)
    note = ""
    if disposition is Disposition.DUPLICATE:
        note = "duplicate of an earlier message in this run: not evaluated again"
    if reading.disposition is Disposition.ACCEPTED and not reading.refused_parts:
        return CheckResult(CheckKind.PARSE, Status.PASSED, tuple(warnings), note)
    if reading.disposition is Disposition.ACCEPTED:  # a Bundle with refused entries
        refused = [
            Finding(e.location, f"entry refused: {e.reason} (error {e.code})", code=str(e.code))
            for e in reading.refused_parts
        ]
        return CheckResult(
            CheckKind.PARSE, Status.FAILED, (*refused, *warnings), "accepted, entries refused"
        )
    errors = [
        Finding(e.location, f"{e.reason} (HL7 error {e.code})", code=str(e.code))
        for e in reading.errors
    ]
    verdict = f"{reading.disposition.value} ({reading.ack.value})"
    return CheckResult(
        CheckKind.PARSE, Status.FAILED, (*errors, *warnings), note or f"answered {verdict}"
    )


def _unmapped_finding(u: Unmapped) -> Finding:
    r = u.result
    facility = r.sending_facility or "(no facility)"
    reason = f"{u.reason.value}: {describe_codings(r.codes)} from {facility}"
    detail = _SAID_ALREADY.sub("", u.detail)
    if u.reason is not UnmappedReason.UNMAPPED_CODE and detail:
        reason += f"; {detail}"
    return Finding(r.source, reason, code=u.reason.value)


def mapping_check(reading: Reading) -> CheckResult:
    """Is every result's code mapped and every unit known and convertible?

    Each result recorded without a normalised value for a reason someone must review
    (``unmapped-code``, ``unknown-unit``, ``unconvertible-unit``, ``not-numeric``,
    ``no-value``, ``implausible``) is a finding naming the sending facility, code
    system, code and text. Codes the mapping lists as not used are fine. Skipped when
    the message was rejected before any result was read.
    """
    if not reading.results:
        if reading.disposition is Disposition.REJECTED:
            return CheckResult(
                CheckKind.MAPPING, Status.SKIPPED, note="message rejected: no results read"
            )
        return CheckResult(CheckKind.MAPPING, Status.PASSED, note="no results")
    findings = tuple(_unmapped_finding(u) for u in reading.unmapped)
    mapped = sum(1 for r in reading.results if isinstance(r, Normalised))
    note = f"{mapped} of {len(reading.results)} result(s) mapped"
    if reading.not_used:
        note += f", {len(reading.not_used)} known but not used by the rule pack"
    status = Status.FAILED if findings else Status.PASSED
    return CheckResult(CheckKind.MAPPING, status, findings, note)


def facility_coverage(
    readings: Iterable[Reading], rule_analytes: Sequence[str]
) -> tuple[FacilityCoverage, ...]:
    """Per sending facility (MSH-4 as read): how many messages and results, which of
    the rule pack's analytes its results cover, and which codes map to nothing."""
    messages: Counter[str] = Counter()
    results: Counter[str] = Counter()
    covered: dict[str, set[str]] = {}
    not_used: Counter[str] = Counter()
    unmapped: dict[str, Counter[tuple[str, str]]] = {}
    for reading in readings:
        if reading.header is None:
            continue
        facility = reading.header.sending_facility or "(no facility)"
        messages[facility] += 1
        covered.setdefault(facility, set())
        unmapped.setdefault(facility, Counter())
        for item in reading.results:
            results[facility] += 1
            if isinstance(item, Normalised):
                covered[facility].add(item.analyte)
            elif not item.reason.is_problem:
                not_used[facility] += 1
            else:
                key = (item.reason.value, describe_codings(item.result.codes))
                unmapped[facility][key] += 1
    out: list[FacilityCoverage] = []
    for facility in sorted(messages):
        seen = covered[facility]
        codes = sorted(unmapped[facility].items(), key=lambda kv: (-kv[1], kv[0]))
        out.append(
            FacilityCoverage(
                facility=facility,
                messages=messages[facility],
                results=results[facility],
                covered=tuple(a for a in rule_analytes if a in seen),
                missing=tuple(a for a in rule_analytes if a not in seen),
                not_used=not_used[facility],
                unmapped=tuple(UnmappedCode(r, c, n) for (r, c), n in codes),
            )
        )
    return tuple(out)
