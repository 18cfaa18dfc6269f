"""BG/NBD (backend/core/bgnbd.py) against the paper, by hand and by simulation.

Fader, Hardie & Lee (2005), "Counting Your Customers the Easy Way", Marketing Science 24(2).
Every expected value here is computed independently of the module: the likelihood (eq. 6) and
P(alive) with math.lgamma/math.exp, the conditional expectation (eq. 10) with a hand-summed
Gauss series and, separately, by integrating the model's definition over (λ, p).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

from backend.core import bgnbd
from backend.core.bgnbd import BgNbdParams

# The paper's estimates on the CDNOW sample (time unit: weeks).
CDNOW = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
# A second parameter set with a > 1 (eq. 10's (a - 1) factor is then positive).
OTHER = BgNbdParams(r=0.8, alpha=8.0, a=1.7, b=3.5)


def lbeta(p: float, q: float) -> float:
    return math.lgamma(p) + math.lgamma(q) - math.lgamma(p + q)


def paper_loglik(params: BgNbdParams, x: float, t_x: float, big_t: float) -> float:
    """ln L from eq. (6), term by term, in plain floats."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    gamma_part = math.lgamma(r + x) + r * math.log(alpha) - math.lgamma(r)
    first = lbeta(a, b + x) - lbeta(a, b) + gamma_part - (r + x) * math.log(alpha + big_t)
    if x == 0:
        return first
    second = lbeta(a + 1, b + x - 1) - lbeta(a, b) + gamma_part - (r + x) * math.log(alpha + t_x)
    top = max(first, second)  # ln(e^first + e^second), without underflow at large x
    return top + math.log(math.exp(first - top) + math.exp(second - top))


def loglik_gradient(theta: np.ndarray, x, t_x, big_t) -> np.ndarray:
    """d(total log-likelihood)/d(r, α, a, b), from the objective fit_bgnbd minimises.

    That objective is the mean negative log-likelihood over log-parameters, so undo both.
    """
    data = bgnbd._condense(*bgnbd._columns(x, t_x, big_t))
    _, g = bgnbd._objective(np.log(theta), data, 0.0)
    return -g / theta * data.n


def paper_p_alive(params: BgNbdParams, x: float, t_x: float, big_t: float) -> float:
    """P(alive | x, t_x, T) = 1 / (1 + δ_{x>0} · a/(b+x−1) · ((α+T)/(α+t_x))^(r+x))."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    if x == 0:
        return 1.0
    return 1.0 / (1.0 + a / (b + x - 1) * ((alpha + big_t) / (alpha + t_x)) ** (r + x))


def gauss_2f1(a: float, b: float, c: float, z: float) -> float:
    """₂F₁(a, b; c; z) by its power series (|z| < 1), summed until the terms vanish."""
    total, term, k = 1.0, 1.0, 0
    while abs(term) > 1e-17 * abs(total):
        term *= (a + k) * (b + k) / ((c + k) * (k + 1)) * z
        total += term
        k += 1
    return total


def paper_expected(params: BgNbdParams, t: float, x: float, t_x: float, big_t: float) -> float:
    """E[Y(t) | x, t_x, T], eq. (10), valid for any a != 1 (a < 1 included)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    z = t / (alpha + big_t + t)
    ratio = ((alpha + big_t) / (alpha + big_t + t)) ** (r + x)
    numer = (a + b + x - 1) / (a - 1) * (1 - ratio * gauss_2f1(r + x, b + x, a + b + x - 1, z))
    return numer * paper_p_alive(params, x, t_x, big_t)


