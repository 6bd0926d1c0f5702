"""ORU^R01 -> header, patients and LabResult values.

The tokenizer (``er7``) knows nothing of message structure; this module walks the
segments in order. PID starts a patient group, ORC/OBR set the order context, OBX
makes a result. An OBX that comes before any OBR of its patient group waits for
the next OBR (messages with "OBX before OBR" exist); an OBX after SPM or NTE is
still read. Z-segments and segments this adapter does not use are skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

from prpgate.core import er7
from prpgate.core.model import Coding, LabResult, Patient, PatientId, ResultKey, ResultStatus
from prpgate.core.timestamps import parse_ts
from prpgate.core.values import fast_init, remember
from prpgate.errors import ParseError

__all__ = [
    "SUPPORTED_VERSIONS",
    "Header",
    "OruReading",
    "Problem",
    "read_header",
    "read_oru",
]

SUPPORTED_VERSIONS = frozenset(
    {"2.2", "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2"}
)

# HL7 table 0085 (observation result status) -> FHIR Observation.status.
_OBX11 = {
    "F": ResultStatus.FINAL,
    "U": ResultStatus.FINAL,  # status changed to final without retransmitting results
    "C": ResultStatus.CORRECTED,
    "A": ResultStatus.AMENDED,  # amended (v2.7+ usage by some senders)
    "P": ResultStatus.PRELIMINARY,
    "R": ResultStatus.PRELIMINARY,  # results entered, not verified
    "S": ResultStatus.PRELIMINARY,  # partial results
    "I": ResultStatus.REGISTERED,  # specimen in lab, results pending
    "O": ResultStatus.REGISTERED,  # order detail only
    "N": ResultStatus.CANCELLED,  # not asked
    "X": ResultStatus.CANCELLED,  # results cannot be obtained
    "D": ResultStatus.ENTERED_IN_ERROR,  # deletes the OBX record
    "W": ResultStatus.ENTERED_IN_ERROR,  # post original as wrong
}
# HL7 table 0123 (result status, OBR-25), used when OBX-11 is empty.
_OBR25 = {
    "F": ResultStatus.FINAL,
    "C": ResultStatus.CORRECTED,
    "A": ResultStatus.PRELIMINARY,  # some, not all, results available
    "P": ResultStatus.PRELIMINARY,
    "R": ResultStatus.PRELIMINARY,
    "S": ResultStatus.REGISTERED,
    "I": ResultStatus.REGISTERED,
    "O": ResultStatus.REGISTERED,
    "X": ResultStatus.CANCELLED,
}


@dataclass(frozen=True, slots=True)
class Header:
    """What this adapter reads from MSH."""

    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    timestamp: str
    message_type: str
    trigger_event: str
    structure: str
    control_id: str
    processing_id: str
    version: str
    accept_ack_type: str
    application_ack_type: str
    charset: str
    raw_sending_application: str
    raw_sending_facility: str
    raw_receiving_application: str
    raw_receiving_facility: str


@dataclass(frozen=True, slots=True)
class Problem:
    """A part of a message that could not be used, with its location (``OBX[7]-3``)."""

    location: str
    reason: str
    code: int = 102


@dataclass(frozen=True, slots=True)
class OruReading:
    """Everything read from one ORU message."""

    header: Header
    results: tuple[LabResult, ...]
    patients: tuple[Patient, ...]
    problems: tuple[Problem, ...]
    warnings: tuple[str, ...]


def _components(raw: str, d: er7.Delimiters) -> list[str]:
    """Decoded components (sub-component 1 of each) of a raw field's first repetition."""
    if d.repetition in raw:
        raw = raw.split(d.repetition, 1)[0]
    parts = raw.split(d.component)
    if d.subcomponent in raw:
        parts = [p.split(d.subcomponent, 1)[0] for p in parts]
    if d.escape and d.escape in raw:
        parts = [er7.unescape(p, d) for p in parts]
    return parts


def _hd(raw: str, d: er7.Delimiters) -> str:
    """An HD field rendered as an identity: the namespace id, else the universal id.

    The namespace is what mapping authors see and write in senders.yaml; the
    er7 charset override matches on it too.
    """
    if not raw:
        return ""
    comps = _components(raw, d)
    return comps[0] or (comps[1] if len(comps) > 1 else "")


