"""backend/core/metrics.py and backend/core/attribution.py on small examples worked by hand.

SEED_DIGEST §6: recall rate = recalled / lapsed users targeted; retention after recall = still
active after a period / recalled; ROI = value / (coupon + message cost); a funnel per channel;
always against a control (holdout) group. Every expected number below is computed in the
comments (z = 1.96 in the arithmetic, the code uses 1.959963984540054; the difference only
shows past the fourth decimal, so hand figures are asserted to 1e-4).
"""

from __future__ import annotations

import math
import warnings
from statistics import NormalDist

import numpy as np
import pytest

from backend.core import metrics
from backend.core.attribution import first_after, sum_within
from backend.core.metrics import (
    BOOTSTRAP_MAX_N,
    MIN_GROUP,
    Z95,
    cohort_retention,
    funnel,
    group_any,
    mean_diff,
    newcombe_diff,
    qini,
    rate,
    roi,
    wilson,
)

HAND = 1e-4  # tolerance for figures worked by hand to four decimals


# --------------------------------------------------------------------------------------------
# wilson / rate
# --------------------------------------------------------------------------------------------


def test_wilson_8_of_20_by_hand():
    # p = 8/20 = 0.4, z² = 1.96² = 3.8416, n = 20
    # denom  = 1 + 3.8416/20 = 1.19208
    # centre = (0.4 + 3.8416/40) / 1.19208 = (0.4 + 0.09604) / 1.19208 = 0.49604 / 1.19208
    #        = 0.41611
    # half   = 1.96·sqrt(0.4·0.6/20 + 3.8416/(4·400)) / 1.19208
    #        = 1.96·sqrt(0.012 + 0.002401) / 1.19208 = 1.96·0.120004 / 1.19208 = 0.19731
    # lo = 0.41611 − 0.19731 = 0.21880,  hi = 0.41611 + 0.19731 = 0.61342
    lo, hi = wilson(8, 20)
    assert lo == pytest.approx(0.21880, abs=HAND)
    assert hi == pytest.approx(0.61342, abs=HAND)
    # the same with the exact z the code uses, from the formula written out here
    z = 1.96
    lo196, hi196 = wilson(8, 20, z=z)
    centre = (0.4 + z * z / 40) / (1 + z * z / 20)
    half = z * math.sqrt(0.4 * 0.6 / 20 + z * z / 1600) / (1 + z * z / 20)
    assert (lo196, hi196) == pytest.approx((centre - half, centre + half), abs=1e-12)


def test_wilson_zero_and_all_stay_in_unit_interval():
    # k = 0: p = 0, centre = (z²/2n)/denom and half = z·sqrt(z²/4n²)/denom = (z²/2n)/denom,
    # so lo = 0 (up to rounding: 0/3 gives 5.6e-17, harmless); hi = (z²/n)/(1 + z²/n).
    # n = 10: hi = 0.38416 / 1.38416 = 0.27754.  k = n mirrors it: lo = 1 − 0.27754 = 0.72246.
    for n in (1, 2, 3, 10, 30, 1000, 10**7):
        lo0, hi0 = wilson(0, n)
        lo1, hi1 = wilson(n, n)
        assert 0.0 <= lo0 <= hi0 <= 1.0
        assert 0.0 <= lo1 <= hi1 <= 1.0
        assert lo0 == pytest.approx(0.0, abs=1e-15)
        assert hi1 == pytest.approx(1.0, abs=1e-15)
        assert hi0 == pytest.approx(1 - lo1, abs=1e-12)
    assert wilson(0, 10)[1] == pytest.approx(0.27754, abs=HAND)
    assert wilson(10, 10)[0] == pytest.approx(0.72246, abs=HAND)
    # n = 1, k = 0: hi = 3.8416 / 4.8416 = 0.79345
    assert wilson(0, 1)[1] == pytest.approx(0.79345, abs=HAND)


def test_wilson_rejects_no_observations():
    with pytest.raises(ValueError):
        wilson(0, 0)


