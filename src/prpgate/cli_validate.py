"""``prpgate validate`` and ``prpgate mappings check`` (typer + rich). Wiring only.

Exit codes: 0 when every check passed, 1 when a check failed, 2 on a usage or
configuration error (a path that does not exist, a mapping or expectations file
that does not validate: the error names the file and the key).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from prpgate.cli_support import EXIT_FAILED, ConfigOpt, MappingsOpt
from prpgate.cli_support import cli_settings as _settings
from prpgate.cli_support import fail as _fail
from prpgate.engine import build_engine
from prpgate.errors import MappingError, StoreError
from prpgate.junit import write_junit
from prpgate.mapping_schema import json_schema
from prpgate.mappings_loader import load_mappings
from prpgate.replay import discover
from prpgate.validate import ValidateOptions, validate_files
from prpgate.validation.expectations import ExpectationError, ExpectationFile, load_expectations
from prpgate.validation.report import CheckKind, Status, ValidationReport

__all__ = ["mappings_check_cmd", "register", "validate_cmd"]

_MAX_ROWS = 200
_STATUS_TEXT = {
    Status.PASSED: "[green]pass[/green]",
    Status.FAILED: "[red]FAIL[/red]",
    Status.SKIPPED: "[dim]skip[/dim]",
}


def _expectations(
    expect: list[Path], update: bool
) -> tuple[dict[str, ExpectationFile] | None, Path | None]:
    if update:
        if len(expect) != 1 or expect[0].is_file():
            raise _fail("--update-expectations needs one --expect FOLDER to write into")
        folder = expect[0]
        try:
            return (load_expectations([folder]) if folder.is_dir() else {}), folder
        except ExpectationError as exc:
            raise _fail(f"expectations: {exc}") from exc
    if not expect:
        return None, None
    try:
        return load_expectations(expect), None
    except ExpectationError as exc:
        raise _fail(f"expectations: {exc}") from exc


def validate_cmd(
    paths: Annotated[list[Path], typer.Argument(help="HL7 v2 files or folders.")],
    mappings: MappingsOpt = None,
    config: ConfigOpt = None,
    expect: Annotated[
        list[Path] | None,
        typer.Option("--expect", help="Reviewed expectations: a file or folder (repeatable)."),
    ] = None,
    update_expectations: Annotated[
        bool,
        typer.Option(
            "--update-expectations",
            help="Write the current decisions into the --expect folder for review.",
        ),
    ] = False,
    junit: Annotated[
        Path | None, typer.Option("--junit", help="Write JUnit XML to this file.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine report on stdout.")] = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Also check HL7 v2 conformance with hl7apy STRICT.")
    ] = False,
) -> None:
    """Check sample feeds: every message parses (and with --strict conforms to its HL7
    version), every code is mapped, and decisions match reviewed expectations.

    Messages run through the same pipeline as replay, into a throwaway store. Exit
    code 0 when every check passed, 1 when a check failed, 2 on a usage or
    configuration error.
    """
    settings = _settings(config, mappings=mappings)
    try:
        discover(paths)
    except FileNotFoundError as exc:
        raise _fail(f"no such file or folder: {exc}") from exc
    docs, update_folder = _expectations(expect or [], update_expectations)
    try:
        engine = build_engine(settings)
    except MappingError as exc:
        raise _fail(f"mappings: {exc}") from exc
    options = ValidateOptions(strict=strict, expectations=docs, update_folder=update_folder)
    try:
        report = validate_files(paths, engine, options)
    except StoreError as exc:
        raise _fail(f"store: {exc}", EXIT_FAILED) from exc
    except ExpectationError as exc:
        raise _fail(f"expectations: {exc}") from exc
    if junit is not None:
        try:
            write_junit(report, junit)
        except OSError as exc:
            raise _fail(f"cannot write {junit}: {exc}") from exc
    if as_json:
        sys.stdout.write(json.dumps(report.to_json(), ensure_ascii=False, indent=2) + "\n")
        sys.stdout.flush()
    else:
        _print_report(Console(highlight=False), report)
    raise typer.Exit(report.exit_code)


def _first_problem(report: ValidationReport, index: int) -> str:
    message = report.messages[index]
    for check in message.checks:
        if check.status is Status.FAILED:
            errors = check.errors or check.findings
            return f"{check.kind.value}: {errors[0]}" if errors else check.kind.value
    return ""


def _print_messages(out: Console, report: ValidationReport) -> None:
    kinds = [k for k in CheckKind if any(m.check(k) for m in report.messages)]
    table = Table("input", "control id", "disposition", *(k.value for k in kinds), "first problem")
    table.title = "validate"
    shown = 0
    for i, m in enumerate(report.messages):
        if len(report.messages) > _MAX_ROWS and m.passed:
            continue
        if shown >= _MAX_ROWS:
            table.caption = "… more in --json / --junit"
            break
        cells = []
        for k in kinds:
            c = m.check(k)
            cells.append(_STATUS_TEXT[c.status] if c else "")
        texts = (m.source, m.control_id, m.disposition)
        table.add_row(*map(escape, texts), *cells, escape(_first_problem(report, i)))
        shown += 1
    out.print(table)


def _print_findings(out: Console, report: ValidationReport) -> None:
    rows = [
        (m.source, c.kind.value, f.location, f.reason)
        for m in report.messages
        for c in m.checks
        if c.status is Status.FAILED
        for f in (c.errors or c.findings)
    ]
    if not rows:
        return
    table = Table("input", "check", "location", "reason", title="findings")
    for row in rows[: _MAX_ROWS * 2]:
        table.add_row(*map(escape, row))
    if len(rows) > _MAX_ROWS * 2:
        table.caption = f"… and {len(rows) - _MAX_ROWS * 2} more in --json / --junit"
    out.print(table)
    for m in report.messages:
        check = m.check(CheckKind.EXPECTATIONS)
        if check is not None and check.diff:
            out.print(f"[bold]expectations differ: {escape(m.source)}[/bold]")
            out.print(check.diff, markup=False)


def _print_coverage(out: Console, report: ValidationReport) -> None:
    if not report.coverage:
        return
    table = Table(
        "sending facility",
        "messages",
        "results",
        "rule-pack analytes covered",
        "not covered",
        "not used",
        "codes that map to nothing",
        title="mapping coverage",
    )
    for c in report.coverage:
        top = "; ".join(f"{u.count}× {u.reason} {u.codes}" for u in c.unmapped[:5])
        if len(c.unmapped) > 5:
            top += f"; … {len(c.unmapped) - 5} more"
        cells = (
            c.facility,
            str(c.messages),
            str(c.results),
            ", ".join(c.covered) or "-",
            ", ".join(c.missing) or "-",
            str(c.not_used),
            top or "-",
        )
        table.add_row(*map(escape, cells))
    out.print(table)


def _print_report(out: Console, report: ValidationReport) -> None:
    _print_messages(out, report)
    _print_findings(out, report)
    _print_coverage(out, report)
    for path in report.written:
        out.print(f"expectations written for review: {path}", markup=False)
    colour = "green" if report.passed else "red"
    out.print(f"[bold {colour}]{escape(report.verdict())}[/bold {colour}]")


def mappings_check_cmd(
    mappings: MappingsOpt = None,
    config: ConfigOpt = None,
    schema: Annotated[
        bool, typer.Option("--schema", help="Print the mappings' JSON Schema (for editors).")
    ] = False,
) -> None:
    """Validate the mapping and rule-pack YAML against their schema, or print the schema.

    Exit code 0 when the four files validate, 2 when one does not (the error names
    the file and the key) or the folder does not exist.
    """
    if schema:
        sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")
        return
    settings = _settings(config, mappings=mappings)
    try:
        loaded = load_mappings(settings.mappings)
    except MappingError as exc:
        raise _fail(f"mappings: {exc}") from exc
    Console(highlight=False, markup=False).print(
        f"mappings OK ({settings.mappings}): {len(loaded.analytes.analytes)} analytes, "
        f"{len(loaded.analytes.not_used)} codes known but not used, "
        f"{len(loaded.units.spellings)} unit spellings, {len(loaded.senders.senders)} senders, "
        f"{len(loaded.rules.rules)} rules"
    )


def register(app: typer.Typer) -> None:
    """Add ``validate`` and the ``mappings`` group (``mappings check``) to ``app``."""
    app.command("validate")(validate_cmd)
    group = typer.Typer(
        name="mappings",
        help="The mappings folder: check it, print its schema.",
        no_args_is_help=True,
    )
    group.command("check")(mappings_check_cmd)
    app.add_typer(group, name="mappings")