_MSH_FIELDS = 19  # MSH-1 .. MSH-18 are read


def read_header(msg: er7.Message) -> Header:
    """Read MSH; raises ParseError (code 100/101) when MSH is missing or unusable."""
    f = msg.rows[0] if msg.rows else None
    if f is None or f[0] != "MSH":
        raise ParseError("message does not start with MSH", segment="MSH", code=100)
    d = msg.delimiters
    if len(f) < _MSH_FIELDS:
        f = f + [""] * (_MSH_FIELDS - len(f))
    # A sender repeats all of MSH but its time (MSH-7) and control id (MSH-10): the
    # rest is decoded once per distinct text
    key = (d, f[3], f[4], f[5], f[6], f[9], f[11], f[12], f[15], f[16], f[18])
    fixed = _HEADER_PARTS.get(key)
    if fixed is None:
        fixed = remember(_HEADER_PARTS, key, _header_parts(f, d), _HEADER_PARTS_LIMIT)
    sa, sf, ra, rf, mtype, trigger, structure, pid, version, accept, app_ack, charset = fixed
    return Header(
        sa,
        sf,
        ra,
        rf,
        _first(f[7], d),
        mtype,
        trigger,
        structure,
        _first(f[10], d),
        pid,
        version,
        accept,
        app_ack,
        charset,
        f[3],
        f[4],
        f[5],
        f[6],
    )


_HeaderParts = tuple[str, str, str, str, str, str, str, str, str, str, str, str]
_HEADER_PARTS: dict[tuple[object, ...], _HeaderParts] = {}
_HEADER_PARTS_LIMIT = 1024  # distinct MSH texts kept before the memo starts afresh


def _header_parts(f: list[str], d: er7.Delimiters) -> _HeaderParts:
    """The decoded MSH fields a sender repeats, in Header order (without MSH-7/-10)."""
    msh9 = [*_components(f[9], d), "", ""] if f[9] else ["", "", ""]
    return (
        _hd(f[3], d),
        _hd(f[4], d),
        _hd(f[5], d),
        _hd(f[6], d),
        msh9[0],
        msh9[1],
        msh9[2],
        _first(f[11], d),
        _first(f[12], d),
        _first(f[15], d),
        _first(f[16], d),
        _first(f[18], d),
    )


def _check_header(header: Header) -> list[str]:
    """Raise ParseError for what makes a message unacceptable (AR); return warnings."""
    warnings: list[str] = []
    if not header.message_type:
        raise ParseError("MSH-9 message type is empty", segment="MSH", field=9, code=101)
    if header.message_type != "ORU":
        typ = "^".join(p for p in (header.message_type, header.trigger_event) if p)
        raise ParseError(
            f"unsupported message type {typ}: this adapter accepts ORU^R01",
            segment="MSH",
            field=9,
            code=200,
        )
    if header.trigger_event not in ("R01", ""):
        raise ParseError(
            f"unsupported trigger event ORU^{header.trigger_event}: this adapter accepts ORU^R01",
            segment="MSH",
            field=9,
            code=201,
        )
    if not header.trigger_event:
        warnings.append("MSH-9 has no trigger event; read as ORU^R01")
    if not header.control_id:
        raise ParseError("MSH-10 message control id is empty", segment="MSH", field=10, code=101)
    if not header.version:
        raise ParseError("MSH-12 version id is empty", segment="MSH", field=12, code=101)
    if header.version not in SUPPORTED_VERSIONS:
        raise ParseError(
            f"unsupported HL7 version {header.version}",
            segment="MSH",
            field=12,
            code=203,
        )
    return warnings


@dataclass(slots=True)
class _Order:
    key: str = ""
    code: str = ""
    effective: str = ""
    status: str = ""


_EMPTY_ORDER = _Order()


