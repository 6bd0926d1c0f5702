"""Explanations: the words and records that say why a decision was made.

Every decision carries its chain (DESIGN.md): rule, value and unit as sent, the
normalised value, threshold, the lab's range and abnormal flag (and whether the
lab and the rule pack disagree), and the source message. ``issue_detail`` writes
DetectedIssue.detail; ``explain_results`` writes the records ``prpgate explain``
shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from prpgate.core.model import Coding, Comparator, LabResult, Normalised, Unmapped
from prpgate.core.rules import Direction, IssueChange, PatientDecisions, Rule, judge

__all__ = ["expand_result", "explain_results", "issue_detail"]


def issue_detail(change: IssueChange, control: str) -> str:
    n = change.normalised
    rule = change.rule
    if change.status == "entered-in-error" or n is None or change.judgement is None:
        return change.reason
    r = n.result
    sign = ">" if rule.direction._value_ == "above" else "<"
    cmp = n.comparator._value_ if n.comparator else ""
    j = change.judgement
    parts = [
        f"{rule.display}: {n.analyte.upper()} {cmp}{n.value} {n.unit}".rstrip(),
        f"(sent {r.comparator_text}{r.value_text} {r.unit_text})".replace(" )", ")"),
        f"{sign} {j.threshold} {n.unit}, severity {j.severity._value_}" if j.severity else "",
    ]
    text = " ".join(p for p in parts if p) + "."
    text += " " + _lab_opinion(r, j.met)
    sender = f" from {r.sending_facility}" if r.sending_facility else ""
    text += f" Source: message {control} {r.source}{sender}."
    return text


_ABNORMAL = {"H", "HH", "L", "LL", "A", "AA", ">", "<", "HU", "LU", "POS", "W"}


def _lab_disagreement(r: LabResult, met: bool | None) -> str:
    """Where the lab's abnormal flag (OBX-8) and the rule pack disagree, say so."""
    return _flag_disagreement(r.abnormal_flags, met)


def _flag_disagreement(flags: Sequence[str], met: bool | None) -> str:
    if not flags or met is None:
        return ""
    abnormal = any(f.upper() in _ABNORMAL for f in flags)
    if met and not abnormal:
        return "the lab flags it normal but the rule pack finds it"
    if not met and abnormal:
        return "the lab flags it abnormal but the rule pack does not find it"
    return ""


def _lab_opinion(r: LabResult, met: bool | None) -> str:
    lab_range = f"lab range {r.reference_range}" if r.reference_range else "no lab range"
    flags = "~".join(r.abnormal_flags)
    lab_flag = f"flag {flags}" if flags else "no abnormal flag"
    disagreement = _lab_disagreement(r, met)
    return f"Lab: {lab_range}, {lab_flag}{'; ' + disagreement if disagreement else ''}."


# Memos of what a rule pack and a lab repeat: the inputs recorded for a rule, and the
# text of a codes tuple (the reader hands out one tuple per distinct OBX-3). Keyed by
# identity, with the object held in the entry so the identity stays its.
_RULE_INPUTS: dict[int, tuple[Rule, list[str]]] = {}
_CODE_TEXTS: dict[int, tuple[tuple[Coding, ...], tuple[str, ...]]] = {}
_MEMO_LIMIT = 4096


def _rule_inputs(rule: Rule) -> list[str]:
    found = _RULE_INPUTS.get(id(rule))
    if found is None or found[0] is not rule:
        found = (rule, [rule.id, rule.direction.value, str(rule.moderate), str(rule.high)])
        if len(_RULE_INPUTS) >= _MEMO_LIMIT:
            _RULE_INPUTS.clear()
        _RULE_INPUTS[id(rule)] = found
    return found[1]


def _code_texts(codes: tuple[Coding, ...]) -> tuple[str, ...]:
    found = _CODE_TEXTS.get(id(codes))
    if found is None or found[0] is not codes:
        found = (codes, tuple(f"{c.system}^{c.code}^{c.display}" for c in codes))
        if len(_CODE_TEXTS) >= _MEMO_LIMIT:
            _CODE_TEXTS.clear()
        _CODE_TEXTS[id(codes)] = found
    return found[1]


