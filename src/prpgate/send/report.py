"""The summary of a ``prpgate send`` run: counts, latency percentiles, throughput, the
exit code, and their renderings (rich tables for people, JSON for scripts)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from prpgate.send.outcome import Result, Status

__all__ = ["Summary", "percentile", "render_problems", "render_summary", "summarise"]

_MAX_PROBLEMS = 200


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (``p`` in 0..100) of ascending values; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(slots=True)
class Summary:
    """Counts over a run's results. ``codes`` counts the final acknowledgment (or HTTP
    status) of answered messages; ``latency_ms`` holds p50, p95, p99 and max of the
    answered ones."""

    target: str
    messages: int = 0
    sent: int = 0
    positive: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    late_acks: int = 0
    unmatched_acks: int = 0
    retried: int = 0
    seconds: float = 0.0
    latency_ms: dict[str, float | None] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every message got a positive acknowledgment (and there was at least one)."""
        return self.messages > 0 and self.positive == self.messages

    @property
    def answered_per_s(self) -> float:
        """Messages answered per second of the run."""
        answered = self.statuses[Status.ANSWERED.value]
        return answered / self.seconds if self.seconds > 0 else 0.0

    def as_json(self) -> dict[str, object]:
        """The ``--json`` summary object (the last line)."""
        return {
            "summary": "send",
            "target": self.target,
            "messages": self.messages,
            "sent": self.sent,
            "positive": self.positive,
            "codes": dict(sorted(self.codes.items())),
            "statuses": dict(sorted(self.statuses.items())),
            "timeouts": self.statuses[Status.TIMEOUT.value],
            "mismatches": self.statuses[Status.MISMATCH.value],
            "late_acks": self.late_acks,
            "unmatched_acks": self.unmatched_acks,
            "retried": self.retried,
            "seconds": round(self.seconds, 3),
            "msgs_per_s": round(self.answered_per_s, 1),
            "latency_ms": {
                k: None if v is None else round(v, 3) for k, v in self.latency_ms.items()
            },
            "exit_code": 0 if self.ok else 1,
        }


def summarise(
    target: str, results: Sequence[Result], *, seconds: float, unmatched_acks: int = 0
) -> Summary:
    """Count the results of one run that took ``seconds``."""
    s = Summary(target=target, messages=len(results), seconds=seconds)
    s.unmatched_acks = unmatched_acks
    latencies: list[float] = []
    for r in results:
        s.statuses[r.status.value] += 1
        if r.status is not Status.NOT_SENT:
            s.sent += 1
        if r.positive:
            s.positive += 1
        if r.status is Status.ANSWERED:
            s.codes[r.code] += 1
            if r.latency is not None:
                latencies.append(r.latency * 1000)
        if r.attempts > 1:
            s.retried += 1
        s.late_acks += len(r.late_acks)
    latencies.sort()
    s.latency_ms = {
        "p50": percentile(latencies, 50),
        "p95": percentile(latencies, 95),
        "p99": percentile(latencies, 99),
        "max": latencies[-1] if latencies else None,
    }
    return s


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f} ms"


def render_summary(
    out: Console, summary: Summary, *, code_order: Sequence[str], mllp: bool = True
) -> None:
    """Print the summary table and a one-line verdict; ``code_order`` lists the codes to
    show even when zero (``AA AE AR CA CE CR`` for MLLP); ``mllp=False`` leaves out the
    rows only MLLP has (mismatches, late and unmatched ACKs)."""
    t = Table("", "count", title=f"send summary ({summary.target})", show_header=False)
    t.add_row("messages", f"{summary.messages:,}")
    t.add_row("sent", f"{summary.sent:,}")
    t.add_row("positively acknowledged", f"{summary.positive:,}")
    codes = list(code_order) + sorted(c for c in summary.codes if c not in code_order)
    for code in codes:
        t.add_row(f"  {code or '(none)'}", f"{summary.codes.get(code, 0):,}")
    for status in Status:
        if status is Status.ANSWERED:
            continue
        n = summary.statuses.get(status.value, 0)
        if n or status is Status.TIMEOUT or (mllp and status is Status.MISMATCH):
            t.add_row(status.value.replace("-", " "), f"{n:,}")
    if mllp:
        t.add_row("late ACKs (not credited)", f"{summary.late_acks:,}")
    if summary.unmatched_acks:
        t.add_row("ACKs matching no message", f"{summary.unmatched_acks:,}")
    if summary.retried:
        t.add_row("messages sent more than once", f"{summary.retried:,}")
    for key in ("p50", "p95", "p99", "max"):
        t.add_row(f"latency {key}", _ms(summary.latency_ms.get(key)))
    t.add_row("answered per second", f"{summary.answered_per_s:,.1f}")
    t.add_row("seconds", f"{summary.seconds:,.2f}")
    out.print(t)
    if summary.ok:
        out.print(f"[bold]all {summary.messages:,} messages positively acknowledged[/bold]")
    else:
        bad = summary.messages - summary.positive
        out.print(f"[bold red]{bad:,} of {summary.messages:,} not positively acknowledged[/]")


def render_problems(out: Console, results: Sequence[Result]) -> None:
    """Print a table of the messages that were not positively acknowledged."""
    bad = [r for r in results if not r.positive]
    if not bad:
        return
    t = Table(title="not positively acknowledged", box=box.SIMPLE_HEAD)
    t.add_column("input", overflow="fold")
    t.add_column("control id", overflow="fold")
    t.add_column("status", no_wrap=True)
    t.add_column("code", no_wrap=True)
    t.add_column("why", ratio=1)
    for r in bad[:_MAX_PROBLEMS]:
        why = r.text + (f" [late: {' '.join(r.late_acks)}]" if r.late_acks else "")
        t.add_row(escape(r.source), escape(r.control_id), r.status.value, r.code, escape(why))
    if len(bad) > _MAX_PROBLEMS:
        t.caption = f"… and {len(bad) - _MAX_PROBLEMS:,} more (--json lists every message)"
    out.print(t)
