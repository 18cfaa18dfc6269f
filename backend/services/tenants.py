"""Tenants (one per mini-program appid), their merchants and admin keys."""

from __future__ import annotations

import json
from functools import cache

from werkzeug.security import check_password_hash, generate_password_hash

from backend.core.calendar import check_calendar_name
from backend.core.tiers import TierConfig
from backend.errors import ApiError
from backend.services.keys import new_api_key
from backend.services.nightly_schedule import check_nightly_at
from backend.services.scoring import load_calendar
from backend.store.db import database
from backend.store.models import Merchant, Tenant


def create(appid: str, name: str, now_ms: int, settings: dict | None = None) -> tuple[Tenant, str]:
    """A new tenant and its first admin API key (returned once, stored hashed)."""
    with database.atomic():
        tenant = Tenant.create(
            appid=appid, name=name, settings=json.dumps(settings or {}), created_ms=now_ms
        )
        key = new_api_key(tenant, now_ms, label="initial")
    return tenant, key


def by_appid(appid: str) -> Tenant | None:
    """The tenant of a mini-program appid (how a mini-program request finds its tenant)."""
    return Tenant.get_or_none(Tenant.appid == appid)


def merchants(tenant_id: int) -> list[Merchant]:
    """The tenant's merchants (the campus shops coupons can be tied to), by code."""
    return list(Merchant.select().where(Merchant.tenant == tenant_id).order_by(Merchant.code))


def add_merchant(tenant_id: int, code: str, name: str) -> Merchant:
    """A new merchant; 409 if the code is taken (also when two requests race for it)."""
    inserted = (
        Merchant.insert(tenant=tenant_id, code=code, name=name)
        .on_conflict_ignore()
        .as_rowcount()
        .execute()
    )
    if inserted == 0:
        raise ApiError(409, "merchant_exists", f"merchant {code!r} already exists")
    return Merchant.get((Merchant.tenant == tenant_id) & (Merchant.code == code))


def settings(tenant: Tenant) -> dict:
    """The tenant's settings as stored (calendar, tier thresholds, ...); {} when none."""
    return json.loads(tenant.settings or "{}")


def update_settings(tenant: Tenant, changes: dict) -> dict:
    """Merge `changes` into the tenant's settings after checking they can be used."""
    merged = {**settings(tenant), **changes}
    calendar = merged.get("calendar")
    if isinstance(calendar, str):
        try:
            check_calendar_name(calendar)
        except ValueError as exc:
            raise ApiError(
                400, "invalid_settings", f"{exc} (or give the breaks themselves)"
            ) from None
    try:
        TierConfig.from_settings(merged.get("tiers"))
        load_calendar(merged)
        if "nightly_at" in merged:
            check_nightly_at(merged["nightly_at"])
    except (ValueError, OSError) as exc:
        raise ApiError(400, "invalid_settings", str(exc)) from None
    Tenant.update(settings=json.dumps(merged, ensure_ascii=False)).where(
        Tenant.id == tenant.id
    ).execute()
    return merged


MIN_PASSWORD_LENGTH = 10


def set_dashboard_password(tenant: Tenant, password: str) -> None:
    """Store a salted scrypt hash; changing it ends every session made with the old one."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ApiError(400, "password_too_short", f"use at least {MIN_PASSWORD_LENGTH} characters")
    Tenant.update(dashboard_password_hash=generate_password_hash(password)).where(
        Tenant.id == tenant.id
    ).execute()


def check_dashboard_password(appid: str, password: str) -> Tenant | None:
    """The tenant whose dashboard password this is, or None (no password set counts as no)."""
    tenant = by_appid(appid)
    stored = tenant.dashboard_password_hash if tenant else None
    if not stored:
        # Spend the same time as a real check so a wrong appid is not told apart by timing.
        check_password_hash(_dummy_hash(), password)
        return None
    return tenant if check_password_hash(stored, password) else None


@cache
def _dummy_hash() -> str:
    return generate_password_hash("not a password")
