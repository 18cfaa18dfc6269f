"""BG/NBD: how many purchases a customer will make, and whether they are still "alive".

Fader, Hardie & Lee (2005), "Counting Your Customers the Easy Way: An Alternative to the
Pareto/NBD Model", Marketing Science 24(2). While alive, a customer buys as a Poisson process
with rate λ ~ Gamma(r, α); after each repeat purchase they drop out with probability
p ~ Beta(a, b). Per customer we see x repeat purchases (frequency), the time of the last one
t_x (recency) and the length of observation T, all measured from the first purchase.

Everything is vectorised and in log space (gammaln, logaddexp), so frequencies in the
thousands do not overflow. Fitting is maximum likelihood with the analytic gradient over
log-parameters, on the distinct (x, t_x, T) triples weighted by their counts: a million
customers on a daily grid collapse to a few thousand distinct rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import digamma, expit, gammaln, hyp2f1

ArrayLike = np.ndarray | list | float | int
MAX_PARAM = 1e6  # beyond this a parameter has run off: the data cannot identify the model


@dataclass(frozen=True)
class BgNbdParams:
    r: float
    alpha: float
    a: float
    b: float
    loglik: float = float("nan")  # total log-likelihood of the data it was fitted on
    n: int = 0  # customers it was fitted on
    converged: bool = True

    def as_dict(self) -> dict:
        return {
            "r": self.r,
            "alpha": self.alpha,
            "a": self.a,
            "b": self.b,
            "loglik": self.loglik,
            "n": self.n,
            "converged": self.converged,
        }


def _columns(frequency: ArrayLike, recency: ArrayLike, T: ArrayLike):
    x = np.asarray(frequency, dtype=np.float64)
    t_x = np.asarray(recency, dtype=np.float64)
    big_t = np.asarray(T, dtype=np.float64)
    x, t_x, big_t = np.broadcast_arrays(x, t_x, big_t)
    if np.any(x < 0) or np.any(t_x < 0) or np.any(t_x > big_t + 1e-9):
        raise ValueError("need frequency >= 0 and 0 <= recency <= T")
    if np.any((x == 0) & (t_x > 0)):
        raise ValueError("recency must be 0 when frequency is 0")
    return x, t_x, big_t


def _loglik_terms(params: np.ndarray, x, t_x, big_t, want_grad: bool):
    """Per-row log-likelihood and (optionally) its gradient with respect to (r, α, a, b)."""
    r, alpha, a, b = params
    has = x > 0
    xb = np.where(has, x, 1.0)  # keeps b + x - 1 > 0 on rows where the term is unused
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    log_at = np.log(alpha + big_t)
    log_atx = np.log(alpha + t_x)
    a3 = -(r + x) * log_at
    a4 = np.where(has, np.log(a) - np.log(b + xb - 1) - (r + x) * log_atx, -np.inf)
    mix = np.logaddexp(a3, a4)
    ll = a1 + a2 + mix
    if not want_grad:
        return ll, None
    w4 = np.exp(a4 - mix)  # share of the "dropped out after the last purchase" term
    w3 = 1.0 - w4
    d_r = digamma(r + x) - digamma(r) + np.log(alpha) - w3 * log_at - w4 * log_atx
    d_alpha = r / alpha - (r + x) * (w3 / (alpha + big_t) + w4 / (alpha + t_x))
    common = digamma(a + b) - digamma(a + b + x)
    d_a = common + w4 / a
    d_b = common + digamma(b + x) - digamma(b) - w4 / (b + xb - 1)
    return ll, (d_r, d_alpha, d_a, d_b)


def loglik(params: BgNbdParams, frequency, recency, T) -> float:
    """Total log-likelihood of the data under `params`."""
    x, t_x, big_t = _columns(frequency, recency, T)
    p = np.array([params.r, params.alpha, params.a, params.b])
    return float(_loglik_terms(p, x, t_x, big_t, want_grad=False)[0].sum())


def fit_bgnbd(frequency, recency, T, *, penalizer: float = 0.0) -> BgNbdParams:
    """Maximum-likelihood (r, α, a, b) from per-customer (frequency, recency, T) arrays.

    `penalizer` adds penalizer·Σθ² on the parameters (as the `lifetimes` package does), which
    keeps tiny or degenerate data sets from running to infinity; 0 is plain ML.
    """
    x, t_x, big_t = _columns(frequency, recency, T)
    if x.size == 0:
        raise ValueError("cannot fit BG/NBD on no customers")
    rows = np.stack([x.ravel(), t_x.ravel(), big_t.ravel()], axis=1)
    uniq, counts = np.unique(rows, axis=0, return_counts=True)
    ux, utx, ut = uniq[:, 0], uniq[:, 1], uniq[:, 2]
    w = counts.astype(np.float64)
    n = float(w.sum())
    scale = float(max(np.mean(big_t), 1e-9))  # a starting α in the data's time unit

    def objective(theta: np.ndarray):
        p = np.exp(theta)
        ll, grad = _loglik_terms(p, ux, utx, ut, want_grad=True)
        value = -(w @ ll) / n + penalizer * float(p @ p)
        g = -np.array([w @ d for d in grad]) / n + 2 * penalizer * p
        return value, g * p  # chain rule for the log-parameters

    start = np.log([1.0, scale, 1.0, 1.0])
    result = minimize(
        objective,
        start,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 2000, "gtol": 1e-10, "ftol": 1e-15},
    )
    r, alpha, a, b = np.exp(result.x)
    total = float(w @ _loglik_terms(np.exp(result.x), ux, utx, ut, want_grad=False)[0])
    return BgNbdParams(
        float(r), float(alpha), float(a), float(b), total, int(n), bool(result.success)
    )


def p_alive(params: BgNbdParams, frequency, recency, T) -> np.ndarray:
    """P(the customer is still alive | x, t_x, T). 1 for customers with no repeat purchase.

    That last property is the model's own (no repeat purchase means no chance to drop out);
    the lifecycle tiers therefore also look at days since the last visit.
    """
    x, t_x, big_t = _columns(frequency, recency, T)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    has = x > 0
    xb = np.where(has, x, 1.0)
    log_odds = (
        np.log(a) - np.log(b + xb - 1) + (r + x) * (np.log(alpha + big_t) - np.log(alpha + t_x))
    )
    return np.where(has, expit(-log_odds), 1.0)


def expected_purchases(params: BgNbdParams, t: float, frequency, recency, T) -> np.ndarray:
    """E[purchases in the next t periods | x, t_x, T] (Fader et al. 2005, eq. 10)."""
    x, t_x, big_t = _columns(frequency, recency, T)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    if a <= 1:
        # The closed form needs a > 1; below it the mean is dominated by the (a - 1) pole.
        a = 1.0 + 1e-6
    has = x > 0
    xb = np.where(has, x, 1.0)
    z = t / (alpha + big_t + t)
    log_ratio = (r + x) * (np.log(alpha + big_t) - np.log(alpha + big_t + t))
    hyp = hyp2f1(r + x, b + x, a + b + x - 1, z)
    numer = (a + b + x - 1) / (a - 1) * (1 - np.exp(log_ratio) * hyp)
    log_odds = (
        np.log(a) - np.log(b + xb - 1) + (r + x) * (np.log(alpha + big_t) - np.log(alpha + t_x))
    )
    denom = 1 + np.where(has, np.exp(np.minimum(log_odds, 700)), 0.0)
    return numer / denom


def simulate(params: BgNbdParams, T: np.ndarray, rng: np.random.Generator):
    """Draw (frequency, recency) for customers observed for T periods under BG/NBD.

    The truth for parameter-recovery tests and benchmarks. Vectorised over customers; loops
    only over purchase rounds.
    """
    big_t = np.asarray(T, dtype=np.float64)
    n = big_t.size
    lam = rng.gamma(params.r, 1.0 / params.alpha, n)
    p = rng.beta(params.a, params.b, n)
    x = np.zeros(n, dtype=np.int64)
    t_x = np.zeros(n)
    now = np.zeros(n)
    alive = np.ones(n, dtype=bool)
    while alive.any():
        idx = np.flatnonzero(alive)
        nxt = now[idx] + rng.exponential(1.0 / np.maximum(lam[idx], 1e-300))
        bought = nxt <= big_t[idx]
        done = idx[~bought]
        alive[done] = False
        buyers = idx[bought]
        x[buyers] += 1
        t_x[buyers] = nxt[bought]
        now[buyers] = nxt[bought]
        dropped = rng.random(buyers.size) < p[buyers]
        alive[buyers[dropped]] = False
    return x, t_x
