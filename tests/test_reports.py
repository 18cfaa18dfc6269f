"""The report end to end: history through the API, the job, returns and orders, `report --json`."""

from __future__ import annotations

import json
import math

import pytest
from helpers.admin_session import sign_in
from helpers.campaigns import (
    DAY_MS,
    NOW,
    POLICY,
    TODAY,
    add_policy,
    grant_all,
    import_history,
    run_job,
)

from backend.core.power import detectable_effect, holdout_plan, sample_size_two_proportions
from backend.store.models import Policy as PolicyRow
from backend.store.models import Touch, User


def _groups(app, tenant):
    """openid -> holdout? for the users the job decided (read back, not computed)."""
    with app.app_context():
        rows = Touch.select(User.openid, Touch.holdout).join(User).where(Touch.day >= 0)
        return {openid: held for openid, held in rows.tuples()}


def test_report_matches_a_hand_count(app, client, tenant, clock):
    # Silent 8 days: lapsed at decision (core.recall), so their returns are recall.
    import_history(client, tenant, users=60, silent_days=8)
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

    # How far the policy is from the size its holdout needs: the holdout is under 30 users,
    # so the baseline is the rate over everyone decided; the effect is the +5 pp planning one
    # (the interval is not clear of 0); the volume is the 60 users decided on the one day.
    w = p["power"]
    n_users = len(treated) + len(held)
    assert w["p_control_source"] == "all_users" and w["effect_source"] == "planning"
    assert w["p_control"] == (len(back_t) + len(back_h)) / n_users
    assert w["effect"] == 0.05 and w["holdout_share"] == 0.3 and w["live"] is True
    assert w["users_so_far"] == n_users and w["eligible_per_day"] == 60.0
    n_h, n_t = sample_size_two_proportions(w["p_control"], w["p_control"] + 0.05, ratio=0.7 / 0.3)
    assert w["users_needed"] == n_h + n_t and w["holdout_users_needed"] == n_h
    assert w["share_of_needed"] == n_users / (n_h + n_t)
    assert w["days_needed_at_current_volume"] == math.ceil(
        max((n_h - len(held)) / (60 * 0.3), (n_t - len(treated)) / (60 * 0.7))
    )
    assert w["detectable_now"] == detectable_effect(w["p_control"], len(held), len(treated))

    # The admin API returns the same numbers.
    api = client.get("/admin/v1/reports", headers=tenant.admin).get_json()
    assert api["policies"][0]["recall_rate"] == p["recall_rate"]
    assert api["policies"][0]["power"] == p["power"]
    text = app.test_cli_runner().invoke(args=["report"])
    assert "policy comeback" in text.output and "incremental recall" in text.output
    assert f"{n_users} of {n_h + n_t} users needed" in text.output
    assert "+5.0 pp (planning effect)" in text.output


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
    import_history(client, tenant, users=40, silent_days=8)
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


def _decided(
    app, tenant, name, day, n, returned, *, holdout, status=None, tag="", tier="churn_risk"
):
    """`n` first decisions of the policy on `day` (one new user each), `returned` of them back;
    finished (window closed, attributed) unless a status such as "queued" is given."""
    with app.app_context():
        policy = PolicyRow.get((PolicyRow.tenant == tenant.id) & (PolicyRow.name == name))
        at = NOW + (day - TODAY) * DAY_MS
        for k in range(n):
            user = User.create(
                tenant=tenant.id, openid=f"p-{tag}{day}-{int(holdout)}-{k}", created_ms=at
            )
            Touch.create(
                tenant=tenant.id,
                policy=policy.id,
                user=user.id,
                day=day,
                arm="care",
                step=0,
                channel="subscribe",
                message="saved",
                tier=tier,
                holdout=holdout,
                status=status or ("held_out" if holdout else "sent"),
                send_after_ms=at,
                expires_ms=at + DAY_MS,
                sent_ms=None if status == "queued" else at,
                returned_ms=at + DAY_MS if k < returned else None,
                attributed=status is None,
            )


