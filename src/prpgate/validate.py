"""``validate``: replay sample files into a throwaway store and check every message.

Every message goes through ``replay`` itself (same discovery, splitting, pipeline,
dedup and state), into a SQLite store in a temporary folder that is deleted
afterwards, one file after the other in the order given, so stateful sequences
(a correction after its original) evaluate exactly as a replay would. Then, per
message: the parse check, with ``strict`` hl7apy's conformance check, the mapping
check, and with expectations the comparison of its decisions; and over the run,
the mapping coverage per sending facility.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from prpgate.conformance import check_conformance
from prpgate.core import er7
from prpgate.core.pipeline import Disposition, Emitted, Engine, Reading
from prpgate.errors import ParseError
from prpgate.ingest import Ingested
from prpgate.ports import Clock
from prpgate.replay import discover, replay
from prpgate.store.sqlite import SqliteStore
from prpgate.validation.checks import facility_coverage, mapping_check, parse_check
from prpgate.validation.expectations import (
    ExpectationFile,
    ExpectedMessage,
    compare_message,
    write_document,
)
from prpgate.validation.report import (
    CheckKind,
    CheckResult,
    Finding,
    Level,
    MessageReport,
    OutputSummary,
    Status,
    ValidationReport,
)

__all__ = ["ValidateOptions", "output_summary", "validate_files"]


@dataclass(frozen=True, slots=True)
class ValidateOptions:
    """What to check besides parsing and mapping.

    ``expectations`` (input file name -> document) turns on the expectations check;
    None leaves it off. ``update_folder`` writes the current decisions as documents
    for review into that folder instead of comparing (an existing document for the
    same input file is rewritten where it is).
    """

    strict: bool = False
    expectations: Mapping[str, ExpectationFile] | None = None
    update_folder: Path | None = None


class _SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def output_summary(e: Emitted) -> OutputSummary:
    """What an emitted DetectedIssue or Flag is compared on: resource, rule, status,
    severity (DetectedIssue only) and the patient identifier's value."""
    resource = json.loads(e.resource)
    ref = resource.get("patient") or resource.get("subject") or {}
    ident = ref.get("identifier") or {}
    patient = str(ident.get("value") or e.patient_key.split("|", 1)[-1])
    return OutputSummary(
        resource=e.kind.value,
        rule=e.rule,
        status=e.status,
        patient=patient,
        severity=str(resource.get("severity", "")),
    )


def _tokenize(reading: Reading, engine: Engine) -> er7.Message | None:
    try:
        return er7.parse(
            reading.raw,
            charset_overrides=engine.charset_overrides,
            max_bytes=engine.max_message_bytes,
        )
    except ParseError:
        return None


def _conformance(msg: er7.Message | None) -> CheckResult:
    kind = CheckKind.CONFORMANCE
    if msg is None:
        return CheckResult(kind, Status.SKIPPED, note="not an HL7 v2 message the tokenizer reads")
    result = check_conformance(msg)
    if not result.checked:
        return CheckResult(kind, Status.SKIPPED, result.findings, result.note)
    failed = any(f.level is Level.ERROR for f in result.findings)
    status = Status.FAILED if failed else Status.PASSED
    return CheckResult(kind, status, result.findings, "hl7apy STRICT")


def _message_report(
    file: Path,
    number: int,
    source: str,
    item: Ingested,
    engine: Engine,
    options: ValidateOptions,
    doc: ExpectationFile | None,
) -> tuple[MessageReport, ExpectedMessage]:
    reading = item.reading
    header = reading.header
    msg = _tokenize(reading, engine)
    outputs = tuple(output_summary(e) for e in item.emitted)
    actual = ExpectedMessage(
        number, outputs, header.control_id if header else "", item.disposition.value
    )
    checks = [parse_check(reading, item.disposition, msg)]
    if options.strict:
        checks.append(_conformance(msg))
    checks.append(mapping_check(reading))
    if options.update_folder is not None:
        note = f"written for review to {options.update_folder}"
        checks.append(CheckResult(CheckKind.EXPECTATIONS, Status.SKIPPED, note=note))
    elif options.expectations is not None:
        checks.append(compare_message(doc, actual, source=file.name))
    report = MessageReport(
        file=str(file),
        number=number,
        source=source,
        control_id=header.control_id if header else "",
        facility=header.sending_facility if header else "",
        version=header.version if header else "",
        disposition=item.disposition.value,
        checks=tuple(checks),
        outputs=outputs,
    )
    return report, actual


def _with_extra_entries(
    reports: list[MessageReport], doc: ExpectationFile | None
) -> list[MessageReport]:
    """Fail the file's last message when the document expects messages the file lacks."""
    if doc is None or not reports:
        return reports
    extra = sorted(n for n in doc.messages if n > len(reports))
    if not extra:
        return reports
    last = reports[-1]
    reason = f"{doc.path} expects message(s) {extra}; the file holds {len(reports)}"
    checks = tuple(
        CheckResult(c.kind, Status.FAILED, (*c.findings, Finding("document", reason)), c.note)
        if c.kind is CheckKind.EXPECTATIONS
        else c
        for c in last.checks
    )
    return [*reports[:-1], replace(last, checks=checks)]


def _update_path(folder: Path, file: Path, doc: ExpectationFile | None) -> Path:
    if doc is not None and doc.path.parent.resolve() == folder.resolve():
        return doc.path
    return folder / f"{file.name}.yaml"


def validate_files(
    paths: Sequence[Path],
    engine: Engine,
    options: ValidateOptions,
    *,
    clock: Clock | None = None,
) -> ValidationReport:
    """Replay ``paths`` (files or folders) into a throwaway store and check every message.

    Returns the report (``exit_code`` 0 when every check passed, else 1). Raises
    FileNotFoundError for a path that does not exist, StoreError when the temporary
    store fails, and ExpectationError when an expectations document cannot be written.
    """
    files = discover(paths)
    docs = options.expectations or {}
    written: list[str] = []
    messages: list[MessageReport] = []
    readings: list[Reading] = []
    with tempfile.TemporaryDirectory(prefix="prpgate-validate-") as folder:
        store = SqliteStore(Path(folder) / "validate.sqlite", durable=False)
        try:
            for file in files:
                done: list[tuple[str, Ingested]] = []
                replay(store, engine, [file], clock=clock or _SystemClock(), on_commit=done.extend)
                doc = docs.get(file.name)
                reports: list[MessageReport] = []
                actuals: list[ExpectedMessage] = []
                for number, (source, item) in enumerate(done, 1):
                    report, actual = _message_report(
                        file, number, source, item, engine, options, doc
                    )
                    reports.append(report)
                    actuals.append(actual)
                    if item.disposition is not Disposition.DUPLICATE:
                        readings.append(item.reading)
                if options.update_folder is not None:
                    target = _update_path(options.update_folder, file, doc)
                    write_document(target, file.name, actuals)
                    written.append(str(target))
                elif options.expectations is not None:
                    reports = _with_extra_entries(reports, doc)
                messages += reports
        finally:
            store.close()
    coverage = facility_coverage(readings, sorted(engine.rules_by_analyte))
    return ValidationReport(len(files), tuple(messages), coverage, tuple(written))
