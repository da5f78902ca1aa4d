"""The packages form a house with no upward stairs: each module's imports (read with ast) go down only.

kvtiers is the floor (tokenization, block hashes, tiers); sim_gpu and router_lite stand on it and not on each
other; llmdctl, the face, may use all three. An import inside a function or a `try` counts the same as one
at the top: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("kvtiers", "sim_gpu", "router_lite", "llmdctl")
ALLOWED: dict[str, set[str]] = {
    "kvtiers": set(),
    "sim_gpu": {"kvtiers"},
    "router_lite": {"kvtiers"},
    "llmdctl": {"kvtiers", "sim_gpu", "router_lite"},
}
# Known exceptions (module, package it may import against the rule): none. The last one, the router reading the
# CLI's profile schema, went when the router started taking configs (--named-configs) and the CLI names.
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()


def imported_packages(path: Path) -> set[str]:
    """The project packages a module imports, by their top-level name (relative imports stay inside)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", "")) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names = [node.args[0].value]
        else:
            continue
        found.update(n.split(".")[0] for n in names if n.split(".")[0] in PACKAGES)
    return found


def violations() -> list[str]:
    out = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for dep in sorted(imported_packages(path) - {package} - ALLOWED[package]):
                if (rel, dep) not in KNOWN_EXCEPTIONS:
                    out.append(f"{rel} imports {dep} ({package} may import only {sorted(ALLOWED[package]) or 'none'})")
    return out


def test_no_upward_or_sideways_import() -> None:
    assert violations() == []


def test_known_exceptions_are_still_needed() -> None:
    """An exception that no longer happens must be deleted, so the line cannot silently loosen."""
    for rel, dep in KNOWN_EXCEPTIONS:
        if not (ROOT / rel).exists() or dep not in imported_packages(ROOT / rel):
            pytest.fail(f"{rel} no longer imports {dep}: delete it from KNOWN_EXCEPTIONS")


@pytest.mark.parametrize(
    "source, expected",
    [
        ("import sim_gpu.engine", {"sim_gpu"}),
        ("from router_lite.tokenization import x", {"router_lite"}),
        ("def f():\n    from llmdctl import calibrate", {"llmdctl"}),
        ("try:\n    import kvtiers\nexcept ImportError:\n    pass", {"kvtiers"}),
        ("import importlib\nimportlib.import_module('sim_gpu.server')", {"sim_gpu"}),
        ("from . import sibling\nimport os, json", set()),
    ],
)
def test_import_reader(tmp_path: Path, source: str, expected: set[str]) -> None:
    module = tmp_path / "m.py"
    module.write_text(source)
    assert imported_packages(module) == expected
