"""Every public function, class and method of the core, the presentation and the services
says why it exists.

The house's docstrings say why a function exists and what its columns hold (docs/
architecture.md). The packages are walked with `ast`, not a list, so a module added later is
held to the same rule; a name starting with `_` is private and left to its module.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("backend/core", "backend/presentation", "backend/services")


def modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def undocumented(path: Path) -> list[str]:
    """'path:line name' for each public function, class or method without a docstring."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = path.relative_to(ROOT)
    found = []

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            if node.name.startswith("_"):
                continue
            if ast.get_docstring(node) is None:
                found.append(f"{name}:{node.lineno} {prefix}{node.name}")
            if isinstance(node, ast.ClassDef):
                visit(node.body, f"{prefix}{node.name}.")

    visit(tree.body, "")
    return found


def test_the_walk_sees_the_core_and_the_services():
    files = modules()
    assert ROOT / "backend" / "core" / "features.py" in files
    assert ROOT / "backend" / "services" / "channels.py" in files


def test_every_public_function_and_class_has_a_docstring():
    missing = [item for path in modules() for item in undocumented(path)]
    assert missing == []


def test_the_rule_catches_a_bare_function(tmp_path):
    bare = tmp_path / "bare.py"
    bare.write_text(
        'def f():\n    return 1\n\n\nclass C:\n    """Why."""\n\n    def m(self):\n'
        "        return 2\n\n    def _private(self):\n        return 3\n",
        encoding="utf-8",
    )
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert undocumented(bare) == ["bare.py:1 f", "bare.py:8 C.m"]
    finally:
        ROOT = saved