def integrated_expected(params: BgNbdParams, t: float, x: int, t_x: float, big_t: float):
    """E[Y(t) | x, t_x, T] straight from the model, by 2-D quadrature over (λ, p).

    Posterior ∝ L(λ, p | x, t_x, T) g(λ) f(p) with L = (1−p)^x λ^x e^{−λT} (alive at T)
    + δ p (1−p)^(x−1) λ^x e^{−λ t_x} (dropped after the last purchase); an alive customer
    then buys (1 − e^{−λpt})/p times on average in the next t (eq. 7). No hypergeometric.
    """
    r, alpha, a, b = params.r, params.alpha, params.a, params.b

    def prior(lam, p):
        return lam ** (r - 1) * math.exp(-alpha * lam) * p ** (a - 1) * (1 - p) ** (b - 1)

    def alive(lam, p):
        return (1 - p) ** x * lam**x * math.exp(-lam * big_t)

    def lik(lam, p):
        dropped = p * (1 - p) ** (x - 1) * lam**x * math.exp(-lam * t_x) if x > 0 else 0.0
        return alive(lam, p) + dropped

    opts = {"epsabs": 0, "epsrel": 1e-10}
    num = integrate.dblquad(
        lambda lam, p: alive(lam, p) * -math.expm1(-lam * p * t) / p * prior(lam, p),
        0,
        1,
        0,
        math.inf,
        **opts,
    )[0]
    den = integrate.dblquad(lambda lam, p: lik(lam, p) * prior(lam, p), 0, 1, 0, math.inf, **opts)
    return num / den[0]


CUSTOMERS = [  # (x, t_x, T)
    (0, 0.0, 38.86),
    (1, 5.0, 10.0),
    (2, 30.43, 38.86),  # the paper's worked example
    (10, 20.5, 30.0),
    (3, 12.0, 12.0),  # last purchase just now
]


# ---------------------------------------------------------------- likelihood


@pytest.mark.parametrize("params", [CDNOW, OTHER])
@pytest.mark.parametrize(("x", "t_x", "big_t"), CUSTOMERS)
def test_loglik_of_one_customer_matches_eq6(params, x, t_x, big_t):
    assert bgnbd.loglik(params, x, t_x, big_t) == pytest.approx(
        paper_loglik(params, x, t_x, big_t), rel=1e-12, abs=1e-12
    )


def test_loglik_by_hand_for_a_nonrepeater():
    # x = 0, T = 2, r = α = a = b = 1: B(1,1)/B(1,1) · Γ(1)·1 / (Γ(1)·3^1) = 1/3.
    assert bgnbd.loglik(BgNbdParams(1, 1, 1, 1), 0, 0, 2) == pytest.approx(math.log(1 / 3))
    # x = 1, t_x = 1, T = 2, same parameters:
    #   B(1,2)/B(1,1) · Γ(2)/(Γ(1)·3²) = 1/2 · 1/9 = 1/18
    #   B(2,1)/B(1,1) · Γ(2)/(Γ(1)·2²) = 1/2 · 1/4 = 1/8          → L = 1/18 + 1/8 = 13/72
    assert bgnbd.loglik(BgNbdParams(1, 1, 1, 1), 1, 1, 2) == pytest.approx(math.log(13 / 72))


def test_loglik_of_many_is_the_sum():
    xs, txs, ts = (np.array(c, dtype=float) for c in zip(*CUSTOMERS, strict=True))
    expected = sum(paper_loglik(CDNOW, *c) for c in CUSTOMERS)
    assert bgnbd.loglik(CDNOW, xs, txs, ts) == pytest.approx(expected, rel=1e-12)


def test_analytic_gradient_matches_finite_differences():
    # fit_bgnbd relies on the hand-derived gradient; compare it with central differences of
    # the (independently checked) log-likelihood, per parameter.
    xs, txs, ts = (np.array(c, dtype=float) for c in zip(*CUSTOMERS, strict=True))
    theta = np.array([CDNOW.r, CDNOW.alpha, CDNOW.a, CDNOW.b])
    analytic = loglik_gradient(theta, xs, txs, ts)
    for i in range(4):
        h = 1e-6 * theta[i]
        up, down = theta.copy(), theta.copy()
        up[i] += h
        down[i] -= h
        numeric = (
            bgnbd.loglik(BgNbdParams(*up), xs, txs, ts)
            - bgnbd.loglik(BgNbdParams(*down), xs, txs, ts)
        ) / (2 * h)
        assert analytic[i] == pytest.approx(numeric, rel=1e-6), f"parameter {i}"


# ---------------------------------------------------------------- P(alive), E[Y(t)]


@pytest.mark.parametrize("params", [CDNOW, OTHER])
@pytest.mark.parametrize(("x", "t_x", "big_t"), CUSTOMERS)
def test_p_alive_closed_form(params, x, t_x, big_t):
    got = bgnbd.p_alive(params, x, t_x, big_t)
    assert float(got) == pytest.approx(paper_p_alive(params, x, t_x, big_t), rel=1e-12)


