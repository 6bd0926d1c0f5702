"""Start-up warm-up: pay the pipeline's first-time costs before the first real message.

The first message a fresh process evaluates is slow: fhir.resources imports the
models of nested elements the first time a resource is validated, the R4B checker
learns each output layout once (``core/fhir_check.py``), and each unit spelling is
parsed and converted with UCUM on first sight. In ``serve`` that was 16–30 ms for the
first message, and the messages queued behind it waited too. ``warm_up`` does that
work before the listeners open: every unit spelling of the mappings, and one
synthetic result per rule of the rule pack, beyond the rule's high threshold, read
and evaluated by the real pipeline against an empty state. Nothing is stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

from prpgate.core.mapping import Mapper
from prpgate.core.pipeline import Engine, evaluate, read
from prpgate.core.rules import Direction, Rule

__all__ = ["WarmUp", "warm_up"]

_WHEN = "20250101000000"  # any valid HL7 time: the synthetic results are never stored


@dataclass(frozen=True, slots=True)
class WarmUp:
    """What a warm-up did: unit resolutions, synthetic messages evaluated, and the
    (resource type, rule id) of every output they built and validated."""

    units: int
    messages: int
    outputs: tuple[tuple[str, str], ...]


def warm_up(engine: Engine) -> WarmUp:
    """Resolve the mappings' unit spellings and evaluate one synthetic result per rule.

    An engine whose mapper is not the mappings' ``Mapper`` (a test double) is left as
    it is.
    """
    mapper = engine.mapper
    if not isinstance(mapper, Mapper):
        return WarmUp(0, 0, ())
    units = mapper.warm_up()
    outputs: list[tuple[str, str]] = []
    messages = 0
    for number, raw in enumerate(_messages(engine, mapper), 1):
        reading = read(raw, engine)
        outcome = evaluate(reading, {}, engine, seq=number)
        outputs.extend((e.kind.value, e.rule) for e in outcome.emitted)
        messages += 1
    return WarmUp(units, messages, tuple(outputs))


def _messages(engine: Engine, mapper: Mapper) -> Iterator[bytes]:
    for rules in engine.rules_by_analyte.values():
        for number, rule in enumerate(rules, 1):
            sample = mapper.sample(rule.analyte)
            if sample is None:
                continue
            code, unit, low, high = sample
            value = format(_beyond(rule, low, high), "f")
            yield (
                f"MSH|^~\\&|PRPGATE|WARMUP|PRPGATE|WARMUP|{_WHEN}||ORU^R01^ORU_R01|"
                f"WARMUP-{rule.id}|P|2.5.1\r"
                f"PID|1||WARMUP-{number}^^^WARMUP&1.2.3&ISO^MR\r"
                f"OBR|1||WARMUP-{rule.id}^WARMUP|{code}^warm-up^LN|||{_WHEN}"
                "|||||||||||||||||F\r"
                f"OBX|1|NM|{code}^warm-up^LN||{value}|{unit}^{unit}^UCUM|||||F|||{_WHEN}\r"
            ).encode()


def _beyond(rule: Rule, low: Decimal, high: Decimal) -> Decimal:
    """A plausible value past the rule's high threshold (a finding of high severity)."""
    if rule.direction is Direction.ABOVE:
        return min(rule.high * 2, (rule.high + high) / 2)
    return max(rule.high / 2, (rule.high + low) / 2)
