"""Inputs for the fault suite, made from the team's fixtures so the patients (names, MRNs,
birth dates) are the fixture patients the log grep looks for.

HL7 v2: every message of the good fixtures in turn (67 messages, 64 patients), in original
mode (MSH-15/16 emptied: AA/AE/AR), each with its own control id and its order numbers
suffixed, so each is a new result. FHIR: the fixture WBC Observation with its own
identifier and value, for one of 40 patients whose MRNs extend the fixture's.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from prpgate.core import er7
from prpgate.send.outgoing import normalise_segment_ends
from tests.conftest import FIXTURES, ROOT

__all__ = ["Input", "cbc_message", "observation"]

_WBC = ("1.6", "6.0", "23.4")  # leukopenia, normal, leukocytosis
_ORDER = re.compile(rb"\b[A-Z]{2}4\d{4}\b")  # filler and placer order numbers
_OBSERVATION = json.loads((ROOT / "fixtures-fhir" / "observation_wbc_high.json").read_text())


@dataclass
class Input:
    """One input and what became of it: sends, and the answer that settled it."""

    key: str  # MSH-10, or the X-Request-Id
    raw: bytes
    sends: int = 0
    answer: str = ""  # AA, AE, AR (MLLP) or the HTTP status; "" until answered
    acked: bool = False  # a positive answer: AA, or HTTP 200/201


def _templates() -> list[bytes]:
    out = []
    for path in sorted(FIXTURES.glob("*.hl7")):
        for part in er7.split_messages(path.read_bytes()):
            data = normalise_segment_ends(part.data)
            msh, rest = data.split(b"\r", 1)
            fields = msh.split(b"|")
            for i in (14, 15):  # MSH-15, MSH-16 emptied: original mode
                if len(fields) > i:
                    fields[i] = b""
            out.append(b"|".join(fields) + b"\r" + rest)
    return out


_TEMPLATES = _templates()


def cbc_message(tag: str, n: int) -> Input:
    """Message number ``n`` of a stream: fixture message ``n`` modulo 67, control id
    ``<tag><n>``, order numbers suffixed with it."""
    control = f"{tag}{n:06d}"
    msh, rest = _TEMPLATES[n % len(_TEMPLATES)].split(b"\r", 1)
    fields = msh.split(b"|")
    fields[9] = control.encode()  # MSH-10
    rest = _ORDER.sub(lambda m: m.group(0) + control.encode(), rest)
    return Input(control, b"|".join(fields) + b"\r" + rest)


def observation(tag: str, n: int) -> Input:
    """The fixture WBC Observation number ``n``: its own identifier and value; the key is
    the X-Request-Id it is sent with."""
    res: dict[str, Any] = json.loads(json.dumps(_OBSERVATION))
    res["identifier"][0]["value"] = f"FO-{tag}-{n:06d}"
    # one of 40 patients, each MRN holding the fixture's (so the log grep finds a leak)
    patient = res["contained"][0]["identifier"][0]
    patient["value"] = f"{patient['value']}{tag}{n % 40:02d}"
    res["valueQuantity"]["value"] = float(_WBC[n % len(_WBC)])
    return Input(f"{tag}-{n:06d}", json.dumps(res).encode())