def test_rate_recall_rate_example_and_empty():
    # §6 recall rate: 20 lapsed users targeted, 8 came back → 8/20 = 0.4 (Wilson as above)
    r = rate(8, 20)
    assert (r.k, r.n, r.rate) == (8, 20, 0.4)
    assert r.lo == pytest.approx(0.21880, abs=HAND)
    assert r.hi == pytest.approx(0.61342, abs=HAND)
    assert r.as_dict() == {"k": 8, "n": 20, "rate": 0.4, "lo": r.lo, "hi": r.hi}
    # retention after recall: of those 8, 3 still active at D30 → 3/8 = 0.375
    # Wilson 3/8: denom = 1 + 3.8416/8 = 1.4802; centre = (0.375 + 0.2401)/1.4802 = 0.41555
    # half = 1.96·sqrt(0.375·0.625/8 + 3.8416/256)/1.4802 = 1.96·sqrt(0.029297 + 0.015006)/1.4802
    #      = 1.96·0.210483/1.4802 = 0.27871 → (0.13684, 0.69426)
    ret = rate(3, 8)
    assert ret.rate == 0.375
    assert ret.lo == pytest.approx(0.13684, abs=HAND)
    assert ret.hi == pytest.approx(0.69426, abs=HAND)
    # nobody targeted: None values, not a crash
    empty = rate(0, 0)
    assert (empty.k, empty.n, empty.rate, empty.lo, empty.hi) == (0, 0, None, None, None)
    # numpy integers come back as plain ints
    r2 = rate(np.int64(1), np.int64(4))
    assert type(r2.k) is int and type(r2.n) is int and r2.rate == 0.25


# --------------------------------------------------------------------------------------------
# newcombe_diff
# --------------------------------------------------------------------------------------------


def test_newcombe_published_example_56_of_70_vs_48_of_80():
    # Newcombe (1998) Stat Med 17:873–890, Table II, example (a): 56/70 − 48/80,
    # method 10: 0.2000, 95% interval 0.0524 to 0.3339.  By hand from the code's formula:
    # Wilson 56/70: p=0.8, denom=1+3.8416/70=1.054880, centre=(0.8+0.027440)/1.05488=0.784392,
    #   half=1.96·sqrt(0.16/70+3.8416/19600)/1.05488=1.96·sqrt(0.00248171)/1.05488=0.092561
    #   → l1=0.691831, u1=0.876953
    # Wilson 48/80: p=0.6, denom=1+3.8416/80=1.048020, centre=(0.6+0.024010)/1.04802=0.595418,
    #   half=1.96·sqrt(0.24/80+3.8416/25600)/1.04802=1.96·sqrt(0.00315006)/1.04802=0.104966
    #   → l0=0.490452, u0=0.700384
    # lo = 0.2 − sqrt((0.8−0.691831)² + (0.700384−0.6)²) = 0.2 − sqrt(0.011701+0.010077)
    #    = 0.2 − 0.147573 = 0.052427 → 0.0524  ✓ published
    # hi = 0.2 + sqrt((0.876953−0.8)² + (0.6−0.490452)²) = 0.2 + sqrt(0.0059218+0.0120008)
    #    = 0.2 + 0.133875 = 0.333875 → 0.3339  ✓ published
    d = newcombe_diff(56, 70, 48, 80)
    assert d.diff == pytest.approx(0.2, abs=1e-12)
    assert d.lo == pytest.approx(0.0524, abs=5e-5)
    assert d.hi == pytest.approx(0.3339, abs=5e-5)
    # the hand figures at z = 1.96 agree with the code (exact z) to 1e-5
    assert d.lo == pytest.approx(0.052427, abs=1e-5)
    assert d.hi == pytest.approx(0.333875, abs=1e-5)
    assert d.enough is True and d.note == "" and d.method == "newcombe"


def test_newcombe_small_groups_flagged_9_of_10_vs_3_of_10():
    # Wilson 9/10: denom=1.38416, centre=(0.9+0.19208)/1.38416=0.78898,
    #   half=1.96·sqrt(0.009+0.009604)/1.38416=1.96·0.136396/1.38416=0.19314 → (0.59584, 0.98212)
    # Wilson 3/10: denom=1.38416,
    #   centre=(0.3+0.19208)/1.38416=0.35551, half=1.96·sqrt(0.021+0.009604)/1.38416
    #   =1.96·0.174940/1.38416=0.24772 → (0.10779, 0.60323)
    # d = 0.6; lo = 0.6 − sqrt(0.30416² + 0.30323²) = 0.6 − 0.42949 = 0.17051
    #          hi = 0.6 + sqrt(0.08212² + 0.19221²) = 0.6 + 0.20902 = 0.80902
    d = newcombe_diff(9, 10, 3, 10)
    assert d.diff == pytest.approx(0.6, abs=1e-12)
    assert d.lo == pytest.approx(0.17051, abs=HAND)
    assert d.hi == pytest.approx(0.80902, abs=HAND)
    # fewer than 30 in a group: reported, but flagged, with a note saying the groups are too small
    assert d.enough is False
    assert "too small" in d.note and "10 treated" in d.note and "10 holdout" in d.note
    assert str(MIN_GROUP) in d.note


