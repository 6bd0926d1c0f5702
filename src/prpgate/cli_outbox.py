"""``prpgate deliver``, ``prpgate outbox …`` and ``prpgate messages …`` (typer + rich). Wiring only.

Exit codes: 0 when the command did what was asked (``deliver``: every row it claimed
was delivered), 1 when something failed (``deliver``: some rows are waiting for a
retry or became dead letters), 2 on a usage or configuration error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from prpgate.cli_support import EXIT_FAILED, EXIT_OK, ConfigOpt, JsonOpt, StoreOpt
from prpgate.cli_support import cli_settings as _settings
from prpgate.cli_support import fail as _fail
from prpgate.cli_support import open_store as _store
from prpgate.config import Settings
from prpgate.core.pipeline import Outcome
from prpgate.core.state import PatientState
from prpgate.delivery.outbox import DeliveryStats, outbox_metrics
from prpgate.delivery.wiring import open_worker
from prpgate.engine import build_engine
from prpgate.errors import ConfigError, MappingError
from prpgate.ingest import ingest
from prpgate.ports import MessageRecord, OutboxEntry, PriorMessage, StoreBackend, StoreSession
from prpgate.store.sqlite import patient_hash

__all__ = [
    "deliver_cmd",
    "messages_list_cmd",
    "messages_reprocess_cmd",
    "messages_show_cmd",
    "outbox_list_cmd",
    "outbox_purge_cmd",
    "outbox_retry_cmd",
    "outbox_show_cmd",
    "parse_age",
    "register",
]


LimitOpt = Annotated[int, typer.Option("--limit", help="At most this many rows.")]

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "": 86400}


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``3600s``, ``2w`` (a bare number is days).

    Raises ConfigError for anything else.
    """
    m = _AGE.match(text)
    if not m:
        raise ConfigError(f"not an age: {text!r} (use e.g. 30d, 12h, 90m)")
    return timedelta(seconds=float(m.group(1)) * _UNIT[m.group(2)])


def _now() -> datetime:
    return datetime.now(UTC)


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


# --- deliver ------------------------------------------------------------------------


