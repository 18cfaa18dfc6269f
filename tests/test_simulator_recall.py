"""Recall means bringing back the lapsed (issue 15, item 4): in the simulator's results recall
is counted among the users lapsed at decision (backend.core.recall), and what active users do
after a touch is their retention; coupon-driven returns fade once the offer ends."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from backend.core.recall import lapsed_at_decision
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
    from backend.core import metrics

    first = metrics.first_per_user(user, day * 10 + step)
    first = first[lapsed_at_decision(log.column("tier", False)[first])]
    r = log.column("return_day", False)
    ok = first[(log.column("status", False)[first] == 0) & (r[first] >= 0)]
    ok = ok[model.day - 1 >= r[ok] + 37]
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