def test_newcombe_enough_threshold_is_min_group_in_each():
    assert newcombe_diff(10, MIN_GROUP, 5, MIN_GROUP).enough is True
    assert newcombe_diff(10, MIN_GROUP - 1, 5, 1000).enough is False
    assert newcombe_diff(10, 1000, 5, MIN_GROUP - 1).enough is False


def test_newcombe_empty_group_gives_none():
    for args in [(0, 0, 3, 10), (3, 10, 0, 0), (0, 0, 0, 0)]:
        d = newcombe_diff(*args)
        assert (d.diff, d.lo, d.hi, d.enough) == (None, None, None, False)
        assert d.method == "newcombe" and d.note
        assert d.as_dict()["diff"] is None


def test_newcombe_extremes_stay_within_minus_one_one():
    # 0/10 − 0/20: d = 0; lo = −(u0 − 0) = −wilson(0,20).hi = −(0.19208/1.19208) = −0.16113
    #                     hi = +(u1 − 0) = wilson(0,10).hi = 0.27754
    d = newcombe_diff(0, 10, 0, 20)
    assert d.diff == 0.0
    assert d.lo == pytest.approx(-0.16113, abs=HAND)
    assert d.hi == pytest.approx(0.27754, abs=HAND)
    # 10/10 − 0/20: d = 1; hi = 1 + sqrt(0 + 0) = 1; lo = 1 − sqrt(0.27754² + 0.16113²)
    #   = 1 − 0.32093 = 0.67907
    d = newcombe_diff(10, 10, 0, 20)
    assert d.diff == 1.0 and d.hi == pytest.approx(1.0, abs=1e-12)
    assert d.lo == pytest.approx(0.67907, abs=HAND)
    for k1, n1, k0, n0 in [(0, 1, 1, 1), (1, 1, 0, 1), (0, 5, 5, 5), (5, 5, 0, 5), (3, 3, 3, 3)]:
        d = newcombe_diff(k1, n1, k0, n0)
        assert -1.0 - 1e-12 <= d.lo <= d.diff <= d.hi <= 1.0 + 1e-12


# --------------------------------------------------------------------------------------------
# mean_diff
# --------------------------------------------------------------------------------------------


def test_mean_diff_constant_groups_by_hand():
    # treated 500, 500, 500 fen; holdout 200, 200 fen: d = 500 − 200 = 300, and every resample
    # has the same means, so the bootstrap interval is [300, 300]. 3 and 2 users: too small.
    d = mean_diff(np.array([500, 500, 500]), np.array([200, 200]))
    assert (d.diff, d.lo, d.hi) == (300.0, 300.0, 300.0)
    assert d.method == "bootstrap" and d.enough is False and "too small" in d.note


def test_mean_diff_empty_groups_give_none():
    for a, b in [([], [1.0]), ([1.0], []), ([], [])]:
        d = mean_diff(np.array(a), np.array(b))
        assert (d.diff, d.lo, d.hi, d.enough) == (None, None, None, False)
        assert d.note


def test_mean_diff_bootstrap_deterministic_for_seed():
    rng = np.random.default_rng(1)
    x1 = rng.exponential(300, 80)
    x0 = rng.exponential(250, 90)
    a = mean_diff(x1, x0, seed=7)
    b = mean_diff(x1, x0, seed=7)
    c = mean_diff(x1, x0, seed=8)
    assert a == b
    assert (a.lo, a.hi) != (c.lo, c.hi)
    assert a.diff == c.diff == pytest.approx(x1.mean() - x0.mean())
    assert a.enough is True and a.note == "" and a.method == "bootstrap"
    assert a.lo < a.diff < a.hi


def test_mean_diff_bootstrap_covers_true_difference():
    # treated ~ N(110, 20²), holdout ~ N(100, 20²), 200 each: true difference 10,
    # SE = sqrt(400/200 + 400/200) = 2, so the interval is about 10 ± 3.9.
    rng = np.random.default_rng(2024)
    d = mean_diff(rng.normal(110, 20, 200), rng.normal(100, 20, 200), seed=0)
    assert d.lo < 10 < d.hi
    assert d.hi - d.lo == pytest.approx(2 * 1.96 * 2, rel=0.25)
    # and over many simulated data sets it covers about 95% of the time (seeded, so stable)
    hits = 0
    trials = 200
    for _ in range(trials):
        d = mean_diff(rng.normal(110, 20, 60), rng.normal(100, 20, 60), seed=1, reps=400)
        hits += d.lo < 10 < d.hi
    assert 0.88 <= hits / trials <= 0.99


