"""Ports: the Protocols the shell adapters implement (store, clock).

The store is used in units of work: ``with store.session() as s:`` opens one
transaction; everything done through ``s`` commits together when the block
ends without an exception (and is durable then), or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from prpgate.core.pipeline import Outcome
from prpgate.core.state import PatientState

__all__ = [
    "Clock",
    "MessageRecord",
    "MessageRow",
    "OutboxRow",
    "OutputRow",
    "PriorMessage",
    "Store",
    "StoreSession",
]


class Clock(Protocol):
    """Where the shell gets the time from (tests inject a fixed one)."""

    def now(self) -> datetime: ...


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One inbound message as the store records it, whatever became of it.

    ``raw`` is kept for every input, accepted or not. ``errors`` and ``summary``
    are JSON text. ``patient_hashes`` are SHA-256 digests of the patient keys (the
    store can be searched by MRN without the index holding MRNs in clear).
    """

    received_at: str
    source: str
    raw: bytes
    content_hash: str
    sending_application: str
    sending_facility: str
    control_id: str
    message_type: str
    version: str
    status: str
    ack_code: str
    errors: str
    summary: str
    patient_hashes: tuple[str, ...] = ()
    order_numbers: tuple[str, ...] = ()
    duplicate_of: int | None = None
    reuse_of: int | None = None


@dataclass(frozen=True, slots=True)
class PriorMessage:
    """An earlier message with the same (MSH-3, MSH-4, MSH-10)."""

    id: int
    content_hash: str
    status: str
    ack_code: str


@dataclass(frozen=True, slots=True)
class MessageRow:
    """A stored message, as listed or shown."""

    id: int
    received_at: str
    source: str
    sending_application: str
    sending_facility: str
    control_id: str
    message_type: str
    version: str
    status: str
    ack_code: str
    errors: str
    summary: str
    duplicate_of: int | None
    reuse_of: int | None
    raw: bytes


@dataclass(frozen=True, slots=True)
class OutputRow:
    """The current version of an emitted resource."""

    identifier: str
    kind: str
    patient_key: str
    rule: str
    result_key: str
    status: str
    version: int
    message_id: int
    resource: str


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One resource version waiting for (or done with) delivery."""

    id: int
    identifier: str
    kind: str
    patient_key: str
    version: int
    message_id: int
    state: str
    attempts: int
    resource: str


class StoreSession(Protocol):
    """One transaction of the store."""

    def find_prior(
        self, sending_application: str, sending_facility: str, control_id: str
    ) -> list[PriorMessage]:
        """Earlier messages with this retransmit key, oldest first."""
        ...

    def add_message(self, record: MessageRecord) -> int:
        """Record an inbound message; returns its id (also its arrival number)."""
        ...

    def set_summary(self, message_id: int, summary: str) -> None:
        """Replace a message's summary (JSON text)."""
        ...

    def load_state(
        self, patient_key: str, analytes: Iterable[str], result_keys: Iterable[str]
    ) -> PatientState:
        """The patient's deciding results for these analytes and result identities, the
        DetectedIssues of those identities and all the patient's Flags."""
        ...

    def apply(self, message_id: int, outcome: Outcome) -> None:
        """Write an outcome: result versions, outputs, outbox rows, explanation."""
        ...

    def savepoint(self) -> AbstractContextManager[None]:
        """A nested unit: rolled back alone if its block raises."""
        ...


class Store(Protocol):
    """Durable store of messages, state, outputs and the outbox."""

    def session(self) -> AbstractContextManager[StoreSession]:
        """A transaction, committed durably when the block exits normally."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...

    def list_messages(
        self,
        *,
        limit: int = 50,
        status: str | None = None,
        control_id: str | None = None,
        patient_hash: str | None = None,
    ) -> list[MessageRow]:
        """Newest first, filtered by indexed keys."""
        ...

    def get_message(self, message_id: int) -> MessageRow | None:
        """One message with its raw bytes."""
        ...

    def explanation(self, message_id: int) -> list[dict[str, Any]]:
        """The explanation records of a message, in order."""
        ...

    def outputs(
        self, *, patient_key: str | None = None, message_id: int | None = None
    ) -> list[OutputRow]:
        """Current outputs, filtered by patient or by the message that last changed them."""
        ...

    def outbox(self, *, message_id: int | None = None, limit: int = 1000) -> list[OutboxRow]:
        """Outbox rows in order, optionally of one message."""
        ...

    def patient_keys(self, value: str) -> list[str]:
        """Patient keys (``system|value``) whose identifier value is ``value``."""
        ...

    def iter_outbox(self, after_id: int = 0) -> Iterator[OutboxRow]:
        """Every outbox row after an id, in order (for NDJSON export)."""
        ...
