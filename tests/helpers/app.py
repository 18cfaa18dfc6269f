"""An app on the test's database, tenants, and a dev-mode login: what conftest's fixtures are
built from, and what tests that need a second app or tenant call themselves."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from backend.app import create_app
from backend.core.clock import FixedClock
from backend.services import tenants
from backend.store import db as store_db
from backend.store.migrations import migrate
from backend.store.models import ALL_MODELS, SchemaVersion

# A Tuesday in spring term, 18:00 China time.
T0 = datetime(2026, 3, 10, 10, 0, tzinfo=UTC)


def _reset_postgres(url: str) -> None:
    db = store_db.open_database(url)
    with db.bind_ctx(ALL_MODELS + [SchemaVersion]):
        db.drop_tables(ALL_MODELS + [SchemaVersion], safe=True, cascade=True)
    db.close_all()


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
            "QUEUE_URL": "memory://",  # tasks run at once, in the caller
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


def login(client, tenant: TenantInfo, code: str = "alice") -> dict:
    """Log a dev-mode user in and return the Authorization header."""
    resp = client.post(
        "/mp/v1/login", json={"code": code}, headers={"X-Huiliu-Appid": tenant.appid}
    )
    assert resp.status_code == 200, resp.get_json()
    return {"Authorization": f"Bearer {resp.get_json()['token']}"}
