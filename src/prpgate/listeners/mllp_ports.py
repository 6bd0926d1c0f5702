"""What an MLLP listener is given: its settings (``MllpConfig``), the committer that owns
the store, and where it reports what happens (``ListenerEvents``, for metrics)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from prpgate.ingest import Ingested
from prpgate.ports import MessageRecord

__all__ = ["Committer", "ListenerEvents", "MllpConfig", "NullEvents"]


class Committer(Protocol):
    """Where the listener sends work: one writer that owns the store.

    Both methods enqueue at once (so the order of calls is the order of commits)
    and return a future that resolves after the durable commit, or fails with
    StoreError when the work could not be committed.
    """

    def submit(self, raw: bytes, *, source: str, received_at: datetime) -> asyncio.Future[Ingested]:
        """Ingest one message (dedup, record, evaluate) and commit it."""
        ...

    def submit_record(self, record: MessageRecord) -> asyncio.Future[int]:
        """Record an input that is not a message (a framing fault) and commit it."""
        ...


class ListenerEvents(Protocol):
    """What the listener reports, for metrics."""

    def connection_opened(self) -> None:
        """A connection was accepted."""
        ...

    def connection_closed(self) -> None:
        """A connection ended."""
        ...

    def frame_received(self) -> None:
        """A complete frame arrived."""
        ...

    def processed(self, item: Ingested) -> None:
        """A message was committed with this outcome."""
        ...

    def fault(self, kind: str) -> None:
        """A framing fault (``FaultKind`` value), a store failure (``"store"``) or a
        connection refused over the per-peer limit (``"peer_limit"``)."""
        ...

    def acked(self, code: str, seconds: float) -> None:
        """An acknowledgment was written, ``seconds`` after its frame arrived."""
        ...


class NullEvents:
    """ListenerEvents that records nothing."""

    def connection_opened(self) -> None:
        """Ignored."""

    def connection_closed(self) -> None:
        """Ignored."""

    def frame_received(self) -> None:
        """Ignored."""

    def processed(self, item: Ingested) -> None:
        """Ignored."""

    def fault(self, kind: str) -> None:
        """Ignored."""

    def acked(self, code: str, seconds: float) -> None:
        """Ignored."""


@dataclass(frozen=True, slots=True)
class MllpConfig:
    """Listener settings (the shell builds them from ``Settings``)."""

    host: str = "127.0.0.1"
    port: int = 2575
    max_message_bytes: int = 4 * 1024 * 1024
    idle_timeout: float = 900.0
    in_flight: int = 32
    max_connections: int = 200
    max_connections_per_peer: int = 20
    keepalive_idle: int = 60
    write_timeout: float = 30.0
    enhanced_acks: bool = True
    charset_overrides: Mapping[str, str] = field(default_factory=dict)
    ssl: ssl.SSLContext | None = None
    handshake_timeout: float = 10.0
    read_size: int = 65536
    keep_bytes: int = 65536
