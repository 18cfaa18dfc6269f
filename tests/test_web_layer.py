"""Routes call services: no module of backend/web queries the store or opens a transaction.

The rule, precisely: a module under backend/web imports nothing of backend.store, peewee or
playhouse, names no `write_transaction` or `.atomic`, and reaches no store object (a model,
the database) through a service module's attributes (`coupons.CouponTemplate.select()`).
The app factory, backend/web/app.py, alone imports `backend.store.db`: it opens the database
for the app and closes it after each request. The import part is also an import-linter
contract in pyproject.toml; this test adds what import-linter cannot see (names and
attributes) and runs once on a planted offender, so it can fail.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from types import ModuleType

import peewee

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "backend" / "web"
STORE = ("backend.store", "peewee", "playhouse")
# The factory binds the app's database and closes it after each request: nothing else.
ALLOWED = {"backend/web/app.py": {"backend.store.db"}}
TRANSACTIONS = {"write_transaction", "atomic"}


def web_modules() -> list[Path]:
    """Every Python file under backend/web, found on disk, so a new route module is covered."""
    return sorted(WEB.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(tree: ast.AST) -> list[str]:
    """Every module an import statement names (`from a import b` gives a and a.b)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append(node.module)
            out += [f"{node.module}.{alias.name}" for alias in node.names]
    return out


def _is_store_object(value: object) -> bool:
    if isinstance(value, peewee.Database | peewee.DatabaseProxy):
        return True
    if isinstance(value, type) and issubclass(value, peewee.Model):
        return True
    module = getattr(value, "__module__", None) or ""
    return module.startswith(STORE)


def _allowed(name: str, allowed: set[str]) -> bool:
    """`from backend.store import db` names backend.store on the way to an allowed module."""
    return name in allowed or any(a.startswith(name + ".") for a in allowed)


def offences(path: Path, module: ModuleType | None, root: Path = ROOT) -> list[str]:
    """What in one web module breaks the rule, as readable lines (empty: it keeps it).

    `module` is the imported module, to resolve what its service-module attributes are.
    """
    rel = path.relative_to(root).as_posix()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
    allowed = ALLOWED.get(rel, set())
    bad = [n for n in _imported(tree) if n.startswith(STORE) and not _allowed(n, allowed)]
    # `from backend.store.models import User` is one offence, backend.store.models
    found = [f"{rel} imports {n}" for n in dict.fromkeys(bad) if n.rpartition(".")[0] not in bad]
    for node in ast.walk(tree):
        name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
        if name in TRANSACTIONS and not allowed:
            found.append(f"{rel}:{node.lineno} opens a transaction ({name})")
        if module is None or not isinstance(node, ast.Attribute):
            continue
        if not isinstance(node.value, ast.Name):
            continue
        owner = getattr(module, node.value.id, None)
        service = isinstance(owner, ModuleType) and owner.__name__.startswith("backend.services")
        if service and _is_store_object(getattr(owner, node.attr, None)):
            found.append(
                f"{rel}:{node.lineno} reaches the store through {node.value.id}.{node.attr}"
            )
    return found


def test_web_modules_call_services_not_the_store():
    found = []
    for path in web_modules():
        found += offences(path, importlib.import_module(_module_name(path)))
    assert found == [], "\n".join(found)


def test_the_rule_catches_a_route_that_queries(tmp_path):
    """A guard that cannot fail guards nothing: plant each kind of offence and see it named."""
    planted = tmp_path / "backend" / "web" / "planted.py"
    planted.parent.mkdir(parents=True)
    planted.write_text(
        "from backend.store.db import write_transaction\n"
        "from backend.store.models import User\n"
        "import peewee\n"
        "from backend.services import coupons\n"
        "def route():\n"
        "    with write_transaction():\n"
        "        User.update(phone=None).execute()\n"
        "    coupons.CouponTemplate.select()\n",
        encoding="utf-8",
    )
    fake = ModuleType("planted")
    fake.coupons = importlib.import_module("backend.services.coupons")
    text = "\n".join(offences(planted, fake, root=tmp_path))
    assert "imports backend.store.db" in text
    assert "imports backend.store.models" in text
    assert "imports peewee" in text
    assert "opens a transaction (write_transaction)" in text
    assert "reaches the store through coupons.CouponTemplate" in text
