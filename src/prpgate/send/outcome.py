"""What became of one message ``prpgate send`` sent: the closed set of outcomes and the
per-message record the report and ``--json`` are made of."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

__all__ = ["Result", "Status"]


class Status(Enum):
    """How a message's exchange ended (its ACK code, if any, is in ``Result.code``)."""

    ANSWERED = "answered"  # an answer for it arrived: MLLP ACK with its MSH-10, or HTTP response
    TIMEOUT = "timeout"  # no answer within the timeout (after every retry)
    MISMATCH = "mismatch"  # an ACK came in its place whose MSA-2 is not its MSH-10
    INVALID = "invalid"  # the answer was not an acknowledgment (not HL7, no MSA, no framing)
    CLOSED = "closed"  # the receiver closed the connection before answering
    UNCONFIRMED = "unconfirmed"  # sent; MSH-15/MSH-16 ask for no acknowledgment
    NOT_SENT = "not-sent"  # never sent: cannot be framed, no connection, or the run stopped


@dataclass(slots=True)
class Result:
    """One message's outcome.

    ``code`` is the final MSA-1 (or the HTTP status) that decided it, ``""`` when none;
    ``acks`` every acknowledgment code credited to it in order (``["CA", "AA"]``);
    ``late_acks`` acknowledgments for it that arrived after it was decided (never
    credited to another message); ``latency`` seconds from its last send to its answer;
    ``error_codes`` the HL7 table 0357 codes of the deciding ACK's ERR segments.
    """

    index: int
    file: str
    number: int
    source: str
    control_id: str
    status: Status
    code: str = ""
    positive: bool = False
    text: str = ""
    latency: float | None = None
    attempts: int = 0
    connection: int | None = None
    acks: list[str] = field(default_factory=list)
    late_acks: list[str] = field(default_factory=list)
    error_codes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        """The ``--json`` object for this message."""
        return {
            "file": self.file,
            "number": self.number,
            "source": self.source,
            "control_id": self.control_id,
            "status": self.status.value,
            "ack_code": self.code,
            "positive": self.positive,
            "error": self.text,
            "error_codes": list(self.error_codes),
            "latency_ms": None if self.latency is None else round(self.latency * 1000, 3),
            "attempts": self.attempts,
            "connection": self.connection,
            "acks": list(self.acks),
            "late_acks": list(self.late_acks),
        }
