"""Reading an acknowledgment a receiver sent back: MSA-1, MSA-2 and the error text.

Pure. Any HL7 v2 ACK (ours or another engine's, v2.2 to v2.8) is read with prpgate's
tokenizer: MSA-1 (code), MSA-2 (the control id acknowledged), and the error text from
the ERR segments (ERR-8 user message from v2.5, else ERR-7 diagnostics, else ERR-3's
text; before v2.5 ERR-1's code text) and MSA-3.
"""

from __future__ import annotations

from dataclasses import dataclass

from prpgate.core import er7
from prpgate.errors import ParseError

__all__ = ["POSITIVE_CODES", "AckReading", "read_ack"]

POSITIVE_CODES = frozenset({"AA", "CA"})
"""MSA-1 codes that say yes: application accept, commit accept."""

_KNOWN_CODES = frozenset({"AA", "AE", "AR", "CA", "CE", "CR"})


@dataclass(frozen=True, slots=True)
class AckReading:
    """What an acknowledgment says.

    ``control_id`` is MSA-2 as sent (``""`` for an empty field or HL7's explicit null
    ``""``); ``text`` joins every error text found (``""`` when there is none);
    ``error_codes`` are the HL7 table 0357 codes of the ERR segments.
    """

    code: str
    control_id: str
    text: str
    error_codes: tuple[str, ...]

    @property
    def is_known(self) -> bool:
        """Whether MSA-1 is one of table 0008's six codes."""
        return self.code in _KNOWN_CODES


def _err_texts(msg: er7.Message) -> tuple[list[str], list[str]]:
    d = msg.delimiters
    texts: list[str] = []
    codes: list[str] = []
    for seg in msg.segments:
        if seg.name != "ERR":
            continue
        text = er7.value(seg, 8, delims=d) or er7.value(seg, 7, delims=d)
        code = er7.value(seg, 3, delims=d)
        if not text:
            text = er7.value(seg, 3, comp=2, delims=d)
        if not code:  # before v2.5: ERR-1 (ELD) repetitions, the code in component 4
            for rep in er7.repetitions(seg, 1, d):
                ce = er7.components(rep, d)[3:4]
                if ce:
                    subs = ce[0].split(d.subcomponent)
                    if subs[0]:
                        codes.append(subs[0])
                    if not text and len(subs) > 1:
                        text = subs[1]
        elif code:
            codes.append(code)
        if text and text not in texts:
            texts.append(text)
    return texts, codes


def read_ack(data: bytes) -> AckReading:
    """Read one acknowledgment (framing already removed).

    Raises ParseError when ``data`` is not an HL7 v2 message or has no MSA segment.
    """
    msg = er7.parse(data)
    msa = msg.first("MSA")
    if msa is None:
        raise ParseError("no MSA segment: not an acknowledgment", segment="MSA", code=100)
    d = msg.delimiters
    code = er7.value(msa, 1, delims=d).strip().upper()
    acked = msa.field(2).strip()
    texts, codes = _err_texts(msg)
    msa3 = er7.value(msa, 3, delims=d).strip()
    if msa3 and not any(msa3 in t for t in texts):
        texts.insert(0, msa3)  # the sender's own words first (MSA-3 before v2.5)
    return AckReading(
        code=code,
        control_id="" if acked == '""' else acked,
        text="; ".join(texts),
        error_codes=tuple(codes),
    )
