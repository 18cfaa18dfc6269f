"""The power planner (backend/core/power.py) against published values, and its shape.

Published values pinned here, each with the formula it was computed with:
- R's `power.prop.test` (stats package; its help page's examples state the results): Fleiss's
  formula without continuity correction, equal groups, n real-valued (not rounded up).
- Zar, Biostatistical Analysis (4th ed., 1999), example 24.26 as reproduced in the UNISTAT
  manual §6.7.6.1: Fleiss's formula WITH the continuity correction (Fleiss, Tytun & Ury 1980),
  equal and 1:3 groups, n real-valued.
- The classic equal-group textbook values without continuity correction (0.10 vs 0.15 → 686,
  0.20 vs 0.30 → 294 per group at α 0.05 two-sided, 80% power), rounded up to whole users.
"""

from __future__ import annotations

import math

import pytest

from backend.core import power
from backend.core.power import (
    _n_control,
    detectable_effect,
    holdout_plan,
    power_two_proportions,
    sample_size_two_proportions,
)

# Published values --------------------------------------------------------------------------


def test_r_power_prop_test_examples():
    """R's documented results: same formula, equal groups, n real-valued (R states them to
    3-4 significant digits)."""
    # power.prop.test(p1 = .50, p2 = .75, power = .90) => n = 76.7
    assert round(_n_control(0.50, 0.75, 1.0, 0.05, 0.90), 1) == 76.7
    assert sample_size_two_proportions(0.50, 0.75, power=0.9) == (77, 77)
    # power.prop.test(p1 = .90, p2 = 1.0, power = .8) => n = 73.37
    assert round(_n_control(0.90, 1.00, 1.0, 0.05, 0.80), 2) == 73.37
    # power.prop.test(p1 = .5, p2 = .501, sig.level = .001, power = .90) => n = 10451937
    assert sample_size_two_proportions(0.5, 0.501, alpha=0.001, power=0.9) == (10451937,) * 2


def test_r_power_and_detectable_p2_examples():
    """power.prop.test(n=50, p1=.5, p2=.75) => power = 0.740, and
    power.prop.test(n=50, p1=.5, power=.9) => p2 = 0.8026 (so the MDE is 0.3026)."""
    assert round(power_two_proportions(0.5, 0.75, 50, 50), 3) == 0.740
    assert round(0.5 + detectable_effect(0.5, 50, 50, power=0.9), 4) == 0.8026


def test_zar_example_with_continuity_correction_and_unequal_groups():
    """Zar 1999 ex. 24.26: p 0.45 vs 0.25, α 0.05 two-sided, 90% power → n1 = 127.2343 with
    equal groups and n1 = 83.1527 (n2 = 3·n1) with n2/n1 = 3 — Fleiss's formula with the
    continuity correction. Checks the unequal-ratio pooled variance too."""
    assert _n_control(0.45, 0.25, 1.0, 0.05, 0.9, continuity=True) == pytest.approx(
        127.2343, abs=5e-5
    )
    assert _n_control(0.45, 0.25, 3.0, 0.05, 0.9, continuity=True) == pytest.approx(
        83.1527, abs=5e-5
    )
    assert sample_size_two_proportions(
        0.45, 0.25, ratio=3, power=0.9, continuity_correction=True
    ) == (84, 250)


@pytest.mark.parametrize("p0, p1, n", [(0.10, 0.15, 686), (0.20, 0.30, 294)])
def test_textbook_values_without_continuity_correction(p0, p1, n):
    assert sample_size_two_proportions(p0, p1) == (n, n)
    # symmetric in which group is called control when the groups are equal
    assert sample_size_two_proportions(p1, p0) == (n, n)


def test_ratio_puts_ratio_times_as_many_in_the_treated_group():
    n_c, n_t = sample_size_two_proportions(0.2, 0.25, ratio=9)
    assert n_t == pytest.approx(9 * n_c, abs=9)
    # a lopsided split needs more people in total than an even one
    even = sum(sample_size_two_proportions(0.2, 0.25))
    assert n_c + n_t > even


# Shape -------------------------------------------------------------------------------------


def test_a_bigger_effect_needs_fewer_users():
    needed = [holdout_plan(0.2, e, 0.1, 100).users_needed for e in (0.01, 0.02, 0.05, 0.1, 0.2)]
    assert needed == sorted(needed, reverse=True) and len(set(needed)) == len(needed)


def test_an_even_split_needs_the_fewest_users():
    shares = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    totals = {h: holdout_plan(0.2, 0.05, h, 100).users_needed for h in shares}
    assert min(totals, key=totals.get) == 0.5
    # on a fine grid the optimum stays within a hair of 0.5 (the H1 variances differ a little)
    fine = {h / 100: holdout_plan(0.2, 0.05, h / 100, 100).users_needed for h in range(30, 71)}
    assert abs(min(fine, key=fine.get) - 0.5) <= 0.05
    assert totals[0.5] <= min(fine.values()) * 1.01


def test_a_tiny_holdout_takes_more_days():
    days = [holdout_plan(0.2, 0.05, h, 200).days_needed for h in (0.5, 0.2, 0.1, 0.05)]
    assert days == sorted(days) and days[0] < days[-1]
    tiny = holdout_plan(0.2, 0.05, 0.005, 200)  # one user in 200 held out: ~565 days
    assert tiny.days_needed is None and "365 days" in tiny.note


