"""Recall means bringing back the lapsed (issue 15, item 4): in the simulator's results recall
is counted among the users lapsed at decision (backend.core.recall), and what active users do
after a touch is their retention; coupon-driven returns fade once the offer ends."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from backend.core import metrics
from backend.core.metrics import RETENTION_DAYS
from backend.core.recall import lapsed_at_decision, retention_known
from backend.core.tiers import TierConfig
from simulator.model import CampusModel
from simulator.response import ResponseParams
from simulator.run import DEFAULT_COUPONS, load_policy, run_simulation


def test_tiered_content_arm_is_retention_not_recall():
    # tiered's content arm reaches active users silent 3 days: none of them is lapsed, so its
    # returns are retention; its care arm reaches the lapsed, whose returns are recall.
    out = run_simulation(load_policy("tiered"), users=3000, days=40, seed=2)
    content = out["arms"]["content_for_active"]
    assert content["active"] == content["targeted"] > 100
    assert content["lapsed"] == 0 and content["recall"]["n"] == 0
    assert content["recall_rate"] is None
    assert content["retention_active"]["n"] == content["active"]
    care = out["arms"]["care_then_benefit"]
    assert care["lapsed"] == care["targeted"] > 100 and care["active"] == 0
    assert care["recall"]["n"] == care["lapsed"] and care["recalled"] == care["recall"]["k"]
    up = out["uplift"]["care_then_benefit"]
    assert up["holdout_lapsed"] == up["holdout_users"] and up["holdout_active"] == 0
    assert out["uplift"]["content_for_active"]["recall_rate"]["diff"] is None
    assert out["uplift"]["content_for_active"]["retention_active"]["diff"] is not None
    # every group's users are split in two: lapsed (recall) and active (retention)
    for g in out["arms"].values():
        assert g["lapsed"] + g["active"] == g["targeted"]


def _lapsed_recalled_d30(model: CampusModel) -> np.ndarray:
    """D30 retention flags of the lapsed users a coupon brought back at first decision."""
    log = model.campaign.log
    user, step, day = log.column("user", False), log.column("step", False), log.column("day", False)
    first = metrics.first_per_user(user, day * 10 + step)
    tier, silent = log.column("tier", False)[first], log.column("term_days_silent", False)[first]
    first = first[lapsed_at_decision(tier, silent, model.tier_config)]
    r = log.column("return_day", False)
    ok = first[(log.column("status", False)[first] == 0) & (r[first] >= 0)]
    ok = ok[retention_known(r[ok], model.day - 1, RETENTION_DAYS[-1])]
    return log.column("retained_d30", False)[ok]


def test_a_coupon_driven_return_fades_when_the_offer_ends():
    # The same campus and dice with the fade off and on: coupon-recalled lapsed users keep
    # clearly less D30 retention once what the offer bought fades with it.
    def run(fade: float) -> float:
        model = CampusModel(
            users=3000,
            seed=4,
            policy=load_policy("coupon_blast"),
            coupon_face_fen=dict(DEFAULT_COUPONS),
            warmup_days=28,
            response_params=replace(ResponseParams(), coupon_fade=fade),
        )
        for _ in range(28 + 80):
            model.step()
        return float(_lapsed_recalled_d30(model).mean())

    off, on = run(1.0), run(ResponseParams().coupon_fade)
    assert on < 0.75 * off, (on, off)


def _tiered_model(users: int = 1500, warmup: int = 14, days: int = 21, seed: int = 3):
    model = CampusModel(
        users=users,
        seed=seed,
        policy=load_policy("tiered"),
        coupon_face_fen=dict(DEFAULT_COUPONS),
        warmup_days=warmup,
    )
    for _ in range(warmup + days):
        model.step()
    return model


def test_lapsed_is_read_from_the_silence_at_decision_as_the_report_reads_it():
    # The books record each touch's silence at decision (the morning's scores, what the score
    # snapshot of its day holds) and summarise splits lapsed from active by core.recall with
    # the simulation's tier thresholds, exactly as the live report does. Moving the threshold
    # to tiered's own lapse (3 term days) makes its content arm's users lapsed: the tier
    # recorded at decision (active) could not say so.
    from simulator.results import summarise

    model = _tiered_model()
    log = model.campaign.log
    silent = log.column("term_days_silent")
    assert silent.size == log.column("tier").size and (silent >= 3).all()  # eligibility: 3+
    arms, _ = summarise(model.campaign, model.day - 1, 3, model.tier_config)
    user, status = log.column("user"), log.column("status")
    measured = np.flatnonzero(status != 2)
    order = log.column("day") * 10 + log.column("step")
    first = measured[metrics.first_per_user(user[measured], order[measured])]
    lapsed = lapsed_at_decision(log.column("tier"), silent, model.tier_config)
    assert sum(g["lapsed"] for g in arms.values()) == int(lapsed[first].sum()) > 50
    assert arms["content_for_active"]["lapsed"] == 0 < arms["content_for_active"]["active"]

    at_three = TierConfig(risk_silent_days=3)
    moved, _ = summarise(model.campaign, model.day - 1, 3, at_three)
    content = moved["content_for_active"]
    assert content["lapsed"] == content["targeted"] > 0 and content["active"] == 0
    assert content["recall"]["n"] == content["lapsed"]


def test_the_holdout_estimate_compares_the_lapsed_on_both_sides():
    # simulate's `holdout` block (what production's report would show) is recall among the
    # lapsed, treated against the holdout's lapsed (one difference, as the report makes).
    from simulator.results import summarise
    from simulator.run import pooled

    model = _tiered_model()
    arms, uplift = summarise(model.campaign, model.day - 1, 3, model.tier_config)
    est = pooled({"arms": arms, "uplift": uplift})
    treated = [g for name, g in arms.items() if name != "holdout"]
    assert est["treated"] == sum(g["lapsed"] for g in treated) < sum(g["users"] for g in treated)
    assert est["recall"]["n"] == est["treated"] and est["recall"]["k"] == est["recalled"]
    assert est["holdout_users"] == arms["holdout"]["lapsed"] == est["holdout_recall"]["n"]
    assert arms["holdout"]["lapsed"] < arms["holdout"]["users"]
    # Only the care arm reaches the lapsed here: the pooled difference is its own.
    assert uplift["content_for_active"]["recall_rate"]["diff"] is None
    lapsed_arms = [n for n, g in arms.items() if n != "holdout" and g["lapsed"]]
    assert lapsed_arms == ["care_then_benefit"], lapsed_arms
    assert est["incremental"]["diff"] == pytest.approx(
        uplift["care_then_benefit"]["recall_rate"]["diff"]
    )


def test_the_holdout_estimate_is_the_reports_one_newcombe_difference():
    # Two arms lapsed-reaching: the estimate is one Newcombe difference of all lapsed treated
    # against the lapsed holdout (backend/services/reports.py), not the arms' differences
    # weighted and their half-widths added in quadrature; the truth stays lapsed-weighted.
    from simulator.run import pooled

    def arm(lapsed: int, recalled: int) -> dict:
        money = {"messages": 0, "cost": 0, "committed_coupon_value": 0, "revenue": 0}
        return {"lapsed": lapsed, "recalled": recalled, **money}

    arms = {"a": arm(400, 120), "b": arm(100, 10), "holdout": arm(200, 30)}
    arm_diffs = {
        "a": metrics.newcombe_diff(120, 400, 24, 160),
        "b": metrics.newcombe_diff(10, 100, 6, 40),
    }
    uplift = {
        n: {"recall_rate": d.as_dict(), "true_uplift": {"recall_rate": t}}
        for (n, d), t in zip(arm_diffs.items(), (0.2, 0.05), strict=True)
    }
    est = pooled({"arms": arms, "uplift": uplift})
    assert est["treated"] == 500 and est["recalled"] == 130 and est["holdout_users"] == 200
    assert est["incremental"] == metrics.newcombe_diff(130, 500, 30, 200).as_dict()
    assert est["true_incremental"] == pytest.approx((0.2 * 400 + 0.05 * 100) / 500)


def test_playbook_d30_pools_over_the_students_whose_d30_is_known():
    # The arms' D30 rates are pooled k/n over their D30 denominators, not weighted by all
    # they recalled (the recent returns have no D30 yet).
    from simulator.targets import _retention_d30

    arms = {
        "a": {"retention_d30": 0.5, "retention_d30_n": 10, "recalled": 100},
        "b": {"retention_d30": 0.1, "retention_d30_n": 90, "recalled": 100},
        "c": {"retention_d30": None, "retention_d30_n": 0, "recalled": 5},
        "holdout": {"retention_d30": 0.9, "retention_d30_n": 50, "recalled": 50},
    }
    assert _retention_d30({"arms": arms}) == pytest.approx((5 + 9) / 100)
