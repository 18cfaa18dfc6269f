"""House rules a reader relies on (docs/architecture.md): no production module over 500
lines and no function over 80 without a reason written at its top.

A reason is a sentence starting "Long because" in the module's docstring, or in the
function's docstring or a comment among its first lines. Every .py file under the production
packages is enumerated, so what is added later is held to the same rules.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("backend", "simulator", "fake_wechat")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
MARK = "Long because"


def production_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _function_has_reason(node: ast.AST, lines: list[str]) -> bool:
    doc = ast.get_docstring(node) or ""
    head = "\n".join(lines[node.lineno - 1 : node.lineno + 6])
    return MARK in doc or MARK in head


def oversized(path: Path) -> list[str]:
    """'path: what is too long' for each module or function over the limit without a reason."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    tree = ast.parse(text)
    name = str(path.relative_to(ROOT))
    found = []
    if len(lines) > MAX_MODULE_LINES and MARK not in (ast.get_docstring(tree) or ""):
        found.append(f"{name}: {len(lines)} lines")
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES and not _function_has_reason(node, lines):
                found.append(f"{name}:{node.lineno} {node.name}(): {length} lines")
    return found


def test_the_rules_see_every_production_module():
    files = production_files()
    assert len(files) > 100
    assert ROOT / "backend" / "core" / "policy" / "decide.py" in files


def test_no_module_or_function_is_too_long_without_a_reason():
    found = [item for path in production_files() for item in oversized(path)]
    assert found == []


def test_the_rule_catches_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES + 1))
    long = tmp_path / "long.py"
    long.write_text(f"def f():\n{body}\n", encoding="utf-8")
    explained = tmp_path / "explained.py"
    explained.write_text(f"def f():\n    # {MARK} it is a table.\n{body}\n", encoding="utf-8")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert len(oversized(long)) == 1
        assert oversized(explained) == []
    finally:
        ROOT = saved
