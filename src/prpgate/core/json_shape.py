"""Parsed JSON narrowed to the shape a FHIR reader expects.

A value of another shape reads as empty (an object, a list, a string): the validators
report wrong shapes, so the readers walk what they are given without checking again.
"""

from __future__ import annotations

from typing import Any

__all__ = ["as_dict", "as_list", "as_str"]


def as_dict(value: object) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def as_list(value: object) -> list[Any]:
    """``value`` when it is a JSON array, else an empty list."""
    return value if isinstance(value, list) else []


def as_str(value: object) -> str:
    """``value`` when it is a JSON string, else ``""``."""
    return value if isinstance(value, str) else ""
