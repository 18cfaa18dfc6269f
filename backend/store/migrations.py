"""Schema versions. Each migration runs once, in a transaction, in order.

Add a migration by appending a function to MIGRATIONS; never edit one that has shipped.
"""

from __future__ import annotations

from collections.abc import Callable

import peewee

from backend.store.models import (
    ApiKey,
    ConsentLog,
    Coupon,
    CouponTemplate,
    Event,
    KeyValue,
    Merchant,
    ModelFit,
    Order,
    SchemaVersion,
    ScoreSnapshot,
    SubscriptionAllowance,
    SubscriptionGrant,
    Tenant,
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


MIGRATIONS: list[Callable[[peewee.Database], None]] = [_v1_initial, _v2_scores]
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