def test_p_alive_worked_example():
    # CDNOW customer x=2, t_x=30.43, T=38.86:
    # 1 / (1 + 0.793/3.426 · (43.274/34.844)^2.243) = 1 / (1 + 0.23147 · 1.62474) = 0.72658
    assert float(bgnbd.p_alive(CDNOW, 2, 30.43, 38.86)) == pytest.approx(0.72658, abs=1e-5)
    # Vectorised; no repeat purchase means alive; a later last purchase means more alive.
    alive = bgnbd.p_alive(CDNOW, [0, 2, 2], [0, 10.0, 30.0], [38.86, 38.86, 38.86])
    assert alive[0] == 1.0
    assert alive[1] < alive[2] < 1.0


@pytest.mark.parametrize(("x", "t_x", "big_t"), CUSTOMERS)
def test_expected_purchases_eq10_when_a_above_1(x, t_x, big_t):
    got = float(bgnbd.expected_purchases(OTHER, 30, x, t_x, big_t))
    assert got == pytest.approx(paper_expected(OTHER, 30, x, t_x, big_t), rel=1e-8)


def test_expected_purchases_paper_worked_example_cdnow():
    # The paper (p. 280): a CDNOW customer with x = 2, t_x = 30.43, T = 38.86 is expected to
    # make 1.226 purchases in the next 39 weeks. CDNOW's a = 0.793 < 1; eq. (10) holds for it
    # (the series and the direct integral below both give 1.22603).
    series = paper_expected(CDNOW, 39, 2, 30.43, 38.86)
    integral = integrated_expected(CDNOW, 39, 2, 30.43, 38.86)
    assert series == pytest.approx(1.226, abs=5e-4)
    assert integral == pytest.approx(series, rel=1e-7)
    got = float(bgnbd.expected_purchases(CDNOW, 39, 2, 30.43, 38.86))
    assert got == pytest.approx(series, rel=1e-6)


def test_expected_purchases_nonrepeater_cdnow():
    # x = 0, T = 38.86, next 39 weeks: 0.19510 by series and by integration.
    series = paper_expected(CDNOW, 39, 0, 0.0, 38.86)
    assert integrated_expected(CDNOW, 39, 0, 0.0, 38.86) == pytest.approx(series, rel=1e-7)
    got = float(bgnbd.expected_purchases(CDNOW, 39, 0, 0.0, 38.86))
    assert got == pytest.approx(series, rel=1e-6)


def test_expected_purchases_integral_check_when_a_above_1():
    # The quadrature agrees with eq. (10) where the module is right too (a > 1).
    integral = integrated_expected(OTHER, 30, 2, 10.0, 20.0)
    assert float(bgnbd.expected_purchases(OTHER, 30, 2, 10.0, 20.0)) == pytest.approx(
        integral, rel=1e-7
    )


def general_path(monkeypatch, fn, *args):
    """`fn` with the daily-grid tables switched off: the elementwise expressions."""
    with monkeypatch.context() as patch:
        patch.setattr(bgnbd, "_grid", lambda *a: None)
        return fn(*args)


def random_grid(rng, n):
    big_t = rng.integers(0, 400, n)
    x = rng.integers(0, 80, n) * (rng.random(n) < 0.6)
    t_x = np.where(x > 0, np.minimum((rng.random(n) * (big_t + 1)).astype(np.int64), big_t), 0)
    return x, t_x, big_t


