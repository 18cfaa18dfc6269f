"""The campaign job end to end: events in, scores, decisions, the outbox, delivery, attribution."""

from __future__ import annotations

import json

import pytest
from helpers.campaigns import (
    DAY_MS,
    NOW,
    POLICY,
    TODAY,
    add_policy,
    grant_all,
    import_history,
    run_job,
    statuses,
)

from backend.store.models import Policy as PolicyRow
from backend.store.models import SmsMessage, SubscriptionAllowance, Touch, User


def test_job_decides_queues_and_sends_once(app, client, tenant):
    import_history(client, tenant, users=40, silent_days=5)
    grant_all(app, tenant)
    add_policy(client, tenant)
    first = run_job(app, tenant)
    assert first["decided"] == 40
    assert first["held_out"] + first["queued"] == 40
    assert first["sent"] == first["queued"] > 0
    second = run_job(app, tenant)
    assert second["queued"] == 0 and second["sent"] == 0 and second["held_out"] == 0
    counts = statuses(app, tenant)
    assert counts == {"sent": first["sent"], "held_out": first["held_out"]}
    with app.app_context():
        spent = SubscriptionAllowance.select().where(SubscriptionAllowance.remaining == 0).count()
    assert spent == first["sent"]  # each send spent its user's one allowance


def test_dry_run_writes_nothing_and_matches_the_real_run(app, client, tenant):
    import_history(client, tenant, users=30, silent_days=6)
    grant_all(app, tenant)
    add_policy(client, tenant)
    dry = run_job(app, tenant, dry_run=True)
    assert statuses(app, tenant) == {}
    real = run_job(app, tenant)
    for key in ("decided", "held_out", "queued", "skipped"):
        assert dry[key] == real[key], key
    assert dry["policies"]["comeback"]["by_tier_arm"] == real["policies"]["comeback"]["by_tier_arm"]


def test_users_without_allowance_are_skipped_with_the_reason(app, client, tenant):
    import_history(client, tenant, users=10, silent_days=5)
    add_policy(client, tenant)
    out = run_job(app, tenant)
    assert out["sent"] == 0 and out["skipped"] == 10
    assert out["skipped_by_reason"] == {"no_permission": 10}


def test_sms_step_goes_to_the_outbox_a_week_later(app, client, tenant):
    import_history(client, tenant, users=20, silent_days=5)
    grant_all(app, tenant)
    add_policy(client, tenant)
    with app.app_context():
        User.update(phone="13800000000").where(User.tenant == tenant.id).execute()
    run_job(app, tenant)
    later = NOW + 7 * DAY_MS
    with app.app_context():
        from backend.services.scoring import score_tenant
        from backend.store.models import Tenant

        score_tenant(Tenant.get_by_id(tenant.id), TODAY + 7)
    out = run_job(app, tenant, now=later, day=TODAY + 7)
    with app.app_context():
        sms = list(SmsMessage.select())
    assert out["sent"] == len(sms) > 0
    assert all(m.text.endswith("拒收请回复R") for m in sms)


def test_returning_user_is_attributed(app, client, tenant, clock):
    import_history(client, tenant, users=10, silent_days=5)
    grant_all(app, tenant)
    add_policy(client, tenant)
    run_job(app, tenant)
    clock.advance(days=8)
    back = [
        {"user": f"u{u:03d}", "id": f"back{u}", "type": "app_open", "ts": NOW + DAY_MS}
        for u in range(10)
    ]
    resp = client.post("/admin/v1/events/import", json={"events": back}, headers=tenant.admin)
    assert resp.get_json()["accepted"] == 10
    with app.app_context():
        from backend.services.attribution import attribute

        attribute(tenant.id, NOW + 8 * DAY_MS)
        rows = list(Touch.select().where(Touch.status.in_(("sent", "held_out"))))
    assert rows and all(r.returned_ms == NOW + DAY_MS and r.attributed for r in rows)