@dataclass(slots=True)
class _Walk:
    """Mutable walk state while reading one message's segments."""

    header: Header
    d: er7.Delimiters
    authorities: Mapping[str, str]
    system_base: str
    default_offset: str
    kinds: _ObxKinds
    patient: Patient | None = None
    order: _Order | None = None
    waiting: list[tuple[list[str], int]] = field(default_factory=list)  # (fields, index)
    results: list[LabResult] = field(default_factory=list)
    patients: list[Patient] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def read_oru(
    msg: er7.Message,
    *,
    assigning_authorities: Mapping[str, str] | None = None,
    identifier_system_base: str = "urn:prpgate:assigning-authority",
    default_offset: str = "+00:00",
) -> OruReading:
    """Read an ORU^R01 into results.

    ``assigning_authorities`` maps an assigning authority namespace id to an
    identifier system URI; authorities with neither a universal id nor a mapping get
    ``identifier_system_base/<namespace>``. Raises ParseError for a message that must
    be rejected as a whole (wrong type or version, unusable MSH); parts that cannot
    be used are returned as ``problems``.
    """
    header = read_header(msg)
    warnings = _check_header(header)
    walk = _Walk(
        header=header,
        d=msg.delimiters,
        authorities=assigning_authorities or {},
        system_base=identifier_system_base.rstrip("/"),
        default_offset=default_offset,
        kinds=_kinds_for(msg.delimiters),
        warnings=[*msg.warnings, *warnings],
    )
    rows = msg.rows
    for index in range(2, len(rows) + 1):  # HL7 segment numbers: MSH is 1
        f = rows[index - 1]
        name = f[0]
        if name == "PID":
            _flush_waiting(walk)
            walk.patient = _read_patient(f, index, walk)
            walk.patients.append(walk.patient)
            walk.order = None
        elif name == "OBR":
            walk.order = _read_order(f, index, walk)
            _flush_waiting(walk)
        elif name == "ORC":
            if walk.order is None or walk.order.key == "":
                placer = f[2] if len(f) > 2 else ""
                filler = f[3] if len(f) > 3 else ""
                walk.order = _Order(key=_order_key(placer, filler, walk.d))
        elif name == "OBX":
            if walk.order is None:
                walk.waiting.append((f, index))
            else:
                _read_obx(f, index, walk)
    _flush_waiting(walk, final=True)
    if not walk.patients and walk.results == []:
        # HL7 table 0357: 100 "segment sequence error" covers a required segment missing
        walk.problems.append(Problem("PID", "message has no PID segment", code=100))
    return OruReading(
        header=header,
        results=tuple(walk.results),
        patients=tuple(walk.patients),
        problems=tuple(walk.problems),
        warnings=tuple(walk.warnings),
    )


def _flush_waiting(walk: _Walk, *, final: bool = False) -> None:
    if not walk.waiting:
        return
    if walk.order is None:
        if not final:
            return
        walk.order = _Order()
        walk.warnings.append("OBX without any OBR: result identity uses no order number")
    pending, walk.waiting = walk.waiting, []
    for f, index in pending:
        _read_obx(f, index, walk)


def _order_key(placer_field: str, filler_field: str, d: er7.Delimiters) -> str:
    """Filler order number (EI: entity id ^ namespace), else placer; '' when neither."""
    for prefix, raw in (("F", filler_field), ("P", placer_field)):
        if raw:
            comps = _components(raw, d)
            if comps[0]:
                ns = comps[1] if len(comps) > 1 else ""
                return f"{prefix}:{comps[0]}^{ns}" if ns else f"{prefix}:{comps[0]}"
    return ""


_OBR_FIELDS = 26  # OBR-1 .. OBR-25 are read


def _read_order(f: list[str], index: int, walk: _Walk) -> _Order:
    d = walk.d
    if len(f) < _OBR_FIELDS:
        f = f + [""] * (_OBR_FIELDS - len(f))
    key = _order_key(f[2], f[3], d)
    if not key and walk.order is not None:
        key = walk.order.key  # ORC carried the order numbers
    if not key:
        walk.warnings.append(
            f"OBR[{index}] has neither filler (OBR-3) nor placer (OBR-2) order number"
        )
    return _Order(
        key=key,
        code=_first(f[4], d),
        effective=_first(f[7], d),
        status=_first(f[25], d),
    )


_PID_FIELDS = 9  # PID-1 .. PID-8 are read


