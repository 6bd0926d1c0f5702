"""MLLP framing: ``<VT> message <FS><CR>``, and an incremental deframer fed bytes.

This module is the sole home of the framing bytes. ``frame`` wraps one message;
``Deframer`` turns a byte stream, fed in whatever pieces TCP delivers, into
events: complete frames, and the faults the MLLP transport specification (HL7
Version 2 MLLP Release 2, section "Minimal Lower Layer Protocol") tells a
receiver to drop rather than answer.

Tolerances, each deliberate:

* NULs, CR, LF, spaces and tabs between frames are ignored (some senders pad or
  end a frame with ``<FS><CR><LF>``).
* A frame ends at ``<FS>``; the ``<CR>`` after it is optional, so a trailer split
  across two reads costs no extra round trip and an ``<FS>``-only sender works.
  ``<FS>`` is not valid inside HL7 text, so it cannot end a message early.
* Anything else outside a frame is "stray" data: reported once per run (up to the
  next ``<VT>``), never answered.
* A ``<VT>`` inside a frame starts a new frame; the bytes before it are reported
  as an unterminated frame (its ``<FS>`` never came).
* A frame larger than ``max_message_bytes`` is not buffered: its first
  ``keep_bytes`` are kept (enough to read MSH and answer AR), the rest is counted
  and dropped up to its ``<FS>``, so the connection stays usable.
* ``finish`` reports a frame the peer closed in the middle of.

Nothing here does I/O; the listener feeds bytes and acts on the events.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from prpgate.errors import ConfigError, FramingError

__all__ = [
    "CR",
    "END_BLOCK",
    "START_BLOCK",
    "Deframer",
    "Fault",
    "FaultKind",
    "Frame",
    "frame",
]

START_BLOCK = b"\x0b"
"""``<VT>``, 0x0B: starts an MLLP block."""
END_BLOCK = b"\x1c"
"""``<FS>``, 0x1C: ends an MLLP block (followed by ``<CR>``)."""
CR = b"\r"
"""``<CR>``, 0x0D: the last byte of an MLLP block."""

_BETWEEN = b"\x00\r\n \t"  # bytes ignored between frames


def frame(message: bytes) -> bytes:
    """Wrap one message in an MLLP block: ``<VT> message <FS><CR>``.

    Raises FramingError if the message contains a framing byte (it could not be
    deframed again); HL7 text never does.
    """
    if START_BLOCK in message or END_BLOCK in message:
        raise FramingError("a message cannot contain MLLP framing bytes (0x0B, 0x1C)")
    return START_BLOCK + message + END_BLOCK + CR


class FaultKind(Enum):
    """What was wrong with bytes that did not form a (usable) frame."""

    STRAY = "stray"  # bytes outside any frame (before <VT>)
    UNTERMINATED = "unterminated"  # a frame cut short by the next <VT>
    TRUNCATED = "truncated"  # the stream ended inside a frame
    OVERSIZE = "oversize"  # a complete frame larger than the limit (only its head is kept)


@dataclass(frozen=True, slots=True)
class Frame:
    """One complete message, framing removed."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Fault:
    """Bytes that did not form a usable frame.

    ``data`` holds at most ``keep_bytes`` of them (the head); ``size`` is how many
    there were in all. For ``OVERSIZE`` the frame was complete and the sender waits
    for an answer; the other kinds are dropped without one.
    """

    kind: FaultKind
    data: bytes
    size: int