def test_power_says_how_far_a_live_policy_is_from_its_holdout_sample_size(app, client, tenant):
    add_policy(client, tenant, POLICY)  # holdout_share 0.3
    # Ten days, 20 users first decided a day: 6 held out (1 back), 14 treated (3 back);
    # and today 20 more decided whose windows are still open.
    for day in range(TODAY - 20, TODAY - 10):
        _decided(app, tenant, "comeback", day, 6, 1, holdout=True)
        _decided(app, tenant, "comeback", day, 14, 3, holdout=False)
    _decided(app, tenant, "comeback", TODAY, 6, 0, holdout=True, status="queued")
    _decided(app, tenant, "comeback", TODAY, 14, 0, holdout=False, status="queued")

    (p,) = client.get("/admin/v1/reports", headers=tenant.admin).get_json()["policies"]
    assert (p["holdout_users"], p["treated_users"]) == (60, 140)  # finished ones only
    w = p["power"]
    assert w["p_control_source"] == "holdout" and w["p_control"] == 10 / 60
    assert w["effect_source"] == "planning" and w["effect"] == 0.05
    # volume: 220 users first decided over the 21 days from the first decision to today
    assert w["eligible_per_day"] == pytest.approx(220 / 21)
    plan = holdout_plan(10 / 60, 0.05, 0.3, 220 / 21, n_holdout_now=60, n_treated_now=140)
    assert w["users_needed"] == plan.users_needed > 200
    assert w["users_so_far"] == 200 and w["share_of_needed"] == 200 / plan.users_needed
    expected_days = math.ceil(
        max(
            (plan.n_holdout_needed - 60) / (220 / 21 * 0.3),
            (plan.n_treated_needed - 140) / (220 / 21 * 0.7),
        )
    )
    assert w["days_needed_at_current_volume"] == expected_days == plan.days_needed
    assert 0.05 < w["detectable_now"] < 1

    # A date filter narrows what has been measured, not the current volume.
    narrow = client.get(
        f"/admin/v1/reports?to={_iso(TODAY - 16)}", headers=tenant.admin
    ).get_json()["policies"][0]["power"]
    assert narrow["users_so_far"] == 100 and narrow["eligible_per_day"] == w["eligible_per_day"]

    # Paused: the sample stops growing, so no day count; the distance is still shown.
    with app.app_context():
        PolicyRow.update(active=False).where(PolicyRow.tenant == tenant.id).execute()
    paused = client.get("/admin/v1/reports", headers=tenant.admin).get_json()["policies"][0]
    assert paused["power"]["live"] is False
    assert paused["power"]["days_needed_at_current_volume"] is None
    assert paused["power"]["users_needed"] == w["users_needed"]
    assert "not running" in paused["power"]["note"]


def test_power_uses_the_observed_effect_once_it_is_significant(app, client, tenant):
    add_policy(client, tenant, POLICY)
    for day in range(TODAY - 20, TODAY - 10):
        _decided(app, tenant, "comeback", day, 6, 1, holdout=True)
        _decided(app, tenant, "comeback", day, 14, 9, holdout=False)
    result = app.test_cli_runner().invoke(args=["report", "--json"])
    (p,) = json.loads(result.output)["policies"]
    w = p["power"]
    assert p["incremental_recall"]["lo"] > 0
    assert w["effect_source"] == "observed"
    assert w["effect"] == pytest.approx(90 / 140 - 10 / 60)
    # a big effect needs few users: this trial already has them
    assert w["share_of_needed"] >= 1 and w["days_needed_at_current_volume"] == 0
    text = app.test_cli_runner().invoke(args=["report"]).output
    assert "(observed effect)" in text and "reached" in text


def test_power_of_a_policy_without_holdout_says_so(app, client, tenant):
    add_policy(client, tenant, POLICY.replace("holdout_share: 0.3", "holdout_share: 0"))
    _decided(app, tenant, "comeback", TODAY - 20, 40, 10, holdout=False)
    (p,) = client.get("/admin/v1/reports", headers=tenant.admin).get_json()["policies"]
    w = p["power"]
    assert w["users_needed"] is None and w["detectable_now"] is None
    assert w["days_needed_at_current_volume"] is None and "no holdout" in w["note"]
    text = app.test_cli_runner().invoke(args=["report"]).output
    assert "no size is enough" in text


def _iso(day: int) -> str:
    from backend.core.calendar import day_date

    return day_date(day).isoformat()


