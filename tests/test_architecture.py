"""The package layering of docs/ARCHITECTURE.md, enforced: dependencies point down only.

Every ``import`` of a ``vigil`` module in ``vigil/`` (at module level or inside a function, lazy
imports included) is checked against the table below; a new arrow needs a change to the table
and to the architecture page, on purpose.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "vigil"

# package -> the vigil packages it may import ("vigil" is the package's own __init__).
BASE = {"vigil", "vigil._diagnostics", "vigil.errors", "vigil._files"}
ALLOWED: dict[str, set[str]] = {
    "vigil._diagnostics": set(),
    "vigil.errors": {"vigil._diagnostics"},
    "vigil._files": {"vigil._diagnostics", "vigil.errors"},  # open regular files only
    "vigil.schemas": BASE,
    "vigil.keys": BASE,
    "vigil.auditlog": BASE | {"vigil.schemas", "vigil.keys"},
    "vigil.fsm": BASE | {"vigil.schemas"},
    "vigil.model": BASE | {"vigil.schemas", "vigil.keys"},
    "vigil.supervisor": BASE
    | {"vigil.schemas", "vigil.keys", "vigil.auditlog", "vigil.fsm", "vigil.model"},
    "vigil.testing": BASE | {"vigil.schemas", "vigil.model"},
    "vigil.fleet": BASE | {"vigil.schemas", "vigil.keys", "vigil.auditlog"},
    "vigil.workers": BASE | {"vigil.schemas", "vigil.keys", "vigil.model", "vigil.supervisor"},
    "vigil.service": BASE
    | {
        "vigil.schemas",
        "vigil.keys",
        "vigil.auditlog",
        "vigil.fsm",
        "vigil.model",
        "vigil.supervisor",
        "vigil.workers",
    },
    "vigil.cli": BASE
    | {
        "vigil.schemas",
        "vigil.keys",
        "vigil.auditlog",
        "vigil.fsm",
        "vigil.model",
        "vigil.supervisor",
        "vigil.workers",
        "vigil.service",
        "vigil.testing",
        "vigil.fleet",
    },
    "vigil.runtime": set(),  # the deprecated shim resolves names lazily, by importlib
    "vigil.__main__": {"vigil.cli"},
}
# Arrows that point the wrong way today, each with the issue that removes it. The test fails
# when one disappears, so the entry is deleted with the fix.
KNOWN: set[tuple[str, str]] = set()


def _package_of(dotted: str) -> str:
    parts = dotted.split(".")
    if len(parts) == 1:
        return "vigil"
    return ".".join(parts[:2])


def _imports() -> list[tuple[str, str, str]]:
    """(importing package, imported package, where) for every vigil import under vigil/."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        module = ".".join(("vigil", *path.relative_to(ROOT).with_suffix("").parts))
        module = module.removesuffix(".__init__")
        own = _package_of(module)
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module]
                if node.module == "vigil":  # from vigil import errors, keys, _diagnostics
                    targets = [
                        f"vigil.{a.name}"
                        if (ROOT / a.name).is_dir() or (ROOT / f"{a.name}.py").exists()
                        else "vigil"
                        for a in node.names
                    ]
            for target in targets:
                if target == "vigil" or target.startswith("vigil."):
                    dep = _package_of(target)
                    if dep != own:
                        found.append((own, dep, f"{path.relative_to(ROOT.parent)}:{node.lineno}"))
    return found


def test_every_package_is_in_the_table() -> None:
    packages = {own for own, _, _ in _imports()}
    assert packages <= set(ALLOWED), packages - set(ALLOWED)


def test_dependencies_point_down_only() -> None:
    wrong = {(own, dep) for own, dep, _ in _imports() if dep not in ALLOWED[own]}
    where = [w for own, dep, w in _imports() if (own, dep) in wrong - KNOWN]
    assert wrong - KNOWN == set(), where
    assert wrong >= KNOWN, f"fixed, delete from KNOWN: {KNOWN - wrong}"


def test_the_table_has_no_cycle() -> None:
    seen: dict[str, int] = {}

    def visit(p: str, path: tuple[str, ...]) -> None:
        assert p not in path, f"cycle: {' -> '.join((*path, p))}"
        for dep in ALLOWED.get(p, set()) - {"vigil"}:
            visit(dep, (*path, p))
        seen[p] = 1

    for p in ALLOWED:
        visit(p, ())
