"""Schema versions. Each migration runs once, in a transaction, in order.

Add a migration by appending a function to MIGRATIONS; never edit one that has shipped.
"""

from __future__ import annotations

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
    Order,
    Policy,
    SchemaVersion,
    ScoreSnapshot,
    SimulationRun,
    SmsMessage,
    SubscriptionAllowance,
    SubscriptionGrant,
    Tenant,
    Touch,
    User,
)


class SchemaTooNew(RuntimeError):
    pass


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

    migrator = (
        PostgresqlMigrator(db) if isinstance(db, peewee.PostgresqlDatabase) else SqliteMigrator(db)
    )
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


MIGRATIONS: list[Callable[[peewee.Database], None]] = [
    _v1_initial,
    _v2_scores,
    _v3_campaigns,
    _v4_touch_outcomes,
    _v5_drop_redundant_indexes,
    _v6_dashboard,
]
LATEST = len(MIGRATIONS)


def current_version(db: peewee.Database) -> int:
    if not db.table_exists(SchemaVersion._meta.table_name):
        return 0
    row = SchemaVersion.select(peewee.fn.MAX(SchemaVersion.version)).scalar()
    return int(row or 0)


def migrate(db: peewee.Database, now_ms: int) -> tuple[int, int]:
    """Bring the schema to LATEST; returns (from_version, to_version). Safe to run twice."""
    db.create_tables([SchemaVersion], safe=True)
    with db.atomic():
        start = current_version(db)
        if start > LATEST:
            raise SchemaTooNew(
                f"database schema is version {start}, this code knows only up to {LATEST}"
            )
        for version in range(start + 1, LATEST + 1):
            MIGRATIONS[version - 1](db)
            SchemaVersion.create(version=version, applied_ms=now_ms)
    return start, LATEST