def deliver_cmd(
    once: Annotated[
        bool, typer.Option("--once", help="One pass over what is due now, then exit.")
    ] = False,
    drain: Annotated[
        bool,
        typer.Option("--drain", help="Deliver until nothing undelivered is left, then exit."),
    ] = False,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="With --drain: give up after S seconds.")
    ] = None,
    fhir_base_url: Annotated[
        str | None, typer.Option("--fhir-base-url", help="The clinic's FHIR R4 base URL.")
    ] = None,
    write_mode: Annotated[
        str | None, typer.Option("--write-mode", help="client-id or conditional.")
    ] = None,
    parallel: Annotated[
        int | None, typer.Option("--parallel", help="Writes in flight at once.")
    ] = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Deliver the outbox to the clinic's FHIR server.

    Without --once or --drain it runs until interrupted (SIGINT/SIGTERM finish the
    writes in flight first). Exit 0 when every row it took was delivered, 1 when some
    are waiting for a retry or became dead letters.
    """
    if once and drain:
        raise _fail("give --once or --drain, not both")
    settings = _settings(
        config,
        store=store,
        fhir_base_url=fhir_base_url,
        fhir_write_mode=write_mode,
        delivery_parallel=parallel,
    )
    with _store(settings) as db:
        try:
            stats = asyncio.run(_deliver(settings, db, once=once, drain=drain, timeout=timeout))
        except ConfigError as exc:
            raise _fail(str(exc)) from exc
        outbox = db.outbox_stats()
    summary = {
        "summary": "deliver",
        "claimed": stats.claimed,
        "delivered": stats.delivered,
        "retried": stats.retried,
        "dead": stats.dead,
        "requests": stats.requests,
        "outbox": outbox.counts,
        "undelivered": outbox.undelivered,
        "metrics": outbox_metrics(outbox, _now()),
    }
    if as_json:
        _emit_json(summary)
    else:
        t = Table("", "count", title="delivery", show_header=False)
        for key in ("claimed", "delivered", "retried", "dead", "requests", "undelivered"):
            t.add_row(key, str(summary[key]))
        for state, n in sorted(outbox.counts.items()):
            t.add_row(f"outbox: {state}", str(n))
        Console(highlight=False).print(t)
    failed = not stats.clean or (drain and outbox.undelivered > 0)
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


async def _deliver(
    settings: Settings, db: StoreBackend, *, once: bool, drain: bool, timeout: float | None
) -> DeliveryStats:
    async with open_worker(settings, db) as worker:
        if once:
            return await worker.run_once()
        if drain:
            return await worker.drain(timeout=timeout)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        return await worker.run(stop)


# --- outbox ---------------------------------------------------------------------------


def _entry_json(e: OutboxEntry, *, resource: bool = False) -> dict[str, Any]:
    data = asdict(e)
    data.pop("resource")
    data["outcome"] = json.loads(e.outcome) if e.outcome else None
    if resource:
        data["resource"] = json.loads(e.resource)
    return data


def _entries_table(entries: Iterable[OutboxEntry], title: str) -> Table:
    t = Table("id", "kind", "ver", "state", "tries", "status", "next / done", "error", title=title)
    for e in entries:
        when = e.delivered_at if e.state == "delivered" else e.next_attempt_at
        t.add_row(
            str(e.id),
            e.kind,
            str(e.version),
            e.state,
            str(e.attempts),
            str(e.last_status or ""),
            when[:19],
            escape(e.last_error[:80]),
        )
    return t


def outbox_list_cmd(
    state: Annotated[
        str | None,
        typer.Option("--state", help="pending, retry, inflight, delivered, dead, superseded."),
    ] = None,
    patient: Annotated[str | None, typer.Option("--patient", help="Patient MRN.")] = None,
    limit: LimitOpt = 50,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List outbox rows, newest first."""
    settings = _settings(config, store=store)
    with _store(settings) as db:
        if patient is not None:
            entries = [
                e
                for key in db.patient_keys(patient)
                for e in db.list_outbox(state=state, patient_key=key, limit=limit)
            ]
            entries.sort(key=lambda e: -e.id)
            entries = entries[:limit]
        else:
            entries = db.list_outbox(state=state, limit=limit)
        counts = db.outbox_stats().counts
    if as_json:
        _emit_json({"rows": [_entry_json(e) for e in entries], "counts": counts})
        return
    out = Console(highlight=False)
    out.print(_entries_table(entries, "outbox"))
    out.print("  ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "outbox is empty")


def outbox_show_cmd(
    outbox_id: Annotated[int, typer.Argument(help="Outbox row id.")],
    store: StoreOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One outbox row: its delivery record, the server's OperationOutcome, the resource."""
    settings = _settings(config, store=store)
    with _store(settings) as db:
        entry = db.get_outbox(outbox_id)
    if entry is None:
        raise _fail(f"no outbox row {outbox_id}", EXIT_FAILED)
    data = _entry_json(entry, resource=True)
    if as_json:
        _emit_json(data)
        return
    out = Console(highlight=False)
    t = Table("", "", show_header=False, title=f"outbox row {entry.id}")
    for key, value in data.items():
        if key not in ("outcome", "resource"):
            t.add_row(key, escape(str(value)))
    out.print(t)
    if data["outcome"]:
        out.print("[bold]server OperationOutcome[/bold]")
        out.print_json(data=data["outcome"])
    out.print("[bold]resource[/bold]")
    out.print_json(data=data["resource"])


def outbox_retry_cmd(
    ids: Annotated[list[int] | None, typer.Argument(help="Dead letter ids.")] = None,
    all_dead: Annotated[bool, typer.Option("--all-dead", help="Every dead letter.")] = False,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make dead letters due again (the next ``deliver`` sends them).

    A dead letter whose resource has a later version delivered or waiting is marked
    superseded instead: an old state never overwrites a newer one.
    """
    if not ids and not all_dead:
        raise _fail("give dead letter ids or --all-dead")
    settings = _settings(config, store=store)
    with _store(settings) as db:
        before = db.outbox_stats().counts.get("superseded", 0)
        retried = db.retry_outbox(ids or (), now=_now(), all_dead=all_dead)
        superseded = db.outbox_stats().counts.get("superseded", 0) - before
    if as_json:
        _emit_json({"retried": retried, "superseded": superseded})
    else:
        Console(highlight=False).print(
            f"{retried} dead letter(s) due again, {superseded} superseded by a later version"
        )
    wanted = len(ids or ())
    raise typer.Exit(EXIT_OK if all_dead or retried + superseded == wanted else EXIT_FAILED)


def outbox_purge_cmd(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Age of delivery, e.g. 30d, 12h.")
    ],
    store: StoreOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete delivered rows delivered longer ago than --older-than."""
    try:
        age = parse_age(older_than)
    except ConfigError as exc:
        raise _fail(str(exc)) from exc
    settings = _settings(config, store=store)
    with _store(settings) as db:
        purged = db.purge_delivered(_now() - age)
    if as_json:
        _emit_json({"purged": purged})
    else:
        Console(highlight=False).print(f"{purged} delivered row(s) purged")


# --- messages -------------------------------------------------------------------------


def messages_list_cmd(
    control_id: Annotated[str | None, typer.Option("--control-id", help="MSH-10.")] = None,
    order: Annotated[
        str | None, typer.Option("--order", help="Accession: filler (else placer) order number.")
    ] = None,
    patient: Annotated[str | None, typer.Option("--patient", help="Patient MRN.")] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="accepted, error, rejected, duplicate.")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Received at or after (ISO 8601).")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Received before (ISO 8601).")
    ] = None,
    limit: LimitOpt = 50,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List stored messages, newest first, by indexed business keys."""
    settings = _settings(config, store=store)
    with _store(settings) as db:
        ids = db.find_messages(
            limit=limit,
            status=status,
            control_id=control_id,
            order_number=order,
            patient_hash=patient_hash(patient) if patient else None,
            since=since,
            until=until,
        )
        rows = [m for m in (db.get_message(i) for i in ids) if m is not None]
    if as_json:
        _emit_json(
            {
                "messages": [
                    {k: v for k, v in asdict(m).items() if k != "raw"} | {"bytes": len(m.raw)}
                    for m in rows
                ]
            }
        )
        return
    t = Table("id", "received", "facility", "control id", "type", "status", "ack", title="messages")
    for m in rows:
        t.add_row(
            str(m.id),
            m.received_at[:19],
            escape(m.sending_facility),
            escape(m.control_id),
            m.message_type,
            m.status,
            m.ack_code,
        )
    Console(highlight=False).print(t)


def messages_show_cmd(
    message_id: Annotated[int, typer.Argument(help="Store id of the message.")],
    raw: Annotated[
        bool, typer.Option("--raw", help="Print the raw message (contains patient data).")
    ] = False,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One stored message: what became of it and the delivery of its outputs."""
    settings = _settings(config, store=store)
    with _store(settings) as db:
        m = db.get_message(message_id)
        if m is None:
            raise _fail(f"no message {message_id}", EXIT_FAILED)
        rows = [db.get_outbox(r.id) for r in db.outbox(message_id=message_id)]
        entries = [e for e in rows if e is not None]
    if raw:
        sys.stdout.write(m.raw.decode("utf-8", "replace").replace("\r", "\n"))
        return
    data = {k: v for k, v in asdict(m).items() if k != "raw"}
    data["errors"] = json.loads(m.errors or "[]")
    data["summary"] = json.loads(m.summary or "{}")
    if as_json:
        _emit_json({"message": data, "outbox": [_entry_json(e) for e in entries]})
        return
    out = Console(highlight=False)
    t = Table("", "", show_header=False, title=f"message {m.id}")
    for key, value in data.items():
        t.add_row(key, escape(json.dumps(value) if isinstance(value, dict | list) else str(value)))
    out.print(t)
    out.print(_entries_table(entries, "its outputs in the outbox"))


class _Reprocessing:
    """A StoreSession that reports no earlier message with the same key, so a stored
    message runs through the pipeline again instead of being taken for a retransmit."""

    def __init__(self, inner: StoreSession) -> None:
        self._inner = inner

    def find_prior(
        self, sending_application: str, sending_facility: str, control_id: str
    ) -> list[PriorMessage]:
        return []

    def add_message(self, record: MessageRecord) -> int:
        return self._inner.add_message(record)

    def set_summary(self, message_id: int, summary: str) -> None:
        self._inner.set_summary(message_id, summary)

    def load_state(
        self, patient_key: str, analytes: Iterable[str], result_keys: Iterable[str]
    ) -> PatientState:
        return self._inner.load_state(patient_key, analytes, result_keys)

    def apply(self, message_id: int, outcome: Outcome) -> None:
        self._inner.apply(message_id, outcome)

    def savepoint(self) -> AbstractContextManager[None]:
        return self._inner.savepoint()


def messages_reprocess_cmd(
    message_ids: Annotated[list[int], typer.Argument(help="Store ids of messages.")],
    mappings: Annotated[Path | None, typer.Option("--mappings", help="Mappings folder.")] = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run stored messages through the current mappings again.

    Each is recorded anew (source ``reprocess:<id>``); outputs that change go to the
    outbox with the same identities, so the clinic server gets updates, never copies.
    """
    settings = _settings(config, store=store, mappings=mappings)
    try:
        engine = build_engine(settings)
    except MappingError as exc:
        raise _fail(f"mappings: {exc}") from exc
    results: list[dict[str, Any]] = []
    with _store(settings) as db:
        for mid in message_ids:
            m = db.get_message(mid)
            if m is None or not m.raw:
                raise _fail(f"no stored raw message {mid}", EXIT_FAILED)
            with db.session() as s:
                done = ingest(
                    _Reprocessing(s), engine, m.raw, source=f"reprocess:{mid}", received_at=_now()
                )
            results.append(
                {
                    "message": mid,
                    "recorded_as": done.message_id,
                    "disposition": done.disposition.value,
                    "outputs": [
                        {"resourceType": e.kind.value, "status": e.status, "version": e.version}
                        for e in done.emitted
                    ],
                }
            )
    if as_json:
        _emit_json({"reprocessed": results})
        return
    t = Table("message", "recorded as", "disposition", "outputs", title="reprocessed")
    for r in results:
        outs = ", ".join(f"{o['resourceType']} {o['status']} v{o['version']}" for o in r["outputs"])
        t.add_row(str(r["message"]), str(r["recorded_as"]), r["disposition"], outs or "none")
    Console(highlight=False).print(t)


def register(app: typer.Typer) -> None:
    """Add ``deliver`` and the ``outbox`` and ``messages`` groups to ``app``."""
    app.command("deliver")(deliver_cmd)
    outbox = typer.Typer(name="outbox", help="The delivery outbox.", no_args_is_help=True)
    outbox.command("list")(outbox_list_cmd)
    outbox.command("show")(outbox_show_cmd)
    outbox.command("retry")(outbox_retry_cmd)
    outbox.command("purge-delivered")(outbox_purge_cmd)
    app.add_typer(outbox, name="outbox")
    messages = typer.Typer(name="messages", help="Stored inbound messages.", no_args_is_help=True)
    messages.command("list")(messages_list_cmd)
    messages.command("show")(messages_show_cmd)
    messages.command("reprocess")(messages_reprocess_cmd)
    app.add_typer(messages, name="messages")
