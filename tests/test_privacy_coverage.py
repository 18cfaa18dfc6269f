"""Export and erasure cover every table that refers to a user, found from the models.

The tables are not listed here: a walk over the foreign keys of ALL_MODELS finds every model
that refers to a user, directly or through another such model (Touch -> SmsMessage, Coupon ->
Order.coupon). Each must be in privacy.HOLDINGS, the test user has a row in each, the export
shows every such row, and after `DELETE /mp/v1/me` none is left tied to the user and no table
holds a copy of their openid, unionid, phone or Official Account openid.
"""

from __future__ import annotations

import textwrap

import peewee as pw
from helpers.app import T0, login

from backend.core.calendar import china_day
from backend.services import privacy
from backend.services.channels import OutboxSmsProvider
from backend.services.scoring import score_tenant
from backend.store.models import (
    ALL_MODELS,
    BaseModel,
    Coupon,
    Order,
    Policy,
    SmsMessage,
    Tenant,
    Touch,
    User,
)

NOW = int(T0.timestamp() * 1000)
TODAY = int(china_day(NOW))
DAY_MS = 86_400_000

POLICY = textwrap.dedent(
    """
    name: comeback
    eligibility:
      tiers: [low_frequency, churn_risk, churned]
    arms:
      - name: care
        touches:
          - {day: 0, channel: sms, message: sms_hi}
    messages:
      sms_hi:
        kind: caring
        text: 【校园外卖】好久不见，常点的店铺都还在营业。
    """
)

# What identifies Zed, the user who erases herself; every one must vanish from every table.
ZED = {
    "openid": "dev_zed-7c1f",
    "unionid": "union-zed-93ab",
    "phone": "13912345678",
    "oa_openid": "oa-zed-follower-5d2e",
}


# --- the models, walked -------------------------------------------------------------------


def models_referring_to_users() -> set[type[BaseModel]]:
    """User and every model with a foreign key to one of these, to a fixed point."""
    reach: set[type[BaseModel]] = {User}
    grew = True
    while grew:
        grew = False
        for model in ALL_MODELS:
            if model not in reach and any(t in reach for t in model._meta.refs.values()):
                reach.add(model)
                grew = True
    return reach


def tied_rows(user_id: int) -> dict[type[BaseModel], set[int]]:
    """Ids of the rows of each model tied to the user by a chain of foreign keys."""
    tied: dict[type[BaseModel], set[int]] = {m: set() for m in models_referring_to_users()}
    tied[User] = {user_id} if User.get_or_none(User.id == user_id) else set()
    grew = True
    while grew:
        grew = False
        for model in tied:
            for fk, target in model._meta.refs.items():
                if target not in tied or not tied[target]:
                    continue
                ids = {r.id for r in model.select(model.id).where(fk.in_(list(tied[target])))}
                if not ids <= tied[model]:
                    tied[model] |= ids
                    grew = True
    return tied


def text_columns(model: type[BaseModel]) -> list[pw.Field]:
    return [
        f
        for f in model._meta.sorted_fields
        if isinstance(f, (pw.CharField, pw.TextField)) and not isinstance(f, pw.ForeignKeyField)
    ]


def copies_of(values: dict[str, str]) -> list[str]:
    """'table.column' of every stored text that contains one of the values."""
    found = []
    for model in ALL_MODELS:
        for field in text_columns(model):
            for name, value in values.items():
                if model.select().where(field.contains(value)).exists():
                    found.append(f"{model._meta.table_name}.{field.name} holds {name}")
    return found


# --- a user with a row in every such table -----------------------------------------------


