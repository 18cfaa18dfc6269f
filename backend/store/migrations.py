"""Schema versions. Each migration runs once, in a transaction, in order.

Add a migration by appending a function to MIGRATIONS; never edit one that has shipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import peewee

from backend.store.models import (
    ApiKey,
    CampaignRun,
    ConsentLog,
    Coupon,
    CouponTemplate,
    Event,
    JobLock,
    KeyValue,
    Merchant,
    ModelFit,
    NightlyState,
    Order,
    Policy,
    SchemaVersion,
    ScoreSnapshot,
    SimulationPart,
    SimulationRun,
    SmsMessage,
    SubscriptionAllowance,
    SubscriptionGrant,
    TaskFailure,
    Tenant,
    Touch,
    User,
)


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer release than this one: refuse to run on a schema
    this code does not know, rather than write rows it would misread."""


def _v1_initial(db: peewee.Database) -> None:
    db.create_tables(
        [
            Tenant,
            ApiKey,
            User,
            Merchant,
            Event,
            CouponTemplate,
            Coupon,
            Order,
            SubscriptionAllowance,
            SubscriptionGrant,
            ConsentLog,
            KeyValue,
        ],
        safe=False,
    )


def _v2_scores(db: peewee.Database) -> None:
    db.create_tables([ScoreSnapshot, ModelFit], safe=False)


def _add_missing_columns(db: peewee.Database, table: str, columns: dict) -> None:
    """Add columns an older database lacks. Earlier migrations create tables from today's
    models, so a fresh database has them already and nothing is added twice."""
    from playhouse.migrate import PostgresqlMigrator, SqliteMigrator
    from playhouse.migrate import migrate as run

    migrator = SqliteMigrator(db) if _is_sqlite(db) else PostgresqlMigrator(db)
    have = {c.name for c in db.get_columns(table)}
    ops = [migrator.add_column(table, name, f) for name, f in columns.items() if name not in have]
    if ops:
        run(*ops)


def _v3_campaigns(db: peewee.Database) -> None:
    _add_missing_columns(
        db,
        "user",
        {
            "phone": peewee.CharField(max_length=20, null=True),
            "oa_openid": peewee.CharField(max_length=128, null=True),
        },
    )
    db.create_tables([Policy, CampaignRun, Touch, SmsMessage, JobLock], safe=False)


def _v4_touch_outcomes(db: peewee.Database) -> None:
    _add_missing_columns(
        db,
        "touch",
        {
            "quiet_deferred": peewee.BooleanField(default=False),
            "retained_d7": peewee.BooleanField(null=True),
            "retained_d30": peewee.BooleanField(null=True),
        },
    )


def _v5_drop_redundant_indexes(db: peewee.Database) -> None:
    """Single-column foreign-key indexes that a compound index already leads with."""
    for name in (
        "event_tenant_id",
        "event_user_id",
        "touch_tenant_id",
        "touch_policy_id",
        "touch_user_id",
    ):
        db.execute_sql(f'DROP INDEX IF EXISTS "{name}"')


def _v6_dashboard(db: peewee.Database) -> None:
    _add_missing_columns(
        db, "tenant", {"dashboard_password_hash": peewee.CharField(max_length=255, null=True)}
    )
    db.create_tables([SimulationRun], safe=False)


def _rebuild_user_table_sqlite(db: peewee.Database) -> None:
    """SQLite cannot add AUTOINCREMENT to a table: build the new `user`, copy, swap (SQLite's
    documented way to change a table; foreign keys are off during migrations, see migrate)."""
    sql = db.execute_sql("SELECT sql FROM sqlite_master WHERE type='table' AND name='user'")
    row = sql.fetchone()
    if row is None or "AUTOINCREMENT" in row[0].upper():
        return
    create_sql, params = User._schema._create_table(safe=False).query()
    create_sql = create_sql.replace('CREATE TABLE "user"', 'CREATE TABLE "user__new"', 1)
    db.execute_sql(create_sql, params)
    old = [c.name for c in db.get_columns("user")]
    cols = [c for c in old if c != "token_key"]
    names = ", ".join(f'"{c}"' for c in cols)
    db.execute_sql(
        f'INSERT INTO "user__new" ({names}, "token_key") '
        f'SELECT {names}, lower(hex(randomblob(16))) FROM "user"'
    )
    db.execute_sql('DROP TABLE "user"')
    db.execute_sql('ALTER TABLE "user__new" RENAME TO "user"')
    User._schema.create_indexes(safe=True)


def _is_sqlite(db: peewee.Database) -> bool:
    return isinstance(getattr(db, "obj", db), peewee.SqliteDatabase)


def _v7_hardening(db: peewee.Database) -> None:
    """User ids never reused and a per-user token key; delivery claims fenced by a token; one
    coupon per order."""
    if _is_sqlite(db):
        _rebuild_user_table_sqlite(db)
    elif "token_key" not in {c.name for c in db.get_columns("user")}:
        db.execute_sql('ALTER TABLE "user" ADD COLUMN "token_key" VARCHAR(32)')
        db.execute_sql(
            'UPDATE "user" SET token_key = substr(md5(random()::text || id::text), 1, 32)'
        )
        db.execute_sql('ALTER TABLE "user" ALTER COLUMN "token_key" SET NOT NULL')
    _add_missing_columns(db, "touch", {"claim_token": peewee.CharField(max_length=32, null=True)})
    _set_aside_double_redemptions(db)
    db.execute_sql(
        'CREATE UNIQUE INDEX IF NOT EXISTS "coupon_tenant_id_order_ref" '
        'ON "coupon" ("tenant_id", "order_ref")'
    )


