"""What the store and the clinic server hold after a fault run, and the verdicts the
fault suite asserts: every acknowledged input stored once, every output delivered once.

"Delivered once" is judged on the server's history of each resource: after collapsing
consecutive identical versions (a write sent again because its answer was lost — a PUT of
the same body, which changes nothing), each identifier's history must be exactly its
outbox versions, in order, in one resource. An old version written again after a newer
one, a version missing, or a second resource for one identifier is a failure.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tests.faults.inputs import Input

__all__ = [
    "DeliveryCounts",
    "InputCounts",
    "delivery_counts",
    "input_counts",
    "integrity",
    "outbox_rows",
    "stored_statuses",
    "undelivered",
    "write_report",
]


def _query(store: Path, sql: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def stored_statuses(store: Path) -> dict[str, Counter[str]]:
    """Per control id (MLLP: MSH-10; FHIR over HTTP: ``request:<X-Request-Id>``), how many
    rows of each status the store holds."""
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for control, status in _query(store, "SELECT control_id, status FROM messages"):
        out[str(control)][str(status)] += 1
    return out


def integrity(store: Path) -> str:
    """SQLite's ``PRAGMA integrity_check`` of the store file (``"ok"`` when sound)."""
    ((verdict,),) = _query(store, "PRAGMA integrity_check")
    return str(verdict)


def undelivered(store: Path) -> int:
    """Outbox rows still to deliver (pending, retry, in flight)."""
    ((n,),) = _query(
        store, "SELECT COUNT(*) FROM outbox WHERE state IN ('pending', 'retry', 'inflight')"
    )
    return int(n)


def outbox_rows(store: Path) -> list[dict[str, Any]]:
    """Every outbox row: identifier, version, state, resource (parsed)."""
    rows = _query(store, "SELECT id, identifier, version, state, resource FROM outbox ORDER BY id")
    return [
        {"id": i, "identifier": ident, "version": v, "state": s, "resource": json.loads(r)}
        for i, ident, v, s, r in rows
    ]


@dataclass
class InputCounts:
    """One sender kind's figures: inputs sent, transmissions, acknowledged, stored as
    accepted, doubled (stored as accepted more than once), retransmits recorded as
    duplicates, and acknowledged inputs missing from the store."""

    sent: int
    transmissions: int
    acknowledged: int
    stored: int
    doubled: int
    duplicates_recorded: int
    acked_not_stored: int

    def as_dict(self) -> dict[str, int]:
        """The figures as a plain dict (for reports)."""
        return asdict(self)


def input_counts(
    inputs: list[Input], statuses: dict[str, Counter[str]], prefix: str = ""
) -> InputCounts:
    """Compare a sender's ledger with the store (``prefix`` maps a key to its control id)."""
    acked = [i for i in inputs if i.acked]
    stored = doubled = dups = missing = 0
    for item in inputs:
        seen = statuses.get(prefix + item.key, Counter())
        stored += 1 if seen["accepted"] else 0
        doubled += 1 if seen["accepted"] > 1 else 0
        dups += seen["duplicate"]
        if item.acked and seen["accepted"] != 1:
            missing += 1
    return InputCounts(
        sent=sum(1 for i in inputs if i.sends),
        transmissions=sum(i.sends for i in inputs),
        acknowledged=len(acked),
        stored=stored,
        doubled=doubled,
        duplicates_recorded=dups,
        acked_not_stored=missing,
    )


@dataclass
class DeliveryCounts:
    """Outputs (identifiers) and their versions in the outbox, rows delivered, what the
    server received and holds, and what went wrong (all zero on success)."""

    outputs: int
    versions: int
    delivered: int
    server_writes: int
    rewrites: int  # the same version written again (its answer was lost): no change
    doubled: int  # a second resource for an identifier, or an old version re-applied
    missing: int  # an outbox version the server never got
    wrong_order: int  # versions on the server in another order than the outbox's

    def as_dict(self) -> dict[str, int]:
        """The figures as a plain dict (for reports)."""
        return asdict(self)


def _body(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource without what the server assigns (id in conditional mode, meta)."""
    return {k: v for k, v in resource.items() if k not in ("id", "meta")}


def delivery_counts(rows: list[dict[str, Any]], snapshot: dict[str, Any]) -> DeliveryCounts:
    """Judge the server's state (``FhirServer.snapshot()``) against the outbox."""
    wanted: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: (r["identifier"], r["version"])):
        wanted[row["identifier"]].append(_body(row["resource"]))
    held: dict[str, list[list[dict[str, Any]]]] = defaultdict(list)
    for versions in snapshot["resources"].values():
        if versions[-1]["resourceType"] != "Patient":
            ident = str(versions[-1]["identifier"][0]["value"])
            held[ident].append([_body(v) for v in versions])
    doubled = missing = wrong = rewrites = 0
    for ident in set(wanted) | set(held):
        resources = held.get(ident, [])
        doubled += max(0, len(resources) - 1)
        history = resources[0] if resources else []
        collapsed = [v for n, v in enumerate(history) if n == 0 or v != history[n - 1]]
        rewrites += len(history) - len(collapsed)
        want = wanted.get(ident, [])
        if collapsed == want:
            continue
        missing += sum(1 for v in want if v not in collapsed)
        if sorted(map(json.dumps, collapsed)) == sorted(map(json.dumps, want)):
            wrong += 1
        else:
            doubled += max(0, len(collapsed) - len(want))
    writes = sum(
        1 for e in snapshot["log"] if e["method"] in ("PUT", "POST") and 200 <= e["status"] < 300
    )
    return DeliveryCounts(
        outputs=len(wanted),
        versions=len(rows),
        delivered=sum(1 for r in rows if r["state"] == "delivered"),
        server_writes=writes,
        rewrites=rewrites,
        doubled=doubled,
        missing=missing,
        wrong_order=wrong,
    )


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write a run's figures as JSON and print them (``pytest -s`` shows them)."""
    path.write_text(json.dumps(report, indent=2))
    print(f"{path.name}:", json.dumps(report))
