"""Loading tenants from the YAML files in seeds/ (data, not code)."""

from __future__ import annotations

from pathlib import Path

import yaml

from backend.core import seeds
from backend.errors import ApiError
from backend.services import coupons, policies, tenants
from backend.services.keys import new_api_key
from backend.store.db import database
from backend.store.models import CouponTemplate, Merchant


def load_demo_tenant(now_ms: int, path: Path = seeds.DEMO_TENANT) -> tuple[str, str]:
    """Create the demo tenant (or top it up) and return (appid, a new admin API key).

    Idempotent: merchants and templates are matched by code and name, so running it again
    only issues a fresh key (the old ones stay valid; keys are stored hashed and cannot be shown
    again).
    """
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    with database.atomic():
        tenant = tenants.by_appid(spec["appid"])
        if tenant is None:
            tenant, key = tenants.create(spec["appid"], spec["name"], now_ms)
        else:
            key = new_api_key(tenant, now_ms, label="seed-demo")
        for m in spec.get("merchants", []):
            Merchant.insert(
                tenant=tenant.id, code=m["code"], name=m["name"]
            ).on_conflict_ignore().as_rowcount().execute()
        for t in spec.get("coupon_templates", []):
            exists = (
                CouponTemplate.select()
                .where((CouponTemplate.tenant == tenant.id) & (CouponTemplate.name == t["name"]))
                .exists()
            )
            if not exists:
                coupons.create_template(tenant.id, t, now_ms)
    for p in spec.get("policies", []):
        _install_policy(tenant.id, p, now_ms)
    return tenant.appid, key


def _install_policy(tenant_id: int, spec: dict, now_ms: int) -> None:
    """Install a preset once; a merchant's later edits and (de)activations are kept."""
    try:
        policies.create(
            tenant_id, {"preset": spec["preset"], "active": spec.get("active", False)}, now_ms
        )
    except ApiError as exc:
        if exc.code != "policy_exists":
            raise
