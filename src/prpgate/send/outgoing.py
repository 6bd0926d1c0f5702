"""The HL7 v2 messages ``prpgate send`` sends: read exactly as replay reads them, with
segment ends normalised for the wire, and what each message asks its receiver to answer.

Pure: values in, values out (reading files is ``read_hl7_files``'s one job).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from prpgate.core import mllp
from prpgate.core.ack import read_context
from prpgate.core.fhir_request import looks_like_fhir
from prpgate.errors import FramingError
from prpgate.replay import discover, iter_inputs

__all__ = [
    "AckWait",
    "Outgoing",
    "ack_wait",
    "normalise_segment_ends",
    "outgoing",
    "read_hl7_files",
]

_CR_RUN = re.compile(rb"\r[\r\n]*")  # a terminator, LFs right after it and blank segments
_SEGMENT_START = re.compile(rb"[A-Z][A-Z0-9]{2}")


@dataclass(frozen=True, slots=True)
class AckWait:
    """The acknowledgments a message asks for (MSH-15/MSH-16, HL7 table 0155).

    ``original``: MSH-15 and MSH-16 are empty: one ACK (AA/AE/AR) answers it.
    Enhanced mode: ``accept`` when MSH-15 is AL, SU or empty (a commit ACK comes, or
    for SU its absence is the failure); ``application`` when MSH-16 is AL or SU (an
    application ACK follows the CA). ER and NE promise nothing on success, so nothing
    is awaited for them.
    """

    original: bool
    accept: bool
    application: bool

    @property
    def expects_answer(self) -> bool:
        """Whether any acknowledgment is awaited at all."""
        return self.original or self.accept or self.application

    def describe(self) -> str:
        """``original``, ``accept``, ``accept+application``, ``application`` or ``none``."""
        if self.original:
            return "original"
        parts = [p for p, on in (("accept", self.accept), ("application", self.application)) if on]
        return "+".join(parts) or "none"


def ack_wait(accept_type: str, application_type: str) -> AckWait:
    """What to wait for, from MSH-15 and MSH-16 as sent (case and spaces ignored)."""
    acc, app = accept_type.strip().upper(), application_type.strip().upper()
    if not acc and not app:
        return AckWait(original=True, accept=False, application=False)
    return AckWait(
        original=False,
        accept=acc not in ("NE", "ER"),  # empty reads as AL, as the listener reads it
        application=app in ("AL", "SU"),  # empty reads as NE
    )


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to send.

    ``source`` is replay's label (``path`` or ``path#n``); ``number`` is 1-based in its
    file. ``data`` is the normalised message, ``framed`` its MLLP block (``b""`` when
    ``problem`` says why it cannot be sent). ``control_id`` is MSH-10 as sent (``""``
    when unreadable), the key its ACK's MSA-2 must carry.
    """

    file: str
    number: int
    source: str
    data: bytes
    framed: bytes
    control_id: str
    wait: AckWait
    message_type: str
    version: str
    problem: str = ""


def normalise_segment_ends(data: bytes) -> bytes:
    """Segment ends as ``\\r``, each segment (the last too) terminated, blank lines dropped.

    Read as the tokenizer reads a message: when it holds a CR, ``\\r`` and ``\\r\\n`` end
    segments and any other ``\\n`` is text (multi-line OBX-5/NTE text stays as sent);
    otherwise ``\\n`` ends segments, and a line that does not start with a segment id
    continues the previous segment as text (joined with ``\\n``).
    """
    body = data.strip(b"\r\n")
    if not body:
        return data
    if b"\r" in body:
        return _CR_RUN.sub(b"\r", body) + b"\r"
    fs = body[3:4] if body.startswith(b"MSH") else b"|"
    segments: list[bytes] = []
    for line in body.split(b"\n"):
        if not line.strip():
            continue
        head = line.split(fs, 1)[0] if fs else line
        if segments and not (len(head) == 3 and _SEGMENT_START.fullmatch(head)):
            segments[-1] += b"\n" + line
        else:
            segments.append(line)
    return b"\r".join(segments) + b"\r"


def _msh9(data: bytes) -> str:
    if not data.startswith(b"MSH") or len(data) < 4:
        return ""
    first = data.split(b"\r", 1)[0]
    fields = first.split(data[3:4])
    if len(fields) <= 8:
        return ""
    return fields[8].decode("latin-1").strip()


def outgoing(data: bytes, *, file: str, number: int, source: str) -> Outgoing:
    """The message ``data`` (one of ``er7.split_messages``' pieces) ready to send; never raises."""
    body = normalise_segment_ends(data)
    ctx = read_context(body)
    control = ctx.control_id.strip()
    wait = ack_wait(ctx.accept_ack_type, ctx.application_ack_type)
    problem = ""
    framed = b""
    if not body.strip(b" \t\r\n\x00"):
        problem = "empty input: no message to send"
    elif looks_like_fhir(data):
        problem = "FHIR JSON, not HL7 v2: send it to a FHIR base URL (http:// or https://)"
    else:
        try:
            framed = mllp.frame(body)
        except FramingError:
            problem = "contains MLLP framing bytes (0x0B or 0x1C): it cannot be framed"
    return Outgoing(
        file=file,
        number=number,
        source=source,
        data=body,
        framed=framed,
        control_id="" if control == '""' else control,
        wait=wait,
        message_type=_msh9(body),
        version=ctx.version,
        problem=problem,
    )


def read_hl7_files(paths: Sequence[Path]) -> list[Outgoing]:
    """Every input in the files and folders, in replay's order and with replay's labels
    (``replay.discover``, ``replay.iter_inputs``); FHIR inputs among them are kept with
    the problem that they cannot go over MLLP. Raises FileNotFoundError for a path that
    does not exist."""
    out: list[Outgoing] = []
    for path in discover(paths):
        for number, (label, data) in enumerate(iter_inputs([path]), 1):
            out.append(outgoing(data, file=str(path), number=number, source=label))
    return out
