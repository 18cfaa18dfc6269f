"""A mini-program token is good only for the person it was issued to.

Eve logs in, erases herself, Alice signs up next. Eve's token must open nothing of Alice's on
any bearer route, listed from /openapi.json so routes added later are covered too, both with
ids never reused (schema v7) and with Alice's row forced onto Eve's old id: the token's
binding to the row's token key must close the hole on its own.
"""

from __future__ import annotations

import re

from helpers.app import login
from itsdangerous import URLSafeSerializer

from backend.store.models import Coupon, User
from backend.web.auth import TOKEN_SALT


def bearer_routes(client) -> list[tuple[str, str, dict]]:
    """(method, path template, operation) of every route the mini-program's token opens;
    DELETE last, so a leaking erasure cannot hide the other routes' answers."""
    spec = client.get("/openapi.json").get_json()
    found = [
        (method.upper(), path, op)
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
        if {"bearer": []} in op.get("security", [])
    ]
    return sorted(found, key=lambda r: (r[0] == "DELETE", r[1], r[0]))


def concrete(path: str, op: dict, int_id: int) -> str:
    """The path with its parameters filled: integer ids name one of the victim's rows."""
    kinds = {p["name"]: p["schema"]["type"] for p in op.get("parameters", []) if p["in"] == "path"}
    return re.sub(
        r"\{(\w+)\}", lambda m: str(int_id) if kinds[m.group(1)] == "integer" else "x", path
    )


def claimable_template(client, tenant) -> int:
    resp = client.post(
        "/admin/v1/coupon-templates",
        headers=tenant.admin,
        json={
            "name": "满20减5",
            "amount_off_fen": 500,
            "min_spend_fen": 2000,
            "validity_days": 7,
            "budget": 10,
            "claimable": True,
        },
    )
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["id"]


def assert_refused_everywhere(client, headers: dict, int_id: int) -> list[str]:
    """Every bearer route answers 401 invalid_token to `headers`; returns the routes tried."""
    tried = []
    for method, path, op in bearer_routes(client):
        url = concrete(path, op, int_id)
        body = {} if "requestBody" in op else None
        resp = client.open(url, method=method, json=body, headers=headers)
        assert resp.status_code == 401, (method, url, resp.status_code, resp.get_json())
        assert resp.get_json()["error"]["code"] == "invalid_token", (method, url)
        tried.append(f"{method} {path}")
    return tried


def eve_erases_then_alice_signs_up(client, tenant) -> tuple[dict, int]:
    """Eve's (now stale) Authorization header and her old user id."""
    eve = login(client, tenant, "eve")
    assert client.get("/mp/v1/me/data", headers=eve).get_json()["profile"]["openid"] == "dev_eve"
    with client.application.app_context():
        old_id = User.get(User.openid == "dev_eve").id
    assert client.delete("/mp/v1/me", headers=eve).status_code == 200
    return eve, old_id


def alice_with_a_coupon(client, tenant) -> tuple[dict, int]:
    alice = login(client, tenant, "alice")
    template_id = claimable_template(client, tenant)
    resp = client.post("/mp/v1/coupons/claim", json={"template_id": template_id}, headers=alice)
    assert resp.status_code == 201, resp.get_json()
    return alice, resp.get_json()["id"]


def test_bearer_routes_are_listed(client):
    routes = {f"{m} {p}" for m, p, _ in bearer_routes(client)}
    # The enumeration must find the routes that matter, or the tests below prove nothing.
    assert {"GET /mp/v1/coupons", "GET /mp/v1/me/data", "DELETE /mp/v1/me"} <= routes
    assert "POST /mp/v1/coupons/{coupon_id}/redeem" in routes
    assert "POST /mp/v1/login" not in routes


def test_erased_users_token_opens_nothing_of_the_next_sign_up(client, tenant, app):
    eve, eve_id = eve_erases_then_alice_signs_up(client, tenant)
    alice, coupon_id = alice_with_a_coupon(client, tenant)
    with app.app_context():
        assert User.get(User.openid == "dev_alice").id != eve_id  # ids are never handed out twice
    assert_refused_everywhere(client, eve, coupon_id)
    with app.app_context():
        assert Coupon.get_by_id(coupon_id).status == "issued"
    assert client.get("/mp/v1/me/data", headers=alice).get_json()["profile"]["openid"] == (
        "dev_alice"
    )


def test_token_key_alone_refuses_a_stale_token_even_if_the_id_is_reused(client, tenant, app):
    eve, eve_id = eve_erases_then_alice_signs_up(client, tenant)
    login(client, tenant, "alice")
    # Force what SQLite's rowids used to do: Alice's row takes Eve's old id.
    with app.app_context():
        row = User.get(User.openid == "dev_alice")
        fields = {f.name: getattr(row, f.name) for f in User._meta.sorted_fields}
        fields["tenant"] = row.tenant_id
        User.delete().where(User.id == row.id).execute()
        User.insert({**fields, "id": eve_id}).execute()
        assert User.get(User.openid == "dev_alice").id == eve_id
    alice, coupon_id = alice_with_a_coupon(client, tenant)  # logs in again onto the moved row
    tried = assert_refused_everywhere(client, eve, coupon_id)
    assert len(tried) >= 10
    # Nothing of Alice's was read, spent or erased through Eve's token.
    with app.app_context():
        assert User.get(User.openid == "dev_alice").id == eve_id
        assert Coupon.get_by_id(coupon_id).status == "issued"
    assert client.get("/mp/v1/coupons", headers=alice).status_code == 200
    data = client.get("/mp/v1/me/data", headers=alice).get_json()
    assert data["profile"]["openid"] == "dev_alice" and len(data["coupons"]) == 1


def test_token_issued_before_key_binding_is_refused(client, tenant, app):
    """Tokens from before this change name no key: they are refused and the phone logs in."""
    h = login(client, tenant, "alice")
    assert client.get("/mp/v1/coupons", headers=h).status_code == 200
    with app.app_context():
        user = User.get(User.openid == "dev_alice")
    old_style = URLSafeSerializer("test-secret", salt=TOKEN_SALT).dumps(
        {"t": tenant.id, "u": user.id, "exp": 4_000_000_000}
    )
    resp = client.get("/mp/v1/coupons", headers={"Authorization": f"Bearer {old_style}"})
    assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "invalid_token"


def test_a_changed_token_key_ends_every_token_of_the_user(client, tenant, app):
    """The key is the binding: rotate it (as erasure does, with the row) and old tokens die."""
    h = login(client, tenant, "alice")
    with app.app_context():
        User.update(token_key="0" * 32).where(User.openid == "dev_alice").execute()
    resp = client.get("/mp/v1/coupons", headers=h)
    assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "invalid_token"
    assert client.get("/mp/v1/coupons", headers=login(client, tenant, "alice")).status_code == 200