@pytest.mark.parametrize("params", [CDNOW, OTHER, BgNbdParams(2.0, 90.0, 1.0, 6.0)])
def test_daily_grid_tables_equal_the_general_path(params, monkeypatch):
    # Whole-number (x, t_x, T) take logs and ₂F₁ from tables over distinct values; the
    # numbers must be those of the elementwise path (a = 1 exercises the nudge).
    rng = np.random.default_rng(8)
    x, t_x, big_t = random_grid(rng, 50_000)
    for cols in ((x, t_x, big_t), (x.astype(float), t_x.astype(float), big_t.astype(float))):
        alive = bgnbd.p_alive(params, *cols)
        expected = bgnbd.expected_purchases(params, 30, *cols)
        both = bgnbd.alive_and_expected(params, 30, *cols)
        want_alive = general_path(monkeypatch, bgnbd.p_alive, params, *cols)
        want_expected = general_path(monkeypatch, bgnbd.expected_purchases, params, 30, *cols)
        np.testing.assert_allclose(alive, want_alive, rtol=1e-12, atol=0)
        np.testing.assert_allclose(expected, want_expected, rtol=1e-12, atol=0)
        np.testing.assert_array_equal(both[0], alive)
        np.testing.assert_array_equal(both[1], expected)
        assert (alive[x == 0] == 1.0).all()
    # Non-integer inputs stay on the general path and agree with the closed form.
    frac = (x + 0.25, np.where(x > 0, t_x + 0.25, 0.0), big_t + 0.5)
    got = bgnbd.p_alive(params, *frac)
    for i in range(0, 50_000, 4999):
        assert got[i] == pytest.approx(
            paper_p_alive(params, *(float(c[i]) for c in frac)), rel=1e-12
        )
    np.testing.assert_array_equal(got, general_path(monkeypatch, bgnbd.p_alive, params, *frac))


def test_daily_grid_rejects_invalid_inputs_too():
    rng = np.random.default_rng(9)
    x, t_x, big_t = random_grid(rng, 1000)
    for bad in (
        (x, np.where(x > 0, big_t + 1, 0), big_t),  # recency > T
        (x, np.where(x == 0, 1, t_x), np.maximum(big_t, 1)),  # recency without repeats
        (x - 1, t_x, big_t),  # negative frequency
    ):
        with pytest.raises(ValueError):
            bgnbd.p_alive(CDNOW, *bad)
        with pytest.raises(ValueError):
            bgnbd.expected_purchases(CDNOW, 30, *bad)


# ---------------------------------------------------------------- extremes, validation


def test_numerically_stable_for_heavy_customers():
    # Frequencies in the thousands would overflow Γ and ((α+T)/(α+t_x))^(r+x) in linear space.
    xs = np.array([5000.0, 5000.0, 5000.0, 0.0, 1.0])
    txs = np.array([9999.0, 5000.0, 10000.0, 0.0, 10000.0])
    ts = np.full(5, 10000.0)
    for params in (CDNOW, OTHER):
        ll = bgnbd.loglik(params, xs, txs, ts)
        assert np.isfinite(ll)
        alive = bgnbd.p_alive(params, xs, txs, ts)
        assert np.all(np.isfinite(alive))
        assert np.all((alive >= 0) & (alive <= 1))
        # 5000 purchases, the last 5000 days ago: (10000+α)/(5000+α))^5000 ≈ 2^5000 → dead.
        assert alive[1] < 1e-300
        expected = bgnbd.expected_purchases(params, 30, xs, txs, ts)
        assert np.all(np.isfinite(expected))
        assert np.all(expected >= 0)
        # A customer buying every other day, last purchase today: about 15 in 30 days.
        assert 13 < expected[2] < 16
    # The single-row log-likelihood of a heavy customer still agrees with eq. (6).
    assert bgnbd.loglik(OTHER, 5000, 9999, 10000) == pytest.approx(
        paper_loglik(OTHER, 5000, 9999, 10000), rel=1e-12
    )


def test_expected_purchases_long_horizon_for_heavy_customer():
    # Same extreme customer as above (x = T = 5000, bought every day), horizon 1000 days:
    # ₂F₁(r+x, b+x; a+b+x−1; z) ≈ (1−z)^−(r+x) overflows to inf while the power in front
    # underflows to 0, and inf·0 is NaN. The answer is finite: at most the posterior mean rate
    # (r+x)/(α+T) ≈ 1 per day times 1000 days.
    for params in (CDNOW, OTHER):
        got = float(bgnbd.expected_purchases(params, 1000, 5000, 5000, 5000))
        assert math.isfinite(got)
        assert 0 < got < 1000


