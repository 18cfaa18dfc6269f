"""The campaign job on the simulated campus: production's decide, the books it keeps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from backend.core.policy import parse_policy
from backend.core.policy.allocation import salt_of, stable_unit
from simulator.campaign import HELD_OUT, SENT
from simulator.model import CampusModel

ROOT = Path(__file__).resolve().parent.parent


def preset(name: str):
    return parse_policy((ROOT / "seeds" / "policies" / f"{name}.yaml").read_text("utf-8"))


def run(policy, users=3000, days=60, seed=1):
    model = CampusModel(users=users, seed=seed, policy=policy)
    for _ in range(days):
        model.step()
    return model


def test_never_more_than_three_touches_in_thirty_days():
    model = run(preset("golden_window"))
    log = model.campaign.log
    user, day, status = log.column("user"), log.column("day"), log.column("status")
    counted = status != 2  # sent and held out count against the cap; skips do not
    assert counted.sum() > 100
    for u in np.unique(user[counted]):
        days = np.sort(day[counted & (user == u)])
        # any 30-day window holds at most 3
        assert all(np.sum((days >= d) & (days < d + 30)) <= 3 for d in days), u


def test_the_holdout_is_the_stable_hash_of_production():
    policy = preset("golden_window")
    model = run(policy)
    log = model.campaign.log
    user, status = log.column("user"), log.column("status")
    key = model.campaign.user_key[user]
    held = stable_unit(key, salt_of(model.campaign.salt, policy.name, "holdout"))
    held = held < policy.holdout_share
    decided = status != 2
    assert np.array_equal(held[decided], status[decided] == HELD_OUT)


def test_subscribe_sends_spend_allowances_and_never_go_below_zero():
    model = run(preset("coupon_blast"))
    for left in model.campaign.permissions.allowance.values():
        assert left.min() >= 0
    log = model.campaign.log
    assert (log.column("status") == SENT).sum() > 0


def test_same_seed_same_decisions():
    a = run(preset("tiered"), users=1500, days=40, seed=3)
    b = run(preset("tiered"), users=1500, days=40, seed=3)
    for column in ("user", "day", "step", "arm", "status"):
        assert np.array_equal(a.campaign.log.column(column), b.campaign.log.column(column))


def test_a_policy_does_not_disturb_the_organic_dice():
    # Decisions use their own random stream: until responses exist, the campus lives the
    # same days with or without a policy (what lets an untreated twin share its dice).
    with_policy = run(preset("golden_window"), users=1500, days=30, seed=4)
    without = run(None, users=1500, days=30, seed=4)
    assert np.array_equal(with_policy.state.last_visit, without.state.last_visit)
