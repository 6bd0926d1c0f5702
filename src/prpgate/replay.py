"""Replay: run every message in files and folders through the pipeline and the store.

Messages run in file order (folders: sorted, recursively). They are committed in
batches (one transaction, one fsync per batch); a batch's outputs are reported
only after its commit, so what a caller prints is what the store holds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prpgate.core import er7
from prpgate.core.fhir_request import looks_like_fhir, split_ndjson
from prpgate.core.pipeline import Disposition, Engine
from prpgate.ingest import Ingested, ingest
from prpgate.ports import Clock, Store
from prpgate.store.retry import retry_conflicts

__all__ = ["ReplayStats", "discover", "iter_inputs", "replay"]

_SKIP_SUFFIXES = {".md", ".rst", ".yaml", ".yml", ".py", ".toml", ".cfg", ".ini"}


def discover(paths: Sequence[Path]) -> list[Path]:
    """Files named, and files under folders (sorted, recursive, hidden and docs skipped).

    Raises FileNotFoundError for a path that does not exist.
    """
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                rel = f.relative_to(p)
                if (
                    f.is_file()
                    and not any(part.startswith(".") for part in rel.parts)
                    and (f.suffix.lower() not in _SKIP_SUFFIXES)
                ):
                    out.append(f)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(str(p))
    return out


def iter_inputs(files: Sequence[Path]) -> Iterator[tuple[str, bytes]]:
    """(source label, message bytes) for every message in the files, in order.

    A FHIR JSON file (a resource or a Bundle) is one input; an NDJSON file gives one
    input per line (``file#N``).
    """
    for path in files:
        data = path.read_bytes()
        if looks_like_fhir(data):
            lines = split_ndjson(data)
            if lines is None:
                yield f"{path}", data
            else:
                yield from ((f"{path}#{n}", line) for n, line in enumerate(lines, 1))
            continue
        pieces = er7.split_messages(data)
        if not pieces:
            # an empty or whitespace-only file is still an input with a disposition
            yield f"{path}", data
            continue
        for piece in pieces:
            label = f"{path}#{piece.number}" if len(pieces) > 1 else f"{path}"
            yield label, piece.data


@dataclass(slots=True)
class ReplayStats:
    """Counts for the summary; ``problems`` lists (source, disposition, reason)."""

    files: int = 0
    messages: int = 0
    dispositions: Counter[str] = field(default_factory=Counter)
    unmapped: Counter[str] = field(default_factory=Counter)
    outputs: Counter[str] = field(default_factory=Counter)
    problems: list[tuple[str, str, str]] = field(default_factory=list)
    reuses: int = 0
    refused_parts: int = 0  # refused entries of accepted Bundles

    @property
    def clean(self) -> bool:
        """Every message accepted (or a duplicate of an accepted one), nothing unmapped."""
        bad = (
            self.dispositions[Disposition.ERROR.value]
            + self.dispositions[Disposition.REJECTED.value]
        )
        return bad == 0 and sum(self.unmapped.values()) == 0 and self.refused_parts == 0

    def count(self, source: str, item: Ingested) -> None:
        """Add one ingested message to the counts."""
        self.messages += 1
        self.dispositions[item.disposition.value] += 1
        if item.reuse_of is not None:
            self.reuses += 1
        if item.disposition is Disposition.DUPLICATE:
            return
        for u in item.reading.unmapped:
            self.unmapped[u.reason.value] += 1
        for e in item.emitted:
            self.outputs[f"{e.kind.value} {e.status}"] += 1
        for err in item.errors:
            self.problems.append(
                (
                    source,
                    item.disposition.value,
                    f"{err.location}: {err.reason} (HL7 error {err.code})",
                )
            )
        for err in item.reading.refused_parts:
            self.refused_parts += 1
            self.problems.append(
                (source, "entry refused", f"{err.location}: {err.reason} (error {err.code})")
            )


def replay(
    store: Store,
    engine: Engine,
    files: Sequence[Path],
    *,
    clock: Clock,
    batch: int = 500,
    on_commit: Callable[[list[tuple[str, Ingested]]], None] | None = None,
) -> ReplayStats:
    """Replay the messages of ``files`` (files or folders) into ``store``; returns the counts.

    ``on_commit`` receives each batch's (source, result) pairs after the batch is
    durably committed.
    """
    files = discover(files)
    stats = ReplayStats(files=len(files))
    pending: list[tuple[str, bytes]] = []

    def commit() -> list[tuple[str, Ingested]]:
        done: list[tuple[str, Ingested]] = []
        with store.session() as session:
            now = clock.now()
            for source, raw in pending:
                done.append((source, ingest(session, engine, raw, source=source, received_at=now)))
        return done

    def flush() -> None:
        done = retry_conflicts(commit)  # a batch that lost a race with another instance
        for source, item in done:
            stats.count(source, item)
        pending.clear()
        if on_commit is not None:
            on_commit(done)

    for source, raw in iter_inputs(files):
        pending.append((source, raw))
        if len(pending) >= batch:
            flush()
    if pending:
        flush()
    return stats
