"""R4B validation of emitted resources, learnt once per shape and then checked per value.

Validating a DetectedIssue with its fhir.resources R4B model costs over 100 µs,
almost all of it in the model's Python validators for structure (required elements,
choice types, empty complex elements), which run once per nested element. The
outputs of one rule pack have a handful of shapes, and for one shape those
structural verdicts never change; only the string values do.

So a ``ShapeChecker`` keys each resource's JSON text by its *shape* — the text with
every string value cut out, which keeps resourceType, keys in order, list lengths,
nulls, numbers and booleans — and:

* the first time it sees a shape, validates the whole resource with the R4B model
  (the structure verdict) and records, for every string value, the R4B primitive
  type of the element it sits in (``id``, ``code``, ``uri``, ``string``,
  ``dateTime``...);
* every later resource of that shape has each string value validated by that same
  primitive type (a pydantic ``TypeAdapter`` over fhir_core's own annotation: the
  pattern or parser the full model applies to it). A value once found valid for a
  type is remembered, so the constant parts of a rule's outputs cost a set lookup.

The verdict is the model's: a resource of a known shape is valid exactly when each
of its string values is (tests/unit/test_fhir_check.py checks that against the full
model on mutated resources).

A builder that composes its text from fixed JSON parts and string values
(``check_composed``) skips even the scan for values: the first resource of given parts
is checked as above and tells which primitive type each value slot has; later ones
with the same parts have only their values validated.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from prpgate.core.json_text import interleave
from prpgate.errors import BuildError

__all__ = ["ShapeChecker"]

_MAX_SHAPES = 1024  # a rule pack's outputs have a few dozen shapes; a bound for safety
_MAX_KNOWN = 65536  # remembered valid (type, value) pairs before the memo starts afresh

# A string value in compact JSON (as json.dumps with separators (",", ":") writes it),
# with the ':', '[' or ',' before it; not an object key (a key is followed by ':').
# _PLAIN serves text without backslashes (no escaped quote can end a value early).
_PLAIN = re.compile(r'([:\[,])"([^"]*)"(?!:)')
_ESCAPED = re.compile(r'([:\[,])"([^"\\]*(?:\\.[^"\\]*)*)"(?!:)')

_Validator = Callable[[Any], object]


def _unwrap(annotation: Any) -> Any:
    """The element annotation of a field annotation: ``Optional`` and ``List`` removed."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    if origin is list:
        (inner,) = typing.get_args(annotation)
        return inner
    return annotation


def _split(text: str) -> tuple[str, list[str]]:
    """(shape, raw string values) of compact JSON text: the shape keeps keys, structure
    and non-string values, with the delimiter before each string value."""
    parts = (_ESCAPED if "\\" in text else _PLAIN).split(text)
    return "$".join(parts[0::3]) + "|" + "".join(parts[1::3]), parts[2::3]


def _decoded(raw: str) -> str:
    """A JSON string literal's content as text (escapes decoded only where present)."""
    return json.loads(f'"{raw}"') if "\\" in raw else raw


