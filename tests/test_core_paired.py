"""backend/core/paired.py: paired totals, profit and the pairwise verdict."""

import numpy as np
import pytest

from backend.core import paired


def test_total_is_n_times_the_mean_with_sd_root_n_interval():
    d = np.array([0.0, 1.0, 0.0, 1.0, 2.0, 0.0, 0.0, 1.0])
    e = paired.paired_effect(d)
    n, sd = d.size, d.std(ddof=1)
    assert e.value == pytest.approx(n * d.mean())
    assert e.se == pytest.approx(sd * np.sqrt(n))
    assert e.lo == pytest.approx(e.value - 1.959964 * e.se, rel=1e-5)
    assert e.hi == pytest.approx(e.value + 1.959964 * e.se, rel=1e-5)
    assert (e.users, e.replicates) == (8, 1)


def test_replicates_pool_into_the_mean_campus_and_narrow_by_root_r():
    rng = np.random.default_rng(0)
    d = rng.normal(0.1, 1.0, size=(4, 5000))
    pooled = paired.paired_effect(d)
    single = paired.paired_effect(d[0])
    assert pooled.value == pytest.approx(5000 * d.mean())
    assert pooled.replicates == 4 and pooled.users == 5000
    assert pooled.se == pytest.approx(single.se / 2, rel=0.05)


def test_no_effect_gives_zero_with_zero_width():
    e = paired.paired_effect(np.zeros(100))
    assert (e.value, e.lo, e.hi) == (0.0, 0.0, 0.0)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError):
        paired.paired_effect(np.zeros((2, 0)))
    with pytest.raises(ValueError):
        paired.judge(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError):
        paired.profit(np.zeros(2), np.zeros(2), margin=20)


def test_profit_is_margin_on_revenue_less_spend():
    got = paired.profit(np.array([1000, 0, -500]), np.array([100, 500, 0]), margin=0.2)
    assert got.tolist() == [100.0, -500.0, -100.0]
    assert paired.DEFAULT_MARGIN == 0.2


def test_judge_says_better_worse_or_cannot_tell():
    rng = np.random.default_rng(1)
    base = rng.normal(0, 1, 20_000)
    clearly = paired.judge(base + 0.2, base + rng.normal(0, 0.1, base.size), ("a", "b"))
    assert clearly.outcome == paired.BETTER and clearly.difference.lo > 0
    assert paired.judge(base, base + 0.2).outcome == paired.WORSE
    same = paired.judge(base + rng.normal(0, 1, base.size), base + rng.normal(0, 1, base.size))
    assert same.outcome == paired.TIE
    assert same.difference.lo <= 0 <= same.difference.hi
    # The smallest resolvable difference: (1.96 + 0.84) standard errors.
    assert same.min_detectable == pytest.approx(2.8016 * same.difference.se, rel=1e-4)
    assert same.as_dict()["outcome"] == "cannot_tell"


def test_the_interval_covers_a_known_total_about_95_percent_of_the_time():
    # Binomial(400, 0.95): P(count <= 367) = 0.38%, P(count >= 393) = 0.17%.
    rng = np.random.default_rng(2)
    n, mean = 2000, 0.03
    covered = 0
    for _ in range(400):
        d = (rng.random(n) < 0.1 + mean).astype(float) - (rng.random(n) < 0.1)
        e = paired.paired_effect(d)
        covered += e.lo <= n * mean <= e.hi
    assert 368 <= covered <= 392, covered
