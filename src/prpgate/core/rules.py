"""Rule pack evaluation: normalised results + patient state -> findings and Flag changes.

Semantics (DESIGN.md, Evaluator):

* A rule compares an analyte's canonical value with a moderate and a high
  threshold, ``above`` (value > threshold) or ``below`` (value < threshold).
  A comparator value decides only where the comparator settles the rule.
* Only final/corrected/amended results decide. A result identity's deciding
  version is replaced by a later deciding version (a correction) and removed by
  an entered-in-error version (a retraction); preliminary and cancelled versions
  change nothing.
* A DetectedIssue exists per (result identity, rule) while that result's deciding
  version meets the rule; when it no longer does, it becomes entered-in-error.
* The Flag for (patient, rule) is active while the latest (by effective time,
  then arrival) deciding result of the analyte whose verdict is settled meets the
  rule, and inactive once it does not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from types import MappingProxyType

from prpgate.core.model import Comparator, Normalised
from prpgate.core.state import OutputKind, PatientState, StoredOutput, StoredResult
from prpgate.core.values import fast_init

__all__ = [
    "Direction",
    "FlagChange",
    "IssueChange",
    "Judgement",
    "PatientDecisions",
    "Rule",
    "Severity",
    "decide",
    "judge",
]


class Direction(Enum):
    """Which side of the thresholds a finding lies on."""

    ABOVE = "above"
    BELOW = "below"


class Severity(Enum):
    """FHIR DetectedIssue.severity values a rule can produce."""

    MODERATE = "moderate"
    HIGH = "high"


# members used on the hot path, as module constants: reading a member off its Enum
# class is a descriptor call (see model.ResultStatus.is_deciding)
_ABOVE = Direction.ABOVE
_HIGH = Severity.HIGH
_MODERATE = Severity.MODERATE
_GT, _GE, _LT, _LE = Comparator.GT, Comparator.GE, Comparator.LT, Comparator.LE
_DETECTED_ISSUE = OutputKind.DETECTED_ISSUE


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule of the pack; thresholds are in the analyte's canonical unit."""

    id: str
    analyte: str
    direction: Direction
    moderate: Decimal
    high: Decimal
    display: str
    flag_text: str
    unit: str = ""


@dataclass(frozen=True, slots=True, init=False)
class Judgement:
    """The verdict of one rule on one value (with its comparator, if any).

    ``met`` is True/False when settled, None when a comparator leaves it open.
    ``threshold`` is the threshold the verdict rests on; ``note`` says why in words.
    """

    rule: Rule
    met: bool | None
    severity: Severity | None
    threshold: Decimal
    value: Decimal
    comparator: Comparator | None
    _note: str | None = field(compare=False, repr=False)

    def __init__(
        self,
        rule: Rule,
        met: bool | None,
        severity: Severity | None,
        threshold: Decimal,
        value: Decimal,
        comparator: Comparator | None,
    ) -> None:
        _judgement_rule(self, rule)
        _judgement_met(self, met)
        _judgement_severity(self, severity)
        _judgement_threshold(self, threshold)
        _judgement_value(self, value)
        _judgement_comparator(self, comparator)
        _judgement_note(self, None)

    @property
    def note(self) -> str:
        """The verdict in words (written when first asked, then kept: most verdicts are
        never shown, a finding's is shown by its DetectedIssue and its Flag)."""
        note = self._note
        if note is None:
            note = self._words()
            _judgement_note(self, note)
        return note

    def _words(self) -> str:
        rule, comparator = self.rule, self.comparator
        sign = ">" if rule.direction is Direction.ABOVE else "<"
        shown = f"{comparator._value_ if comparator else ''}{self.value}"
        if self.severity is Severity.HIGH:
            return f"{shown} {sign} {rule.high} (high threshold)"
        if self.severity is Severity.MODERATE:
            high = _settles(rule.direction, self.value, comparator, rule.high)
            extra = ""
            if high is not False:
                extra = f"; whether {sign} {rule.high} is not settled by {shown}"
            return f"{shown} {sign} {rule.moderate} (moderate threshold){extra}"
        if self.met is False:
            return f"{shown} is not {sign} {rule.moderate}"
        return f"{shown} does not settle whether the value is {sign} {rule.moderate}"


# the slots' own setters: the class is frozen, and object.__setattr__ costs more
_judgement_rule = Judgement.__dict__["rule"].__set__
_judgement_met = Judgement.__dict__["met"].__set__
_judgement_severity = Judgement.__dict__["severity"].__set__
_judgement_threshold = Judgement.__dict__["threshold"].__set__
_judgement_value = Judgement.__dict__["value"].__set__
_judgement_comparator = Judgement.__dict__["comparator"].__set__
_judgement_note = Judgement.__dict__["_note"].__set__