def test_the_overview_shows_how_far_each_policy_is_from_its_sample_size(app, client, tenant):
    add_policy(client, tenant, POLICY)
    for day in range(TODAY - 20, TODAY - 10):
        _decided(app, tenant, "comeback", day, 6, 1, holdout=True)
        _decided(app, tenant, "comeback", day, 14, 3, holdout=False)
    w = client.get("/admin/v1/reports", headers=tenant.admin).get_json()["policies"][0]["power"]
    sign_in(client, tenant.api_key)
    page = client.get("/admin/").get_data(as_text=True)
    line = page[page.index('data-power="comeback"') :].split("</p>")[0]
    assert f"需要 {w['users_needed']} 名用户（对照组 {w['holdout_users_needed']} 名）" in line
    assert f"目前 {w['users_so_far']} 名（{100 * w['share_of_needed']:.1f}%）" in line
    assert f"约还需 {w['days_needed_at_current_volume']} 天" in line
    assert "+5.0 个百分点" in line and "计划效果" in line
    assert f"{100 * w['detectable_now']:+.1f} 个百分点" in line


def test_recall_counts_the_lapsed_and_active_users_returns_are_retention(
    app, client, tenant, clock
):
    # Issue 15: recall is bringing back users lapsed at decision (core.recall: silent past the
    # tiers' threshold, read from the day's score snapshot); users still active when decided
    # (here low-frequency, silent 4 days) who come back are retention, never recall.
    events = []
    for prefix, silent in (("a", 4), ("l", 9)):
        for u in range(40):
            for k in range(3):
                ts = NOW - (silent + 3 * k) * DAY_MS
                event = {"user": f"{prefix}{u:02d}", "id": f"{prefix}{u}-{k}", "ts": ts}
                events.append(event | {"type": "app_open"})
    assert client.post(
        "/admin/v1/events/import", json={"events": events}, headers=tenant.admin
    ).get_json()["accepted"] == len(events)
    grant_all(app, tenant)
    add_policy(client, tenant, POLICY)
    run_job(app, tenant)
    groups = _groups(app, tenant)
    assert len(groups) == 80
    # Every decided user comes back the next day.
    clock.advance(days=1)
    back = [{"user": o, "id": f"b-{o}", "type": "app_open", "ts": NOW + DAY_MS} for o in groups]
    client.post("/admin/v1/events/import", json={"events": back}, headers=tenant.admin)
    clock.advance(days=7)
    with app.app_context():
        from backend.services.attribution import attribute

        attribute(tenant.id, NOW + 8 * DAY_MS)
    (p,) = client.get("/admin/v1/reports", headers=tenant.admin).get_json()["policies"]
    lapsed_t = sum(1 for o, h in groups.items() if o[0] == "l" and not h)
    lapsed_h = sum(1 for o, h in groups.items() if o[0] == "l" and h)
    assert p["treated_users"] + p["holdout_users"] == 80
    assert (p["lapsed_users"], p["holdout_lapsed_users"]) == (lapsed_t, lapsed_h)
    assert p["recall_rate"]["n"] == lapsed_t and p["recall_rate"]["k"] == lapsed_t
    assert p["holdout_recall_rate"]["n"] == lapsed_h
    active_t = sum(1 for o, h in groups.items() if o[0] == "a" and not h)
    assert (p["active_users"], p["holdout_active_users"]) == (active_t, 40 - active_t)
    assert p["retention_active"]["k"] == p["retention_active"]["n"] == active_t
    by_tier = {g["tier"]: g for g in p["by_tier"]}
    assert by_tier["low_frequency"]["recall_rate"]["n"] == 0
    assert by_tier["churn_risk"]["lapsed_users"] == lapsed_t


def test_power_plans_on_the_lapsed_share_of_the_daily_volume():
    """Only users lapsed at decision enter the recall comparison: a policy deciding 60 users a
    day of whom a third are lapsed gathers 20 comparison users a day, not 60."""
    from backend.core import metrics
    from backend.services.report_power import Design, power

    entry = {
        "treated_users": 150,
        "holdout_users": 30,
        "lapsed_users": 50,
        "holdout_lapsed_users": 10,
        "recall_rate": metrics.rate(10, 50).as_dict(),
        "holdout_recall_rate": metrics.rate(1, 10).as_dict(),
        "incremental_recall": metrics.newcombe_diff(10, 50, 1, 10).as_dict(),
    }
    got = power(entry, Design(holdout_share=1 / 6, live=True, eligible_per_day=60.0))
    assert got["eligible_per_day"] == pytest.approx(20.0)
    plan = holdout_plan(
        got["p_control"], got["effect"], 1 / 6, 20.0, n_holdout_now=10, n_treated_now=50
    )
    assert got["days_needed_at_current_volume"] == plan.days_needed