class ShapeChecker:
    """Validates resources against their R4B models, in full once per shape.

    ``models`` maps a resourceType to its fhir.resources model class. One checker
    per pipeline engine; it only grows caches, so sharing one is harmless.
    """

    def __init__(self, models: Mapping[str, type[BaseModel]]) -> None:
        self._models = dict(models)
        self._plans: dict[str, tuple[int, ...]] = {}
        self._validators: list[_Validator] = []
        self._index: dict[object, int] = {}
        self._known: set[tuple[int, str]] = set()
        self._fields: dict[type[BaseModel], dict[str, tuple[str, Any]]] = {}
        self._slot_plans: dict[tuple[str, ...], tuple[int, ...]] = {}
        self._known_values: set[tuple[int, str]] = set()

    @property
    def shapes(self) -> int:
        """How many shapes have been learnt."""
        return len(self._plans)

    def check(self, text: str) -> None:
        """Validate one resource given as compact JSON text (other JSON is validated in
        full every time).

        Raises BuildError (with the model's account of what is wrong) when it is invalid.
        """
        shape, values = _split(text)
        plan = self._plans.get(shape)
        if plan is None:
            plan = self._learn(text)
            # text that is not compact JSON hides values from _VALUE: never cache it
            if len(plan) == len(values) and len(self._plans) < _MAX_SHAPES:
                self._plans[shape] = plan
            return
        known = self._known
        for index, raw in zip(plan, values, strict=True):
            if (index, raw) in known:
                continue
            try:
                self._validators[index](_decoded(raw))
            except ValidationError:
                # say what is wrong in the model's own words: validate the whole resource
                self._validate_model(json.loads(text))
                raise BuildError("a value is not valid for its R4B type") from None
            if len(known) >= _MAX_KNOWN:
                known.clear()
            known.add((index, raw))

    def check_composed(self, parts: Sequence[str], values: Sequence[str]) -> None:
        """Validate the resource ``interleave(parts, values)`` (compact JSON text whose
        every item of ``values`` is one whole string value, ``parts`` the JSON between).

        The first resource composed from given ``parts`` is checked as ``check`` would,
        and the R4B type of each value's slot is learnt from it; later ones with the
        same parts have only their values validated, by those types: the parts are the
        same text, so the shape and its constant values are the ones already checked.
        Raises BuildError like ``check``.
        """
        key = tuple(parts)
        plan = self._slot_plans.get(key)
        if plan is None:
            text = interleave(parts, values)
            self.check(text)
            learnt = self._learn_slots(parts, len(values), text)
            if learnt is not None and len(self._slot_plans) < _MAX_SHAPES:
                self._slot_plans[key] = learnt
            return
        known = self._known_values
        validators = self._validators
        for index, value in zip(plan, values, strict=True):
            if (index, value) in known:
                continue
            try:
                validators[index](value)
            except ValidationError:
                self._validate_model(json.loads(interleave(parts, values)))
                raise BuildError("a value is not valid for its R4B type") from None
            if len(known) >= _MAX_KNOWN:
                known.clear()
            known.add((index, value))

    def _learn_slots(self, parts: Sequence[str], count: int, text: str) -> tuple[int, ...] | None:
        """The validator index of each value slot of ``parts``, read off the shape plan
        of ``text`` (just checked); None where the slots cannot be told apart."""
        shape, _ = _split(text)
        plan = self._plans.get(shape)
        markers = [f"@prpgate-slot-{i}@" for i in range(count)]
        marked_shape, marked_values = _split(interleave(parts, markers))
        if plan is None or marked_shape != shape or len(marked_values) != len(plan):
            return None
        if any(marked_values.count(m) != 1 for m in markers):
            return None
        return tuple(plan[marked_values.index(m)] for m in markers)

    # -- learning a shape ------------------------------------------------------------

    def _validate_model(self, resource: Any) -> BaseModel:
        rtype = resource.get("resourceType") if isinstance(resource, dict) else None
        model = self._models.get(str(rtype))
        if model is None:
            raise BuildError(f"no R4B model for resourceType {rtype!r}")
        try:
            return model.model_validate(resource)
        except ValidationError as exc:
            raise BuildError(f"resource failed R4B validation: {exc}") from exc

    def _learn(self, text: str) -> tuple[int, ...]:
        try:
            resource = json.loads(text)
        except ValueError as exc:
            raise BuildError(f"resource is not JSON: {exc}") from exc
        instance = self._validate_model(resource)
        plan: list[int] = []
        self._plan_object(resource, instance, plan)
        return tuple(plan)

    def _field_map(self, model: type[BaseModel]) -> dict[str, tuple[str, Any]]:
        """JSON name -> (attribute name, annotation) of a model's fields."""
        found = self._fields.get(model)
        if found is None:
            found = {
                (info.alias or name): (name, info.annotation)
                for name, info in model.model_fields.items()
            }
            self._fields[model] = found
        return found

    def _plan_object(self, node: dict[str, Any], instance: BaseModel, plan: list[int]) -> None:
        """Append, in text order, the validator index of every string value under ``node``."""
        fields = self._field_map(type(instance))
        for key, value in node.items():
            if key == "resourceType":
                plan.append(self._literal(value))
                continue
            name, annotation = fields[key]  # the model accepted the key: it is a field
            attr = getattr(instance, name)
            items, attrs = (value, attr) if isinstance(value, list) else ([value], [attr])
            for item, item_attr in zip(items, attrs, strict=True):
                if isinstance(item, dict):
                    self._plan_object(item, item_attr, plan)
                elif isinstance(item, str):
                    plan.append(self._adapter(_unwrap(annotation)))

    def _register(self, key: object, validator: _Validator) -> int:
        index = self._index.get(key)
        if index is None:
            index = len(self._validators)
            self._validators.append(validator)
            self._index[key] = index
        return index

    def _adapter(self, annotation: Any) -> int:
        if annotation in self._index:
            return self._index[annotation]
        return self._register(annotation, TypeAdapter(annotation).validate_python)

    def _literal(self, expected: str) -> int:
        literal: Any = typing.Literal[expected]  # the one value this shape allows
        return self._register(("resourceType", expected), TypeAdapter(literal).validate_python)