def test_mean_diff_switches_to_welch_above_bootstrap_max_n():
    # Total exactly BOOTSTRAP_MAX_N: still the bootstrap (reps kept tiny so this is fast).
    half = BOOTSTRAP_MAX_N // 2
    at = mean_diff(np.zeros(half), np.zeros(half), reps=5)
    assert at.method == "bootstrap"
    # One more user: Welch. treated = 0, 2, 0, 2, … (n1 = 10 002): mean 1, squared deviations
    # all 1, so var(ddof=1) = 10002/10001; holdout = 0, 1, … (n0 = 10 000): mean 0.5, squared
    # deviations all 0.25, var = 2500/9999. se = sqrt(var1/n1 + var0/n0)
    #   = sqrt(1/10001 + 0.25/9999) = sqrt(0.000099990 + 0.000025003) = sqrt(0.000124993)
    #   = 0.0111800; d = 0.5; interval 0.5 ± 1.96·0.0111800 = (0.47809, 0.52191).
    x1 = np.tile([0.0, 2.0], 5001)
    x0 = np.tile([0.0, 1.0], 5000)
    assert x1.size + x0.size == BOOTSTRAP_MAX_N + 2
    d = mean_diff(x1, x0)
    assert d.method == "welch" and d.enough is True and d.note == ""
    assert d.diff == pytest.approx(0.5, abs=1e-12)
    assert d.lo == pytest.approx(0.47809, abs=HAND)
    assert d.hi == pytest.approx(0.52191, abs=HAND)
    se = math.sqrt(1 / 10001 + 0.25 / 9999)
    assert (d.lo, d.hi) == pytest.approx((0.5 - Z95 * se, 0.5 + Z95 * se), abs=1e-12)
    # exactly one over the limit also switches
    just = mean_diff(np.tile([0.0, 2.0], 5000), np.concatenate([np.tile([0.0, 1.0], 5000), [1]]))
    assert just.method == "welch"


def test_mean_diff_welch_with_a_one_user_group_has_no_nan():
    # BUG (metrics.py:116-118): the switch to Welch looks at both groups *together*
    # (x1.size + x0.size > BOOTSTRAP_MAX_N), not at each group. With 20 000 treated and a single
    # holdout user, x0.var(ddof=1) is NaN (0/0, with a RuntimeWarning), so lo and hi are NaN
    # — which Diff.as_dict() then carries into a report (NaN is not valid JSON). The module
    # docstring says Welch is used "once both groups are large". Expected: an interval without
    # NaN (bootstrap when either group is small, or None bounds).
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        d = mean_diff(np.arange(20_000, dtype=float), np.array([5.0]))
    assert d.enough is False
    assert d.lo is None or math.isfinite(d.lo)
    assert d.hi is None or math.isfinite(d.hi)


# --------------------------------------------------------------------------------------------
# roi
# --------------------------------------------------------------------------------------------


def test_roi_by_hand():
    # revenue ¥500 = 50 000 fen; coupons 8 000 + messages 2 000 = cost 10 000 fen
    # ROI = (50 000 − 10 000) / 10 000 = 4.0; revenue per cost = 50 000 / 10 000 = 5.0
    m = roi(50_000, 8_000, 2_000)
    assert (m.revenue_fen, m.coupon_cost_fen, m.message_cost_fen) == (50_000, 8_000, 2_000)
    assert m.roi == 4.0 and m.revenue_per_cost == 5.0
    assert m.as_dict()["roi"] == 4.0
    # a loss: revenue 5 000, cost 10 000 → ROI −0.5, revenue per cost 0.5
    loss = roi(5_000, 10_000, 0)
    assert loss.roi == -0.5 and loss.revenue_per_cost == 0.5
    # nothing returned: ROI −1
    assert roi(0, 300, 12).roi == -1.0


def test_roi_no_cost_gives_none():
    m = roi(1234, 0, 0)
    assert m.roi is None and m.revenue_per_cost is None and m.revenue_fen == 1234
    m = roi(np.int64(7), np.int64(0), np.int64(0))
    assert type(m.revenue_fen) is int and m.roi is None


