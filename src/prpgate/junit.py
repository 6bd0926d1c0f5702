"""The validation report as JUnit XML (through junitparser), for CI test reporters.

One ``<testsuite>`` per input file (named by its path); in it one ``<testcase>`` per
message and check, named ``message N [control id] check`` with the file as
``classname``. A failed check is a ``<failure>`` whose message is its first finding
and whose text lists every finding (``location: reason``) and, for expectations, the
unified diff; a skipped check is ``<skipped>`` with the reason. Warnings and notes go
to the testcase's ``system-out``. GitHub Actions, GitLab and Jenkins read this as is.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from junitparser import Failure, JUnitXml, Skipped, TestCase, TestSuite

from prpgate.validation.report import CheckResult, MessageReport, Status, ValidationReport

__all__ = ["to_junit", "write_junit"]


def _testcase(message: MessageReport, check: CheckResult) -> TestCase:
    control = f" [{message.control_id}]" if message.control_id else ""
    case = TestCase(
        name=f"message {message.number}{control} {check.kind.value}",
        classname=message.file,
        time=0.0,
    )
    if check.status is Status.FAILED:
        errors = check.errors or check.findings
        first = str(errors[0]) if errors else check.note or "failed"
        failure = Failure(message=first, type_=f"prpgate.{check.kind.value}")
        lines = [str(f) for f in errors]
        if check.diff:
            lines += ["", check.diff]
        failure.text = "\n".join(lines)
        case.result = [failure]
    elif check.status is Status.SKIPPED:
        case.result = [Skipped(message=check.note or "skipped")]
    out = [f"note: {check.note}"] if check.note else []
    out += [str(w) for w in check.warnings]
    if out:
        case.system_out = "\n".join(out)
    return case


def to_junit(report: ValidationReport) -> JUnitXml:
    """Build the JUnit XML document of a validation report."""
    suites: dict[str, TestSuite] = {}
    for message in report.messages:
        suite = suites.setdefault(message.file, TestSuite(name=message.file))
        for check in message.checks:
            suite.add_testcase(_testcase(message, check))  # keeps the suite's counts
    xml = JUnitXml(name="prpgate validate")
    for suite in suites.values():
        xml.add_testsuite(suite)
    # junitparser leaves this method unannotated; it totals the suites' counts
    update: Callable[[], None] = xml.update_statistics
    update()
    return xml


def write_junit(report: ValidationReport, path: Path) -> None:
    """Write the report's JUnit XML to ``path`` (UTF-8), creating its folder.

    Raises OSError when the file cannot be written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    to_junit(report).write(str(path), pretty=True)
