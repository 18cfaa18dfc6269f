"""BG/NBD: how many purchases a customer will make, and whether they are still "alive".

Fader, Hardie & Lee (2005), "Counting Your Customers the Easy Way: An Alternative to the
Pareto/NBD Model", Marketing Science 24(2). While alive, a customer buys as a Poisson process
with rate λ ~ Gamma(r, α); after each repeat purchase they drop out with probability
p ~ Beta(a, b). Per customer we see x repeat purchases (frequency), the time of the last one
t_x (recency) and the length of observation T, all measured from the first purchase.

Everything is vectorised and in log space (gammaln, logaddexp), so frequencies in the
thousands do not overflow. Fitting is maximum likelihood with the analytic gradient over
log-parameters, on the distinct (x, t_x, T) triples weighted by their counts: a million
customers on a daily grid collapse to a few hundred thousand distinct rows or fewer, and
gammaln, digamma and log are taken once per distinct x, t_x or T rather than once per row.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import minimize
from scipy.special import digamma, expit, gammaln, hyp2f1

ArrayLike = np.ndarray | list | float | int
MAX_PARAM = 1e6  # beyond this a parameter has run off: the data cannot identify the model
LOG_BOUND = 30.0  # the optimiser's box on log-parameters (e^30 ≈ 1e13, far past MAX_PARAM)
_DENSE_TABLE_MAX = 1 << 22  # value tables up to this size are indexed directly, unsorted


@dataclass(frozen=True)
class BgNbdParams:
    """A fitted BG/NBD: purchase rate λ ~ Gamma(r, alpha), drop-out p ~ Beta(a, b).

    Kept per tenant between nightly fits (core.scoring.refit_due) and stored as `as_dict`;
    `loglik`, `n` and `converged` say how far to trust it.
    """

    r: float
    alpha: float
    a: float
    b: float
    loglik: float = float("nan")  # total log-likelihood of the data it was fitted on
    n: int = 0  # customers it was fitted on
    converged: bool = True

    def as_dict(self) -> dict:
        """The parameters and fit diagnostics as plain JSON values, for storage and reports."""
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


def _factor(*columns: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """One table of the columns' values, and each element's index into it.

    Daily data are whole numbers, so the table is simply 0..max and the index the value itself
    (no sort); anything else goes through np.unique.
    """
    top = max(float(c.max(initial=0.0)) for c in columns)
    whole = [c.astype(np.int64) for c in columns]
    if top <= _DENSE_TABLE_MAX and all(
        np.array_equal(w, c) for w, c in zip(whole, columns, strict=True)
    ):
        return np.arange(int(top) + 1, dtype=np.float64), whole
    table = np.unique(np.concatenate(columns))
    return table, [np.searchsorted(table, c) for c in columns]


@dataclass(frozen=True)
class _Condensed:
    """The data as the likelihood needs it.

    Everything that is not a mixture of the "alive" and "dropped out" terms sums over tables
    of distinct x or distinct t, so each gammaln, digamma and log is taken once per distinct
    value. Only the mixture needs rows: distinct (x, t_x, T) among repeat buyers, with counts,
    sorted by x so that per-x factors are spread with np.repeat and summed with reduceat, and
    pointing at a table of distinct (T, t_x) pairs for the factors that depend on α.
    """

    n: float
    xs: np.ndarray  # table of repeat-purchase counts (all > 0)
    w_x: np.ndarray  # repeat buyers per xs entry
    ts: np.ndarray  # table of t_x and T values
    v_t: np.ndarray  # customers per ts entry as T
    wx_t: np.ndarray  # Σ x of repeat buyers per ts entry as T
    pair_t: np.ndarray  # per distinct (T, t_x) pair: index into ts of T
    pair_tx: np.ndarray  # ... and of t_x
    x_used: np.ndarray  # xs entries that have rows, in row order
    x_start: np.ndarray  # first row of each x_used entry
    x_run: np.ndarray  # rows per x_used entry
    ip: np.ndarray  # per row: index into the pair table
    w: np.ndarray  # per row: how many customers it stands for


def _condense(x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray) -> _Condensed:
    x, t_x, big_t = x.ravel(), t_x.ravel(), big_t.ravel()
    xs, (ix,) = _factor(x)
    ts, (itx, it) = _factor(t_x, big_t)
    nt = ts.size
    v_t = np.bincount(it, minlength=nt).astype(np.float64)
    buyers = np.flatnonzero(x > 0)
    ix, itx, it = ix[buyers], itx[buyers], it[buyers]
    wx_t = np.bincount(it, weights=x[buyers], minlength=nt)
    if xs.size * float(nt) * nt < 2.0**62:
        key = (ix * nt + it) * nt + itx
        if xs.size * nt * nt <= _DENSE_TABLE_MAX:  # a tally instead of a sort, same result
            tally = np.bincount(key, minlength=1)
            keys = np.flatnonzero(tally)
            counts = tally[keys]
        else:
            keys, counts = np.unique(key, return_counts=True)  # sorted: x-major
        ix, pair = np.divmod(keys, nt * nt)
    else:  # too many distinct values to pack into one int64: sort the triples instead
        rows, counts = np.unique(np.stack([ix, it, itx], axis=1), axis=0, return_counts=True)
        ix, pair = rows[:, 0], rows[:, 1] * nt + rows[:, 2]
    if nt * nt <= _DENSE_TABLE_MAX:  # daily data: index the pairs without sorting them
        seen = np.zeros(nt * nt, dtype=bool)
        seen[pair] = True
        pairs = np.flatnonzero(seen)
        ip = (np.cumsum(seen) - 1)[pair]
    else:
        pairs, ip = np.unique(pair, return_inverse=True)
    x_start = np.flatnonzero(np.diff(ix, prepend=-1))  # rows are sorted by x already
    x_used = ix[x_start]
    x_run = np.diff(x_start, append=ix.size)
    first = 1 if xs[0] == 0 else 0  # x = 0 rows are gone; keep log(b + x − 1) off the table
    return _Condensed(
        n=float(x.size),
        xs=xs[first:],
        w_x=np.bincount(ix - first, weights=counts, minlength=xs.size - first),
        ts=ts,
        v_t=v_t,
        wx_t=wx_t,
        pair_t=pairs // nt,
        pair_tx=pairs % nt,
        x_used=x_used - first,
        x_start=x_start,
        x_run=x_run,
        ip=ip.ravel(),
        w=counts.astype(np.float64),
    )


def _dot(x: np.ndarray, y: np.ndarray) -> float:
    """x·y by numpy's own (pairwise) sum rather than BLAS: BLAS splits a long dot product
    over the machine's cores, so its rounding, and so the fitted parameters' last bits,
    would depend on how many cores run it. This is the same on every machine."""
    return float(np.multiply(x, y).sum())


def _objective(theta: np.ndarray, d: _Condensed, penalizer: float) -> tuple[float, np.ndarray]:
    """Mean negative log-likelihood over log-parameters, and its gradient.

    Per customer (Fader et al. 2005, eq. 6) the log-likelihood is
        ln Γ(r+x) − ln Γ(r) + r ln α + ln B(a, b+x) − ln B(a, b)          (tables over x)
        − (r+x)·ln(α+T)                                                    (tables over T)
        + ln(1 + e^g), g = ln a − ln(b+x−1) + (r+x)·(ln(α+T) − ln(α+t_x))  (rows, x > 0)
    the last term being the mixture of "still alive at T" and "dropped out after t_x".
    """
    r, alpha, a, b = p = np.exp(theta)
    log_alpha = np.log(alpha)
    log_at = np.log(alpha + d.ts)
    inv_at = 1.0 / (alpha + d.ts)
    repeaters = d.w_x.sum()
    # Tables over T: r·ln α − (r+x)·ln(α+T) for everyone.
    ll = d.n * r * log_alpha - (r * d.v_t + d.wx_t) @ log_at
    g_r = d.n * log_alpha - d.v_t @ log_at
    g_alpha = d.n * r / alpha - (r * d.v_t + d.wx_t) @ inv_at
    # Tables over x, repeat buyers only.
    rx = r + d.xs
    ll += d.w_x @ (gammaln(rx) + gammaln(b + d.xs) - gammaln(a + b + d.xs))
    ll += repeaters * (gammaln(a + b) - gammaln(r) - gammaln(b))
    common = digamma(a + b) - digamma(a + b + d.xs)
    g_r += d.w_x @ (digamma(rx) - digamma(r))
    g_a = d.w_x @ common
    g_b = d.w_x @ (common + digamma(b + d.xs) - digamma(b))
    # Rows: the mixture term ln(1 + e^g) and its share w4 = e^g / (1 + e^g).
    log_b1 = np.log(b + d.xs[d.x_used] - 1.0)
    rx_used = rx[d.x_used]
    gap_t = (log_at[d.pair_t] - log_at[d.pair_tx])[d.ip]
    rx_row = np.repeat(rx_used, d.x_run)
    g = np.repeat(np.log(a) - log_b1, d.x_run) + rx_row * gap_t
    e = np.exp(np.minimum(g, 700.0))  # beyond 36 ln(1 + e^g) = g to double precision anyway
    ll += _dot(d.w, np.log1p(e))
    ww4 = d.w * e / (1.0 + e)
    g_r += _dot(ww4, gap_t)
    g_alpha += _dot(ww4 * rx_row, (inv_at[d.pair_t] - inv_at[d.pair_tx])[d.ip])
    per_x = np.add.reduceat(ww4, d.x_start) if ww4.size else np.zeros(0)
    g_a += per_x.sum() / a
    g_b -= per_x @ np.exp(-log_b1)
    grad = np.array([g_r, g_alpha, g_a, g_b])
    value = -ll / d.n + penalizer * float(p @ p)
    return value, (-grad / d.n + 2 * penalizer * p) * p  # chain rule for log-parameters


def loglik(params: BgNbdParams, frequency, recency, T) -> float:
    """Total log-likelihood of the data under `params` (the quantity `fit_bgnbd` maximises)."""
    data = _condense(*_columns(frequency, recency, T))
    theta = np.log([params.r, params.alpha, params.a, params.b])
    return -float(_objective(theta, data, 0.0)[0]) * data.n


def fit_bgnbd(frequency, recency, T, *, penalizer: float = 0.0) -> BgNbdParams:
    """Maximum-likelihood (r, α, a, b) from per-customer (frequency, recency, T) arrays.

    `penalizer` adds penalizer·Σθ² on the parameters (as the `lifetimes` package does), which
    keeps tiny or degenerate data sets from running to infinity; 0 is plain ML.
    """
    x, t_x, big_t = _columns(frequency, recency, T)
    if x.size == 0:
        raise ValueError("cannot fit BG/NBD on no customers")
    data = _condense(x, t_x, big_t)
    scale = float(max(np.mean(big_t), 1e-9))  # a starting α in the data's time unit
    result = minimize(
        _objective,
        np.log([1.0, scale, 1.0, 1.0]),
        args=(data, penalizer),
        jac=True,
        method="L-BFGS-B",
        # Log-parameters within ±LOG_BOUND: a long first line-search step would otherwise
        # overflow exp() into NaN. A fit that ends beyond MAX_PARAM is marked unconverged.
        bounds=[(-LOG_BOUND, LOG_BOUND)] * 4,
        options={"maxiter": 2000, "gtol": 1e-9, "ftol": 1e-13},
    )
    p = np.exp(result.x)
    # L-BFGS-B may stop on a line-search failure at the optimum when the mean log-likelihood is
    # flat to machine precision; a vanishing gradient there is still convergence.
    converged = bool(result.success or np.max(np.abs(result.jac)) < 1e-6)
    converged = converged and bool(np.all(p < MAX_PARAM))
    total = -float(result.fun if penalizer == 0 else _objective(result.x, data, 0.0)[0])
    total *= data.n
    r, alpha, a, b = (float(v) for v in p)
    return BgNbdParams(r, alpha, a, b, total, int(data.n), converged)


def _whole(column) -> np.ndarray | None:
    """The column as int64 if it holds only whole numbers, else None."""
    a = np.asarray(column)
    if a.dtype.kind in "iu":
        return a.astype(np.int64, copy=False)
    if a.dtype.kind != "f" or not np.isfinite(a).all():
        return None
    w = a.astype(np.int64)
    return w if np.array_equal(w, a) else None


def _grid(frequency, recency, T) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(x, t_x, T) as int64 when they are whole numbers on a small daily grid, checked as
    `_columns` checks them; None when the general path should take them."""
    cols = [_whole(c) for c in (frequency, recency, T)]
    if any(c is None for c in cols) or len({c.shape for c in cols}) > 1:
        return None
    x, t_x, big_t = cols
    if x.ndim != 1 or x.size < 256:
        return None
    x_top, t_top = int(x.max()), int(big_t.max())
    if (x_top + 1) * (t_top + 1) > _DENSE_TABLE_MAX:
        return None
    if min(int(x.min()), int(t_x.min())) < 0 or np.any(t_x > big_t):
        raise ValueError("need frequency >= 0 and 0 <= recency <= T")
    if np.any((x == 0) & (t_x > 0)):
        raise ValueError("recency must be 0 when frequency is 0")
    return x, t_x, big_t