# --------------------------------------------------------------------------------------------
# group_any / funnel / cohort_retention
# --------------------------------------------------------------------------------------------


def test_group_any_touches_to_users():
    # users 0..4; touches of user 0 (one returned), user 1 (none), user 3 (none, twice);
    # users 2 and 4 have no touches
    out = group_any(np.array([0, 0, 1, 3, 3]), np.array([False, True, False, False, False]), 5)
    assert out.tolist() == [True, False, False, False, False]
    assert group_any(np.array([2, 2]), np.array([1, 1]), 3).tolist() == [False, False, True]
    assert group_any(np.array([], dtype=int), np.array([], dtype=bool), 3).tolist() == [False] * 3
    assert group_any(np.array([], dtype=int), np.array([], dtype=bool), 0).size == 0


def test_funnel_by_hand():
    # six touches: three on channel 0, two on channel 1, one on channel 2, none on channel 3
    ch = np.array([0, 0, 0, 1, 1, 2])
    sent = np.array([1, 1, 1, 1, 1, 1])
    delivered = np.array([1, 1, 0, 1, 0, 1])
    opened = np.array([0, 0, 0, 0, 0, 1])
    returned = np.array([1, 0, 0, 1, 0, 1])
    ordered = np.array([1, 0, 0, 0, 0, 0])
    out = funnel(ch, sent, delivered, opened, returned, ordered, 4)
    # channel 0: sent 3, delivered 1+1+0=2, opened 0, returned 1, ordered 1
    # channel 1: sent 2, delivered 1, opened 0, returned 1, ordered 0
    # channel 2: sent 1, delivered 1, opened 1, returned 1, ordered 0
    assert out.dtype == np.int64
    assert out.tolist() == [[3, 2, 0, 1, 1], [2, 1, 0, 1, 0], [1, 1, 1, 1, 0], [0, 0, 0, 0, 0]]
    # flags are booleans: a count of 2 still counts once
    assert funnel([0], [2], [0], [0], [0], [0], 1).tolist() == [[1, 0, 0, 0, 0]]


def test_funnel_empty():
    e = np.array([], dtype=int)
    out = funnel(e, e, e, e, e, e, 3)
    assert out.shape == (3, 5) and not out.any()


def test_cohort_retention_three_users_with_unobservable_cells():
    # users 0 and 1 in cohort 0, user 2 in cohort 1; cohort 2 is empty; 3 weeks
    cohort = np.array([0, 0, 1])
    active = np.array([[1, 0, 1], [1, 1, 0], [0, 1, 1]], dtype=bool)
    observable = np.array([[1, 1, 0], [1, 1, 1], [1, 0, 0]], dtype=bool)
    num, den = cohort_retention(cohort, active, observable, 3)
    # cohort 0, week 0: active&observable u0=1, u1=1 → 2 of 2 observable
    #           week 1: u0=0, u1=1 → 1 of 2
    #           week 2: u0 active but the week has not passed → not counted; u1=0 → 0 of 1
    # cohort 1, week 0: u2=0 → 0 of 1; week 1: active but unobservable → 0 of 0; week 2: 0 of 0
    # cohort 2: no users → 0 of 0 everywhere
    assert num.tolist() == [[2, 1, 0], [0, 0, 0], [0, 0, 0]]
    assert den.tolist() == [[2, 2, 1], [1, 0, 0], [0, 0, 0]]
    assert num.dtype == den.dtype == np.int64
    assert (num <= den).all()


def test_cohort_retention_no_users():
    num, den = cohort_retention(np.array([], dtype=int), np.zeros((0, 4)), np.zeros((0, 4)), 2)
    assert num.shape == den.shape == (2, 4) and not num.any() and not den.any()
    num, den = cohort_retention([], [], [], 2)
    assert num.shape == den.shape == (2, 0)


# --------------------------------------------------------------------------------------------
# qini
# --------------------------------------------------------------------------------------------