def _read_patient(f: list[str], index: int, walk: _Walk) -> Patient:
    d = walk.d
    if len(f) < _PID_FIELDS:
        f = f + [""] * (_PID_FIELDS - len(f))
    ids: list[PatientId] = []
    for rep in f[3].split(d.repetition) if f[3] else ():
        comps = er7.components(rep, d)
        value = comps[0]
        if not value:
            continue
        authority = comps[3] if len(comps) > 3 else ""
        type_code = comps[4] if len(comps) > 4 else ""
        ids.append(PatientId(_system(authority, walk), value, type_code))
    if not ids:
        # PID-2 (external id, withdrawn in later versions) as a fallback
        legacy = _first(f[2], d)
        if legacy:
            ids.append(PatientId(_system("", walk), legacy, ""))
    names = _components(f[5], d) if f[5] else [""]
    name_family = names[0]
    name_given = names[1] if len(names) > 1 else ""
    name = (
        f"{name_given} {name_family}" if name_given and name_family else name_given or name_family
    )
    birth = _first(f[7], d)
    sex = _first(f[8], d)
    if not ids:
        walk.problems.append(
            Problem(f"PID[{index}]-3", "PID-3 has no patient identifier", code=101)
        )
        return Patient(PatientId("", ""), (), name, birth, sex)
    if len(ids) == 1:
        return Patient(ids[0], (), name, birth, sex)
    primary = next((i for i in ids if i.type_code == "MR"), ids[0])
    others = tuple(i for i in ids if i is not primary)
    return Patient(primary, others, name, birth, sex)


def _system(authority: str, walk: _Walk) -> str:
    """Identifier system URI for an assigning authority (HD rendered with sub-components)."""
    sub = walk.d.subcomponent
    parts = authority.split(sub) if authority else []
    namespace = parts[0] if parts else ""
    universal = parts[1] if len(parts) > 1 else ""
    utype = (parts[2] if len(parts) > 2 else "").upper()
    if namespace and namespace in walk.authorities:
        return walk.authorities[namespace]
    if universal:
        if utype == "ISO":
            return f"urn:oid:{universal}"
        if utype == "UUID":
            return f"urn:uuid:{universal}"
        if utype in ("URI", "URL") or universal.startswith(("http://", "https://", "urn:")):
            return universal
        if namespace in walk.authorities:
            return walk.authorities[namespace]
    if namespace:
        return f"{walk.system_base}/{quote(namespace, safe='')}"
    # No assigning authority: scope the MRN to the sending facility.
    facility = walk.header.sending_facility or walk.header.sending_application
    return f"{walk.system_base}/facility/{quote(facility, safe='')}"


def _codings(raw: str, d: er7.Delimiters) -> tuple[Coding, ...]:
    """OBX-3 primary (components 1-3) and alternate (4-6) codings of a raw field."""
    if not raw:
        return ()
    if d.repetition in raw:
        raw = raw.split(d.repetition, 1)[0]
    comps = raw.split(d.component)
    if d.escape and d.escape in raw:
        comps = [er7.unescape(c, d) for c in comps]
    if len(comps) < 6:
        comps += [""] * (6 - len(comps))
    if comps[3]:
        alternate = Coding(comps[5], comps[3], comps[4])
        if comps[0]:
            return (Coding(comps[2], comps[0], comps[1]), alternate)
        return (alternate,)
    if comps[0]:
        return (Coding(comps[2], comps[0], comps[1]),)
    return ()


def _first(raw: str, d: er7.Delimiters) -> str:
    """Decoded first component of the first repetition of a raw field (hot path)."""
    if d.repetition in raw:
        raw = raw.split(d.repetition, 1)[0]
    if d.component in raw:
        raw = raw.split(d.component, 1)[0]
    if d.subcomponent in raw:
        raw = raw.split(d.subcomponent, 1)[0]
    if d.escape and d.escape in raw:
        return er7.unescape(raw, d)
    return raw


_OBX_FIELDS = 15  # OBX-1 .. OBX-14 are read


@dataclass(frozen=True, slots=True)
class _ObxKind:
    """What an OBX says besides its value, set id and time: a lab repeats these, so
    they are decoded once per distinct (OBX-2, -3, -6, -7, -8, -11) and delimiters."""

    codes: tuple[Coding, ...]
    code_key: str
    value_type: str
    unit_code: str
    unit_system: str
    reference_range: str
    flags: tuple[str, ...]
    status: ResultStatus | None  # None: OBX-11 is empty, OBR-25 decides


_ObxKinds = dict[tuple[str, str, str, str, str, str], _ObxKind]
# per delimiters (looked up once per message, not hashed again per OBX), then per text
_OBX_KINDS: dict[er7.Delimiters, _ObxKinds] = {}
_OBX_KINDS_LIMIT = 8192  # distinct kinds kept per delimiters before the memo starts afresh


