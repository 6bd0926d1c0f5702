"""The exception tree: one root, and errors that carry data so callers never parse text."""

from __future__ import annotations

__all__ = [
    "BuildError",
    "ConfigError",
    "DeliveryError",
    "FramingError",
    "MappingError",
    "ParseError",
    "PrpgateError",
    "RuleError",
    "StoreConflictError",
    "StoreError",
]


class PrpgateError(Exception):
    """Root of every error prpgate raises on purpose."""


class ParseError(PrpgateError):
    """Input that cannot be read as an HL7 v2 message (or FHIR resource).

    ``segment`` is the segment id (``"MSH"``), ``segment_index`` its 1-based
    position in the message, ``field`` the 1-based field number, and
    ``code`` an HL7 table 0357 error code (100 segment sequence error,
    101 required field missing, 102 data type error, 103 table value not
    found, 200 unsupported message type, 203 unsupported version id,
    207 application internal error).
    """

    def __init__(
        self,
        reason: str,
        *,
        segment: str | None = None,
        segment_index: int | None = None,
        field: int | None = None,
        code: int = 102,
        offset: int | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.segment = segment
        self.segment_index = segment_index
        self.field = field
        self.code = code
        self.offset = offset

    @property
    def location(self) -> str:
        """Human-readable location, e.g. ``MSH-9`` or ``OBX[4]-5`` or ``byte 120``.

        The first segment is ``MSH`` without an index; a second MSH further on (two
        messages where one belongs) keeps its index: ``MSH[7]``.
        """
        parts = ""
        if self.segment is not None:
            parts = self.segment
            if self.segment_index is not None and (self.segment != "MSH" or self.segment_index > 1):
                parts += f"[{self.segment_index}]"
            if self.field is not None:
                parts += f"-{self.field}"
        elif self.offset is not None:
            parts = f"byte {self.offset}"
        return parts or "message"


class FramingError(PrpgateError):
    """Bytes that do not form an MLLP frame."""


class MappingError(PrpgateError):
    """A mapping or rule-pack file that does not validate; names file, key and reason."""

    def __init__(self, reason: str, *, file: str | None = None, key: str | None = None) -> None:
        where = ":".join(p for p in (file, key) if p)
        super().__init__(f"{where}: {reason}" if where else reason)
        self.reason = reason
        self.file = file
        self.key = key


class BuildError(PrpgateError):
    """An output resource failed R4B validation: a bug, or a value FHIR cannot carry."""


class RuleError(PrpgateError):
    """A rule pack that cannot be evaluated (e.g. a rule naming an unknown analyte)."""


class ConfigError(PrpgateError):
    """Settings that cannot work together."""


class StoreError(PrpgateError):
    """The store could not durably record or read something."""


class StoreConflictError(StoreError):
    """A transaction lost a race with another one (a deadlock, a serialization failure, a
    patient's lock held by another instance, the same retransmit committed first): nothing
    of it was committed, and running the same unit of work again is expected to succeed."""


class DeliveryError(PrpgateError):
    """A write to the clinic FHIR server failed; ``retryable`` says whether to try again."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.retryable = retryable
