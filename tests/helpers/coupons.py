"""A claimable coupon template made through the admin API, for the coupon tests."""

from __future__ import annotations

TEMPLATE = {
    "name": "满20减8",
    "amount_off_fen": 800,
    "min_spend_fen": 2000,
    "validity_days": 3,
    "budget": 10,
    "per_user_limit": 1,
    "claimable": True,
}


def make_template(client, tenant, **changes) -> dict:
    """A new template of the tenant: TEMPLATE with `changes`."""
    resp = client.post(
        "/admin/v1/coupon-templates", json={**TEMPLATE, **changes}, headers=tenant.admin
    )
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()
