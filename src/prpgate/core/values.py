"""A faster ``__init__`` for the frozen, slotted dataclasses created per result.

A frozen dataclass's generated ``__init__`` sets each field with
``object.__setattr__(self, name, value)``: a global lookup, an attribute lookup and
a generic call per field, because the class's own ``__setattr__`` refuses writes.
The values of the hot path (a ``LabResult`` per OBX, a ``Judgement`` per rule and
result, ...) are made tens of times per message, and their construction was a
large share of the pipeline's time. ``fast_init`` gives such a class an ``__init__``
that writes each slot through its member descriptor instead: same parameters,
defaults and result, the class stays frozen, about half the time.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

K = TypeVar("K")
V = TypeVar("V")

__all__ = ["fast_init", "remember"]


def fast_init(*classes: type[Any]) -> None:
    """Replace the generated ``__init__`` of frozen, slotted dataclasses (in place).

    Only classes without ``__post_init__``, ``init=False`` or keyword-only fields and
    default factories qualify; anything else is refused with TypeError, so the
    replacement never changes what construction means.
    """
    for cls in classes:
        params = dataclasses.fields(cls)
        if (
            not dataclasses.is_dataclass(cls)
            or not cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
            or "__slots__" not in cls.__dict__
            or hasattr(cls, "__post_init__")
            or any(
                not f.init or f.kw_only or f.default_factory is not dataclasses.MISSING
                for f in params
            )
        ):
            raise TypeError(f"{cls.__name__}: not a plain frozen, slotted dataclass")
        env: dict[str, Any] = {}
        signature: list[str] = []
        body: list[str] = []
        for i, f in enumerate(params):
            env[f"_set{i}"] = cls.__dict__[f.name].__set__
            if f.default is dataclasses.MISSING:
                signature.append(f.name)
            else:
                env[f"_default{i}"] = f.default
                signature.append(f"{f.name}=_default{i}")
            body.append(f"    _set{i}(self, {f.name})")
        source = f"def __init__(self, {', '.join(signature)}):\n" + "\n".join(body or ["    pass"])
        exec(source, env)  # noqa: S102 - fixed template over the class's own field names
        init = env["__init__"]
        init.__qualname__ = f"{cls.__qualname__}.__init__"
        init.__doc__ = cls.__init__.__doc__
        setattr(cls, "__init__", init)  # noqa: B010 - mypy refuses assigning a method


def remember(memo: dict[K, V], key: K, value: V, limit: int) -> V:
    """Keep ``value`` under ``key`` in a memo of what a sender repeats, and return it.

    The memo is bounded: at ``limit`` entries it starts afresh (senders repeat a few
    hundred texts; a stream of distinct ones must not grow it without end).
    """
    if len(memo) >= limit:
        memo.clear()
    memo[key] = value
    return value