def _kinds_for(d: er7.Delimiters) -> _ObxKinds:
    kinds = _OBX_KINDS.get(d)
    if kinds is None:
        if len(_OBX_KINDS) >= 64:  # senders use a handful of delimiter sets
            _OBX_KINDS.clear()
        kinds = _OBX_KINDS[d] = {}
    return kinds


def _obx_kind(f: list[str], d: er7.Delimiters, kinds: _ObxKinds) -> _ObxKind:
    key = (f[2], f[3], f[6], f[7], f[8], f[11])
    kind = kinds.get(key)
    if kind is None:
        kind = remember(kinds, key, _decode_obx_kind(f, d), _OBX_KINDS_LIMIT)
    return kind


def _decode_obx_kind(f: list[str], d: er7.Delimiters) -> _ObxKind:
    codes = _codings(f[3], d)
    unit_code = unit_system = ""
    if f[6]:
        units = er7.components(f[6].split(d.repetition, 1)[0], d)
        unit_code = units[0] or (units[1] if len(units) > 1 else "")
        unit_system = units[2] if len(units) > 2 else ""
    flags = (
        tuple(x for x in (er7.unescape(r, d) for r in f[8].split(d.repetition)) if x)
        if f[8]
        else ()
    )
    status_code = _first(f[11], d)
    return _ObxKind(
        codes=codes,
        code_key=f"{codes[0].system}^{codes[0].code}" if codes else "",
        value_type=_first(f[2], d),
        unit_code=unit_code,
        unit_system=unit_system,
        reference_range=_first(f[7], d),
        flags=flags,
        status=_OBX11.get(status_code.upper(), ResultStatus.UNKNOWN) if status_code else None,
    )


def _value_text(raw_value: str, value_type: str, d: er7.Delimiters) -> tuple[str, str]:
    """(comparator, value text) of OBX-5 as sent; SN keeps its comparator apart."""
    rep = d.repetition
    if not raw_value:
        return "", ""
    if value_type == "SN":
        sn = [*er7.components(raw_value.split(rep, 1)[0], d), "", "", "", ""]
        comparator, num1, sep, num2 = sn[0], sn[1], sn[2], sn[3]
        return comparator, (f"{num1}{sep}{num2}" if (sep or num2) else num1)
    if rep in raw_value:
        return "", " ~ ".join(er7.unescape(r, d) for r in raw_value.split(rep))
    if value_type in ("CE", "CWE", "CNE"):
        comps = er7.components(raw_value, d)
        return "", (comps[1] if len(comps) > 1 and comps[1] else comps[0])
    if d.escape and d.escape in raw_value:
        return "", er7.unescape(raw_value, d)
    return "", raw_value


def _read_obx(f: list[str], index: int, walk: _Walk) -> None:
    patient = walk.patient
    if patient is None:
        walk.problems.append(
            Problem(f"OBX[{index}]", "result with no patient (no PID before it)", 100)
        )
        return
    d = walk.d
    if len(f) < _OBX_FIELDS:
        f = f + [""] * (_OBX_FIELDS - len(f))
    kind = _obx_kind(f, d, walk.kinds)
    if not kind.codes:
        walk.problems.append(
            Problem(f"OBX[{index}]-3", "OBX-3 observation identifier is empty", 101)
        )
        return
    comparator, value_text = _value_text(f[5], kind.value_type, d)
    order = walk.order or _EMPTY_ORDER
    status = kind.status or _OBR25.get(order.status.upper(), ResultStatus.UNKNOWN)
    effective_raw = (_first(f[14], d) if f[14] else "") or order.effective or walk.header.timestamp
    ts = parse_ts(effective_raw, walk.default_offset)
    facility = walk.header.sending_facility
    sub_id = _first(f[4], d) if f[4] else ""
    walk.results.append(
        LabResult(
            ResultKey(facility, order.key, kind.code_key, sub_id),
            patient,
            kind.codes,
            kind.value_type,
            value_text,
            kind.unit_code,
            status,
            ts.fhir if ts else "",
            facility,
            f"OBX[{index}]",
            comparator,
            kind.unit_system,
            kind.reference_range,
            kind.flags,
            order.code,
            ts.sort_key if ts else "",
        )
    )


fast_init(Header, Problem, OruReading, _ObxKind)
