"""Fixtures: every database test runs on SQLite and on PostgreSQL.

The PostgreSQL lane uses HUILIU_TEST_POSTGRES_URL (`.ci/run` starts a local server and sets it).
Without it the lane is skipped on a laptop, but fails under CI so it can never silently vanish.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from werkzeug.serving import make_server

from backend.app import create_app
from backend.core.clock import FixedClock
from backend.services import tenants
from backend.store import db as store_db
from backend.store.migrations import migrate
from backend.store.models import ALL_MODELS, SchemaVersion

# A Tuesday in spring term, 18:00 China time.
T0 = datetime(2026, 3, 10, 10, 0, tzinfo=UTC)
POSTGRES_URL = os.environ.get("HUILIU_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'huiliu.sqlite3'}"
    if not POSTGRES_URL:
        if os.environ.get("CI"):
            pytest.fail("CI is set but HUILIU_TEST_POSTGRES_URL is not: the Postgres lane must run")
        pytest.skip("set HUILIU_TEST_POSTGRES_URL to run the PostgreSQL lane")
    return POSTGRES_URL


def _reset_postgres(url: str) -> None:
    db = store_db.open_database(url)
    with db.bind_ctx(ALL_MODELS + [SchemaVersion]):
        db.drop_tables(ALL_MODELS + [SchemaVersion], safe=True, cascade=True)
    db.close_all()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


def build_app(db_url: str, clock: FixedClock, *, fresh_db: bool = True, **config):
    """An app on the test's database, migrated; `config` overrides the dev-mode defaults."""
    if fresh_db and db_url.startswith("postgres"):
        _reset_postgres(db_url)
    app = create_app(
        {
            "DATABASE_URL": db_url,
            "CLOCK": clock,
            "SECRET_KEY": "test-secret",
            "WECHAT_MODE": "dev",
            "WECHAT_APPID": "",
            "TESTING": True,
            **config,
        }
    )
    with app.app_context():
        migrate(store_db.database, clock.now_ms())
    return app


def close_app(app) -> None:
    db = app.extensions["database"]
    if hasattr(db, "close_all"):
        db.close_all()
    elif not db.is_closed():
        db.close()


@pytest.fixture
def app(db_url, clock):
    app = build_app(db_url, clock)
    yield app
    close_app(app)


@pytest.fixture
def client(app):
    return app.test_client()


@dataclass
class TenantInfo:
    id: int
    appid: str
    api_key: str

    @property
    def admin(self) -> dict:
        return {"X-Api-Key": self.api_key}


def make_tenant(app, appid: str, merchants=("canteen-1",)) -> TenantInfo:
    with app.app_context():
        tenant, key = tenants.create(appid, f"campus {appid}", app.config["CLOCK"].now_ms())
        for code in merchants:
            tenants.add_merchant(tenant.id, code, code)
    return TenantInfo(tenant.id, appid, key)


@pytest.fixture
def tenant(app) -> TenantInfo:
    return make_tenant(app, "wxtest00000000001")


@pytest.fixture
def other_tenant(app) -> TenantInfo:
    return make_tenant(app, "wxtest00000000002")


def login(client, tenant: TenantInfo, code: str = "alice") -> dict:
    """Log a dev-mode user in and return the Authorization header."""
    resp = client.post(
        "/mp/v1/login", json={"code": code}, headers={"X-Huiliu-Appid": tenant.appid}
    )
    assert resp.status_code == 200, resp.get_json()
    return {"Authorization": f"Bearer {resp.get_json()['token']}"}


@pytest.fixture
def live_server(app):
    """The app on a real threaded HTTP server on loopback; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)