def populate(app, client, tenant, code: str, contact: dict) -> tuple[dict, int]:
    """A user with events, an order paid with a redeemed coupon, a subscription (allowance and
    answer), consent records, a score snapshot, a touch with its SMS sent, and an SMS whose
    touch is gone. Returns the user's Authorization header and id."""
    h = login(client, tenant, code)
    openid = f"dev_{code}"
    order_ref = f"o-{code}"
    resp = client.post(
        "/mp/v1/events",
        headers=h,
        json={
            "events": [
                {"id": "1", "type": "app_open", "ts": "2026-03-10T17:00:00"},
                {
                    "id": "2",
                    "type": "order_paid",
                    "ts": "2026-03-10T17:05:00",
                    "props": {"order_id": order_ref, "amount_fen": 2500, "merchant": "canteen-1"},
                },
            ]
        },
    )
    assert resp.get_json()["accepted"] == 2, resp.get_json()
    resp = client.patch(
        f"/admin/v1/users/{openid}/contact",
        json={"phone": contact["phone"], "oa_openid": contact["oa_openid"]},
        headers=tenant.admin,
    )
    assert resp.status_code == 200, resp.get_json()
    template = client.post(
        "/admin/v1/coupon-templates",
        headers=tenant.admin,
        json={
            "name": f"满20减5 {code}",
            "amount_off_fen": 500,
            "min_spend_fen": 2000,
            "validity_days": 7,
            "budget": 10,
            "claimable": True,
        },
    ).get_json()
    coupon = client.post("/mp/v1/coupons/claim", json={"template_id": template["id"]}, headers=h)
    assert coupon.status_code == 201, coupon.get_json()
    coupon_id = coupon.get_json()["id"]
    resp = client.post(
        f"/mp/v1/coupons/{coupon_id}/redeem",
        json={"order_id": order_ref, "order_amount_fen": 2500},
        headers=h,
    )
    assert resp.status_code == 200, resp.get_json()
    resp = client.post(
        "/mp/v1/subscriptions", json={"id": "p-1", "results": {"TPL_A": "accept"}}, headers=h
    )
    assert resp.status_code == 200, resp.get_json()
    assert client.post("/mp/v1/me/opt-out", headers=h).status_code == 200
    assert client.post("/mp/v1/me/opt-in", headers=h).status_code == 200
    with app.app_context():
        user = User.get(User.openid == openid)
        User.update(unionid=contact["unionid"]).where(User.id == user.id).execute()
        policy = Policy.get((Policy.tenant == tenant.id) & (Policy.name == "comeback"))
        touch = Touch.create(
            tenant=tenant.id,
            policy=policy.id,
            user=user.id,
            day=TODAY,
            arm="care",
            step=0,
            channel="sms",
            message="sms_hi",
            tier="churn_risk",
            holdout=False,
            status="sent",
            send_after_ms=NOW,
            expires_ms=NOW + DAY_MS,
            sent_ms=NOW,
            coupon=coupon_id,
        )
        text = f"【校园外卖】{code} 好久不见"
        provider = OutboxSmsProvider()
        ref = provider.send(tenant.id, touch.id, contact["phone"], text, NOW)
        Touch.update(provider_id=ref).where(Touch.id == touch.id).execute()
        # An outbox row whose touch is already gone (a deleted policy, an older erasure).
        SmsMessage.create(
            tenant=tenant.id, touch=None, phone=contact["phone"], text=text, created_ms=NOW
        )
    return h, user.id


def two_users(app, client, tenant) -> tuple[dict, int, int]:
    """Zed (who will erase herself) and Bob (a bystander), both in every table."""
    resp = client.post("/admin/v1/policies", json={"source": POLICY}, headers=tenant.admin)
    assert resp.status_code == 201, resp.get_json()
    zed_h, zed = populate(app, client, tenant, ZED["openid"].removeprefix("dev_"), ZED)
    bob = {"unionid": "union-bob", "phone": "13700000001", "oa_openid": "oa-bob"}
    _, bob_id = populate(app, client, tenant, "bob", bob)
    with app.app_context():
        score_tenant(Tenant.get_by_id(tenant.id), TODAY)
    return zed_h, zed, bob_id


# --- the tests ---------------------------------------------------------------------------


def test_every_table_that_refers_to_a_user_is_covered():
    reach = models_referring_to_users()
    missing = sorted(m.__name__ for m in reach - privacy.HOLDINGS.keys())
    assert not missing, f"tables that refer to a user but are not in privacy.HOLDINGS: {missing}"
    assert privacy.HOLDINGS.keys() == reach  # nothing listed that refers to no one
    sections = [h.section for h in privacy.HOLDINGS.values()]
    assert len(set(sections)) == len(sections)
    assert set(sections) == privacy.PURPOSES.keys()  # each section says why it is held
    for model, holding in privacy.HOLDINGS.items():
        assert holding.erasure in ("delete", "anonymise"), model
        if holding.erasure == "anonymise":
            # Anonymising cuts every link to the user: each such column must allow NULL.
            for fk, target in model._meta.refs.items():
                assert target not in reach or fk.null, f"{model.__name__}.{fk.name}"
    # Every column of the user row is either shown in the profile or said not to be data.
    columns = {f.name for f in User._meta.sorted_fields}
    assert columns == privacy.PROFILE_FIELDS.keys() | privacy.NOT_EXPORTED.keys()
    assert not privacy.PROFILE_FIELDS.keys() & privacy.NOT_EXPORTED.keys()
    for identifying in ("openid", "unionid", "phone", "oa_openid"):
        assert identifying in privacy.PROFILE_FIELDS


