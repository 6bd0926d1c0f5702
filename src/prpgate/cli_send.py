"""The ``prpgate send`` command (typer), registered on the main app by ``register``."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from prpgate.cli_support import EXIT_FAILED, EXIT_OK, JsonOpt
from prpgate.cli_support import fail as _fail
from prpgate.errors import ConfigError
from prpgate.send.fhir_client import FhirOptions, send_fhir
from prpgate.send.fhir_input import FhirOutgoing, read_fhir_files
from prpgate.send.mllp_client import MllpTarget, SendOptions, Spread, send_mllp
from prpgate.send.outcome import Result
from prpgate.send.outgoing import Outgoing, read_hl7_files
from prpgate.send.report import render_problems, render_summary, summarise
from prpgate.send.target import Target, client_tls_context, parse_rate, parse_target

__all__ = ["register", "send_cmd"]

_MLLP_CODES = ("AA", "AE", "AR", "CA", "CE", "CR")


def send_cmd(
    target: Annotated[
        str,
        typer.Argument(
            help="mllp://HOST:PORT, mllps://HOST:PORT (TLS), or http(s)://HOST/fhir (FHIR base)."
        ),
    ],
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to send.")],
    connections: Annotated[
        int, typer.Option("-c", "--connections", help="Persistent connections (FHIR: requests).")
    ] = 1,
    window: Annotated[
        int, typer.Option("--window", help="MLLP: messages in flight per connection.")
    ] = 1,
    rate: Annotated[
        str | None,
        typer.Option("--rate", help="Messages per second over all connections (N or N/s)."),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for each answer.")
    ] = 10.0,
    connect_timeout: Annotated[
        float, typer.Option("--connect-timeout", help="Seconds to wait for a connection.")
    ] = 10.0,
    retries: Annotated[
        int,
        typer.Option("--retries", help="Sends again (same MSH-10) on a timeout or a closed link."),
    ] = 0,
    stop_on_error: Annotated[
        bool,
        typer.Option(
            "--stop-on-error/--continue",
            help="Stop sending at the first message not positively acknowledged.",
        ),
    ] = False,
    spread: Annotated[
        Spread,
        typer.Option("--spread", help="MLLP: keep a file on one connection, or deal messages."),
    ] = Spread.FILE,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Read and show what would be sent; send nothing.")
    ] = False,
    as_json: JsonOpt = False,
    ca: Annotated[
        Path | None, typer.Option("--ca", help="PEM CA bundle to verify the server with.")
    ] = None,
    cert: Annotated[
        Path | None, typer.Option("--cert", help="PEM client certificate chain (mutual TLS).")
    ] = None,
    key: Annotated[Path | None, typer.Option("--key", help="PEM client private key.")] = None,
    server_name: Annotated[
        str | None, typer.Option("--server-name", help="TLS: the name the certificate must carry.")
    ] = None,
    bearer_token: Annotated[
        str | None,
        typer.Option(
            "--bearer-token",
            envvar="PRPGATE_SEND_BEARER_TOKEN",
            help="FHIR: Authorization bearer token.",
        ),
    ] = None,
) -> None:
    """Send HL7 v2 messages over MLLP, or FHIR resources over HTTP, to a live listener and
    check every answer.

    MLLP: each message's ACK must carry its MSH-10 in MSA-2; a late, mismatched or
    unframed answer is reported as such and never credited to another message.
    FHIR: each resource is POSTed (a Bundle to the base URL) and the status and any
    OperationOutcome are checked. Output: a progress bar and summary tables, or with
    --json one object per message and a summary. Exit code 0 when every message got a
    positive answer, 1 otherwise, 2 on a usage error.
    """
    try:
        where = parse_target(target)
        per_second = parse_rate(rate)
        _check_options(where, window, spread, bearer_token, (ca, cert, key, server_name))
        tls = client_tls_context(ca=ca, cert=cert, key=key) if where.tls else None
    except ConfigError as exc:
        raise _fail(str(exc)) from exc
    try:
        items: Sequence[Outgoing] | Sequence[FhirOutgoing] = (
            read_hl7_files(paths) if where.kind == "mllp" else read_fhir_files(paths)
        )
    except FileNotFoundError as exc:
        raise _fail(f"no such file or folder: {exc}") from exc
    if not items:
        raise _fail("no messages found in " + ", ".join(str(p) for p in paths))
    if dry_run:
        code = _dry_run(where, items, as_json)
        raise typer.Exit(code)

    err = Console(stderr=True)
    progress = Progress(
        TextColumn("[bold]send"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
        TextColumn("{task.fields[positive]:,} positive"),
        TimeElapsedColumn(),
        console=err,
        disable=as_json or not err.is_terminal,
        transient=True,
    )
    task = progress.add_task("send", total=len(items), positive=0)
    positive = 0

    def settled(result: Result) -> None:
        nonlocal positive
        positive += result.positive
        progress.update(task, advance=1, positive=positive)

    started = time.perf_counter()
    unmatched = 0
    try:
        with progress:
            if where.kind == "mllp":
                mllp_items = [i for i in items if isinstance(i, Outgoing)]
                options = SendOptions(
                    connections=connections,
                    window=window,
                    timeout=timeout,
                    connect_timeout=connect_timeout,
                    retries=retries,
                    rate=per_second,
                    stop_on_error=stop_on_error,
                    spread=spread,
                )
                mllp_target = MllpTarget(where.host, where.port, tls, server_name)
                results, unmatched = asyncio.run(
                    send_mllp(mllp_target, mllp_items, options, on_result=settled)
                )
            else:
                fhir_items = [i for i in items if isinstance(i, FhirOutgoing)]
                fopts = FhirOptions(
                    connections=connections,
                    timeout=timeout,
                    connect_timeout=connect_timeout,
                    retries=retries,
                    rate=per_second,
                    stop_on_error=stop_on_error,
                    bearer_token=bearer_token,
                    verify=tls if tls is not None else True,
                )
                results = asyncio.run(send_fhir(where.url, fhir_items, fopts, on_result=settled))
    except ConfigError as exc:
        raise _fail(str(exc)) from exc
    summary = summarise(
        str(where), results, seconds=time.perf_counter() - started, unmatched_acks=unmatched
    )
    if as_json:
        for r in results:
            sys.stdout.write(json.dumps(r.as_json(), ensure_ascii=False) + "\n")
        sys.stdout.write(json.dumps(summary.as_json()) + "\n")
        sys.stdout.flush()
    else:
        out = Console(highlight=False)
        render_problems(out, results)
        mllp = where.kind == "mllp"
        render_summary(out, summary, code_order=_MLLP_CODES if mllp else (), mllp=mllp)
    raise typer.Exit(EXIT_OK if summary.ok else EXIT_FAILED)


def _check_options(
    where: Target,
    window: int,
    spread: Spread,
    bearer_token: str | None,
    tls_options: tuple[object, ...],
) -> None:
    if where.kind == "fhir" and (window != 1 or spread is not Spread.FILE):
        raise ConfigError("--window and --spread apply to MLLP targets only")
    if where.kind == "mllp" and bearer_token:
        raise ConfigError("--bearer-token applies to FHIR targets only")
    if not where.tls and any(o is not None for o in tls_options):
        raise ConfigError("--ca, --cert, --key and --server-name need mllps:// or https://")


def _dry_run(
    where: Target, items: Sequence[Outgoing] | Sequence[FhirOutgoing], as_json: bool
) -> int:
    """Show what would be sent; 0 when every message can be sent, 1 otherwise."""
    rows: list[dict[str, object]] = []
    for item in items:
        if isinstance(item, Outgoing):
            rows.append(
                {
                    "file": item.file,
                    "number": item.number,
                    "source": item.source,
                    "control_id": item.control_id,
                    "message_type": item.message_type,
                    "version": item.version,
                    "waits_for": item.wait.describe(),
                    "bytes": len(item.data),
                    "sendable": not item.problem,
                    "problem": item.problem,
                }
            )
        else:
            rows.append(
                {
                    "file": item.file,
                    "number": item.number,
                    "source": item.source,
                    "control_id": item.label,
                    "message_type": item.resource_type,
                    "post_to": f"{where.url}/{item.path}" if item.path else where.url,
                    "bytes": len(item.body),
                    "sendable": not item.problem,
                    "problem": item.problem,
                }
            )
    sendable = sum(1 for r in rows if r["sendable"])
    code = EXIT_OK if sendable == len(rows) else EXIT_FAILED
    if as_json:
        for row in rows:
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
        summary = {
            "summary": "send-dry-run",
            "target": str(where),
            "messages": len(rows),
            "sendable": sendable,
            "exit_code": code,
        }
        sys.stdout.write(json.dumps(summary) + "\n")
        return code
    out = Console(highlight=False)
    last = "post to" if where.kind == "fhir" else "waits for"
    t = Table(
        "input",
        "id",
        "type",
        "version" if where.kind == "mllp" else "",
        last,
        "bytes",
        "problem",
        title=f"would send to {where}",
        box=box.SIMPLE_HEAD,
    )
    for r in rows:
        t.add_row(
            escape(str(r["source"])),
            escape(str(r["control_id"])),
            escape(str(r["message_type"])),
            escape(str(r.get("version", ""))),
            escape(str(r.get("waits_for", r.get("post_to", "")))),
            f"{r['bytes']:,}",
            escape(str(r["problem"])),
        )
    out.print(t)
    out.print(f"[bold]{sendable:,} of {len(rows):,} can be sent[/bold] (dry run: nothing sent)")
    return code


def register(app: typer.Typer) -> None:
    """Add the ``send`` command to the ``prpgate`` app."""
    app.command("send")(send_cmd)
