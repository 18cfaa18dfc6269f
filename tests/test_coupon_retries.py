"""A phone resending a coupon call whose answer it lost gets the first answer's effect once:
a claim with the same `id` gets the same coupon (200), a redemption of the same order the
redeemed coupon (200). The mini-program SDK relies on both (sdk/miniprogram)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import requests
from helpers.app import login
from helpers.coupons import make_template

from backend.store.models import Coupon, CouponTemplate


def _claim(client, h, template_id: int, claim_id: str | None):
    body = {"template_id": template_id} | ({"id": claim_id} if claim_id else {})
    return client.post("/mp/v1/coupons/claim", json=body, headers=h)


def test_a_resent_claim_gets_its_coupon_and_takes_no_other(client, tenant, app):
    t = make_template(client, tenant, per_user_limit=3)
    h = login(client, tenant)
    first = _claim(client, h, t["id"], "claim-1")
    again = _claim(client, h, t["id"], "claim-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.get_json() == first.get_json()
    assert _claim(client, h, t["id"], "claim-2").status_code == 201  # a new claim is new
    with app.app_context():
        assert Coupon.select().count() == 2
        assert CouponTemplate.get_by_id(t["id"]).issued_count == 2


def test_a_claim_id_is_the_users_own_and_names_one_template(client, tenant):
    t = make_template(client, tenant, per_user_limit=3)
    other = make_template(client, tenant, name="另一张")
    a, b = login(client, tenant, "a"), login(client, tenant, "b")
    mine = _claim(client, a, t["id"], "same").get_json()
    theirs = _claim(client, b, t["id"], "same")
    assert theirs.status_code == 201 and theirs.get_json()["id"] != mine["id"]
    reused = _claim(client, a, other["id"], "same")
    assert reused.status_code == 409
    assert reused.get_json()["error"]["code"] == "claim_id_reused"


def test_a_resent_claim_at_the_limit_is_still_answered_its_coupon(client, tenant):
    t = make_template(client, tenant, per_user_limit=1)
    h = login(client, tenant)
    first = _claim(client, h, t["id"], "only")
    assert _claim(client, h, t["id"], "only").get_json() == first.get_json()
    refused = _claim(client, h, t["id"], "another")
    assert refused.get_json()["error"]["code"] == "per_user_limit"


def test_racing_twins_of_one_claim_issue_one_coupon(client, tenant, live_server, app):
    t = make_template(client, tenant, budget=100, per_user_limit=5)
    h = login(client, tenant)
    barrier = threading.Barrier(12)

    def attempt(_) -> tuple[int, int]:
        barrier.wait()
        r = requests.post(
            f"{live_server}/mp/v1/coupons/claim",
            json={"template_id": t["id"], "id": "twin"},
            headers=h,
            timeout=60,
        )
        return r.status_code, r.json()["id"]

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(attempt, range(12)))
    assert sorted(code for code, _ in answers).count(201) == 1
    assert {code for code, _ in answers} <= {200, 201}
    assert len({cid for _, cid in answers}) == 1
    with app.app_context():
        assert Coupon.select().count() == 1
        assert CouponTemplate.get_by_id(t["id"]).issued_count == 1


def test_a_resent_redemption_of_the_same_order_is_answered_not_refused(client, tenant, app):
    t = make_template(client, tenant)
    h = login(client, tenant)
    coupon = _claim(client, h, t["id"], None).get_json()
    url = f"/mp/v1/coupons/{coupon['id']}/redeem"
    body = {"order_id": "o1", "order_amount_fen": 2500}
    first = client.post(url, json=body, headers=h)
    again = client.post(url, json=body, headers=h)
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.get_json() == first.get_json()
    other = client.post(url, json={"order_id": "o2", "order_amount_fen": 2500}, headers=h)
    assert other.status_code == 409 and other.get_json()["error"]["code"] == "already_redeemed"
