"""Explanations: the chain from raw field to decision, for one message or one patient.

Reads what the store recorded (message, explanation records, outputs) and shapes
it for a terminal (rich) or for scripts (JSON). Patient names and birth dates
are never shown; the MRN appears only where the user asked for it by MRN.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from prpgate.core.explanation import expand_result
from prpgate.ports import MessageRow, Store

__all__ = ["message_report", "render_message"]


def message_report(store: Store, message: MessageRow) -> dict[str, Any]:
    """A JSON-able report of one stored message: header, disposition, every result's
    chain (code -> analyte -> value -> rule verdicts), Flag changes and outputs."""
    records = store.explanation(message.id)
    outputs = [
        {
            "resourceType": o.kind,
            "identifier": o.identifier,
            "rule": o.rule,
            "status": o.status,
            "version": o.version,
        }
        for o in store.outputs(message_id=message.id)
    ]
    return {
        "message": {
            "id": message.id,
            "control_id": message.control_id,
            "sending_application": message.sending_application,
            "sending_facility": message.sending_facility,
            "type": message.message_type,
            "version": message.version,
            "received_at": message.received_at,
            "source": message.source,
            "status": message.status,
            "ack": message.ack_code,
            "errors": json.loads(message.errors),
            "summary": json.loads(message.summary),
            "duplicate_of": message.duplicate_of,
            "control_id_reuse_of": message.reuse_of,
        },
        "results": [expand_result(r) for r in records if r.get("kind") == "result"],
        "flags": [r for r in records if r.get("kind") == "flag"],
        "retractions": [r for r in records if r.get("kind") == "retraction"],
        "outputs_changed": [r for r in records if r.get("kind") == "output"],
        "outputs_current": outputs,
    }


def _verdict(j: dict[str, Any]) -> Text:
    if j["met"] is True:
        return Text(f"{j['rule']}: FINDING {j['severity']} — {j['note']}", style="bold red")
    if j["met"] is False:
        return Text(f"{j['rule']}: no finding — {j['note']}", style="green")
    return Text(f"{j['rule']}: not settled — {j['note']}", style="yellow")


def render_message(report: dict[str, Any]) -> RenderableType:
    """A rich renderable of a message report for people."""
    m = report["message"]
    head = Table.grid(padding=(0, 2))
    head.add_row(
        "message", f"#{m['id']} control id {m['control_id']} ({m['type']} v{m['version']})"
    )
    head.add_row("from", Text(f"{m['sending_application']} / {m['sending_facility']}"))
    head.add_row("source", Text(m["source"]))
    status_style = "green" if m["status"] in ("accepted", "duplicate") else "red"
    head.add_row("status", Text(f"{m['status']} (ACK {m['ack']})", style=status_style))
    if m["duplicate_of"]:
        head.add_row("duplicate of", f"#{m['duplicate_of']} (retransmit, not processed again)")
    if m["control_id_reuse_of"]:
        head.add_row("control id reuse", f"same key as #{m['control_id_reuse_of']}, new content")
    for e in m["errors"]:
        head.add_row(
            "error", Text(f"{e['location']}: {e['reason']} (HL7 {e['code']})", style="red")
        )
    for w in m["summary"].get("warnings", []):
        head.add_row("warning", Text(w, style="yellow"))
    tree = Tree("results")
    for r in report["results"]:
        label = f"{r['source']} {' | '.join(r['code'])} = {r['sent']} {r['sent_unit']}".rstrip()
        branch = tree.add(Text(f"{label}  [{r['status']}]"))
        if r.get("unmapped"):
            branch.add(Text(f"unmapped ({r['unmapped']}): {r['detail']}", style="yellow"))
            continue
        cmp = r.get("comparator") or ""
        branch.add(
            Text(
                f"{r['analyte']}: {cmp}{r['value']} {r['unit']} (unit {r['sent_unit'] or '—'}"
                f" → UCUM {r['ucum'] or '1'}, factor {r['factor']})"
            )
        )
        flags = "~".join(r["abnormal_flags"]) or "—"
        lab = f"lab range {r['reference_range'] or '—'}, flags {flags}"
        branch.add(Text(lab))
        if r.get("note"):
            branch.add(Text(r["note"], style="dim"))
        if r.get("lab_disagrees"):
            branch.add(Text(r["lab_disagrees"], style="yellow"))
        for j in r.get("judgements", []):
            branch.add(_verdict(j))
    parts: list[RenderableType] = [head, tree]
    if report["flags"] or report["retractions"]:
        ft = Tree("state changes")
        for f in report["flags"]:
            ft.add(
                Text(f"Flag {f['rule']} → {f['status']} (since {f['since'] or '—'}): {f['reason']}")
            )
        for rt in report["retractions"]:
            ft.add(Text(f"DetectedIssue {rt['rule']} → entered-in-error: {rt['reason']}"))
        parts.append(ft)
    if report["outputs_changed"]:
        table = Table("resource", "rule", "status", "event", "identifier", title="outputs")
        for o in report["outputs_changed"]:
            table.add_row(o["resource"], o["rule"], o["status"], o["event"], o["identifier"])
        parts.append(table)
    return Panel(Group(*parts), title=f"message #{m['id']}", expand=False)
