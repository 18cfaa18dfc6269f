"""The rooms hold at import time: the core loads neither Flask nor peewee, and the
import-linter contracts in pyproject.toml (docs/architecture.md) are kept.

Each check also runs once on a copy of the tree with `import flask` slipped into a core
module, and must fail there: a guard that cannot fail guards nothing.
"""

from __future__ import annotations

import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import backend.core
import backend.presentation

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).parent / "lint-imports"
WEB_AND_ORM = ("flask", "werkzeug", "peewee", "playhouse", "jinja2")
# The simulator's fast path: the modules the import-linter contract keeps on the core alone.
FAST_PATH = [
    "simulator.model",
    "simulator.run",
    "simulator.replicates",
    "simulator.html",
    "simulator.terminal",
    "simulator.targets",
    "simulator.measures",
    "simulator.books",
    "simulator.touch_log",
]
# What the command line and the server load before any simulation command runs: the
# simulator's modules are imported by those commands alone (backend/commands/simulation.py).
SIMULATION_ONLY = ("mesa", "pandas")


def core_modules() -> list[str]:
    """Every module under backend.core and backend.presentation, found on disk, so a new one
    is covered."""
    found = []
    for package in (backend.core, backend.presentation):
        prefix = package.__name__ + "."
        found += [m.name for m in pkgutil.walk_packages(package.__path__, prefix=prefix)]
    return sorted(found)


def _loaded_after_import(
    modules: list[str], cwd: Path, watched: tuple[str, ...] = WEB_AND_ORM
) -> list[str]:
    """Which of `watched` a fresh interpreter holds after importing `modules` from `cwd`."""
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(','.join(sorted(n for n in {watched!r} if n in sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return [n for n in done.stdout.strip().split(",") if n]


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def broken_tree(tmp_path_factory) -> Path:
    """A copy of the code where one core module imports Flask."""
    tree = tmp_path_factory.mktemp("tree")
    for name in ("backend", "simulator"):
        shutil.copytree(ROOT / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    victim = tree / "backend" / "core" / "metrics.py"
    victim.write_text(victim.read_text(encoding="utf-8") + "\nimport flask  # noqa\n")
    return tree


def test_there_are_core_modules_to_check():
    mods = core_modules()
    assert "backend.core.policy.decide" in mods and "backend.core.metrics" in mods
    assert "backend.presentation.charts" in mods


def test_the_core_and_the_fast_simulator_load_neither_flask_nor_peewee():
    assert _loaded_after_import(core_modules() + FAST_PATH, ROOT) == []


def test_the_app_and_its_commands_load_no_simulation_libraries():
    """init-db, the nightly jobs and the server's master need neither Mesa nor pandas."""
    assert _loaded_after_import(["backend.app"], ROOT, SIMULATION_ONLY) == []
    # ... and the check sees them when they are loaded.
    assert "mesa" in _loaded_after_import(["simulator.model"], ROOT, SIMULATION_ONLY)


def test_the_import_check_fails_when_a_core_module_imports_flask(broken_tree):
    assert "flask" in _loaded_after_import(["backend.core.metrics"], broken_tree)


def test_import_linter_contracts_are_kept():
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_import_linter_fails_when_a_core_module_imports_flask(broken_tree):
    done = _lint(broken_tree)
    assert done.returncode != 0
    assert "backend.core.metrics -> flask" in done.stdout
