"""Subscribe-message allowances, marketing opt-out, data export and erasure."""

from __future__ import annotations

from helpers.app import login

from backend.store.models import ConsentLog, Coupon, Event, Order, SubscriptionAllowance, User


def subscribe(client, h, results, **extra):
    return client.post("/mp/v1/subscriptions", json={"results": results, **extra}, headers=h)


def test_each_accept_adds_one_allowance_and_ban_clears_it(client, tenant):
    h = login(client, tenant)
    r = subscribe(
        client, h, {"TPL_A": "accept", "TPL_B": "reject", "errMsg": "requestSubscribeMessage:ok"}
    )
    assert r.get_json() == {"allowances": {"TPL_A": 1, "TPL_B": 0}, "duplicate": False}
    assert subscribe(client, h, {"TPL_A": "accept"}).get_json()["allowances"]["TPL_A"] == 2
    # A later refusal does not take back earlier accepts; switching the template off does.
    assert subscribe(client, h, {"TPL_A": "reject"}).get_json()["allowances"]["TPL_A"] == 2
    assert subscribe(client, h, {"TPL_A": "ban"}).get_json()["allowances"]["TPL_A"] == 0


def test_retried_subscription_with_same_id_counts_once(client, tenant, app):
    h = login(client, tenant)
    first = subscribe(client, h, {"TPL_A": "accept"}, id="prompt-1").get_json()
    second = subscribe(client, h, {"TPL_A": "accept"}, id="prompt-1").get_json()
    assert first == {"allowances": {"TPL_A": 1}, "duplicate": False}
    assert second == {"allowances": {"TPL_A": 1}, "duplicate": True}


def test_subscription_validation(client, tenant):
    h = login(client, tenant)
    for results in ({"TPL_A": "maybe"}, {}, {"TPL_A": 1}, "accept"):
        resp = subscribe(client, h, results)
        assert resp.status_code == 400, results
        assert resp.get_json()["error"]["code"] == "invalid_request"


def test_opt_out_and_back_in_is_logged(client, tenant, app):
    h = login(client, tenant)
    assert client.post("/mp/v1/me/opt-out", headers=h).get_json() == {"marketing_opt_out": True}
    with app.app_context():
        assert User.get(User.openid == "dev_alice").marketing_opt_out is True
    admin_view = client.get("/admin/v1/users/dev_alice", headers=tenant.admin).get_json()
    assert admin_view["marketing_opt_out"] is True
    assert client.post("/mp/v1/me/opt-in", headers=h).get_json() == {"marketing_opt_out": False}
    data = client.get("/mp/v1/me/data", headers=h).get_json()
    assert [c["action"] for c in data["consent"]] == ["opt_out", "opt_in"]
    assert data["profile"]["marketing_opt_out"] is False


def _populate(client, tenant) -> dict:
    h = login(client, tenant)
    client.post(
        "/mp/v1/events",
        headers=h,
        json={
            "events": [
                {"id": "1", "type": "app_open", "ts": "2026-03-10T17:00:00"},
                {
                    "id": "2",
                    "type": "order_paid",
                    "ts": "2026-03-10T17:05:00",
                    "props": {"order_id": "o-9", "amount_fen": 2500, "merchant": "canteen-1"},
                },
            ]
        },
    )
    t = client.post(
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
    ).get_json()
    client.post("/mp/v1/coupons/claim", json={"template_id": t["id"]}, headers=h)
    subscribe(client, h, {"TPL_A": "accept"})
    client.post("/mp/v1/me/opt-out", headers=h)
    return h


def test_export_holds_every_kind_of_data_with_its_purpose(client, tenant):
    h = _populate(client, tenant)
    data = client.get("/mp/v1/me/data", headers=h).get_json()
    kinds = {"profile", "events", "orders", "coupons", "subscriptions", "consent"}
    kinds |= {"subscription_answers", "scores", "messages", "sms"}
    assert kinds <= data.keys()
    assert kinds == data["purposes"].keys()
    assert data["profile"]["openid"] == "dev_alice"
    assert [e["type"] for e in data["events"]] == ["app_open", "order_paid"]
    assert data["events"][0]["ts"] == "2026-03-10T17:00:00+08:00"
    assert data["orders"] == [
        {
            "order_id": "o-9",
            "amount_fen": 2500,
            "paid_at": "2026-03-10T17:05:00+08:00",
            "status": "paid",
        }
    ]
    assert len(data["coupons"]) == 1
    assert data["subscriptions"][0]["remaining"] == 1


def test_erasure_deletes_personal_data_and_anonymises_orders(client, tenant, other_tenant, app):
    h = _populate(client, tenant)
    bystander = login(client, tenant, "bystander")
    client.post(
        "/mp/v1/events",
        headers=bystander,
        json={"events": [{"id": "1", "type": "app_open", "ts": "2026-03-10T17:00:00"}]},
    )
    resp = client.delete("/mp/v1/me", headers=h)
    assert resp.status_code == 200
    assert resp.get_json()["erased"]["events"] == 2
    with app.app_context():
        assert User.get_or_none(User.openid == "dev_alice") is None
        assert Event.select().count() == 1  # the bystander's
        assert Coupon.select().count() == 0
        assert SubscriptionAllowance.select().count() == 0
        assert ConsentLog.select().count() == 0
        order = Order.get()
        assert order.user_id is None and order.amount_fen == 2500
    # The old token is dead; the admin can no longer find the user.
    assert client.get("/mp/v1/me/data", headers=h).status_code == 401
    assert client.get("/admin/v1/users/dev_alice", headers=tenant.admin).status_code == 404
