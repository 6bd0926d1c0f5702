"""Read ``mappings/`` (four YAML files) into a validated ``MappingSet``.

Every problem becomes one ``MappingError`` naming the file, the dotted key path inside
it (``rules.2.moderate``; a key containing a dot or space is quoted:
``spellings."giga.l-1"``) and the reason, with the line number where the YAML parser
knows it. YAML is read with a ``yaml.SafeLoader`` subclass that also rejects
duplicate mapping keys (plain ``safe_load`` silently keeps the last one, which would
let a second ``moderate:`` quietly override the first).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from prpgate.errors import MappingError
from prpgate.mapping_schema import (
    ANALYTES_FILE,
    RULES_FILE,
    SENDERS_FILE,
    UNITS_FILE,
    AnalytesFile,
    MappingSet,
    RulePack,
    SendersFile,
    UnitsFile,
)

__all__ = ["load_mappings"]

_PARTS: tuple[tuple[str, str, type[BaseModel]], ...] = (
    ("analytes", ANALYTES_FILE, AnalytesFile),
    ("units", UNITS_FILE, UnitsFile),
    ("senders", SENDERS_FILE, SendersFile),
    ("rules", RULES_FILE, RulePack),
)
_PLAIN_SEGMENT = re.compile(r"^[A-Za-z0-9_*^/{}-]+$")


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys in a mapping."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _segment(part: object) -> str:
    text = str(part)
    return text if _PLAIN_SEGMENT.match(text) else json.dumps(text)


def _dotted(parts: tuple[object, ...] | list[object]) -> str:
    return ".".join(_segment(p) for p in parts)


def _line_of(node: yaml.Node | None, path: list[object]) -> int | None:
    """1-based line of the node at ``path`` in a composed YAML document (best effort)."""
    line = None if node is None else node.start_mark.line + 1
    for part in path:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part] if 0 <= part < len(node.value) else None
        else:
            node = None
        if node is None:
            break
        line = node.start_mark.line + 1
    return line


def _read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    name = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MappingError("file is missing", file=name) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(f"cannot read file: {exc}", file=name) from exc
    try:
        node = yaml.compose(text, Loader=_UniqueKeyLoader)
        loader = _UniqueKeyLoader(text)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise MappingError(f"YAML syntax error: {problem}{where}", file=name) from exc
    except yaml.YAMLError as exc:
        raise MappingError(f"YAML error: {exc}", file=name) from exc
    if data is None:
        raise MappingError("file is empty", file=name)
    if not isinstance(data, dict):
        raise MappingError(f"top level must be a mapping, not {type(data).__name__}", file=name)
    return data, node


def _error(
    exc: ValidationError, default_file: str, nodes: dict[str, yaml.Node | None]
) -> MappingError:
    """The first validation error as a MappingError with file, dotted key and line."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc: list[object] = list(first["loc"])
    ctx = first.get("ctx") or {}
    file = str(ctx.get("file", default_file))
    if "path" in ctx:
        reason = str(ctx.get("reason", first["msg"]))
        loc = loc + list(ctx["path"])
    else:
        reason = first["msg"]
        kind = first["type"]
        if kind == "value_error" and "error" in ctx:
            reason = str(ctx["error"])
        elif kind == "extra_forbidden":
            reason = f"unknown key {loc[-1]!r}" if loc else "unknown key"
        elif kind == "missing":
            reason = f"missing key {loc[-1]!r}" if loc else "missing key"
        if loc and loc[-1] == "[key]":  # pydantic's marker for a bad mapping key
            loc = loc[:-1]
            reason = f"key {loc[-1]!r} must be a string (quote it): {reason}"
    line = _line_of(nodes.get(file), loc)
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    at = f" (line {line})" if line is not None else ""
    return MappingError(f"{reason}{at}{more}", file=file, key=_dotted(loc) or None)


def load_mappings(directory: Path) -> MappingSet:
    """Read and validate ``analytes.yaml``, ``units.yaml``, ``senders.yaml`` and
    ``rules.yaml`` from ``directory``.

    Returns the validated ``MappingSet``. Raises ``MappingError`` (with ``file``, ``key``
    and ``reason``) for a missing or unreadable file, a YAML syntax error (with line),
    a schema error, or a cross-file error such as a rule naming an unknown analyte.
    """
    if not directory.is_dir():
        raise MappingError(f"mappings folder {directory} does not exist")
    parts: dict[str, BaseModel] = {}
    nodes: dict[str, yaml.Node | None] = {}
    for field, name, model in _PARTS:
        data, node = _read_yaml(directory / name)
        nodes[name] = node
        try:
            parts[field] = model.model_validate(data)
        except ValidationError as exc:
            raise _error(exc, name, nodes) from exc
    try:
        return MappingSet.model_validate(parts)
    except ValidationError as exc:
        raise _error(exc, ANALYTES_FILE, nodes) from exc