class Deframer:
    """Incremental MLLP deframer: ``feed`` bytes, get ``Frame`` and ``Fault`` events.

    ``max_message_bytes`` bounds a frame's payload; ``keep_bytes`` bounds how much
    of an oversize frame or of stray data is kept for the record. Memory held is at
    most ``max_message_bytes + keep_bytes``. Raises ConfigError for a limit that is
    not positive.
    """

    __slots__ = ("_buf", "_in_frame", "_keep", "_max", "_over", "_size", "_stray", "_stray_size")

    def __init__(self, max_message_bytes: int, *, keep_bytes: int = 65536) -> None:
        if max_message_bytes <= 0 or keep_bytes <= 0:
            raise ConfigError("max_message_bytes and keep_bytes must be positive")
        self._max = max_message_bytes
        self._keep = min(keep_bytes, max_message_bytes)
        self._buf = bytearray()  # the current frame (only its head once oversize)
        self._size = 0  # bytes of the current frame so far
        self._over = False  # the current frame passed the limit
        self._in_frame = False
        self._stray = bytearray()  # head of the current stray run
        self._stray_size = 0

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame or stray run."""
        return len(self._buf) + len(self._stray)

    @property
    def in_frame(self) -> bool:
        """Whether a frame has started and not ended."""
        return self._in_frame

    def feed(self, data: bytes) -> list[Frame | Fault]:
        """Consume bytes; return the events they complete, in stream order."""
        events: list[Frame | Fault] = []
        pos, end = 0, len(data)
        while pos < end:
            if self._in_frame:
                pos = self._consume_frame(data, pos, events)
            else:
                pos = self._consume_outside(data, pos, events)
        return events

    def finish(self) -> list[Frame | Fault]:
        """The stream ended: report a frame cut short and pending stray data."""
        events: list[Frame | Fault] = []
        self._flush_stray(events)
        if self._in_frame:
            events.append(Fault(FaultKind.TRUNCATED, bytes(self._buf[: self._keep]), self._size))
            self._reset_frame()
        return events

    # ----------------------------------------------------------------- inside

    def _consume_frame(self, data: bytes, pos: int, events: list[Frame | Fault]) -> int:
        fs = data.find(END_BLOCK, pos)
        vt = data.find(START_BLOCK, pos, fs if fs >= 0 else len(data))
        if vt >= 0:  # a new block starts before this one ended
            self._append(data, pos, vt)
            events.append(Fault(FaultKind.UNTERMINATED, bytes(self._buf[: self._keep]), self._size))
            self._reset_frame()
            self._in_frame = True
            return vt + 1
        if fs < 0:
            self._append(data, pos, len(data))
            return len(data)
        self._append(data, pos, fs)
        if self._over:
            events.append(Fault(FaultKind.OVERSIZE, bytes(self._buf), self._size))
        else:
            events.append(Frame(bytes(self._buf)))
        self._reset_frame()
        return fs + 1

    def _append(self, data: bytes, start: int, stop: int) -> None:
        n = stop - start
        if n <= 0:
            return
        self._size += n
        if not self._over:
            if self._size <= self._max:
                self._buf += data[start:stop]
                return
            self._over = True
            del self._buf[self._keep :]
        room = self._keep - len(self._buf)
        if room > 0:
            self._buf += data[start : start + room]

    def _reset_frame(self) -> None:
        self._buf = bytearray()
        self._size = 0
        self._over = False
        self._in_frame = False

    # ---------------------------------------------------------------- outside

    def _consume_outside(self, data: bytes, pos: int, events: list[Frame | Fault]) -> int:
        vt = data.find(START_BLOCK, pos)
        stop = vt if vt >= 0 else len(data)
        chunk = data[pos:stop]
        if chunk.strip(_BETWEEN) or self._stray_size:
            self._add_stray(chunk)
        if vt < 0:
            return len(data)
        self._flush_stray(events)
        self._in_frame = True
        return vt + 1

    def _add_stray(self, chunk: bytes) -> None:
        room = self._keep - len(self._stray)
        if room > 0:
            self._stray += chunk[:room]
        self._stray_size += len(chunk)

    def _flush_stray(self, events: list[Frame | Fault]) -> None:
        if not self._stray_size:
            return
        events.append(Fault(FaultKind.STRAY, bytes(self._stray), self._stray_size))
        self._stray = bytearray()
        self._stray_size = 0