def test_qini_six_users_by_hand():
    # Ranked by score (given shuffled; the function sorts highest first):
    #   rank  score  group    outcome
    #   1     0.9    treated  1
    #   2     0.8    control  0
    #   3     0.7    treated  1
    #   4     0.6    control  1
    #   5     0.5    treated  0
    #   6     0.4    control  0
    # q(k) = R_t(k) − R_c(k)·N_t(k)/N_c(k)  (the control term is 0 while N_c = 0):
    #   k=1: Rt=1 Rc=0 Nt=1 Nc=0 → 1
    #   k=2: Rt=1 Rc=0 Nt=1 Nc=1 → 1
    #   k=3: Rt=2 Rc=0 Nt=2 Nc=1 → 2
    #   k=4: Rt=2 Rc=1 Nt=2 Nc=2 → 2 − 1·2/2 = 1
    #   k=5: Rt=2 Rc=1 Nt=3 Nc=2 → 2 − 1·3/2 = 0.5
    #   k=6: Rt=2 Rc=1 Nt=3 Nc=3 → 2 − 1 = 1
    # gain = [0, 1, 1, 2, 1, 0.5, 1] / 6 = [0, 6, 6, 12, 6, 3, 6] / 36
    # random line = fraction · gain[-1] = [0, 1, 2, 3, 4, 5, 6] / 36
    # gain − line = [0, 5, 4, 9, 2, −2, 0] / 36
    # trapezoids: (0+5)/2 + (5+4)/2 + (4+9)/2 + (9+2)/2 + (2−2)/2 + (−2+0)/2
    #           = 2.5 + 4.5 + 6.5 + 5.5 + 0 − 1 = 18  → area = 18/36 · (1/6) = 1/12
    perm = np.array([3, 0, 5, 1, 4, 2])
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])[perm]
    treated = np.array([1, 0, 1, 0, 1, 0], dtype=bool)[perm]
    outcome = np.array([1, 0, 1, 1, 0, 0], dtype=bool)[perm]
    q = qini(score, treated, outcome)
    assert q.fraction.tolist() == pytest.approx([0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1])
    assert q.gain.tolist() == pytest.approx([0, 1 / 6, 1 / 6, 2 / 6, 1 / 6, 0.5 / 6, 1 / 6])
    assert q.coefficient == pytest.approx(1 / 12, abs=1e-12)
    d = q.as_dict()
    assert d["fraction"] == [0.0, 0.1667, 0.3333, 0.5, 0.6667, 0.8333, 1.0]
    assert d["gain"] == [0.0, 0.166667, 0.166667, 0.333333, 0.166667, 0.083333, 0.166667]
    assert d["coefficient"] == pytest.approx(1 / 12)


def test_qini_ties_keep_original_order():
    # all scores equal: the order is the input order. Input: control+1, treated+1.
    # k=1: Rt=0, Nc=1, Rc=1, Nt=0 → 0; k=2: Rt=1, Rc=1, Nt=1, Nc=1 → 0. Gain 0, area 0.
    q = qini(np.array([0.5, 0.5]), np.array([0, 1], dtype=bool), np.array([1, 1], dtype=bool))
    assert q.gain.tolist() == [0.0, 0.0, 0.0] and q.coefficient == 0.0
    # reversed input: k=1: treated responder, no control yet → 1; k=2: 0 → gain [0, 1/2, 0]
    # line is 0 (end point 0); area = ((0 + 1/2)/2 + (1/2 + 0)/2) / 2 = 1/4
    q = qini(np.array([0.5, 0.5]), np.array([1, 0], dtype=bool), np.array([1, 1], dtype=bool))
    assert q.gain.tolist() == [0.0, 0.5, 0.0] and q.coefficient == pytest.approx(0.25)


def test_qini_empty_input():
    q = qini(np.array([]), np.array([], dtype=bool), np.array([], dtype=bool))
    assert q.fraction.tolist() == [0.0] and q.gain.tolist() == [0.0] and q.coefficient == 0.0
    assert q.as_dict() == {"fraction": [0.0], "gain": [0.0], "coefficient": 0.0}


def test_qini_perfect_ranking_beats_random_and_reversed():
    # 6 000 users; true uplift u ∈ [−0.1, 0.4]; base response 0.1..0.3 independent of u;
    # about half treated at random; P(outcome) = base + u if treated, else base.
    rng = np.random.default_rng(11)
    n = 6000
    u = rng.uniform(-0.1, 0.4, n)
    base = 0.1 + 0.2 * rng.random(n)
    treated = rng.random(n) < 0.5
    p = np.clip(base + u * treated, 0, 1)
    outcome = rng.random(n) < p
    perfect = qini(u, treated, outcome).coefficient
    random = qini(rng.random(n), treated, outcome).coefficient
    reversed_ = qini(-u, treated, outcome).coefficient
    assert perfect > 0.01
    assert perfect > random + 0.01
    assert random > reversed_ + 0.01
    assert reversed_ < 0
    # the end point does not depend on the ranking: total incremental responders / n
    g = qini(u, treated, outcome).gain[-1]
    assert qini(-u, treated, outcome).gain[-1] == pytest.approx(g)
    assert g == pytest.approx(
        (outcome & treated).sum() / n
        - (outcome & ~treated).sum() * treated.sum() / (~treated).sum() / n
    )


