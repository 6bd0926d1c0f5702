"""HL7 v2 conformance of one message according to hl7apy at STRICT level, with locations.

What hl7apy does, and how it is turned into located findings:

* ``parse_message(text, validation_level=STRICT, find_groups=True)`` raises on the
  *first* problem it meets (an unknown segment or field, a component or repetition
  the datatype does not have, a value that is not a valid NM/DT/TS, a value over its
  maximum length), and its exceptions say neither segment nor field. So each segment
  is parsed on its own at STRICT level (``parse_segment``), and the fields of a
  segment that fails are parsed one by one (``parse_field``): every field that fails
  becomes a finding located ``SEG[i]-n`` (``~r`` for the r-th repetition).
* ``Validator.validate`` (what ``msg.validate()`` calls) walks a parsed tree and checks
  cardinality (required fields, repetitions, group and segment counts), datatypes and
  table values and lengths; it raises only its first error, but writes every error and
  warning to ``report_file``. Each segment that parses is validated on its own, so
  each line belongs to a known segment; the field comes from the element name
  (``OBX.OBX_3``, ``OBX_6.CE_3``). hl7apy's errors are errors here; its warnings
  (a value not in an HL7 table, a value over its length) are warnings.
* The message structure (segment order and groups) is checked on a skeleton: the
  message with every segment reduced to its id, parsed with ``find_groups=True`` at
  STRICT level and validated; only group- and message-level lines are kept. hl7apy
  silently drops a segment it cannot place in the structure; such segments are
  found by comparing the skeleton's segments with the parsed tree's.

hl7apy needs ``\\r`` segment ends (the text is rebuilt from our tokenizer's segments)
and cannot read MSH-2 ``^~&`` without an escape character: it is given an escape
character that occurs nowhere in the message, which changes nothing else it reads.
Z-segments are site-defined (HL7 lets them appear anywhere): they are not checked
and not part of the skeleton. hl7apy's references describe the base standard of
each version (no profiles such as the ELR 2.5.1 guide); it knows versions 2.1 to
2.8.2.
"""

from __future__ import annotations

import difflib
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hl7apy import SUPPORTED_LIBRARIES
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Segment as HSegment
from hl7apy.parser import parse_field, parse_message, parse_segment
from hl7apy.validation import Validator

from prpgate.core import er7
from prpgate.validation.report import Finding, Level

__all__ = ["ConformanceResult", "check_conformance"]

_STRICT = VALIDATION_LEVEL.STRICT
_SPARE_ESCAPES = "\\!$%*@?#"
_ELEMENT = re.compile(r"\b([A-Z][A-Z0-9]{2})[._](\d+)\b")
_CHILD = re.compile(r"(?:Missing required child|Child limit exceeded) (\w+)\.(\w+)")
_MISSING = re.compile(r"Missing required child ([A-Z][A-Z0-9]{2})\.\1_(\d+)$")


@dataclass(frozen=True, slots=True)
class ConformanceResult:
    """hl7apy's verdict on one message: ``checked`` is False when hl7apy could not
    check it at all (``note`` says why); ``findings`` are located problems."""

    checked: bool
    findings: tuple[Finding, ...] = ()
    note: str = ""


class _Reporter:
    """Runs hl7apy's validator and reads back every error and warning it reports."""

    def __init__(self, folder: Path) -> None:
        self._path = folder / "report.txt"

    def lines(self, element: Any) -> list[tuple[Level, str]]:
        self._path.write_text("", encoding="utf-8")
        try:
            Validator.validate(element, reference=element.reference, report_file=str(self._path))
        except Exception as exc:  # hl7apy raises its first error; all are in the file
            first = f"{type(exc).__name__}: {exc}"
        else:
            first = ""
        out: list[tuple[Level, str]] = []
        for line in self._path.read_text(encoding="utf-8", errors="replace").splitlines():
            kind, _, text = line.partition(": ")
            out.append((Level.WARNING if kind == "Warning" else Level.ERROR, text))
        if first and not out:  # hl7apy failed before writing its report
            out.append((Level.WARNING, f"hl7apy could not validate this element: {first}"))
        return out


@dataclass(frozen=True, slots=True)
class _Context:
    version: str
    enc: dict[str, str]
    delimiters: er7.Delimiters
    msh2: str
    reporter: _Reporter


