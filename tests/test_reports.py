"""The report end to end: history through the API, the job, returns and orders, `report --json`."""

from __future__ import annotations

import json

from test_campaigns import DAY_MS, NOW, POLICY, add_policy, grant_all, import_history, run_job

from backend.store.models import Touch, User


def _groups(app, tenant):
    """openid -> holdout? for the users the job decided (read back, not computed)."""
    with app.app_context():
        rows = Touch.select(User.openid, Touch.holdout).join(User).where(Touch.day >= 0)
        return {openid: held for openid, held in rows.tuples()}


def test_report_matches_a_hand_count(app, client, tenant, clock):
    import_history(client, tenant, users=60, silent_days=5)
    grant_all(app, tenant)
    add_policy(client, tenant, POLICY)
    run_job(app, tenant)
    groups = _groups(app, tenant)
    assert len(groups) == 60
    treated = sorted(o for o, h in groups.items() if not h)
    held = sorted(o for o, h in groups.items() if h)
    assert len(held) >= 5 and len(treated) >= 30

    # Hand-made outcomes: every second treated user and every third holdout user comes back
    # the next day; the first two of each who come back also pay 20 yuan.
    back_t = treated[::2]
    back_h = held[::3]
    payers = back_t[:2] + back_h[:2]
    clock.advance(days=1)
    events = []
    for o in back_t + back_h:
        events.append({"user": o, "id": f"back-{o}", "type": "app_open", "ts": NOW + DAY_MS})
    for o in payers:
        events.append(
            {
                "user": o,
                "id": f"pay-{o}",
                "type": "order_paid",
                "ts": NOW + DAY_MS + 60_000,
                "props": {"order_id": f"o-{o}", "amount_fen": 2000, "merchant": "canteen-1"},
            }
        )
    resp = client.post("/admin/v1/events/import", json={"events": events}, headers=tenant.admin)
    assert resp.get_json()["accepted"] == len(events)
    clock.advance(days=7)  # the 7-day windows close
    with app.app_context():
        from backend.services.attribution import attribute

        attribute(tenant.id, NOW + 8 * DAY_MS)  # what the next night's job does first

    result = app.test_cli_runner().invoke(args=["report", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    (p,) = report["policies"]
    assert p["policy"] == "comeback"
    assert p["treated_users"] == len(treated) and p["holdout_users"] == len(held)
    assert p["recall_rate"]["k"] == len(back_t)
    assert p["recall_rate"]["rate"] == len(back_t) / len(treated)
    assert p["holdout_recall_rate"]["k"] == len(back_h)
    expected = len(back_t) / len(treated) - len(back_h) / len(held)
    assert abs(p["incremental_recall"]["diff"] - expected) < 1e-12
    assert p["order_rate"]["k"] == 2 and p["holdout_order_rate"]["k"] == 2
    assert p["money"]["revenue_fen"] == 4000  # two treated payers
    assert p["revenue_per_user_fen"] == 4000 / len(treated)
    assert p["holdout_revenue_per_user_fen"] == 4000 / len(held)
    assert p["money"]["message_cost_fen"] == 0 and p["money"]["roi"] is None
    (funnel,) = p["funnel"]
    assert funnel == {
        "channel": "subscribe",
        "sent": len(treated),
        "delivered": len(treated),
        "opened": 0,
        "returned": len(back_t),
        "ordered": 2,
    }
    # the holdout is small: the report says its interval means little
    assert p["incremental_recall"]["enough"] is (len(held) >= 30)
    ledger = report["ledger"]
    assert ledger[0]["sent"] == len(treated) and ledger[0]["held_out"] == len(held)

    # The admin API returns the same numbers.
    api = client.get("/admin/v1/reports", headers=tenant.admin).get_json()
    assert api["policies"][0]["recall_rate"] == p["recall_rate"]
    text = app.test_cli_runner().invoke(args=["report"])
    assert "policy comeback" in text.output and "incremental recall" in text.output


def test_report_of_nothing_is_empty_not_an_error(app, client, tenant):
    resp = client.get("/admin/v1/reports", headers=tenant.admin)
    assert resp.status_code == 200
    assert resp.get_json()["policies"] == []
    assert client.get("/admin/v1/reports?policy=nope", headers=tenant.admin).status_code == 404
    bad = client.get("/admin/v1/reports?from=2026-03-09&to=2026-03-01", headers=tenant.admin)
    assert bad.status_code == 400


def test_ledger_counts_why_users_were_not_messaged(app, client, tenant):
    import_history(client, tenant, users=10, silent_days=5)
    add_policy(client, tenant, POLICY)  # no allowances: every decision is a skip
    run_job(app, tenant)
    ledger = client.get("/admin/v1/reports/ledger", headers=tenant.admin).get_json()["ledger"]
    assert ledger == [
        {
            "policy": "comeback",
            "date": "2026-03-10",
            "decided": 10,
            "sent": 0,
            "held_out": 0,
            "queued": 0,
            "expired": 0,
            "quiet_hours_deferred": 0,
            "skipped": {"no_permission": 10},
            "failed": {},
            "sends_by_arm": {},
        }
    ]


def test_a_tap_on_the_message_counts_as_opened(app, client, tenant, clock):
    import_history(client, tenant, users=40, silent_days=5)
    grant_all(app, tenant)
    add_policy(client, tenant, POLICY)
    run_job(app, tenant)
    with app.app_context():
        touch = Touch.select(Touch, User).join(User).where(Touch.status == "sent").first()
        openid, touch_id = touch.user.openid, touch.id
    clock.advance(days=1)
    tap = {
        "user": openid,
        "id": "tap-1",
        "type": "message_open",
        "ts": NOW + DAY_MS,
        "props": {"touch_id": str(touch_id), "page": "pages/index/index"},
    }
    resp = client.post("/admin/v1/events/import", json={"events": [tap]}, headers=tenant.admin)
    assert resp.get_json()["accepted"] == 1
    clock.advance(days=7)
    with app.app_context():
        from backend.services.attribution import attribute

        attribute(tenant.id, NOW + 8 * DAY_MS)
    (p,) = client.get("/admin/v1/reports", headers=tenant.admin).get_json()["policies"]
    (funnel,) = p["funnel"]
    assert funnel["opened"] == 1 and funnel["returned"] == 1


def test_retention_after_recall_is_filled_in_when_the_weeks_have_passed(app, client, tenant, clock):
    import_history(client, tenant, users=40, silent_days=5)
    grant_all(app, tenant)
    add_policy(client, tenant, POLICY)
    run_job(app, tenant)
    with app.app_context():
        sent = [
            u.openid
            for u in User.select().join(Touch).where(Touch.status == "sent").order_by(User.id)
        ]
    a, b, c = sent[:3]
    day = DAY_MS
    plan = [
        (a, 1), (a, 9), (a, 33),  # back on day 1, active in D7 week and D30 week
        (b, 1), (b, 9),  # back, active in the D7 week only
        (c, 1),  # back and gone
    ]  # fmt: skip
    clock.advance(days=40)
    events = [
        {"user": o, "id": f"r-{o}-{d}", "type": "app_open", "ts": NOW + d * day} for o, d in plan
    ]
    assert client.post(
        "/admin/v1/events/import", json={"events": events}, headers=tenant.admin
    ).get_json()["accepted"] == len(events)
    with app.app_context():
        from backend.services.attribution import attribute

        attribute(tenant.id, NOW + 40 * day)
        flags = {
            u.openid: (t.retained_d7, t.retained_d30)
            for t, u in (
                (t, t.user)
                for t in Touch.select(Touch, User).join(User).where(User.openid.in_([a, b, c]))
            )
        }
    assert flags == {a: (True, True), b: (True, False), c: (False, False)}
    (p,) = client.get("/admin/v1/reports", headers=tenant.admin).get_json()["policies"]
    assert (p["retention_d7"]["k"], p["retention_d7"]["n"]) == (2, 3)
    assert (p["retention_d30"]["k"], p["retention_d30"]["n"]) == (1, 3)
    (cohort,) = p["cohorts"]
    assert cohort["recalled"] == 3 and cohort["d7"]["k"] == 2 and cohort["d30"]["k"] == 1
