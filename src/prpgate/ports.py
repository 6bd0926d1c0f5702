"""Ports: the Protocols the shell adapters implement (store, clock).

The store is used in units of work: ``with store.session() as s:`` opens one
transaction; everything done through ``s`` commits together when the block
ends without an exception (and is durable then), or not at all.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Protocol

from prpgate.core.pipeline import Outcome
from prpgate.core.state import PatientState

__all__ = [
    "Clock",
    "Delivery",
    "MessageRecord",
    "MessageRow",
    "OutboxEntry",
    "OutboxRow",
    "OutboxState",
    "OutboxStats",
    "OutboxStore",
    "OutputRow",
    "PriorMessage",
    "Receipt",
    "Sink",
    "Sleeper",
    "Store",
    "StoreBackend",
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


# --- delivery (the outbox worker's view of the store, and its timer) -----------------


class OutboxState(Enum):
    """Where an outbox row is in its delivery life.

    ``pending`` waits for its first attempt, ``retry`` waits for ``next_attempt_at``
    after a failure that may pass, ``inflight`` is claimed by a worker until its lease
    runs out, ``delivered`` reached the server, ``dead`` will not be tried again
    without someone asking (the server's OperationOutcome is kept), ``superseded`` is
    a dead letter that a later version of the same resource made moot.
    """

    PENDING = "pending"
    RETRY = "retry"
    INFLIGHT = "inflight"
    DELIVERED = "delivered"
    DEAD = "dead"
    SUPERSEDED = "superseded"


@dataclass(frozen=True, slots=True)
class Delivery:
    """An outbox row claimed for one delivery attempt.

    ``claim`` is the lease token: a mark with a stale token (the lease ran out and
    someone else claimed the row) changes nothing. ``received_at`` is when the
    message that produced the row arrived (ISO 8601), for the maximum-age rule.
    """

    id: int
    identifier: str
    kind: str
    patient_key: str
    version: int
    resource: str
    attempts: int
    claim: int
    received_at: str


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One outbox row with its delivery record, as listed or shown."""

    id: int
    identifier: str
    kind: str
    patient_key: str
    version: int
    message_id: int
    state: str
    attempts: int
    next_attempt_at: str
    last_attempt_at: str
    delivered_at: str
    last_status: int | None
    last_error: str
    outcome: str
    server_id: str
    server_version: str
    resource: str


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """Outbox depth per state and the arrival time of the oldest undelivered row."""

    counts: dict[str, int]
    oldest_undelivered: str | None
    next_attempt_at: str | None = None

    @property
    def undelivered(self) -> int:
        """Rows not yet delivered that will be tried (pending, retry, in flight)."""
        return sum(self.counts.get(s.value, 0) for s in _UNDELIVERED)


_UNDELIVERED = (OutboxState.PENDING, OutboxState.RETRY, OutboxState.INFLIGHT)


class OutboxStore(Protocol):
    """The outbox as the delivery worker and the CLI use it.

    Rows are handed out in id order per patient: a row is due when it is pending or
    waiting for a retry whose time has come (or in flight with a lapsed lease) and no
    earlier row of the same patient is still undelivered. Dead letters block nothing.
    Each method is its own transaction.
    """

    def claim_due(
        self,
        now: datetime,
        *,
        limit: int,
        lease: timedelta,
        skip_patients: Collection[str] = (),
    ) -> list[Delivery]:
        """Claim up to ``limit`` due rows (at most one per patient), oldest first.

        Claimed rows are ``inflight`` until ``now + lease``. ``skip_patients`` are left
        alone (the caller already has one of their rows in flight).
        """
        ...

    def mark_delivered(
        self,
        delivery: Delivery,
        *,
        now: datetime,
        attempts: int,
        status: int,
        server_id: str,
        server_version: str,
    ) -> bool:
        """Record a delivery; False when the claim was stale (nothing changed)."""
        ...

    def mark_retry(
        self,
        delivery: Delivery,
        *,
        now: datetime,
        next_attempt_at: datetime,
        attempts: int,
        status: int | None,
        error: str,
        outcome: str,
    ) -> bool:
        """Put a row back to wait until ``next_attempt_at``; False when the claim was stale."""
        ...

    def mark_dead(
        self,
        delivery: Delivery,
        *,
        now: datetime,
        attempts: int,
        status: int | None,
        error: str,
        outcome: str,
    ) -> bool:
        """Park a row as a dead letter with the reason and the server's OperationOutcome."""
        ...

    def release(self, delivery: Delivery) -> None:
        """Hand an unattempted claimed row back, due at once (e.g. on shutdown)."""
        ...

    def list_outbox(
        self,
        *,
        state: str | None = None,
        patient_key: str | None = None,
        limit: int = 50,
    ) -> list[OutboxEntry]:
        """Outbox rows, newest first, filtered by state or patient."""
        ...

    def get_outbox(self, outbox_id: int) -> OutboxEntry | None:
        """One outbox row with its delivery record."""
        ...

    def retry_outbox(self, ids: Collection[int], *, now: datetime, all_dead: bool = False) -> int:
        """Make dead letters (these ids, or every one) due again; returns how many.

        A dead letter whose resource has a later version delivered or waiting is
        marked ``superseded`` instead, so an old state never overwrites a newer one.
        """
        ...

    def purge_delivered(self, before: datetime) -> int:
        """Delete delivered rows whose delivery is older than ``before``; returns how many."""
        ...

    def outbox_stats(self, *, include_done: bool = True) -> OutboxStats:
        """Depth per state and the arrival time of the oldest undelivered row (the row
        first in line). ``include_done=False`` counts only pending, retry and in-flight
        rows, cheaply, however many delivered rows are kept."""
        ...


class StoreBackend(Store, OutboxStore, Protocol):
    """A whole store backend (SQLite, PostgreSQL) as the commands and ``serve`` use it:
    the Store and OutboxStore ports, and the message search of ``prpgate messages list``."""

    def find_messages(
        self,
        *,
        limit: int = 50,
        status: str | None = None,
        control_id: str | None = None,
        order_number: str | None = None,
        patient_hash: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> list[int]:
        """Ids of messages, newest first, by control id, order (filler or placer) number,
        patient hash, status, and received time (ISO text, ``since`` <= t < ``until``)."""
        ...


class Sleeper(Protocol):
    """Where the worker waits (tests inject a clock whose sleep only moves time on)."""

    def now(self) -> datetime:
        """The current time (timezone-aware)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait this many seconds."""
        ...


@dataclass(frozen=True, slots=True)
class Receipt:
    """What the server said when it took a write: status, its id and version of the resource,
    and how many HTTP attempts the write took."""

    status: int
    server_id: str
    server_version: str
    attempts: int


class Sink(Protocol):
    """Where outbox rows go (the clinic's FHIR server, or a fake)."""

    async def send(self, delivery: Delivery) -> Receipt:
        """Write one resource version; raises DeliveryError (``retryable`` says whether a
        later attempt may succeed)."""
        ...