def _describe(exc: BaseException) -> str:
    text = str(exc)
    if type(exc).__name__ == "OperationNotAllowed" and "unknown Element" in text:
        return "not defined in this version (an extra field or segment)"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _field_of(segment: str, text: str) -> int | None:
    for name, number in _ELEMENT.findall(text):
        if name == segment:
            return int(number)
    return None


def _where(seg: er7.Segment, field: int | None, rep: int = 1) -> str:
    loc = "MSH" if seg.name == "MSH" else f"{seg.name}[{seg.index}]"
    if field is not None:
        loc += f"-{field}"
        if rep > 1:
            loc += f"~{rep}"
    return loc


def _segment_text(seg: er7.Segment, ctx: _Context, blank: frozenset[int] = frozenset()) -> str:
    fs = ctx.delimiters.field
    fields = ["" if n in blank else f for n, f in enumerate(seg.fields)]
    if seg.name == "MSH":
        return f"MSH{fs}{ctx.msh2}{fs}" + fs.join(fields[3:])
    return fs.join(fields)


def _field_findings(seg: er7.Segment, ctx: _Context) -> list[tuple[int, Finding]]:
    """Parse each field of a segment alone at STRICT level; (field, finding) per failure."""
    refs: dict[str, Any] = HSegment(
        seg.name, version=ctx.version, validation_level=_STRICT
    ).structure_by_name
    out: list[tuple[int, Finding]] = []
    first = 3 if seg.name == "MSH" else 1
    for n in range(first, len(seg.fields)):
        raw = seg.fields[n]
        if not raw.strip():
            continue
        name = f"{seg.name}_{n}"
        ref = refs[name]["ref"] if name in refs else None
        for r, rep in enumerate(raw.split(ctx.delimiters.repetition), 1):
            try:
                parse_field(rep, name, ctx.version, ctx.enc, _STRICT, ref)
            except Exception as exc:  # any hl7apy refusal is a finding
                out.append((n, Finding(_where(seg, n, r), _describe(exc), code="hl7apy-parse")))
    return out


def _validated(seg: er7.Segment, hseg: Any, ctx: _Context, skip: set[int]) -> list[Finding]:
    out: list[Finding] = []
    for level, text in ctx.reporter.lines(hseg):
        missing = _MISSING.match(text)
        if missing and int(missing.group(2)) in skip:
            continue  # the field was refused while parsing: reported already
        field = _field_of(seg.name, text)
        out.append(Finding(_where(seg, field), text, level, code="hl7apy-validate"))
    return out


def _segment_findings(seg: er7.Segment, ctx: _Context) -> tuple[bool, list[Finding]]:
    """(whether hl7apy knows the segment, its findings)."""
    try:
        hseg = parse_segment(_segment_text(seg, ctx), ctx.version, ctx.enc, _STRICT)
    except Exception as exc:  # located below, field by field
        whole = exc
    else:
        return True, _validated(seg, hseg, ctx, set())
    try:
        located = _field_findings(seg, ctx)
    except Exception as exc:  # the segment itself is unknown
        reason = f"segment {seg.name} is not defined in HL7 v{ctx.version} ({_describe(exc)})"
        return False, [Finding(_where(seg, None), reason, code="hl7apy-parse")]
    findings = [f for _, f in located]
    bad = frozenset(n for n, _ in located)
    try:
        hseg = parse_segment(_segment_text(seg, ctx, bad), ctx.version, ctx.enc, _STRICT)
    except Exception as exc:  # a segment-level refusal (e.g. a repetition limit)
        text = _describe(exc) if bad else _describe(whole)
        findings.append(Finding(_where(seg, _field_of(seg.name, text)), text, code="hl7apy-parse"))
        return True, findings
    return True, findings + _validated(seg, hseg, ctx, set(bad))


def _walk_segments(element: Any) -> Iterator[str]:
    for child in element.children:
        if child.classname == "Segment":
            yield child.name
        else:
            yield from _walk_segments(child)


def _structure_refused(msh9: str, ctx: _Context, exc: BaseException) -> Finding:
    """Why hl7apy could not build the message's structure, said in HL7 terms."""
    parts = msh9.split(ctx.delimiters.component)
    structure = parts[2] if len(parts) > 2 and parts[2] else "_".join(parts[:2])
    if type(exc).__name__ == "OperationNotAllowed":  # no Message definition to build
        if len(parts) < 2 or not parts[1]:
            reason = f"MSH-9 {msh9!r} has no trigger event: hl7apy cannot tell the structure"
        else:
            reason = f"HL7 v{ctx.version} has no message structure {structure} (MSH-9 {msh9!r})"
        return Finding("MSH-9", reason, code="hl7apy-structure")
    reason = f"message structure {structure}: {_describe(exc)}"
    where = "MSH-2" if type(exc).__name__ == "InvalidEncodingChars" else "message"
    return Finding(where, reason, code="hl7apy-structure")


