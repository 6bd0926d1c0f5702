"""Where SQL text comes from, read from the store's source (``ast``): every statement a
store module runs (``execute``, ``executemany``, ``executescript``) must be built from
constants only — literals, module and class constants, placeholder lists (``"?" * n``,
``",".join(...)`` of those), text methods of those with such arguments (``.replace("?",
"%s")``), conditionals between them, and counters — so values reach the database only as
parameters.

A local variable is as safe as everything assigned or appended to it; a function
parameter as safe as what every call in the module passes; ``self.<attr>`` as safe as
every value assigned to it in the module (a counter: integers only). Schema scripts come
from ``statements(...)`` (``store.migrations``: the migrations' scripts, module constants
of ``schema_sqlite``/``schema_postgres``), the one trusted source.

f-strings that build SQL and interpolate anything but module or class constants must
carry a ``# noqa: S608 - <why>`` marker (the ones already marked are placeholder lists and
fixed column lists).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Finding", "scan_module", "scan_source"]

EXECUTE = frozenset({"execute", "executemany", "executescript"})
TRUSTED_CALLS = frozenset({"statements"})  # store.migrations: splits a schema script
SQL_WORDS = re.compile(
    r"\b(SELECT|INSERT|UPDATE|DELETE|WHERE|VALUES|PRAGMA|SAVEPOINT|ROLLBACK|RELEASE|"
    r"CREATE|ALTER|DROP|BEGIN|COMMIT|SET)\b"
)
CONSTANT_NAME = re.compile(r"^_?[A-Z][A-Z0-9_]*$")
MARKER = re.compile(r"#\s*noqa:\s*S608\s*-\s*\S")
_TEXT_METHODS = frozenset({"join", "format", "encode", "strip", "upper", "lower", "replace"})


@dataclass(frozen=True)
class Finding:
    """SQL text built from something that is not a constant."""

    path: str
    line: int
    what: str


@dataclass
class _Module:
    path: str
    tree: ast.Module
    lines: list[str]
    constants: dict[str, ast.expr] = field(default_factory=dict)  # module and class level
    attrs: dict[str, list[ast.expr]] = field(default_factory=dict)  # self.<attr> = ...
    functions: dict[str, ast.FunctionDef] = field(default_factory=dict)
    parents: dict[ast.AST, ast.AST] = field(default_factory=dict)


def _index(path: str, source: str) -> _Module:
    tree = ast.parse(source)
    mod = _Module(path, tree, source.splitlines())
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            mod.parents[child] = node
    scopes: list[ast.AST] = [tree] + [n for n in tree.body if isinstance(n, ast.ClassDef)]
    for scope in scopes:
        for stmt in getattr(scope, "body", []):
            target, value = None, None
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                target, value = stmt.targets[0], stmt.value
            elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
                target, value = stmt.target, stmt.value
            if isinstance(target, ast.Name) and CONSTANT_NAME.match(target.id) and value:
                mod.constants[target.id] = value
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            mod.functions[node.name] = node  # type: ignore[assignment]
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if _is_self_attr(t) and node.value is not None:
                    assert isinstance(t, ast.Attribute)
                    value = node.value
                    if isinstance(node, ast.AugAssign):
                        value = ast.BinOp(t, node.op, node.value)
                    mod.attrs.setdefault(t.attr, []).append(value)
    return mod


def _is_self_attr(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in ("self", "cls")
    )


def _enclosing_function(mod: _Module, node: ast.AST) -> ast.FunctionDef | None:
    while node in mod.parents:
        node = mod.parents[node]
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            return node  # type: ignore[return-value]
    return None


class _Checker:
    def __init__(self, mod: _Module) -> None:
        self.mod = mod
        self._busy: set[tuple[int, str]] = set()

    def safe(self, node: ast.expr | None, fn: ast.FunctionDef | None) -> bool:
        if node is None:
            return False
        if isinstance(node, ast.Constant):
            return isinstance(node.value, str | bytes | int | float | bool) or node.value is None
        if isinstance(node, ast.JoinedStr):
            return all(
                self.safe(v.value, fn) if isinstance(v, ast.FormattedValue) else True
                for v in node.values
            )
        if isinstance(node, ast.Name):
            return self._name(node.id, fn)
        if isinstance(node, ast.Attribute):
            if _is_self_attr(node):
                return self._attr(node.attr)
            return False
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.Add):
                return self.safe(node.left, fn) and self.safe(node.right, fn)
            if isinstance(node.op, ast.Mult):  # "?" * n: text repeated, n only counts
                return any(
                    isinstance(side, ast.Constant) and isinstance(side.value, str | bytes)
                    for side in (node.left, node.right)
                ) or (self.safe(node.left, fn) and self.safe(node.right, fn))
            return False  # "%" formatting and the rest
        if isinstance(node, ast.IfExp):
            return self.safe(node.body, fn) and self.safe(node.orelse, fn)
        if isinstance(node, ast.BoolOp):
            return all(self.safe(v, fn) for v in node.values)
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            return all(self.safe(e, fn) for e in node.elts)
        if isinstance(node, ast.GeneratorExp | ast.ListComp):
            return self.safe(node.elt, fn)
        if isinstance(node, ast.Subscript):
            return self.safe(node.value, fn)
        if isinstance(node, ast.Call):
            return self._call(node, fn)
        return False

    def _call(self, node: ast.Call, fn: ast.FunctionDef | None) -> bool:
        func = node.func
        if isinstance(func, ast.Name) and func.id in TRUSTED_CALLS:
            return True
        if isinstance(func, ast.Name) and func.id == "len":
            return True  # a count
        if isinstance(func, ast.Attribute) and func.attr in _TEXT_METHODS:
            args = [*node.args, *(k.value for k in node.keywords)]
            return self.safe(func.value, fn) and all(self.safe(a, fn) for a in args)
        return False

    def _name(self, name: str, fn: ast.FunctionDef | None) -> bool:
        key = (id(fn), name)
        if key in self._busy:
            return True  # a cycle (x = x + "..."): judged by its other parts
        self._busy.add(key)
        try:
            if fn is not None and self._is_local(name, fn):
                return self._local(name, fn)
            if name in self.mod.constants:
                return self.safe(self.mod.constants[name], None)
            return False
        finally:
            self._busy.discard(key)

    def _attr(self, attr: str) -> bool:
        if attr in self.mod.constants:
            return self.safe(self.mod.constants[attr], None)
        key = (0, f"self.{attr}")
        if key in self._busy:
            return True
        values = self.mod.attrs.get(attr)
        if not values:
            return False
        self._busy.add(key)
        try:
            return all(self.safe(v, None) for v in values)
        finally:
            self._busy.discard(key)

    @staticmethod
    def _is_local(name: str, fn: ast.FunctionDef) -> bool:
        params = {a.arg for a in [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]}
        if name in params:
            return True
        for node in ast.walk(fn):
            if isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Store):
                return True
        return False

    def _local(self, name: str, fn: ast.FunctionDef) -> bool:
        params = [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]
        if name in {a.arg for a in params}:
            return self._parameter(name, fn)
        return all(self.safe(value, fn) for value in self._values_of(name, fn))

    @staticmethod
    def _values_of(name: str, fn: ast.FunctionDef) -> Iterator[ast.expr | None]:
        """Everything that flows into a local: assignments, loop targets' iterables, what
        is appended to it (a ``with ... as`` name: None, unknown)."""

        def named(target: ast.AST) -> bool:
            return isinstance(target, ast.Name) and target.id == name

        for node in ast.walk(fn):
            assigned = isinstance(node, ast.Assign) and any(named(t) for t in node.targets)
            if assigned or (isinstance(node, ast.AnnAssign | ast.AugAssign) and named(node.target)):
                yield node.value  # type: ignore[union-attr]
            elif isinstance(node, ast.For | ast.comprehension) and named(node.target):
                yield node.iter
            elif isinstance(node, ast.withitem) and named(node.optional_vars):
                yield None
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and named(node.func.value)
                and node.func.attr in ("append", "extend", "insert")
            ):
                yield from node.args

    def _parameter(self, name: str, fn: ast.FunctionDef) -> bool:
        params = [a.arg for a in [*fn.args.posonlyargs, *fn.args.args]]
        method = bool(params) and params[0] in ("self", "cls")
        position = params.index(name) - (1 if method else 0) if name in params else None
        calls = []
        for node in ast.walk(self.mod.tree):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            called = (
                f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            )
            if called == fn.name:
                calls.append(node)
        if not calls:
            return False  # called from elsewhere: unknown values
        for call in calls:
            caller = _enclosing_function(self.mod, call)
            passed = next((k.value for k in call.keywords if k.arg == name), None)
            if passed is None and position is not None and position < len(call.args):
                passed = call.args[position]
            if passed is None:
                default = _default(fn, name)
                if default is None or not self.safe(default, None):
                    return False
                continue
            if not self.safe(passed, caller):
                return False
        return True


def _default(fn: ast.FunctionDef, name: str) -> ast.expr | None:
    positional = [*fn.args.posonlyargs, *fn.args.args]
    names = [a.arg for a in positional[len(positional) - len(fn.args.defaults) :]]
    defaults = dict(zip(names, fn.args.defaults, strict=True))
    if fn.args.defaults and name in defaults:
        return defaults[name]
    for arg, value in zip(fn.args.kwonlyargs, fn.args.kw_defaults, strict=True):
        if arg.arg == name:
            return value
    return None


def _fixed(mod: _Module, node: ast.expr, fn: ast.FunctionDef | None, depth: int = 0) -> bool:
    """A constant, a module or class constant, a counter (``self.<attr>`` only ever
    given integers), a conditional between those, an f-string of those, or a local
    assigned only such values: text fixed in the source, no marker needed."""
    if depth > 5:
        return False
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.IfExp):
        return _fixed(mod, node.body, fn, depth + 1) and _fixed(mod, node.orelse, fn, depth + 1)
    if isinstance(node, ast.JoinedStr):
        return all(
            _fixed(mod, v.value, fn, depth + 1)
            for v in node.values
            if isinstance(v, ast.FormattedValue)
        )
    if isinstance(node, ast.Attribute) and _is_self_attr(node):
        if node.attr in mod.constants:
            return True
        values = mod.attrs.get(node.attr, [])
        return bool(values) and all(_counting(v, node.attr) for v in values)
    if isinstance(node, ast.Name):
        if node.id in mod.constants:
            return True
        if fn is None:
            return False
        assigned = [
            n.value
            for n in ast.walk(fn)
            if isinstance(n, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == node.id for t in n.targets)
        ]
        return bool(assigned) and all(_fixed(mod, v, fn, depth + 1) for v in assigned)
    return False


def _counting(value: ast.expr, attr: str) -> bool:
    """``0`` or ``self.<attr> + 1``: a counter's values."""
    if isinstance(value, ast.Constant):
        return isinstance(value.value, int)
    return (
        isinstance(value, ast.BinOp)
        and isinstance(value.left, ast.Attribute)
        and value.left.attr == attr
        and isinstance(value.right, ast.Constant)
        and isinstance(value.right.value, int)
    )


