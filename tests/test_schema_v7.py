"""Schema v7: user ids are never handed out twice, users carry a token key, delivery claims
carry a fencing token, and an order redeems one coupon. Both a fresh database and one
migrated from v6 must have all of it."""

from __future__ import annotations

import json

import peewee
import pytest

from backend.services import coupons
from backend.services.users import get_or_create
from backend.store import db as store_db
from backend.store.migrations import DOUBLE_REDEMPTIONS_KEY, LATEST, migrate
from backend.store.models import ConsentLog, Coupon, CouponTemplate, KeyValue, SchemaVersion, User

# The `user` table exactly as schema v6 created it on SQLite (plain rowid ids).
V6_SQLITE_USER = (
    'CREATE TABLE "user" ("id" INTEGER NOT NULL PRIMARY KEY, "tenant_id" INTEGER NOT NULL, '
    '"openid" VARCHAR(128) NOT NULL, "unionid" VARCHAR(128), "created_ms" INTEGER NOT NULL, '
    '"last_seen_ms" INTEGER, "marketing_opt_out" INTEGER NOT NULL, "phone" VARCHAR(20), '
    '"oa_openid" VARCHAR(128), FOREIGN KEY ("tenant_id") REFERENCES "tenant" ("id") '
    "ON DELETE CASCADE)"
)


def _back_to_v6(db: peewee.Database) -> None:
    """Undo v7 on a migrated database, keeping its rows, as a v6 database would be."""
    sqlite = store_db.is_sqlite()
    db.execute_sql('DROP INDEX IF EXISTS "coupon_tenant_id_order_ref"')
    db.execute_sql('ALTER TABLE "touch" DROP COLUMN "claim_token"')
    if sqlite:
        db.execute_sql("PRAGMA foreign_keys=OFF")
        db.execute_sql(V6_SQLITE_USER.replace('"user"', '"user_v6"', 1))
        cols = '"id", "tenant_id", "openid", "unionid", "created_ms", "last_seen_ms", '
        cols += '"marketing_opt_out", "phone", "oa_openid"'
        db.execute_sql(f'INSERT INTO "user_v6" ({cols}) SELECT {cols} FROM "user"')
        db.execute_sql('DROP TABLE "user"')
        db.execute_sql('ALTER TABLE "user_v6" RENAME TO "user"')
        db.execute_sql('CREATE UNIQUE INDEX "user_tenant_id_openid" ON "user" (tenant_id, openid)')
        db.execute_sql("PRAGMA foreign_keys=ON")
    else:
        db.execute_sql('ALTER TABLE "user" DROP COLUMN "token_key"')
    SchemaVersion.delete().where(SchemaVersion.version >= 7).execute()  # v8 is only a table


def _ids_are_never_reused(tenant_id: int, now_ms: int) -> None:
    first = get_or_create(tenant_id, "eve", None, now_ms)
    User.delete().where(User.id == first.id).execute()  # the highest id goes
    second = get_or_create(tenant_id, "alice", None, now_ms)
    assert second.id > first.id
    assert second.token_key and second.token_key != first.token_key


def test_a_fresh_database_never_reuses_a_user_id(app, tenant, clock):
    with app.app_context():
        _ids_are_never_reused(tenant.id, clock.now_ms())


def test_migrating_v6_keeps_rows_and_foreign_keys_and_stops_id_reuse(app, tenant, clock):
    db = store_db.database
    now = clock.now_ms()
    with app.app_context():
        users = [get_or_create(tenant.id, f"u{i}", None, now) for i in range(3)]
        ConsentLog.create(tenant=tenant.id, user=users[1].id, action="opt_out", at_ms=now)
        _back_to_v6(db)
        assert "token_key" not in {c.name for c in db.get_columns("user")}

        assert migrate(db, now) == (6, LATEST)
        assert migrate(db, now) == (LATEST, LATEST)

        rows = {u.openid: u for u in User.select()}
        assert {u.openid: u.id for u in users} == {o: u.id for o, u in rows.items()}
        keys = [u.token_key for u in rows.values()]
        assert all(len(k) == 32 for k in keys) and len(set(keys)) == len(keys)
        assert "claim_token" in {c.name for c in db.get_columns("touch")}
        unique = {tuple(i.columns) for i in db.get_indexes("coupon") if i.unique}
        assert ("tenant_id", "order_ref") in unique
        # The consent row still points at its user, and deleting the user still cascades.
        assert ConsentLog.get().user_id == users[1].id
        User.delete().where(User.id == users[1].id).execute()
        assert ConsentLog.select().count() == 0
        _ids_are_never_reused(tenant.id, now)


def test_migrating_v6_with_an_order_redeemed_twice_keeps_the_first_and_records_the_rest(
    app, tenant, clock
):
    """v6 let two coupons be redeemed against one order; the unique index of v7 cannot be
    built over them, and `init-db` must not fail on a database that has them."""
    db = store_db.database
    now = clock.now_ms()
    with app.app_context():
        template = CouponTemplate.create(
            tenant=tenant.id,
            name="5 off",
            amount_off_fen=500,
            validity_days=7,
            budget=10,
            per_user_limit=3,
            created_ms=now,
        )
        user = get_or_create(tenant.id, "carol", None, now)
        got = [coupons.issue(tenant.id, template.id, user, now, "admin") for _ in range(3)]
        _back_to_v6(db)
        for i, c in enumerate(got):  # the first two on one order, as v6 allowed
            Coupon.update(
                status="redeemed", redeemed_ms=now + i, order_ref="o-1" if i < 2 else "o-2"
            ).where(Coupon.id == c.id).execute()

        assert migrate(db, now) == (6, LATEST)

        refs = {c.id: c.order_ref for c in Coupon.select()}
        assert refs == {got[0].id: "o-1", got[1].id: None, got[2].id: "o-2"}
        kept = json.loads(KeyValue.get(KeyValue.key == DOUBLE_REDEMPTIONS_KEY).value)
        assert kept == [{"coupon": got[1].id, "tenant": tenant.id, "order_ref": "o-1"}]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_v6_sqlite_user_table_is_rebuilt_with_autoincrement(app, tenant, clock):
    with app.app_context():
        _back_to_v6(store_db.database)
        migrate(store_db.database, clock.now_ms())
        sql = store_db.database.execute_sql(
            "SELECT sql FROM sqlite_master WHERE type='table' AND name='user'"
        ).fetchone()[0]
        assert "AUTOINCREMENT" in sql.upper()