def test_policy_validation_names_the_line(client, tenant):
    bad = POLICY.replace("holdout_share: 0.3", "holdout_share: 0.3\ncolour: red")
    resp = client.post("/admin/v1/policies", json={"source": bad}, headers=tenant.admin)
    assert resp.status_code == 400
    err = resp.get_json()["error"]
    assert err["code"] == "invalid_policy" and err["field"] == "colour"
    assert err["line"] == bad.splitlines().index("colour: red") + 1


@pytest.mark.parametrize("path", ["/admin/v1/policies", "/admin/v1/campaign-runs"])
def test_admin_lists_answer(client, tenant, path):
    resp = client.get(path, headers=tenant.admin)
    assert resp.status_code == 200, resp.get_json()
    json.dumps(resp.get_json())


BANDIT = POLICY.replace(
    """holdout_share: 0.3
arms:
  - name: care
    touches:
      - {day: 0, channel: subscribe, message: saved}
      - {day: 7, channel: sms, message: sms_hi}""",
    """holdout_share: 0.1
allocation: {method: thompson, floor: 0.05, min_samples: 20}
arms:
  - name: care
    touches:
      - {day: 0, channel: subscribe, message: saved}
  - name: other
    touches:
      - {day: 0, channel: subscribe, message: saved}""",
)


def seed_outcomes(app, tenant, policy_name, arm, tier, n, returned, *, cost=0, value=0):
    """`n` finished touches of an arm long ago, `returned` of them answered."""

    with app.app_context():
        policy = PolicyRow.get((PolicyRow.tenant == tenant.id) & (PolicyRow.name == policy_name))
        for k in range(n):
            user = User.create(tenant=tenant.id, openid=f"hist-{arm}-{tier}-{k}", created_ms=NOW)
            sent = NOW - 30 * DAY_MS
            Touch.create(
                tenant=tenant.id,
                policy=policy.id,
                user=user.id,
                day=TODAY - 30,
                arm=arm,
                step=0,
                channel="subscribe",
                message="saved",
                tier=tier,
                holdout=False,
                status="sent",
                send_after_ms=sent,
                expires_ms=sent + DAY_MS,
                sent_ms=sent,
                message_cost_fen=cost,
                value_fen=value,
                returned_ms=sent + DAY_MS if k < returned else None,
                attributed=True,
            )


def new_touches_by_arm(app, tenant) -> dict[str, int]:
    with app.app_context():
        rows = Touch.select().where((Touch.day == TODAY) & (Touch.status == "sent"))
        out: dict[str, int] = {}
        for t in rows:
            out[t.arm] = out.get(t.arm, 0) + 1
        return out


def test_bandit_moves_traffic_to_the_arm_that_brings_users_back(app, client, tenant):
    import_history(client, tenant, users=200, silent_days=20)  # churned tier
    grant_all(app, tenant)
    add_policy(client, tenant, BANDIT)
    with app.app_context():
        from backend.services.scoring import score_tenant
        from backend.store.models import ScoreSnapshot, Tenant

        score_tenant(Tenant.get_by_id(tenant.id), TODAY)
        tier = ScoreSnapshot.select().where(ScoreSnapshot.day == TODAY).first().tier
    seed_outcomes(app, tenant, "comeback", "care", tier, 100, 60)
    seed_outcomes(app, tenant, "comeback", "other", tier, 100, 5)
    run_job(app, tenant)
    arms = new_touches_by_arm(app, tenant)
    assert arms.get("care", 0) > 4 * arms.get("other", 0), arms
    assert arms.get("other", 0) >= 1  # the floor keeps the loser in play


def test_stop_loss_pauses_an_arm_that_costs_more_than_it_brings_back(app, client, tenant):
    import_history(client, tenant, users=30, silent_days=5)
    grant_all(app, tenant)
    add_policy(client, tenant)
    with app.app_context():
        from backend.services.scoring import score_tenant
        from backend.store.models import Tenant

        score_tenant(Tenant.get_by_id(tenant.id), TODAY)
    # 60 finished touches costing 10 yuan each brought back users worth 100 yuan in total:
    # cost 600 yuan > 30% of 100 yuan.
    seed_outcomes(app, tenant, "comeback", "care", "churn_risk", 60, 1, cost=1000, value=10000)
    out = run_job(app, tenant)
    assert out["sent"] == 0
    assert out["skipped_by_reason"].get("stop_loss") == out["skipped"] > 0
    preview = client.get("/admin/v1/policies/comeback/preview", headers=tenant.admin).get_json()
    assert preview["paused_arms"] == ["care"]