def scan_source(path: str, source: str) -> list[Finding]:
    """The findings in one module's source (empty: every statement is constant-built)."""
    mod = _index(path, source)
    check = _Checker(mod)
    out: list[Finding] = []
    for node in ast.walk(mod.tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in EXECUTE
            and node.args
            and not check.safe(node.args[0], _enclosing_function(mod, node))
        ):
            text = ast.unparse(node.args[0])
            out.append(Finding(path, node.lineno, f"{node.func.attr}({text}, ...)"))
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
            if not SQL_WORDS.search(text):
                continue
            fn = _enclosing_function(mod, node)
            if not check.safe(node, fn):
                out.append(Finding(path, node.lineno, f"SQL f-string {ast.unparse(node)}"))
                continue
            interpolated = [v.value for v in node.values if isinstance(v, ast.FormattedValue)]
            constant = all(_fixed(mod, v, fn) for v in interpolated)
            lines = mod.lines[node.lineno - 1 : (node.end_lineno or node.lineno)]
            if not constant and not any(MARKER.search(line) for line in lines):
                out.append(Finding(path, node.lineno, "SQL f-string without a noqa: S608 reason"))
    return out


def scan_module(path: Path) -> list[Finding]:
    """``scan_source`` of a file."""
    return scan_source(str(path), path.read_text(encoding="utf-8"))