# --------------------------------------------------------------------------------------------
# attribution.first_after / sum_within
# --------------------------------------------------------------------------------------------

W = 100  # window in ms for the hand examples


def test_first_after_boundaries():
    # one user (0), touch at 1000, window 100: an event at exactly 1000 does not count
    # (strictly after), 1100 = touch + window counts, 1101 does not.
    at = first_after(np.array([0]), np.array([1000]), np.array([0]), np.array([1000]), W)
    assert at.tolist() == [-1]
    edge = first_after(np.array([0]), np.array([1000]), np.array([0, 0]), np.array([1000, 1100]), W)
    assert edge.tolist() == [1100]
    past = first_after(np.array([0]), np.array([1000]), np.array([0]), np.array([1101]), W)
    assert past.tolist() == [-1]
    # before the touch never counts; the first of several within the window is returned
    many = first_after(
        np.array([0]),
        np.array([1000]),
        np.array([0, 0, 0, 0]),
        np.array([1050, 999, 1001, 1100]),
        W,
    )
    assert many.tolist() == [1001]
    # window 0: (t, t] is empty
    assert first_after(np.array([0]), np.array([5]), np.array([0]), np.array([5]), 0).tolist() == [
        -1
    ]


def test_first_after_other_users_never_count_and_users_interleave():
    # touches (user, ms): (0,1000) (1,1000) (2,1000) (0,2000) (1,50)
    # events  (user, ms): (1,1001) (0,1100) (2,1000) (1,1050) (0,2001) (3,1010) (1,60) (1,140)
    tu = np.array([0, 1, 2, 0, 1])
    tm = np.array([1000, 1000, 1000, 2000, 50])
    eu = np.array([1, 0, 2, 1, 0, 3, 1, 1])
    em = np.array([1001, 1100, 1000, 1050, 2001, 1010, 60, 140])
    out = first_after(tu, tm, eu, em, W)
    # (0,1000): user 0 events 1100 (= edge, counts), 2001 → 1100
    # (1,1000): user 1 events 1001, 1050 → 1001
    # (2,1000): user 2 event at 1000 only (not strictly after); user 1's 1001 must not leak → -1
    # (0,2000): user 0 event 2001 → 2001
    # (1,50):   user 1 events 60, 140 → 60
    assert out.tolist() == [1100, 1001, -1, 2001, 60]
    # a user with no events, and a user whose *neighbour* id has an event right after
    out = first_after(np.array([5, 4]), np.array([10, 10]), np.array([6, 5]), np.array([11, 9]), W)
    assert out.tolist() == [-1, -1]


def test_first_after_real_epoch_milliseconds():
    t0 = 1_773_136_800_000  # 2026-03-10 10:00 UTC
    day = 86_400_000
    w = 7 * day
    tu = np.array([0, 1, 2])
    tm = np.array([t0, t0 + 3 * day, t0])
    eu = np.array([0, 1, 2, 0])
    em = np.array([t0 + w, t0 + 2 * day, t0 + w + 1, t0 + 1])
    # user 0: t0+1 is first; user 1: event before the touch → -1; user 2: one ms late → -1
    assert first_after(tu, tm, eu, em, w).tolist() == [t0 + 1, -1, -1]


def test_first_after_and_sum_within_empty():
    e = np.array([], dtype=np.int64)
    assert first_after(e, e, np.array([0]), np.array([5]), W).tolist() == []
    assert first_after(np.array([0, 1]), np.array([1, 2]), e, e, W).tolist() == [-1, -1]
    assert sum_within(e, e, np.array([0]), np.array([5]), np.array([9]), W).tolist() == []
    assert sum_within(np.array([0, 1]), np.array([1, 2]), e, e, e, W).tolist() == [0, 0]