@pytest.mark.parametrize(
    ("x", "t_x", "big_t"),
    [
        (2, 11.0, 10.0),  # recency > T
        (0, 3.0, 10.0),  # recency > 0 without a repeat purchase
        (-1, 0.0, 10.0),  # negative frequency
        (1, -1.0, 10.0),  # negative recency
    ],
)
def test_invalid_inputs_are_rejected(x, t_x, big_t):
    params = CDNOW
    with pytest.raises(ValueError):
        bgnbd.loglik(params, x, t_x, big_t)
    with pytest.raises(ValueError):
        bgnbd.p_alive(params, x, t_x, big_t)
    with pytest.raises(ValueError):
        bgnbd.expected_purchases(params, 10, x, t_x, big_t)
    with pytest.raises(ValueError):
        bgnbd.fit_bgnbd([1, x], [1.0, t_x], [5.0, big_t])


def test_fit_on_nothing_is_an_error():
    with pytest.raises(ValueError):
        bgnbd.fit_bgnbd([], [], [])


# ---------------------------------------------------------------- fitting


def observed_information_se(params: BgNbdParams, x, t_x, big_t):
    """Standard errors of (r, α, a, b): sqrt(diag((−H)^−1)), H the Hessian of the total
    log-likelihood at `params` by central finite differences (steps of 1e-4 relative)."""
    theta = np.array([params.r, params.alpha, params.a, params.b])
    h = 1e-4 * theta
    hess = np.zeros((4, 4))

    def ll(v):
        return bgnbd.loglik(BgNbdParams(*v), x, t_x, big_t)

    for i in range(4):
        for j in range(4):
            ei, ej = np.eye(4)[i] * h[i], np.eye(4)[j] * h[j]
            hess[i, j] = (
                ll(theta + ei + ej)
                - ll(theta + ei - ej)
                - ll(theta - ei + ej)
                + ll(theta - ei - ej)
            ) / (4 * h[i] * h[j])
    return np.sqrt(np.diag(np.linalg.inv(-hess))), hess


def test_parameter_recovery():
    # 40,000 CDNOW-like customers observed for 26–78 weeks, drawn from the known parameters.
    rng = np.random.default_rng(20050401)
    big_t = rng.uniform(26, 78, 40_000)
    x, t_x = bgnbd.simulate(CDNOW, big_t, rng)
    fit = bgnbd.fit_bgnbd(x, t_x, big_t)
    assert fit.converged
    assert fit.n == 40_000
    est = np.array([fit.r, fit.alpha, fit.a, fit.b])
    truth = np.array([CDNOW.r, CDNOW.alpha, CDNOW.a, CDNOW.b])

    # Tolerance = the estimator's own sampling error: standard errors from the observed
    # information at the estimate. With this design they come out near (0.0026, 0.081, 0.031,
    # 0.12), i.e. 1–5% of each parameter, and agree with the spread of the estimates over 20
    # independent replicates (0.0021, 0.075, 0.034, 0.15), so they are honest. A check at 4 SE
    # fails by chance with probability ~6e-5 per parameter (and the seed is fixed anyway).
    se, hess = observed_information_se(fit, x, t_x, big_t)
    assert np.all(se / truth < 0.06), se  # the tolerance is tight, not a free pass
    z = (est - truth) / se
    assert np.all(np.abs(z) < 4), (est, se, z)
    # Jointly, allowing for the strong a–b correlation: (θ̂−θ)ᵀ(−H)(θ̂−θ) ~ χ²(4), whose
    # 99.9% quantile is 18.47.
    d = est - truth
    assert float(d @ (-hess) @ d) < 18.47
    # Maximum likelihood: nothing, the truth included, fits better; the reported total
    # log-likelihood is the one of the returned parameters.
    assert fit.loglik == pytest.approx(bgnbd.loglik(fit, x, t_x, big_t), rel=1e-12)
    assert fit.loglik >= bgnbd.loglik(CDNOW, x, t_x, big_t)


def test_fit_is_deterministic_and_ignores_row_order():
    rng = np.random.default_rng(3)
    big_t = np.round(rng.uniform(10, 60, 3000))
    x, t_x = bgnbd.simulate(OTHER, big_t, rng)
    t_x = np.round(t_x, 1)  # repeated (x, t_x, T) rows: the weighted-unique path is used
    first = bgnbd.fit_bgnbd(x, t_x, big_t)
    again = bgnbd.fit_bgnbd(x, t_x, big_t)
    order = rng.permutation(x.size)
    shuffled = bgnbd.fit_bgnbd(x[order], t_x[order], big_t[order])
    assert first == again
    assert first == shuffled


