"""A database belongs to its app: making a second app in the same process (the end-to-end
campus beside the app that launched it, a second test app) must not repoint the first."""

from __future__ import annotations

from helpers.app import T0, build_app, close_app, make_tenant

from backend.core.clock import FixedClock
from backend.store import db as store_db
from backend.store.models import Tenant


def _appids(app) -> list[str]:
    with app.app_context():
        return sorted(t.appid for t in Tenant.select())


def test_each_app_reads_and_writes_its_own_database(tmp_path):
    clock = FixedClock(T0)
    first = build_app(f"sqlite:///{tmp_path / 'first.db'}", clock)
    make_tenant(first, "wx_first")
    second = build_app(f"sqlite:///{tmp_path / 'second.db'}", clock)  # made after the first
    make_tenant(second, "wx_second")
    try:
        assert _appids(first) == ["wx_first"]
        assert _appids(second) == ["wx_second"]
        # Requests too: each app's routes see its own tenants.
        assert first.test_client().get("/healthz").status_code == 200
        with first.app_context():
            assert store_db.database.obj is first.extensions["database"]
            with second.app_context():  # nested: the inner app's, then back to the outer's
                assert store_db.database.obj is second.extensions["database"]
            assert store_db.database.obj is first.extensions["database"]
    finally:
        close_app(first)
        close_app(second)


def test_outside_any_app_context_the_last_bound_database_is_used(tmp_path):
    clock = FixedClock(T0)
    app = build_app(f"sqlite:///{tmp_path / 'only.db'}", clock)
    try:
        assert store_db.database.obj is app.extensions["database"]
    finally:
        close_app(app)