def test_user_touch_history_says_why(app, client, tenant):
    import_history(client, tenant, users=3, silent_days=5)
    add_policy(client, tenant)  # nobody has an allowance
    run_job(app, tenant)
    resp = client.get("/admin/v1/users/u000/touches", headers=tenant.admin)
    assert resp.status_code == 200
    touches = resp.get_json()["touches"]
    assert [(t["status"], t["reason"]) for t in touches] == [("skipped", "no_permission")]


def test_uplift_model_is_fitted_from_treated_and_holdout_touches(app, client, tenant, clock):
    import_history(client, tenant, users=120, silent_days=5)
    grant_all(app, tenant)
    add_policy(client, tenant)
    run_job(app, tenant)
    # Treated users came back, holdout users did not: uplift learnt is positive.
    with app.app_context():
        back = [
            {"user": u.openid, "id": f"b-{u.id}", "type": "app_open", "ts": NOW + DAY_MS}
            for u in User.select().join(Touch).where(Touch.status == "sent")
        ]
    clock.advance(days=8)
    client.post("/admin/v1/events/import", json={"events": back}, headers=tenant.admin)
    with app.app_context():
        from backend.services.attribution import attribute

        attribute(tenant.id, NOW + 8 * DAY_MS)
    resp = client.post("/admin/v1/policies/comeback/uplift-model", headers=tenant.admin)
    assert resp.status_code == 200, resp.get_json()
    model = resp.get_json()
    assert model["n_treated"] > 10 and model["n_control"] > 10
    # The treated model's intercept is far above the holdout's.
    assert model["treated"][0] - model["control"][0] > 2


def test_uplift_model_needs_outcomes(client, tenant):
    add_policy(client, tenant)
    resp = client.post("/admin/v1/policies/comeback/uplift-model", headers=tenant.admin)
    assert resp.status_code == 409
    assert resp.get_json()["error"]["code"] == "not_enough_outcomes"


def test_a_user_skipped_earlier_today_is_reached_by_a_later_run(app, client, tenant):
    import_history(client, tenant, users=12, silent_days=5)
    add_policy(client, tenant)
    first = run_job(app, tenant)
    assert first["skipped"] == 12 and first["sent"] == 0
    grant_all(app, tenant)  # they accept a subscribe prompt an hour later
    second = run_job(app, tenant, now=NOW + 3_600_000)
    assert second["queued"] + second["held_out"] == 12
    assert second["sent"] == second["queued"] > 0
    assert statuses(app, tenant) == {"sent": second["sent"], "held_out": second["held_out"]}


def test_an_allowance_promised_to_a_queued_send_is_not_promised_twice(app, client, tenant):
    """Two live policies, one subscribe allowance per user: the second policy must not plan a
    send on the allowance the first one's queued send already holds (it would fail)."""
    import_history(client, tenant, users=20, silent_days=5)
    grant_all(app, tenant, count=1)
    add_policy(client, tenant, POLICY)
    add_policy(client, tenant, POLICY.replace("name: comeback", "name: comeback_again"))
    run_job(app, tenant)
    with app.app_context():
        rows = list(
            Touch.select(User.openid, PolicyRow.name, Touch.status, Touch.reason)
            .join_from(Touch, User)
            .join_from(Touch, PolicyRow)
            .tuples()
        )
    sent_by = {}
    for openid, policy, status, _ in rows:
        if status == "sent":
            assert openid not in sent_by, f"{openid} was sent twice on one allowance"
            sent_by[openid] = policy
    assert not [r for r in rows if r[2] == "failed"]
    first = {o for o, p in sent_by.items() if p == "comeback"}
    assert first
    again = {(o, s, r) for o, p, s, r in rows if p == "comeback_again" and o in first}
    assert again == {(o, "skipped", "no_permission") for o in first}