def _structure_findings(segments: list[er7.Segment], ctx: _Context) -> list[Finding]:
    msh = segments[0]
    fs = ctx.delimiters.field
    head = ["MSH", ctx.msh2, "", "", "", "", "", "", msh.field(9), msh.field(10), "P", ctx.version]
    lines = [fs.join(head), *(s.name for s in segments[1:])]
    try:
        hmsg = parse_message("\r".join(lines), validation_level=_STRICT, find_groups=True)
    except Exception as exc:  # hl7apy cannot build the structure
        return [_structure_refused(msh.field(9), ctx, exc)]
    out: list[Finding] = []
    for level, text in ctx.reporter.lines(hmsg):
        child = _CHILD.match(text)
        group_level = (child is not None and len(child.group(1)) > 3) or (
            "<Message" in text or "<Group" in text
        )
        if group_level:
            where = child.group(1) if child else "message"
            out.append(Finding(where, text, level, code="hl7apy-structure"))
    placed = list(_walk_segments(hmsg))
    names = [s.name for s in segments]
    matcher = difflib.SequenceMatcher(a=names, b=placed, autojunk=False)
    for tag, i1, i2, _, _ in matcher.get_opcodes():
        if tag in ("delete", "replace"):
            for seg in segments[i1:i2]:
                reason = (
                    f"segment {seg.name} does not fit the {hmsg.name} structure here "
                    "(hl7apy leaves it out of the message)"
                )
                out.append(Finding(_where(seg, None), reason, code="hl7apy-structure"))
    return out


def _spare_escape(msg: er7.Message) -> str:
    """An escape character for hl7apy that occurs nowhere in the message (or "")."""
    body = "\r".join(msg.delimiters.field.join(s.fields) for s in msg.segments)
    return next((c for c in _SPARE_ESCAPES if c not in body), "")


def _context(msg: er7.Message, version: str, reporter: _Reporter) -> _Context:
    d = msg.delimiters
    escape = d.escape
    msh2 = msg.segments[0].field(2)
    if not escape:
        escape = _spare_escape(msg)
        msh2 = d.component + d.repetition + escape + d.subcomponent + d.truncation
    enc = {
        "FIELD": d.field,
        "COMPONENT": d.component,
        "SUBCOMPONENT": d.subcomponent,
        "REPETITION": d.repetition,
        "ESCAPE": escape,
        "SEGMENT": "\r",
        "GROUP": "\r",
    }
    if d.truncation:
        enc["TRUNCATION"] = d.truncation
    return _Context(version, enc, d, msh2, reporter)


def check_conformance(msg: er7.Message) -> ConformanceResult:
    """Check a tokenized message against hl7apy's definition of its version (MSH-12).

    Returns every finding hl7apy's STRICT level gives, located by segment (``OBX[5]``,
    1-based position in the message), field and repetition where hl7apy says which;
    structure findings are located at the group or segment. Never raises: a version
    hl7apy does not know gives ``checked=False`` with the reason.
    """
    msh = msg.segments[0]
    version = msh.field(12).split(msg.delimiters.component)[0].strip()
    if version not in SUPPORTED_LIBRARIES:
        versions = ", ".join(sorted(SUPPORTED_LIBRARIES))
        return ConformanceResult(
            False, note=f"hl7apy has no definition of HL7 version {version!r} (it knows {versions})"
        )
    findings: list[Finding] = []
    if msg.delimiters.escape == "" and not _spare_escape(msg):
        note = f"MSH-2 has no escape character and every spare one ({_SPARE_ESCAPES}) is used"
        return ConformanceResult(False, note=note)
    with tempfile.TemporaryDirectory(prefix="prpgate-hl7apy-") as folder:
        ctx = _context(msg, version, _Reporter(Path(folder)))
        known: list[er7.Segment] = []
        for seg in msg.segments:
            if seg.name.startswith("Z"):
                continue  # Z-segments are site-defined: hl7apy has no definition to check
            is_known, found = _segment_findings(seg, ctx)
            findings += found
            if is_known or seg is msh:
                known.append(seg)
        findings += _structure_findings(known, ctx)
    return ConformanceResult(True, tuple(findings))
