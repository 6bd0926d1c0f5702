"""The ``prpgate`` command line (typer + rich). Wiring only: settings, store, engine, output."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from prpgate.cli_support import (
    EXIT_FAILED,
    EXIT_OK,
    ConfigOpt,
    JsonOpt,
    MappingsOpt,
    StoreOpt,
    open_store,
)
from prpgate.cli_support import cli_settings as _settings
from prpgate.cli_support import fail as _fail
from prpgate.config import Settings
from prpgate.engine import build_engine, end_startup
from prpgate.errors import MappingError
from prpgate.explain import message_report, render_message
from prpgate.ingest import Ingested
from prpgate.replay import ReplayStats, discover, replay
from prpgate.store.factory import Backend, store_location
from prpgate.store.sqlite import patient_hash

__all__ = ["app", "explain_cmd", "replay_cmd"]

app = typer.Typer(
    name="prpgate",
    help="HL7 v2 / FHIR R4 lab results -> PRP-safety DetectedIssue and Flag resources.",
    no_args_is_help=True,
    add_completion=False,
)


class _SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@app.command("replay")
def replay_cmd(
    paths: Annotated[list[Path], typer.Argument(help="HL7 v2 files or folders.")],
    store: StoreOpt = None,
    mappings: MappingsOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run every message in FILES/DIRS through the pipeline into the store.

    Without --json: a progress bar and a summary table. With --json: FHIR NDJSON on
    stdout (every DetectedIssue and Flag each time it is created or changes state),
    then one summary line without resourceType. Exit code 0 when every message was
    accepted and everything mapped, 1 when some were rejected or unmapped, 2 on a
    usage or configuration error.
    """
    settings = _settings(config, store=store, mappings=mappings)
    log = structlog.get_logger("prpgate.replay")
    try:
        files = discover(paths)
    except FileNotFoundError as exc:
        raise _fail(f"no such file or folder: {exc}") from exc
    try:
        engine = build_engine(settings)
        end_startup()
    except MappingError as exc:
        raise _fail(f"mappings: {exc}") from exc
    out = Console(highlight=False)
    err = Console(stderr=True)
    decisions: list[tuple[str, str, str, str, str, str]] = []
    total = sum(f.stat().st_size for f in files)

    progress = Progress(
        TextColumn("[bold]replay"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} bytes"),
        TextColumn("{task.fields[msgs]} messages"),
        TimeElapsedColumn(),
        console=err,
        disable=as_json or not err.is_terminal,
        transient=True,
    )
    task = progress.add_task("replay", total=total, msgs=0)
    seen = 0

    def committed(batch: list[tuple[str, Ingested]]) -> None:
        nonlocal seen
        for source, item in batch:
            seen += 1
            log.debug(
                "message",
                source=source,
                control_id=item.reading.header.control_id if item.reading.header else "",
                disposition=item.disposition.value,
                ack=item.ack.value,
                outputs=len(item.emitted),
            )
            for e in item.emitted:
                if as_json:
                    sys.stdout.write(e.resource + "\n")
                elif len(decisions) < 500:
                    control = item.reading.header.control_id if item.reading.header else ""
                    severity = json.loads(e.resource).get("severity", "")
                    decisions.append((control, e.kind.value, e.rule, severity, e.status, e.event))
            progress.update(task, advance=len(item.reading.raw), msgs=seen)

    with open_store(settings, must_exist=False) as db, progress:
        stats = replay(
            db,
            engine,
            files,
            clock=_SystemClock(),
            batch=settings.replay_batch,
            on_commit=committed,
        )
    if as_json:
        sys.stdout.write(json.dumps(_summary_json(stats, settings)) + "\n")
        sys.stdout.flush()
    else:
        _print_summary(out, stats, decisions, settings)
    raise typer.Exit(EXIT_OK if stats.clean else EXIT_FAILED)


def _summary_json(stats: ReplayStats, settings: Settings) -> dict[str, Any]:
    return {
        "summary": "replay",
        "store": store_location(settings).display,
        "files": stats.files,
        "messages": stats.messages,
        "dispositions": dict(stats.dispositions),
        "control_id_reuses": stats.reuses,
        "unmapped": dict(stats.unmapped),
        "outputs": dict(stats.outputs),
        "problems": [{"source": s, "disposition": d, "reason": r} for s, d, r in stats.problems],
        "exit_code": EXIT_OK if stats.clean else EXIT_FAILED,
    }