def _settles(
    direction: Direction, value: Decimal, cmp: Comparator | None, t: Decimal
) -> bool | None:
    """Is 'x above/below t' settled for a true value x described by (cmp, value)?"""
    if direction is _ABOVE:
        if cmp is None:
            return value > t
        if cmp is _GT:
            return True if value >= t else None
        if cmp is _GE:
            return True if value > t else None
        # x < value or x <= value: not above t when value <= t
        return False if value <= t else None
    if cmp is None:
        return value < t
    if cmp is _LT:
        return True if value <= t else None
    if cmp is _LE:
        return True if value < t else None
    # x > value or x >= value: not below t when value >= t
    return False if value >= t else None


def judge(rule: Rule, value: Decimal, comparator: Comparator | None) -> Judgement:
    """Apply one rule to a canonical value (with its comparator, if any)."""
    direction = rule.direction
    if comparator is None:  # the common case, _settles without a comparator, inline
        hi, mod = rule.high, rule.moderate
        if value > hi if direction is _ABOVE else value < hi:
            return Judgement(rule, True, _HIGH, hi, value, None)
        if value > mod if direction is _ABOVE else value < mod:
            return Judgement(rule, True, _MODERATE, mod, value, None)
        return Judgement(rule, False, None, mod, value, None)
    if _settles(direction, value, comparator, rule.high) is True:
        return Judgement(rule, True, _HIGH, rule.high, value, comparator)
    moderate = _settles(direction, value, comparator, rule.moderate)
    if moderate is True:
        return Judgement(rule, True, _MODERATE, rule.moderate, value, comparator)
    return Judgement(rule, moderate, None, rule.moderate, value, comparator)


@dataclass(frozen=True, slots=True)
class IssueChange:
    """A DetectedIssue to create/update (``status`` final) or retract (entered-in-error).

    ``result`` is the deciding result it rests on (for a retraction: the result
    identity whose new version withdrew it); ``judgement`` is None on retraction.
    """

    rule: Rule
    result_key: str
    status: str
    judgement: Judgement | None
    normalised: Normalised | None
    existing: StoredOutput | None
    reason: str


@dataclass(frozen=True, slots=True)
class FlagChange:
    """The patient's Flag for a rule becomes active or inactive.

    ``trigger`` is the result of this message that caused the change; ``decider``
    the stored result whose verdict now decides (None when no deciding result
    remains). ``since`` is the FHIR dateTime that starts (active) or ends
    (inactive) the Flag's period.
    """

    rule: Rule
    status: str
    since: str
    trigger_key: str
    decider: StoredResult | None
    existing: StoredOutput | None
    reason: str


@dataclass(frozen=True, slots=True)
class PatientDecisions:
    """What one message decides for one patient.

    ``results`` are the deciding versions to store (upserts), ``removed`` the result
    identities whose deciding version was retracted. ``judgements`` records every
    rule verdict for the explanation, met or not.
    """

    patient_key: str
    results: tuple[StoredResult, ...]
    removed: tuple[str, ...]
    issues: tuple[IssueChange, ...]
    flags: tuple[FlagChange, ...]
    judgements: tuple[tuple[str, Judgement], ...]


def _latest_first(results: Iterable[StoredResult]) -> list[StoredResult]:
    return sorted(results, key=lambda r: (r.effective_sort, r.seq), reverse=True)