DOUBLE_REDEMPTIONS_KEY = "migration-v7-double-redemptions"


def _set_aside_double_redemptions(db: peewee.Database) -> None:
    """Before v7, two coupons could be redeemed against one order (the hole v7 closes). The
    unique index cannot be built over such rows, so the first redemption of each order keeps
    its `order_ref`; the later ones lose it, and what they said is kept in a KeyValue row
    (`DOUBLE_REDEMPTIONS_KEY`) so the books can still be put right by hand."""
    rows = db.execute_sql(
        'SELECT c.id, c.tenant_id, c.order_ref FROM "coupon" c WHERE c.order_ref IS NOT NULL '
        'AND EXISTS (SELECT 1 FROM "coupon" d WHERE d.tenant_id = c.tenant_id '
        "AND d.order_ref = c.order_ref AND (d.redeemed_ms < c.redeemed_ms "
        "OR (d.redeemed_ms = c.redeemed_ms AND d.id < c.id))) ORDER BY c.id"
    ).fetchall()
    if not rows:
        return
    ids = [int(r[0]) for r in rows]
    kept = [{"coupon": int(r[0]), "tenant": int(r[1]), "order_ref": r[2]} for r in rows]
    Coupon.update(order_ref=None).where(Coupon.id.in_(ids)).execute()
    KeyValue.create(key=DOUBLE_REDEMPTIONS_KEY, value=json.dumps(kept))


def _v8_nightly_state(db: peewee.Database) -> None:
    """The scoring state production keeps between nights (services/nightly_state.py)."""
    db.create_tables([NightlyState], safe=True)


def _v9_claim_ids(db: peewee.Database) -> None:
    """The idempotency key of a coupon claim (the mini-program SDK resends a claim whose
    answer was lost), unique per user."""
    _add_missing_columns(db, "coupon", {"request_id": peewee.CharField(max_length=64, null=True)})
    db.execute_sql(
        'CREATE UNIQUE INDEX IF NOT EXISTS "coupon_user_id_request_id" '
        'ON "coupon" ("user_id", "request_id")'
    )


def _v10_task_failures(db: peewee.Database) -> None:
    """Background tasks that failed for good (backend/tasks, services/task_failures.py)."""
    db.create_tables([TaskFailure], safe=True)


def _v11_simulation_parts(db: peewee.Database) -> None:
    """A dashboard trial's runs as tasks of their own, each answer kept until gathered
    (backend/tasks/trials.py)."""
    db.create_tables([SimulationPart], safe=True)


def _v12_send_started(db: peewee.Database) -> None:
    """When a touch's send began (services/delivery.py: a send interrupted inside the channel
    call is recorded, not repeated)."""
    _add_missing_columns(db, "touch", {"send_started_ms": peewee.BigIntegerField(null=True)})


MIGRATIONS: list[Callable[[peewee.Database], None]] = [
    _v1_initial,
    _v2_scores,
    _v3_campaigns,
    _v4_touch_outcomes,
    _v5_drop_redundant_indexes,
    _v6_dashboard,
    _v7_hardening,
    _v8_nightly_state,
    _v9_claim_ids,
    _v10_task_failures,
    _v11_simulation_parts,
    _v12_send_started,
]
LATEST = len(MIGRATIONS)


def current_version(db: peewee.Database) -> int:
    """The schema version the database is at; 0 for an empty database."""
    if not db.table_exists(SchemaVersion._meta.table_name):
        return 0
    row = SchemaVersion.select(peewee.fn.MAX(SchemaVersion.version)).scalar()
    return int(row or 0)


def migrate(db: peewee.Database, now_ms: int) -> tuple[int, int]:
    """Bring the schema to LATEST; returns (from_version, to_version). Safe to run twice."""
    db.create_tables([SchemaVersion], safe=True)
    sqlite = _is_sqlite(db)
    if sqlite:
        # A table rebuild must not cascade its DROP into the tables that refer to it; SQLite
        # ignores this pragma inside a transaction, so it is set before and checked after.
        db.execute_sql("PRAGMA foreign_keys=OFF")
    try:
        with db.atomic():
            start = current_version(db)
            if start > LATEST:
                raise SchemaTooNew(
                    f"database schema is version {start}, this code knows only up to {LATEST}"
                )
            for version in range(start + 1, LATEST + 1):
                MIGRATIONS[version - 1](db)
                SchemaVersion.create(version=version, applied_ms=now_ms)
            if sqlite:
                broken = db.execute_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"migration broke foreign keys: {broken[:5]}")
    finally:
        if sqlite:
            db.execute_sql("PRAGMA foreign_keys=ON")
    return start, LATEST