def test_sum_within_boundaries_and_users():
    # same touches and events as the interleaved example, with amounts in fen
    tu = np.array([0, 1, 2, 0, 1])
    tm = np.array([1000, 1000, 1000, 2000, 50])
    eu = np.array([1, 0, 2, 1, 0, 3, 1, 1])
    em = np.array([1001, 1100, 1000, 1050, 2001, 1010, 60, 140])
    amt = np.array([10, 20, 40, 80, 160, 320, 640, 1280])
    out = sum_within(tu, tm, eu, em, amt, W)
    # (0,1000]: window (1000, 1100]: user 0's 1100 (20) → 20
    # (1,1000]: (1000, 1100]: user 1's 1001 (10) + 1050 (80) → 90
    # (2,1000]: user 2's event at 1000 is not strictly after → 0; user 3's 1010 is not theirs
    # (0,2000]: (2000, 2100]: 2001 (160) → 160
    # (1,50]:   (50, 150]: 60 (640) + 140 (1280) → 1920
    assert out.tolist() == [20, 90, 0, 160, 1920]
    # exactly at t: no; at t + window: yes; one past: no
    one = sum_within(
        np.array([0]),
        np.array([1000]),
        np.zeros(3, int),
        np.array([1000, 1100, 1101]),
        [1, 2, 4],
        W,
    )
    assert one.tolist() == [2]


def _naive(tu, tm, eu, em, amt, window):
    first, total = [], []
    by_user: dict[int, list[int]] = {}
    for j, u in enumerate(eu.tolist()):
        by_user.setdefault(u, []).append(j)
    for u, t in zip(tu.tolist(), tm.tolist(), strict=True):
        best, s = -1, 0
        for j in by_user.get(u, []):  # every event of this user
            e = int(em[j])
            if t < e <= t + window:
                s += int(amt[j])
                if best == -1 or e < best:
                    best = e
        first.append(best)
        total.append(s)
    return first, total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_first_after_and_sum_within_match_naive_loop(seed):
    # 2 000 touches and 2 000 events over 40 users, times in 0..3000 and a window of 100, so
    # exact ties (event at touch, event at touch + window) happen many times.
    rng = np.random.default_rng(seed)
    n = 2000
    tu = rng.integers(0, 40, n)
    tm = rng.integers(0, 3000, n)
    eu = rng.integers(0, 40, n)
    em = rng.integers(0, 3000, n)
    amt = rng.integers(1, 10_000, n)
    first, total = _naive(tu, tm, eu, em, amt, W)
    assert first_after(tu, tm, eu, em, W).tolist() == first
    assert sum_within(tu, tm, eu, em, amt, W).tolist() == total
    assert sum(f != -1 for f in first) > 100  # the test exercises hits, not only misses


def test_module_constants():
    # the two-sided 95% normal quantile
    assert abs(Z95 - NormalDist().inv_cdf(0.975)) < 1e-12
    assert metrics.MIN_GROUP == 30
    assert metrics.BOOTSTRAP_MAX_N == 20_000


def test_recall_counts_only_users_lapsed_at_decision():
    # core.recall: lapsed = silent for at least the tiers' risk threshold (7 term days by
    # default; a tenant's TierConfig moves it); where the silence is unknown, the tier decides.
    from backend.core.recall import lapsed_at_decision
    from backend.core.tiers import TierConfig

    tiers = np.array(["active", "churn_risk", "churn_risk", "low_frequency", "churned"])
    silent = np.array([3, 2, 7, 6, 40])
    assert lapsed_at_decision(tiers, silent).tolist() == [False, False, True, False, True]
    assert lapsed_at_decision(tiers, silent, TierConfig(risk_silent_days=6)).tolist() == [
        False,
        False,
        True,
        True,
        True,
    ]
    unknown = np.full(5, -1)
    assert lapsed_at_decision(tiers, unknown).tolist() == [False, True, True, False, True]
    assert lapsed_at_decision(np.array([1, 2, 3, 4])).tolist() == [False, False, True, True]


def test_retention_weeks_come_from_the_core():
    # D7: a visit in [r + 7, r + 14); D30: [r + 30, r + 37); known once the week has passed.
    from backend.core.recall import RETENTION_TAIL_DAYS, retained_on, retention_known

    r = np.array([10, 10, -1])
    assert retained_on(r, 17, 7).tolist() == [True, True, False]
    assert retained_on(r, 24, 7).tolist() == [False, False, False]
    assert retained_on(r, 46, 30).tolist() == [True, True, False]
    assert retention_known(r, 23, 7).tolist() == [False, False, False]
    assert retention_known(r, 24, 7).tolist() == [True, True, False]
    assert RETENTION_TAIL_DAYS == 37