def decide(
    rules_by_analyte: Mapping[str, Sequence[Rule]],
    normalised: Sequence[Normalised],
    retracted: Sequence[Normalised | str],
    state: PatientState,
    *,
    seq: int,
    source: str,
) -> PatientDecisions:
    """Decide for one patient.

    ``normalised`` are this message's mapped results of the patient (any status);
    ``retracted`` the result identities (a Normalised or a bare key) this message
    marks entered-in-error. ``state`` is the patient's stored state, ``seq`` the
    message's arrival number and ``source`` its label (e.g. the control id).
    """
    current: dict[str, StoredResult] = {r.key: r for r in state.results}
    issues_by_result: dict[str, list[StoredOutput]] = {}
    flags_by_rule: dict[str, StoredOutput] = {}
    for out in state.outputs:
        if out.kind is _DETECTED_ISSUE:
            issues_by_result.setdefault(out.result_key, []).append(out)
        else:
            flags_by_rule[out.rule] = out

    upserts: dict[str, StoredResult] = {}
    removed: list[str] = []
    touched: dict[str, str] = {}  # analyte -> result key of this message that touched it
    trigger_effective: dict[str, str] = {}
    issues: list[IssueChange] = []
    judgements: list[tuple[str, Judgement]] = []
    latest_version: dict[str, Normalised] = {}
    patient_key = state.patient_key

    for item in normalised:
        r = item.result
        status = r.status
        if not status.is_deciding:
            continue
        key = r.key.text
        analyte = item.analyte
        stored = StoredResult(
            key,
            patient_key,
            analyte,
            item.value,
            item.comparator,
            r.effective,
            r.effective_sort,
            seq,
            status,
            f"{source} {r.source}",
        )
        current[key] = stored
        upserts[key] = stored
        latest_version[key] = item
        touched[analyte] = key
        trigger_effective[analyte] = r.effective
    for withdrawn in retracted:
        key = withdrawn if isinstance(withdrawn, str) else withdrawn.result.key.text
        old = current.pop(key, None)
        upserts.pop(key, None)
        latest_version.pop(key, None)
        if old is not None:
            removed.append(key)
            touched[old.analyte] = key
            trigger_effective.setdefault(
                old.analyte,
                withdrawn.result.effective if not isinstance(withdrawn, str) else "",
            )
        for out in issues_by_result.get(key, []):
            if out.status != "entered-in-error":
                rule = _find_rule(rules_by_analyte, out.rule)
                if rule is not None:
                    issues.append(
                        IssueChange(
                            rule,
                            key,
                            "entered-in-error",
                            None,
                            None,
                            out,
                            "the result was marked entered-in-error by the lab",
                        )
                    )

    # DetectedIssues for the deciding versions this message carries.
    verdicts: dict[tuple[str, str], Judgement] = {}  # (rule id, result key), for the Flags
    for key, item in latest_version.items():
        prior_issues = issues_by_result.get(key)
        existing = {o.rule: o for o in prior_issues} if prior_issues else _NO_OUTPUTS
        for rule in rules_by_analyte.get(item.analyte, ()):
            j = judge(rule, item.value, item.comparator)
            verdicts[(rule.id, key)] = j
            judgements.append((key, j))
            prior = existing.get(rule.id)
            if j.met is True:
                issues.append(IssueChange(rule, key, "final", j, item, prior, j.note))
            elif prior is not None and prior.status != "entered-in-error":
                why = f"a new version of the result no longer supports it: {j.note}"
                issues.append(IssueChange(rule, key, "entered-in-error", j, item, prior, why))

    # Flags for every rule of every analyte this message touched.
    flags: list[FlagChange] = []
    by_analyte: dict[str, list[StoredResult]] = {}
    for stored in current.values():
        if stored.analyte in touched:
            by_analyte.setdefault(stored.analyte, []).append(stored)
    for analyte, trigger_key in touched.items():
        group = by_analyte.get(analyte, [])
        ordered = _latest_first(group) if len(group) > 1 else group
        for rule in rules_by_analyte.get(analyte, ()):
            change = _flag_change(
                rule,
                ordered,
                flags_by_rule.get(rule.id),
                trigger_key,
                trigger_effective.get(analyte, ""),
                verdicts,
            )
            if change is not None:
                flags.append(change)

    return PatientDecisions(
        patient_key=state.patient_key,
        results=tuple(upserts.values()),
        removed=tuple(removed),
        issues=tuple(issues),
        flags=tuple(flags),
        judgements=tuple(judgements),
    )


_NO_OUTPUTS: Mapping[str, StoredOutput] = MappingProxyType({})


def _find_rule(rules_by_analyte: Mapping[str, Sequence[Rule]], rule_id: str) -> Rule | None:
    for rules in rules_by_analyte.values():
        for rule in rules:
            if rule.id == rule_id:
                return rule
    return None


def _flag_change(
    rule: Rule,
    ordered: Sequence[StoredResult],
    existing: StoredOutput | None,
    trigger_key: str,
    trigger_effective: str,
    verdicts: Mapping[tuple[str, str], Judgement],
) -> FlagChange | None:
    decider: StoredResult | None = None
    verdict: Judgement | None = None
    for candidate in ordered:
        j = verdicts.get((rule.id, candidate.key)) or judge(
            rule, candidate.value, candidate.comparator
        )
        if j.met is not None:
            decider, verdict = candidate, j
            break
    is_active = existing is not None and existing.status == "active"
    if decider is None or verdict is None:
        if ordered or not is_active:
            return None  # only unsettled results: leave the Flag as it is
        reason = "no deciding result of the analyte remains (corrected or retracted)"
        return FlagChange(rule, "inactive", trigger_effective, trigger_key, None, existing, reason)
    if verdict.met and not is_active:
        reason = f"latest deciding result {decider.source}: {verdict.note}"
        return FlagChange(rule, "active", decider.effective, trigger_key, decider, existing, reason)
    if not verdict.met and is_active:
        reason = f"latest deciding result {decider.source}: {verdict.note}"
        since = trigger_effective or decider.effective
        return FlagChange(rule, "inactive", since, trigger_key, decider, existing, reason)
    return None


fast_init(IssueChange, FlagChange, PatientDecisions)