def test_export_shows_every_row_held_about_the_user(app, client, tenant):
    zed_h, zed, _ = two_users(app, client, tenant)
    data = client.get("/mp/v1/me/data", headers=zed_h).get_json()
    with app.app_context():
        tied = tied_rows(zed)
        user = User.get_by_id(zed)
        for model, holding in privacy.HOLDINGS.items():
            name = model.__name__
            assert tied[model], f"the test user has no {name} row: extend populate()"
            held = {r.id for r in model.select(model.id).where(holding.rows(user))}
            assert tied[model] <= held, f"{name}: rows tied to the user that privacy misses"
            assert holding.section in data, f"{name}: no export section {holding.section!r}"
            if model is not User:
                assert len(data[holding.section]) == len(held), name
    assert data["purposes"] == privacy.PURPOSES
    for column, value in ZED.items():
        assert data["profile"][privacy.PROFILE_FIELDS[column]] == value
    # Two SMS: the one of the touch and the one whose touch is gone; both to Zed's phone.
    assert [m["phone"] for m in data["sms"]] == [ZED["phone"]] * 2
    assert data["sms"][0]["text"].startswith("【校园外卖】")
    assert data["messages"][0]["channel"] == "sms" and data["messages"][0]["policy"] == "comeback"
    assert data["scores"][0]["date"] == "2026-03-10" and data["scores"][0]["tier"]
    assert data["subscription_answers"][0]["results"] == {"TPL_A": "accept"}
    assert data["coupons"][0]["order_id"] == f"o-{ZED['openid'].removeprefix('dev_')}"
    # Nothing of the bystander's.
    assert "13700000001" not in str(data) and "dev_bob" not in str(data)


def test_erasure_leaves_no_row_or_copy_of_the_user(app, client, tenant):
    zed_h, zed, bob = two_users(app, client, tenant)
    with app.app_context():
        before = tied_rows(zed)
        bob_before = tied_rows(bob)
        orders_before = Order.select().count()
        assert copies_of(ZED)  # the scan finds the copies while they are there
    resp = client.delete("/mp/v1/me", headers=zed_h)
    assert resp.status_code == 200
    with app.app_context():
        reach = models_referring_to_users()
        for model, ids in before.items():
            left = list(model.select().where(model.id.in_(list(ids)))) if ids else []
            if privacy.HOLDINGS[model].erasure == "delete":
                assert not left, f"{model.__name__}: {len(left)} row(s) of the user remain"
                continue
            for row in left:  # anonymised: the row stays, every link to the person is cut
                for fk, target in model._meta.refs.items():
                    if target in reach:
                        assert getattr(row, fk.column_name) is None, f"{model.__name__}.{fk.name}"
        assert not copies_of(ZED), copies_of(ZED)
        assert not any(tied_rows(zed).values())
        # Orders stay for the merchant's books; the bystander keeps everything.
        assert Order.select().count() == orders_before
        kept = Order.get(Order.order_ref == f"o-{ZED['openid'].removeprefix('dev_')}")
        assert kept.user_id is None and kept.coupon_id is None and kept.amount_fen == 2500
        assert tied_rows(bob) == bob_before
        assert Coupon.select().where(Coupon.user == bob).count() == 1
        assert SmsMessage.select().where(SmsMessage.phone == "13700000001").count() == 2
    erased = resp.get_json()["erased"]
    assert erased["sms"] == 2 and erased["messages"] == 1 and erased["events"] == 2
    assert erased["orders_anonymised"] == 1
    assert client.get("/mp/v1/me/data", headers=zed_h).status_code == 401