def test_fit_is_the_maximum_of_the_raw_rows_likelihood():
    # The fit collapses identical rows into weights; its optimum must be that of the raw,
    # uncollapsed data: the score (gradient of the total log-likelihood over the raw rows,
    # per log-parameter and per customer) vanishes there, and params.loglik is that total.
    rng = np.random.default_rng(11)
    big_t = np.round(rng.uniform(10, 60, 2000))
    x, t_x = bgnbd.simulate(OTHER, big_t, rng)
    t_x = np.round(t_x)  # few distinct rows: weights matter
    fit = bgnbd.fit_bgnbd(x, t_x, big_t)
    assert fit.loglik == pytest.approx(bgnbd.loglik(fit, x, t_x, big_t), rel=1e-12)
    theta = np.array([fit.r, fit.alpha, fit.a, fit.b])
    score = loglik_gradient(theta, x, t_x, big_t) * theta / x.size
    assert np.all(np.abs(score) < 1e-6), score


def test_simulate_matches_the_model_moments():
    # simulate is the truth for recovery; check it against closed forms that do not use it.
    # With everyone observed for T = 52 weeks under OTHER:
    #   P(X = 0) = B(a, b)/B(a, b) · (α/(α+T))^r = (8/60)^0.8   (eq. 8 at x = 0)
    #   E[X(T)] = (a+b−1)/(a−1) · [1 − (α/(α+T))^r ₂F₁(r, b; a+b−1; T/(α+T))]   (eq. 9)
    rng = np.random.default_rng(5)
    n = 100_000
    big_t = np.full(n, 52.0)
    x, t_x = bgnbd.simulate(OTHER, big_t, rng)
    r, alpha, a, b = OTHER.r, OTHER.alpha, OTHER.a, OTHER.b
    p0 = (alpha / (alpha + 52)) ** r  # = 0.19949
    mean = (
        (a + b - 1)
        / (a - 1)
        * (1 - (alpha / (alpha + 52)) ** r * gauss_2f1(r, b, a + b - 1, 52 / (alpha + 52)))
    )
    # Binomial SE of a share at n = 1e5: sqrt(0.2·0.8/1e5) = 0.0013 → 4 SE = 0.005.
    assert np.mean(x == 0) == pytest.approx(p0, abs=0.005)
    # SE of the mean: sd(x)/sqrt(n); 4 of them.
    assert np.mean(x) == pytest.approx(mean, abs=4 * np.std(x) / math.sqrt(n))
    assert np.all(t_x[x == 0] == 0)
    assert np.all((t_x > 0)[x > 0])
    assert np.all(t_x <= big_t)


def test_expected_purchases_stays_finite_when_dropout_almost_never_happens():
    # A 160-user campus once fitted a and b in the hundreds of thousands (dropout ~never):
    # Euler's form became 0·∞ and a NaN reached the NOT NULL column, failing the nightly job.
    huge = BgNbdParams(
        r=1.61, alpha=13.47, a=12781.2, b=297344.3, loglik=0.0, n=108, converged=True
    )
    tenth = BgNbdParams(
        r=1.61, alpha=13.47, a=1278.12, b=29734.43, loglik=0.0, n=108, converged=True
    )
    x, t_x, big_t = np.array([0, 0, 3, 10]), np.array([0, 0, 20, 40]), np.array([5, 17, 30, 45])
    for cols in ((x, t_x, big_t), (x * 1.0, t_x * 1.0, big_t + 0.5)):  # grid and general path
        e = bgnbd.expected_purchases(huge, 30, *cols)
        assert np.all(np.isfinite(e)) and np.all(e > 0)
        # never above the no-dropout rate, and continuous in (a, b) at a fixed dropout odds
        assert np.all(e <= 30 * (1.61 + cols[0]) / (13.47 + cols[2]))
    np.testing.assert_allclose(
        bgnbd.expected_purchases(huge, 30, x, t_x, big_t),
        bgnbd.expected_purchases(tenth, 30, x, t_x, big_t),
        rtol=1e-3,
    )