def explain_results(
    items: Sequence[Normalised | Unmapped], d: PatientDecisions
) -> list[dict[str, Any]]:
    """The explanation records of one patient's results, Flag changes and retractions.

    A result record keeps what was read and how it was normalised; for a deciding
    result, ``rules`` lists each rule applied as ``[id, direction, moderate, high]``.
    Records are for the store, which writes them as JSON: their lists may be tuples,
    and tuples shared between records (the codes of one OBX-3).
    The verdicts and their words are not stored: they are a pure function of those
    inputs (``judge``), and ``expand_result`` derives them when someone asks.
    """
    applied: dict[str, list[list[str]]] = {}
    for key, j in d.judgements:
        applied.setdefault(key, []).append(_rule_inputs(j.rule))
    out: list[dict[str, Any]] = []
    for item in items:
        r = item.result
        key = r.key.text
        status = r.status
        # status._value_: Enum.value is a descriptor call; the hot path reads the attribute
        record: dict[str, Any] = {
            "kind": "result",
            "source": r.source,
            "result": key,
            "code": _code_texts(r.codes),
            "status": status._value_,
            "sent": r.comparator_text + r.value_text,
            "sent_unit": r.unit_text,
            "reference_range": r.reference_range,
            "abnormal_flags": r.abnormal_flags,
            "effective": r.effective,
        }
        if isinstance(item, Normalised):
            record["analyte"] = item.analyte
            record["value"] = str(item.value)
            record["comparator"] = item.comparator._value_ if item.comparator else None
            record["unit"] = item.unit
            record["ucum"] = item.ucum
            record["factor"] = str(item.factor)
            if status.is_deciding:
                record["rules"] = applied.get(key, [])
        else:
            record["analyte"] = item.analyte or None
            record["unmapped"] = item.reason.value
            record["detail"] = item.detail
        out.append(record)
    for f in d.flags:
        out.append(
            {
                "kind": "flag",
                "rule": f.rule.id,
                "status": f.status,
                "since": f.since,
                "reason": f.reason,
            }
        )
    for c in d.issues:
        if c.status == "entered-in-error":
            out.append(
                {
                    "kind": "retraction",
                    "rule": c.rule.id,
                    "result": c.result_key,
                    "reason": c.reason,
                }
            )
    return out


def expand_result(record: dict[str, Any]) -> dict[str, Any]:
    """A stored result record with its verdicts in words: ``judgements`` (rule, met,
    severity, threshold, direction, note), a ``note`` for a result that decides
    nothing, and ``lab_disagrees`` where the lab's flag and the rule pack differ.

    Records of other kinds, and unmapped results, come back unchanged.
    """
    if record.get("kind") != "result" or "value" not in record:
        return record
    out = dict(record)
    rules = out.pop("rules", None)
    if rules is None:
        out["judgements"] = []
        out["note"] = f"status {record['status']}: stored, decides nothing"
        return out
    value = Decimal(record["value"])
    comparator = Comparator(record["comparator"]) if record.get("comparator") else None
    judgements = []
    verdicts: list[bool | None] = []
    for rule_id, direction, moderate, high in rules:
        rule = Rule(
            rule_id,
            record["analyte"],
            Direction(direction),
            Decimal(moderate),
            Decimal(high),
            rule_id,
            rule_id,
        )
        j = judge(rule, value, comparator)
        verdicts.append(j.met)
        judgements.append(
            {
                "rule": rule_id,
                "met": j.met,
                "severity": j.severity.value if j.severity else None,
                "threshold": str(j.threshold),
                "direction": direction,
                "note": j.note,
            }
        )
    out["judgements"] = judgements
    if judgements:
        met = True if True in verdicts else (None if None in verdicts else False)
        flags = tuple(record.get("abnormal_flags") or ())
        disagreement = _flag_disagreement(flags, met)
        if disagreement:
            out["lab_disagrees"] = disagreement
    return out
