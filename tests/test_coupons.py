"""Coupon templates, issuing within budget and per-user limits, wallet and redemption races."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import requests
from helpers.app import login
from helpers.coupons import TEMPLATE, make_template

from backend.store.models import Coupon, CouponTemplate, Order


def claim(client, headers, template_id):
    return client.post("/mp/v1/coupons/claim", json={"template_id": template_id}, headers=headers)


def test_template_crud(client, tenant):
    t = make_template(client, tenant, merchant="canteen-1")
    assert t["remaining"] == 10 and t["merchant"] == "canteen-1"
    listed = client.get("/admin/v1/coupon-templates", headers=tenant.admin).get_json()
    assert [x["id"] for x in listed["templates"]] == [t["id"]]
    patched = client.patch(
        f"/admin/v1/coupon-templates/{t['id']}", json={"budget": 20}, headers=tenant.admin
    ).get_json()
    assert patched["budget"] == 20 and patched["remaining"] == 20
    assert (
        client.delete(f"/admin/v1/coupon-templates/{t['id']}", headers=tenant.admin).status_code
        == 200
    )
    assert (
        client.get(f"/admin/v1/coupon-templates/{t['id']}", headers=tenant.admin).status_code == 404
    )


def test_template_validation_names_the_field(client, tenant):
    bad = [
        ({**TEMPLATE, "amount_off_fen": 8.5}, "amount_off_fen"),
        ({**TEMPLATE, "budget": -1}, "budget"),
        ({**TEMPLATE, "bogus": 1}, "bogus"),
        ({**TEMPLATE, "merchant": "nope"}, "nope"),
        ({**TEMPLATE, "amount_off_fen": 3000}, "min_spend_fen"),
        ({k: v for k, v in TEMPLATE.items() if k != "name"}, "name"),
    ]
    for body, word in bad:
        resp = client.post("/admin/v1/coupon-templates", json=body, headers=tenant.admin)
        assert resp.status_code == 400, body
        assert word in resp.get_json()["error"]["message"]


def test_used_template_cannot_be_deleted_and_budget_cannot_drop_below_issued(client, tenant):
    t = make_template(client, tenant)
    assert claim(client, login(client, tenant, "a"), t["id"]).status_code == 201
    assert claim(client, login(client, tenant, "b"), t["id"]).status_code == 201
    resp = client.delete(f"/admin/v1/coupon-templates/{t['id']}", headers=tenant.admin)
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "template_in_use"
    resp = client.patch(
        f"/admin/v1/coupon-templates/{t['id']}", json={"budget": 1}, headers=tenant.admin
    )
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "budget_below_issued"


def test_admin_issue_respects_per_user_limit_and_wallet_shows_it(client, tenant):
    t = make_template(client, tenant, claimable=False, per_user_limit=2)
    h = login(client, tenant, "a")
    for _ in range(2):
        resp = client.post(
            f"/admin/v1/coupon-templates/{t['id']}/issue",
            json={"user": "dev_a"},
            headers=tenant.admin,
        )
        assert resp.status_code == 201
    third = client.post(
        f"/admin/v1/coupon-templates/{t['id']}/issue", json={"user": "dev_a"}, headers=tenant.admin
    )
    assert third.status_code == 409 and third.get_json()["error"]["code"] == "per_user_limit"
    # The refused issue did not spend budget.
    after = client.get(f"/admin/v1/coupon-templates/{t['id']}", headers=tenant.admin).get_json()
    assert after["issued_count"] == 2
    wallet = client.get("/mp/v1/coupons", headers=h).get_json()["coupons"]
    assert [c["status"] for c in wallet] == ["issued", "issued"]
    assert wallet[0]["expires_at"] == "2026-03-13T18:00:00+08:00"
    # Not claimable by the user themself.
    assert claim(client, h, t["id"]).get_json()["error"]["code"] == "not_claimable"


def test_redeem_once_then_refused_and_min_spend_enforced(client, tenant, app):
    t = make_template(client, tenant)
    h = login(client, tenant)
    coupon = claim(client, h, t["id"]).get_json()
    url = f"/mp/v1/coupons/{coupon['id']}/redeem"
    low = client.post(url, json={"order_id": "o1", "order_amount_fen": 1999}, headers=h)
    assert low.status_code == 409 and low.get_json()["error"]["code"] == "below_min_spend"
    ok = client.post(url, json={"order_id": "o1", "order_amount_fen": 2500}, headers=h)
    assert ok.status_code == 200 and ok.get_json()["status"] == "redeemed"
    again = client.post(url, json={"order_id": "o2", "order_amount_fen": 2500}, headers=h)
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "already_redeemed"
    # The order event arriving later is linked to the coupon that paid for part of it.
    client.post(
        "/mp/v1/events",
        headers=h,
        json={
            "events": [
                {
                    "id": "p1",
                    "type": "order_paid",
                    "ts": "2026-03-10T17:59:00",
                    "props": {"order_id": "o1", "amount_fen": 1700},
                }
            ]
        },
    )
    with app.app_context():
        assert Order.get(Order.order_ref == "o1").coupon_id == coupon["id"]


def test_expired_coupon_cannot_be_redeemed(client, tenant, clock):
    t = make_template(client, tenant, validity_days=1)
    h = login(client, tenant)
    coupon = claim(client, h, t["id"]).get_json()
    clock.advance(days=1, seconds=1)
    h = login(client, tenant)  # the old token expired meanwhile
    wallet = client.get("/mp/v1/coupons", headers=h).get_json()["coupons"]
    assert wallet[0]["status"] == "expired"
    resp = client.post(
        f"/mp/v1/coupons/{coupon['id']}/redeem",
        json={"order_id": "o", "order_amount_fen": 5000},
        headers=h,
    )
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "coupon_expired"


def test_another_users_coupon_is_not_found(client, tenant):
    t = make_template(client, tenant)
    coupon = claim(client, login(client, tenant, "a"), t["id"]).get_json()
    resp = client.post(
        f"/mp/v1/coupons/{coupon['id']}/redeem",
        json={"order_id": "o", "order_amount_fen": 5000},
        headers=login(client, tenant, "b"),
    )
    assert resp.status_code == 404


def test_two_threads_redeeming_one_coupon_exactly_one_wins(client, tenant, live_server, app):
    rounds = 5  # a race that is lost only sometimes must be lost every round
    t = make_template(client, tenant, per_user_limit=rounds)
    h = login(client, tenant)
    for _ in range(rounds):
        coupon = claim(client, h, t["id"]).get_json()
        barrier = threading.Barrier(2)

        def attempt(i: int, coupon_id=coupon["id"], barrier=barrier) -> int:
            barrier.wait()
            return requests.post(
                f"{live_server}/mp/v1/coupons/{coupon_id}/redeem",
                json={"order_id": f"o{coupon_id}-{i}", "order_amount_fen": 3000},
                headers=h,
                timeout=60,
            ).status_code

        with ThreadPoolExecutor(2) as pool:
            assert sorted(pool.map(attempt, range(2))) == [200, 409]
        with app.app_context():
            c = Coupon.get_by_id(coupon["id"])
            assert c.status == "redeemed"
            assert c.order_ref in (f"o{c.id}-0", f"o{c.id}-1")


def test_200_threads_claiming_budget_50_issue_exactly_50(client, tenant, live_server, app):
    t = make_template(client, tenant, budget=50)
    headers = [login(client, tenant, f"u{i}") for i in range(200)]
    barrier = threading.Barrier(200)

    def attempt(h) -> int:
        barrier.wait()
        return requests.post(
            f"{live_server}/mp/v1/coupons/claim",
            json={"template_id": t["id"]},
            headers=h,
            timeout=120,
        ).status_code

    with ThreadPoolExecutor(200) as pool:
        codes = list(pool.map(attempt, headers))
    assert codes.count(201) == 50
    assert codes.count(409) == 150
    with app.app_context():
        assert Coupon.select().count() == 50
        assert CouponTemplate.get_by_id(t["id"]).issued_count == 50


def test_one_user_racing_claims_gets_only_their_limit(client, tenant, live_server, app):
    t = make_template(client, tenant, budget=100, per_user_limit=2)
    h = login(client, tenant)
    barrier = threading.Barrier(20)

    def attempt(_) -> int:
        barrier.wait()
        return requests.post(
            f"{live_server}/mp/v1/coupons/claim",
            json={"template_id": t["id"]},
            headers=h,
            timeout=60,
        ).status_code

    with ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(attempt, range(20)))
    assert codes.count(201) == 2
    with app.app_context():
        assert Coupon.select().count() == 2
        assert CouponTemplate.get_by_id(t["id"]).issued_count == 2


def _two_coupons(client, tenant) -> tuple[dict, list[dict]]:
    t = make_template(client, tenant, per_user_limit=2)
    h = login(client, tenant)
    return h, [claim(client, h, t["id"]).get_json() for _ in range(2)]


def _redeem(client, h, coupon_id: int, order_id: str):
    return client.post(
        f"/mp/v1/coupons/{coupon_id}/redeem",
        json={"order_id": order_id, "order_amount_fen": 3000},
        headers=h,
    )


def test_one_order_takes_one_coupon(client, tenant, app):
    h, (first, second) = _two_coupons(client, tenant)
    assert _redeem(client, h, first["id"], "order-1").status_code == 200
    refused = _redeem(client, h, second["id"], "order-1")
    assert refused.status_code == 409
    assert refused.get_json()["error"]["code"] == "order_already_used"
    with app.app_context():
        assert Coupon.get_by_id(second["id"]).status == "issued"  # still the user's to spend
        assert Coupon.get_by_id(second["id"]).order_ref is None
    # The refused coupon still works on another order; another tenant's order ids are its own.
    assert _redeem(client, h, second["id"], "order-2").status_code == 200


def test_a_second_coupon_slipping_past_the_check_is_refused_by_the_index(
    client, tenant, app, monkeypatch
):
    """Two racing redemptions both pass the check before either writes: the unique index on
    (tenant, order_ref) refuses the second, answered with the same 409, not a 500."""
    from backend.services import coupons

    h, (first, second) = _two_coupons(client, tenant)
    monkeypatch.setattr(coupons, "_order_taken", lambda tenant_id, order_ref: False)
    assert _redeem(client, h, first["id"], "order-1").status_code == 200
    refused = _redeem(client, h, second["id"], "order-1")
    assert refused.status_code == 409, refused.get_json()
    assert refused.get_json()["error"]["code"] == "order_already_used"
    with app.app_context():
        assert Coupon.get_by_id(second["id"]).status == "issued"
        assert Coupon.select().where(Coupon.order_ref == "order-1").count() == 1


def test_racing_coupons_on_one_order_exactly_one_wins(client, tenant, live_server, app):
    t = make_template(client, tenant, per_user_limit=8)
    h = login(client, tenant)
    ids = [claim(client, h, t["id"]).get_json()["id"] for _ in range(8)]
    barrier = threading.Barrier(len(ids))

    def attempt(coupon_id: int):
        barrier.wait()
        resp = requests.post(
            f"{live_server}/mp/v1/coupons/{coupon_id}/redeem",
            json={"order_id": "shared-order", "order_amount_fen": 3000},
            headers=h,
            timeout=60,
        )
        return resp.status_code, resp.json()

    with ThreadPoolExecutor(len(ids)) as pool:
        answers = list(pool.map(attempt, ids))
    assert sorted(code for code, _ in answers) == [200] + [409] * (len(ids) - 1)
    codes = {body["error"]["code"] for code, body in answers if code == 409}
    assert codes == {"order_already_used"}
    with app.app_context():
        assert Coupon.select().where(Coupon.order_ref == "shared-order").count() == 1