def _alive_rows_on_grid(params: BgNbdParams, x, t_x, big_t, rows: np.ndarray) -> np.ndarray:
    """p_alive on whole numbers, worked out on `rows` (the repeat buyers, x > 0): everyone
    else's −A is +∞ and their P(alive) exactly the 1 that expit gives there. Every log is
    taken once per distinct x or t, then gathered; term for term the expression of
    `p_alive`, so the same numbers: −(A + B·(C − D)) is computed as (−A) + B·(D − C)."""
    alive = np.ones(x.shape)
    alive[rows] = _alive_of_buyers(params, x, t_x, big_t, rows)
    return alive


def _alive_of_buyers(params: BgNbdParams, x, t_x, big_t, rows: np.ndarray) -> np.ndarray:
    """P(alive) of `rows`, repeat buyers (x > 0), from tables over the whole columns' range
    of x and T: the same tables whichever rows are asked for, so the same numbers."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    xs = np.arange(int(x.max()) + 1, dtype=np.float64)
    xb = np.where(xs > 0, xs, 1.0)
    minus_head = -(np.log(a) - np.log(b + xb - 1))
    minus_head[0] = np.inf
    log_at = np.log(alpha + np.arange(int(big_t.max()) + 1, dtype=np.float64))  # t_x ≤ T
    xr = x[rows]
    gap = log_at[t_x[rows]]
    gap -= log_at[big_t[rows]]
    gap *= (r + xs)[xr]
    gap += minus_head[xr]
    return expit(gap)


def p_alive_rows(params: BgNbdParams, frequency, recency, T, rows: np.ndarray) -> np.ndarray:
    """`p_alive(params, frequency, recency, T)[rows]` bit for bit, working out `rows` only:
    the scoring state (core.score_state) needs it only where it can move a tier or is read.

    Parameters
    ----------
    params, frequency, recency, T : as `p_alive`, every user's columns (the path and the
        grid's tables are chosen on them, as there); rows : intp indices of those wanted.

    Returns
    -------
    float64 P(alive) of `rows`, in their order.
    """
    rows = np.asarray(rows, dtype=np.intp)
    grid = _grid(frequency, recency, T)
    if grid is None:
        x, t_x, big_t = _columns(frequency, recency, T)
        return _alive(params, x[rows], t_x[rows], big_t[rows])
    x, t_x, big_t = grid
    out = np.ones(rows.size)
    buyers = np.flatnonzero(x[rows] > 0)
    if buyers.size:
        out[buyers] = _alive_of_buyers(params, x, t_x, big_t, rows[buyers])
    return out


def _numer_on_grid(params: BgNbdParams, t: float, a: float, x, big_t) -> np.ndarray:
    """expected_purchases' factor c/(a−1)·(1 − (1−z)^(a−1)·₂F₁(...)) that depends on (x, T)
    only: evaluated once per distinct pair present, then gathered."""
    n_t = int(big_t.max()) + 1
    key = x * n_t
    key += big_t
    present = np.zeros((int(x.max()) + 1) * n_t, dtype=bool)
    present[key] = True
    pairs = np.flatnonzero(present)
    px, pt = np.divmod(pairs, n_t)
    table = np.empty(present.size)
    table[pairs] = _numer(params, t, a, px.astype(np.float64), pt.astype(np.float64))
    return table[key]


def _numer(params: BgNbdParams, t: float, a: float, x: np.ndarray, big_t: np.ndarray):
    """c/(a−1)·(1 − (1−z)^(a−1)·₂F₁(a+b−1−r, a−1; c; z)), c = a+b+x−1, z = t/(α+T+t).

    When a and b are both huge (dropout almost never, as a small campus's fit can give), the
    Euler form is 0·∞: there the paper's own form, (1−z)^(r+x)·₂F₁(r+x, b+x; c; z), which then
    converges, gives the same factor; should both fail, the no-dropout limit t·(r+x)/(α+T)
    (an upper bound) stands in rather than a NaN reaching the database.
    """
    r, alpha, b = params.r, params.alpha, params.b
    c = a + b + x - 1
    z = t / (alpha + big_t + t)
    with np.errstate(invalid="ignore", over="ignore"):
        shrink = np.exp((a - 1) * np.log1p(-z)) * hyp2f1(a + b - 1 - r, a - 1, c, z)
        bad = ~np.isfinite(shrink)
        if bad.any():
            xb, zb = x[bad], z[bad]
            shrink[bad] = np.exp((r + xb) * np.log1p(-zb)) * hyp2f1(r + xb, b + xb, c[bad], zb)
        numer = c / (a - 1) * (1 - shrink)
    bad = ~np.isfinite(numer)
    if bad.any():
        numer[bad] = t * (r + x[bad]) / (alpha + big_t[bad])
    return numer


def _nudged_a(a: float) -> float:
    """a = 1 is a removable singularity of expected_purchases' form: step off it."""
    return 1.0 + 1e-7 if abs(a - 1.0) < 1e-7 else a


def p_alive(params: BgNbdParams, frequency, recency, T) -> np.ndarray:
    """P(the customer is still alive | x, t_x, T). 1 for customers with no repeat purchase.

    That last property is the model's own (no repeat purchase means no chance to drop out);
    the lifecycle tiers therefore also look at days since the last visit. Whole-number inputs
    (a daily grid) take the logs from tables over their distinct values.
    """
    grid = _grid(frequency, recency, T)
    if grid is not None:
        return _alive_rows_on_grid(params, *grid, np.flatnonzero(grid[0] > 0))
    return _alive(params, *_columns(frequency, recency, T))


def _alive(params: BgNbdParams, x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray) -> np.ndarray:
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    has = x > 0
    xb = np.where(has, x, 1.0)
    log_odds = (
        np.log(a) - np.log(b + xb - 1) + (r + x) * (np.log(alpha + big_t) - np.log(alpha + t_x))
    )
    return np.where(has, expit(-log_odds), 1.0)


def expected_purchases(params: BgNbdParams, t: float, frequency, recency, T) -> np.ndarray:
    """E[purchases in the next t periods | x, t_x, T] (Fader et al. 2005, eq. 10).

    The paper's form multiplies ((α+T)/(α+T+t))^(r+x) by ₂F₁(r+x, b+x; a+b+x−1; z), a product
    of a vanishing and an exploding factor for heavy buyers. Euler's transformation turns it
    into (1−z)^(a−1)·₂F₁(a+b−1−r, a−1; a+b+x−1; z), whose series converges for any x; a = 1 is
    a removable singularity and is nudged off it. On a daily grid ₂F₁ is evaluated once per
    distinct (x, T) pair.
    """
    return alive_and_expected(params, t, frequency, recency, T)[1]


def alive_and_expected(
    params: BgNbdParams, t: float, frequency, recency, T
) -> tuple[np.ndarray, np.ndarray]:
    """(p_alive, expected_purchases over t) together: the scoring tail needs both, and the
    second is the first times a factor of (x, T)."""
    a = _nudged_a(params.a)
    nudged = params if a == params.a else replace(params, a=a)  # eq. 10 with the nudged a
    grid = _grid(frequency, recency, T)
    if grid is not None:
        x, t_x, big_t = grid
        rows = np.flatnonzero(x > 0)  # repeat buyers: everyone else's P(alive) is exactly 1
        alive = _alive_rows_on_grid(params, x, t_x, big_t, rows)
        weight = alive if nudged is params else _alive_rows_on_grid(nudged, x, t_x, big_t, rows)
        expected = _numer_on_grid(params, t, a, x, big_t)
        expected[rows] *= weight[rows]  # × 1 elsewhere changes no bit
        return alive, expected
    x, t_x, big_t = _columns(frequency, recency, T)
    numer = _numer(params, t, a, x.astype(np.float64), big_t.astype(np.float64))
    alive = _alive(params, x, t_x, big_t)
    weight = alive if nudged is params else _alive(nudged, x, t_x, big_t)
    return alive, numer * weight


def expected_rows(
    params: BgNbdParams, t: float, frequency, recency, T, rows: np.ndarray
) -> np.ndarray:
    """`alive_and_expected(params, t, frequency, recency, T)[1][rows]` bit for bit, working
    out `rows` only: for the rows a decision reads (core.score_state).

    Parameters
    ----------
    params, t, frequency, recency, T : as `alive_and_expected`, every user's columns;
        rows : intp indices of those wanted.

    Returns
    -------
    float64 expected orders of `rows`, in their order.
    """
    rows = np.asarray(rows, dtype=np.intp)
    a = _nudged_a(params.a)
    nudged = params if a == params.a else replace(params, a=a)
    grid = _grid(frequency, recency, T)
    if grid is None:
        x, t_x, big_t = (c[rows] for c in _columns(frequency, recency, T))
        weight = _alive(nudged, x, t_x, big_t)
        return _numer(params, t, a, x.astype(np.float64), big_t.astype(np.float64)) * weight
    x, t_x, big_t = grid
    xr, tr = x[rows], big_t[rows]
    n_t = int(big_t.max()) + 1
    pairs, inverse = np.unique(xr * n_t + tr, return_inverse=True)
    px, pt = np.divmod(pairs, n_t)
    out = _numer(params, t, a, px.astype(np.float64), pt.astype(np.float64))[inverse.ravel()]
    buyers = np.flatnonzero(xr > 0)
    if buyers.size:
        out[buyers] *= _alive_of_buyers(nudged, x, t_x, big_t, rows[buyers])
    return out


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
