"""The layout's rules, enforced: a pure core, and complete, sorted ``__all__`` lists."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import sys
from pathlib import Path

import prpgate

SRC = Path(prpgate.__file__).resolve().parent
CORE = SRC / "core"
# Pure third-party libraries the core may use (validation and unit arithmetic, no I/O).
PURE_THIRD_PARTY = {"fhir", "orjson", "pydantic", "pint", "ucumvert"}
FORBIDDEN_STDLIB = {
    "asyncio",
    "socket",
    "sqlite3",
    "os",
    "subprocess",
    "time",
    "random",
    "logging",
    "threading",
    "ssl",
    "selectors",
    "shutil",
    "tempfile",
    "pathlib",
    "io",
}
FORBIDDEN_CALLS = {"now", "utcnow", "today", "open", "getenv"}


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_imports_only_stdlib_itself_and_pure_libraries() -> None:
    offenders: list[str] = []
    for path in sorted(CORE.glob("*.py")):
        tree = ast.parse(path.read_text())
        for mod in _imports(tree):
            if mod == "prpgate" or mod in PURE_THIRD_PARTY:
                continue
            if mod in FORBIDDEN_STDLIB or mod not in sys.stdlib_module_names:
                offenders.append(f"{path.name}: {mod}")
    assert offenders == []


def test_core_prpgate_imports_stay_inside_core_or_errors() -> None:
    offenders: list[str] = []
    for path in sorted(CORE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            if (
                module
                and module.startswith("prpgate.")
                and not module.startswith(("prpgate.core", "prpgate.errors"))
            ):
                offenders.append(f"{path.name}: {module}")
    assert offenders == []


def test_core_reads_no_clock_files_or_environment() -> None:
    offenders: list[str] = []
    for path in sorted(CORE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                fn = node.func
                name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
                if name in FORBIDDEN_CALLS:
                    offenders.append(f"{path.name}:{node.lineno} {name}()")
    assert offenders == []


def test_every_public_module_declares_complete_all() -> None:
    # The order of __all__ is ruff's job (RUF022, isort-style), run in CI.
    problems: list[str] = []
    for info in pkgutil.walk_packages([str(SRC)], prefix="prpgate."):
        if info.ispkg or info.name.rsplit(".", 1)[-1].startswith("_"):
            continue
        module = importlib.import_module(info.name)
        exported = getattr(module, "__all__", None)
        if exported is None:
            problems.append(f"{info.name}: no __all__")
            continue
        if len(set(exported)) != len(exported):
            problems.append(f"{info.name}: __all__ lists a name twice")
        tree = ast.parse(Path(module.__file__ or "").read_text())
        public = {
            n.name
            for n in tree.body
            if isinstance(n, ast.FunctionDef | ast.ClassDef) and not n.name.startswith("_")
        }
        missing = public - set(exported)
        if missing:
            problems.append(f"{info.name}: public names missing from __all__: {sorted(missing)}")
    assert problems == []
