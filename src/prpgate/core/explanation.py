"""Explanations: the words and records that say why a decision was made.

Every decision carries its chain (DESIGN.md): rule, value and unit as sent, the
normalised value, threshold, the lab's range and abnormal flag (and whether the
lab and the rule pack disagree), and the source message. ``issue_detail`` writes
DetectedIssue.detail; ``explain_results`` writes the records ``prpgate explain``
shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prpgate.core.model import LabResult, Normalised, Unmapped
from prpgate.core.rules import IssueChange, PatientDecisions

__all__ = ["explain_results", "issue_detail"]


def issue_detail(change: IssueChange, control: str) -> str:
    n = change.normalised
    rule = change.rule
    if change.status == "entered-in-error" or n is None or change.judgement is None:
        return change.reason
    r = n.result
    sign = ">" if rule.direction.value == "above" else "<"
    cmp = n.comparator.value if n.comparator else ""
    parts = [
        f"{rule.display}: {n.analyte.upper()} {cmp}{n.value} {n.unit}".rstrip(),
        f"(sent {r.comparator_text}{r.value_text} {r.unit_text})".replace(" )", ")"),
        f"{sign} {change.judgement.threshold} {n.unit}, severity {change.judgement.severity.value}"
        if change.judgement.severity
        else "",
    ]
    text = " ".join(p for p in parts if p) + "."
    text += " " + _lab_opinion(r, change.judgement.met)
    text += f" Source: message {control} {r.source} from {r.sending_facility}."
    return text


_ABNORMAL = {"H", "HH", "L", "LL", "A", "AA", ">", "<", "HU", "LU", "POS", "W"}


def _lab_disagreement(r: LabResult, met: bool | None) -> str:
    """Where the lab's abnormal flag (OBX-8) and the rule pack disagree, say so."""
    if not r.abnormal_flags or met is None:
        return ""
    abnormal = any(f.upper() in _ABNORMAL for f in r.abnormal_flags)
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


def explain_results(
    items: Sequence[Normalised | Unmapped], d: PatientDecisions
) -> list[dict[str, Any]]:
    by_key: dict[str, list[dict[str, Any]]] = {}
    for key, j in d.judgements:
        by_key.setdefault(key, []).append(
            {
                "rule": j.rule.id,
                "met": j.met,
                "severity": j.severity.value if j.severity else None,
                "threshold": str(j.threshold),
                "direction": j.rule.direction.value,
                "note": j.note,
            }
        )
    out: list[dict[str, Any]] = []
    for item in items:
        r = item.result
        record: dict[str, Any] = {
            "kind": "result",
            "source": r.source,
            "result": r.key.text,
            "code": [f"{c.system}^{c.code}^{c.display}" for c in r.codes],
            "status": r.status.value,
            "sent": f"{r.comparator_text}{r.value_text}",
            "sent_unit": r.unit_text,
            "reference_range": r.reference_range,
            "abnormal_flags": list(r.abnormal_flags),
            "effective": r.effective,
        }
        if isinstance(item, Normalised):
            record.update(
                analyte=item.analyte,
                value=str(item.value),
                comparator=item.comparator.value if item.comparator else None,
                unit=item.unit,
                ucum=item.ucum,
                factor=str(item.factor),
                judgements=by_key.get(r.key.text, []) if r.status.is_deciding else [],
            )
            if not r.status.is_deciding:
                record["note"] = f"status {r.status.value}: stored, decides nothing"
            elif record["judgements"]:
                verdicts = [j["met"] for j in record["judgements"]]
                met = True if True in verdicts else (None if None in verdicts else False)
                disagreement = _lab_disagreement(r, met)
                if disagreement:
                    record["lab_disagrees"] = disagreement
        else:
            record.update(
                analyte=item.analyte or None, unmapped=item.reason.value, detail=item.detail
            )
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