def test_days_count_from_the_current_size():
    fresh = holdout_plan(0.2, 0.05, 0.1, 100)
    assert fresh.users_needed == fresh.n_holdout_needed + fresh.n_treated_needed
    # at 100 new users a day, 10 of them held out: the holdout is the slower group to fill
    assert fresh.days_needed == math.ceil(fresh.n_holdout_needed / 10)
    half = holdout_plan(
        0.2,
        0.05,
        0.1,
        100,
        n_holdout_now=fresh.n_holdout_needed // 2,
        n_treated_now=fresh.n_treated_needed // 2,
    )
    assert 0 < half.days_needed < fresh.days_needed
    assert half.share_of_needed == pytest.approx(0.5, abs=0.01)
    done = holdout_plan(
        0.2,
        0.05,
        0.1,
        0,
        n_holdout_now=fresh.n_holdout_needed,
        n_treated_now=fresh.n_treated_needed,
    )
    assert done.days_needed == 0 and done.share_of_needed == 1.0
    stalled = holdout_plan(0.2, 0.05, 0.1, 0, n_holdout_now=10, n_treated_now=90)
    assert stalled.days_needed is None and "not grow" in stalled.note


@pytest.mark.parametrize("p0, effect, h", [(0.2, 0.05, 0.1), (0.03, 0.01, 0.5), (0.6, 0.1, 0.2)])
def test_round_trip_detectable_effect_at_the_planned_size_is_the_effect(p0, effect, h):
    plan = holdout_plan(p0, effect, h, 100)
    mde = detectable_effect(p0, plan.n_holdout_needed, plan.n_treated_needed)
    # rounding each group up makes the MDE a hair smaller than the planned effect
    assert mde == pytest.approx(effect, rel=5e-3) and mde <= effect
    assert power_two_proportions(
        p0, p0 + effect, plan.n_holdout_needed, plan.n_treated_needed
    ) == pytest.approx(0.8, abs=5e-3)
    # and the plan reports the MDE at its current size
    now = holdout_plan(
        p0, effect, h, 100, n_holdout_now=plan.n_holdout_needed, n_treated_now=plan.n_treated_needed
    )
    assert now.detectable_now == pytest.approx(mde)


def test_more_users_detect_smaller_effects():
    mdes = [detectable_effect(0.2, n, 9 * n) for n in (50, 200, 1000, 5000)]
    assert mdes == sorted(mdes, reverse=True)


# Edges -------------------------------------------------------------------------------------


@pytest.mark.parametrize("effect", [0.0, -0.05, -1.0])
def test_no_increase_is_unreachable_not_a_division_by_zero(effect):
    plan = holdout_plan(0.2, effect, 0.1, 100, n_holdout_now=50, n_treated_now=450)
    assert plan.users_needed is None and plan.days_needed is None
    assert plan.n_holdout_needed is None and plan.share_of_needed is None
    assert plan.detectable_now is not None  # what the current size can see is still known
    assert plan.note
    with pytest.raises(ValueError):
        sample_size_two_proportions(0.2, 0.2)


def test_no_holdout_is_unreachable():
    for h in (0.0, 1.0):
        plan = holdout_plan(0.2, 0.05, h, 100)
        assert plan.users_needed is None and "no holdout" in plan.note


def test_rates_near_and_past_the_ends_are_clipped():
    # a predicted rate past 100% plans for 100%
    assert holdout_plan(0.97, 0.10, 0.5, 100).p_treated == 1.0
    assert holdout_plan(0.97, 0.10, 0.5, 100).users_needed is not None
    # an observed rate of 0 still gives a finite plan
    zero = holdout_plan(0.0, 0.02, 0.1, 100)
    assert zero.users_needed is not None and zero.users_needed > 0
    assert holdout_plan(-0.1, 0.02, 0.1, 100).p_control == 0.0
    # already at 100%: nothing can rise, nothing to detect
    assert holdout_plan(1.0, 0.05, 0.1, 100).users_needed is None
    assert detectable_effect(1.0, 100, 100) is None


def test_tiny_or_empty_groups_detect_nothing():
    assert detectable_effect(0.2, 0, 100) is None
    assert detectable_effect(0.2, 100, 0) is None
    assert detectable_effect(0.2, 1, 1) is None  # not even 20% → 100% at 80% power


def test_bad_alpha_or_power_is_refused():
    with pytest.raises(ValueError):
        sample_size_two_proportions(0.1, 0.2, power=1.0)
    with pytest.raises(ValueError):
        sample_size_two_proportions(0.1, 0.2, alpha=0.0)
    with pytest.raises(ValueError):
        sample_size_two_proportions(0.1, 0.2, ratio=0)


def test_the_plan_is_json_ready():
    import json

    d = holdout_plan(0.2, 0.05, 0.1, 100, n_holdout_now=10, n_treated_now=90).as_dict()
    assert json.loads(json.dumps(d)) == d
    for key in (
        "effect",
        "p_control",
        "holdout_share",
        "n_holdout_needed",
        "n_treated_needed",
        "users_needed",
        "days_needed",
        "detectable_now",
        "share_of_needed",
    ):
        assert key in d
    assert power.PLAN_POWER == 0.8 and power.PLAN_ALPHA == 0.05