def _print_summary(
    out: Console,
    stats: ReplayStats,
    decisions: list[tuple[str, str, str, str, str, str]],
    settings: Settings,
) -> None:
    if decisions:
        t = Table(
            "control id",
            "resource",
            "rule",
            "severity",
            "status",
            "event",
            title="what was decided",
            box=box.SIMPLE_HEAD,
        )
        for row in decisions:
            style = "red" if row[4] in ("active", "final") else "green"
            t.add_row(*row, style=style)
        out.print(t)
    if stats.problems:
        p = Table("input", "disposition", "why", title="not accepted")
        for source, disp, reason in stats.problems[:200]:
            p.add_row(source, disp, reason)
        if len(stats.problems) > 200:
            p.caption = f"… and {len(stats.problems) - 200} more"
        out.print(p)
    where = store_location(settings)
    s = Table("", "count", title=f"replay summary ({where.display})", show_header=False)
    s.add_row("files", str(stats.files))
    s.add_row("messages", str(stats.messages))
    for disp in ("accepted", "duplicate", "error", "rejected"):
        s.add_row(f"  {disp}", str(stats.dispositions.get(disp, 0)))
    if stats.reuses:
        s.add_row("  control id reuses", str(stats.reuses))
    for reason, n in sorted(stats.unmapped.items()):
        s.add_row(f"unmapped results: {reason}", str(n))
    for kind, n in sorted(stats.outputs.items()):
        s.add_row(f"outputs: {kind}", str(n))
    out.print(s)
    verdict = "all accepted and mapped" if stats.clean else "some inputs rejected or unmapped"
    out.print(
        f"[bold]{verdict}[/bold] — details: prpgate explain"
        + (f" --store {where.display}" if where.backend is Backend.SQLITE else "")
        + " <control id>"
    )


@app.command("explain")
def explain_cmd(
    target: Annotated[str | None, typer.Argument(help="Message control id or store id.")] = None,
    patient: Annotated[str | None, typer.Option("--patient", help="Patient MRN.")] = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    limit: Annotated[int, typer.Option(help="At most this many messages.")] = 20,
) -> None:
    """Show the chain from raw field to decision for a message or a patient."""
    if (target is None) == (patient is None):
        raise _fail("give a message (control id or store id) or --patient MRN, not both")
    settings = _settings(config, store=store)
    with open_store(settings) as db:
        if patient is not None:
            rows = db.list_messages(limit=limit, patient_hash=patient_hash(patient))
            rows.reverse()
        else:
            assert target is not None
            rows = list(reversed(db.list_messages(limit=limit, control_id=target)))
            if not rows and target.isdigit():
                found = db.get_message(int(target))
                rows = [found] if found else []
        if not rows:
            raise _fail(f"no message found for {target or 'that patient'}", EXIT_FAILED)
        reports = [message_report(db, row) for row in rows]
        extra: dict[str, Any] = {}
        if patient is not None:
            extra["outputs"] = [
                {
                    "resourceType": o.kind,
                    "identifier": o.identifier,
                    "rule": o.rule,
                    "status": o.status,
                    "version": o.version,
                }
                for key in db.patient_keys(patient)
                for o in db.outputs(patient_key=key)
            ]
    if as_json:
        sys.stdout.write(
            json.dumps({"messages": reports, **extra}, ensure_ascii=False, indent=2) + "\n"
        )
        return
    out = Console(highlight=False)
    for rep in reports:
        out.print(render_message(rep))
    if patient is not None:
        t = Table(
            "resource", "rule", "status", "version", "identifier", title="patient's current outputs"
        )
        for o in extra["outputs"]:
            t.add_row(o["resourceType"], o["rule"], o["status"], str(o["version"]), o["identifier"])
        out.print(t)


from prpgate.cli_validate import register as _register_validate  # noqa: E402

_register_validate(app)

from prpgate.cli_serve import register as _register_serve  # noqa: E402

_register_serve(app)

from prpgate.cli_outbox import register as _register_outbox  # noqa: E402

_register_outbox(app)

from prpgate.cli_send import register as _register_send  # noqa: E402

_register_send(app)

from prpgate.cli_store import register as _register_store  # noqa: E402

_register_store(app)
