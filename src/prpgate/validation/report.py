"""The validation report: per message, one result per check, each with located findings.

Plain frozen values, so the rich table, the JSON report and the JUnit XML are three
renderings of one model. ``to_json`` gives the machine report's shape.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

__all__ = [
    "CheckKind",
    "CheckResult",
    "FacilityCoverage",
    "Finding",
    "Level",
    "MessageReport",
    "OutputSummary",
    "Status",
    "UnmappedCode",
    "ValidationReport",
]


class Level(Enum):
    """How serious a finding is: errors fail their check, warnings are shown only."""

    ERROR = "error"
    WARNING = "warning"


class Status(Enum):
    """Outcome of one check on one message."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


class CheckKind(Enum):
    """The checks ``validate`` runs, in report order."""

    PARSE = "parse"
    CONFORMANCE = "conformance"
    MAPPING = "mapping"
    EXPECTATIONS = "expectations"


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: where (``OBX[5]-3``, ``message``, ``Flag leukocytosis ZQ70051``) and why."""

    location: str
    reason: str
    level: Level = Level.ERROR
    code: str = ""

    def to_json(self) -> dict[str, str]:
        """The finding as a JSON object."""
        out = {"location": self.location, "reason": self.reason, "level": self.level.value}
        if self.code:
            out["code"] = self.code
        return out

    def __str__(self) -> str:
        tag = "" if self.level is Level.ERROR else f"{self.level.value}: "
        return f"{self.location}: {tag}{self.reason}"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check's outcome; ``note`` says why it was skipped or adds context; ``diff``
    is a unified diff (expectations only)."""

    kind: CheckKind
    status: Status
    findings: tuple[Finding, ...] = ()
    note: str = ""
    diff: str = ""

    @property
    def errors(self) -> tuple[Finding, ...]:
        """Findings that fail the check."""
        return tuple(f for f in self.findings if f.level is Level.ERROR)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        """Findings shown but not failing."""
        return tuple(f for f in self.findings if f.level is Level.WARNING)

    def to_json(self) -> dict[str, Any]:
        """The check result as a JSON object."""
        out: dict[str, Any] = {
            "status": self.status.value,
            "findings": [f.to_json() for f in self.findings],
        }
        if self.note:
            out["note"] = self.note
        if self.diff:
            out["diff"] = self.diff
        return out


@dataclass(frozen=True, slots=True)
class OutputSummary:
    """One DetectedIssue or Flag a message emitted (created or changed), as compared
    with expectations. ``severity`` is empty for a Flag."""

    resource: str
    rule: str
    status: str
    patient: str
    severity: str = ""

    @property
    def label(self) -> str:
        """``DetectedIssue leukocytosis ZQ70002``: what a diff line names."""
        return f"{self.resource} {self.rule} {self.patient}"

    def to_json(self) -> dict[str, str]:
        """The output as an expectation entry (severity left out when empty)."""
        out = {"resource": self.resource, "rule": self.rule}
        if self.severity:
            out["severity"] = self.severity
        out.update(status=self.status, patient=self.patient)
        return out


@dataclass(frozen=True, slots=True)
class MessageReport:
    """Everything ``validate`` found about one message of one input file."""

    file: str
    number: int
    source: str
    control_id: str
    facility: str
    version: str
    disposition: str
    checks: tuple[CheckResult, ...]
    outputs: tuple[OutputSummary, ...] = ()

    @property
    def passed(self) -> bool:
        """No check failed (skipped checks do not fail a message)."""
        return all(c.status is not Status.FAILED for c in self.checks)

    def check(self, kind: CheckKind) -> CheckResult | None:
        """The result of ``kind`` for this message, or None when it did not run."""
        return next((c for c in self.checks if c.kind is kind), None)

    def to_json(self) -> dict[str, Any]:
        """The message's report as a JSON object."""
        return {
            "source": self.source,
            "file": self.file,
            "message": self.number,
            "control_id": self.control_id,
            "sending_facility": self.facility,
            "version": self.version,
            "disposition": self.disposition,
            "passed": self.passed,
            "checks": {c.kind.value: c.to_json() for c in self.checks},
            "outputs": [o.to_json() for o in self.outputs],
        }


@dataclass(frozen=True, slots=True)
class UnmappedCode:
    """A code a facility sends that maps to nothing (or whose unit does not convert)."""

    reason: str
    codes: str  # every coding as sent: ``LN 11156-7 "LEUKOCYTES"``, comma-separated
    count: int

    def to_json(self) -> dict[str, object]:
        """The code as a JSON object."""
        return {"reason": self.reason, "codes": self.codes, "count": self.count}


@dataclass(frozen=True, slots=True)
class FacilityCoverage:
    """What one sending facility's messages cover of the rule pack's analytes."""

    facility: str
    messages: int
    results: int
    covered: tuple[str, ...]
    missing: tuple[str, ...]
    not_used: int
    unmapped: tuple[UnmappedCode, ...]

    def to_json(self) -> dict[str, object]:
        """The coverage row as a JSON object."""
        return {
            "sending_facility": self.facility,
            "messages": self.messages,
            "results": self.results,
            "analytes_covered": list(self.covered),
            "analytes_missing": list(self.missing),
            "not_used": self.not_used,
            "unmapped": [u.to_json() for u in self.unmapped],
        }


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """The whole run: per-message reports, coverage per facility, files written."""

    files: int
    messages: tuple[MessageReport, ...]
    coverage: tuple[FacilityCoverage, ...] = ()
    written: tuple[str, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        """Every check of every message passed or was skipped."""
        return all(m.passed for m in self.messages)

    @property
    def exit_code(self) -> int:
        """0 when everything passed, 1 when a check failed."""
        return 0 if self.passed else 1

    def failures_by_check(self) -> Counter[str]:
        """How many messages failed each check."""
        counts: Counter[str] = Counter()
        for m in self.messages:
            for c in m.checks:
                if c.status is Status.FAILED:
                    counts[c.kind.value] += 1
        return counts

    def verdict(self) -> str:
        """The one-line verdict for people."""
        n = len(self.messages)
        if self.passed:
            return f"PASSED: {n} message(s) in {self.files} file(s), every check passed"
        failed = sum(1 for m in self.messages if not m.passed)
        per = ", ".join(f"{k} {v}" for k, v in sorted(self.failures_by_check().items()))
        return f"FAILED: {failed} of {n} message(s) in {self.files} file(s) failed a check ({per})"

    def to_json(self) -> dict[str, Any]:
        """The machine report."""
        return {
            "summary": {
                "files": self.files,
                "messages": len(self.messages),
                "passed": sum(1 for m in self.messages if m.passed),
                "failed": sum(1 for m in self.messages if not m.passed),
                "failed_by_check": dict(sorted(self.failures_by_check().items())),
                "verdict": self.verdict(),
                "expectations_written": list(self.written),
            },
            "messages": [m.to_json() for m in self.messages],
            "coverage": [c.to_json() for c in self.coverage],
            "exit_code": self.exit_code,
        }
