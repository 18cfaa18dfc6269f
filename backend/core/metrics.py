"""Did it work: recall, retention, ROI and the effect against the holdout, once for everyone.

Columns in, numbers out. The backend's reports and the simulator call these same functions,
so the same data gives the same numbers. Every formula is documented in docs/metrics.md with a
worked example; the tests check those examples by hand.

Intervals are 95%: Wilson's score interval for a proportion, Newcombe's hybrid score interval
(method 10, 1998) for a difference of two proportions, and a percentile bootstrap (seeded) for
a difference of mean revenue per user — a normal (Welch) interval once both groups are large,
where the bootstrap says the same thing slower. A comparison with fewer than MIN_GROUP users
in either group is marked `enough: False` and says so: its interval is too wide to mean
anything.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

Z95 = 1.959963984540054
MIN_GROUP = 30  # below this in either group an interval is reported but flagged
BOOTSTRAP_MAX_N = 20_000  # above this (both groups together) the Welch interval is used
BOOTSTRAP_REPS = 2000
RETENTION_DAYS = (7, 30)  # D7 and D30 after the return ...
RETENTION_WINDOW_DAYS = 7  # ... each "still active" if any visit in the following 7 days


@dataclass(frozen=True)
class Rate:
    """k of n, with Wilson's 95% interval. rate, lo and hi are None when n is 0."""

    k: int
    n: int
    rate: float | None
    lo: float | None
    hi: float | None

    def as_dict(self) -> dict:
        """The fields as plain JSON values, as the reports and --json output carry them."""
        return asdict(self)


@dataclass(frozen=True)
class Diff:
    """A treated − holdout difference with its 95% interval."""

    diff: float | None
    lo: float | None
    hi: float | None
    enough: bool
    method: str
    note: str = ""

    def as_dict(self) -> dict:
        """The fields as plain JSON values (display.pp_interval reads this form)."""
        return asdict(self)


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval: good at small n and at 0% or 100%, unlike p ± z·SE."""
    if n <= 0:
        raise ValueError("no observations")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(k: int, n: int) -> Rate:
    """k of n with its Wilson interval: every recall and retention rate a report shows."""
    k, n = int(k), int(n)
    if n == 0:
        return Rate(0, 0, None, None, None)
    lo, hi = wilson(k, n)
    return Rate(k, n, k / n, lo, hi)


def _small(n1: int, n0: int) -> str:
    if min(n1, n0) >= MIN_GROUP:
        return ""
    return (
        f"too small to conclude: {n1} treated and {n0} holdout users; "
        f"at least {MIN_GROUP} in each are needed for the interval to mean anything"
    )


def newcombe_diff(k1: int, n1: int, k0: int, n0: int) -> Diff:
    """p1 − p0 with Newcombe's hybrid score interval (the Wilson intervals of each side)."""
    if n1 == 0 or n0 == 0:
        return Diff(None, None, None, False, "newcombe", "no users in one of the groups")
    p1, p0 = k1 / n1, k0 / n0
    l1, u1 = wilson(k1, n1)
    l0, u0 = wilson(k0, n0)
    d = p1 - p0
    lo = d - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)
    note = _small(n1, n0)
    return Diff(d, lo, hi, not note, "newcombe", note)


def mean_diff(
    treated: np.ndarray, holdout: np.ndarray, seed: int = 0, reps: int = BOOTSTRAP_REPS
) -> Diff:
    """Difference of means (revenue per user, in fen) with a 95% interval.

    Percentile bootstrap, resampling each group with replacement (seeded: the same data gives
    the same interval); Welch's normal interval when both groups together exceed
    BOOTSTRAP_MAX_N users; no interval when a group has a single user (no spread to go on).
    """
    x1 = np.asarray(treated, dtype=np.float64)
    x0 = np.asarray(holdout, dtype=np.float64)
    if x1.size == 0 or x0.size == 0:
        return Diff(None, None, None, False, "bootstrap", "no users in one of the groups")
    d = float(x1.mean() - x0.mean())
    note = _small(x1.size, x0.size)
    if min(x1.size, x0.size) < 2:  # one user has no spread: no interval at all
        return Diff(d, None, None, False, "none", note)
    if x1.size + x0.size > BOOTSTRAP_MAX_N:
        se = math.sqrt(x1.var(ddof=1) / x1.size + x0.var(ddof=1) / x0.size)
        return Diff(d, d - Z95 * se, d + Z95 * se, not note, "welch", note)
    rng = np.random.default_rng(seed)
    diffs = np.empty(reps)
    step = max(1, 2_000_000 // (x1.size + x0.size))  # resamples per chunk: bounded memory
    for start in range(0, reps, step):
        k = min(step, reps - start)
        m1 = x1[rng.integers(0, x1.size, (k, x1.size))].mean(axis=1)
        m0 = x0[rng.integers(0, x0.size, (k, x0.size))].mean(axis=1)
        diffs[start : start + k] = m1 - m0
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    return Diff(d, float(lo), float(hi), not note, "bootstrap", note)


# Power: how big a holdout, and how long ----------------------------------------------------
#
# The classic normal-approximation sample size for a two-sided test of two independent
# proportions (Fleiss, Levin & Paik 2003, "Statistical Methods for Rates and Proportions",
# 3rd ed., §4.2, eq. 4.14; Fleiss, Tytun & Ury 1980, Biometrics 36:343-346), WITHOUT the
# continuity correction unless asked: the pooled variance under H0, the unpooled variance
# under H1. It is the formula of R's `power.prop.test` (strict = FALSE) and of statsmodels'
# `samplesize_proportions_2indep_onetail`; docs/metrics.md pins their published examples.

PLAN_ALPHA = 0.05
PLAN_POWER = 0.8


def _z(alpha: float, power: float) -> tuple[float, float]:
    """z_{1−α/2} (two-sided) and z_{power}; scipy.special is imported here, not at load."""
    from scipy.special import ndtri

    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError("alpha and power must be strictly between 0 and 1")
    return float(ndtri(1 - alpha / 2)), float(ndtri(power))


def _clip(p: float) -> float:
    """A rate kept inside [0, 1] (an observed or predicted rate may step outside it)."""
    return min(1.0, max(0.0, float(p)))


def _n_control(
    p0: float, p1: float, ratio: float, alpha: float, power: float, continuity: bool = False
) -> float:
    """Control-group size (a real number) for n_treated = ratio · n_control.

    With r = ratio, p̄ = (p0 + r·p1)/(1 + r), q = 1 − p, Δ = |p1 − p0|:
        n0 = [z_{1−α/2}·√(p̄q̄(1 + 1/r)) + z_{1−β}·√(p0q0 + p1q1/r)]² / Δ²
    and with the continuity correction (Fleiss, Tytun & Ury 1980):
        n0' = n0/4 · [1 + √(1 + 2(r + 1)/(n0·r·Δ))]².
    Infinite when Δ is 0.
    """
    za, zb = _z(alpha, power)
    delta = abs(p1 - p0)
    if delta <= 0:
        return math.inf
    pbar = (p0 + ratio * p1) / (1 + ratio)
    null_sd = math.sqrt(pbar * (1 - pbar) * (1 + 1 / ratio))
    alt_sd = math.sqrt(p0 * (1 - p0) + p1 * (1 - p1) / ratio)
    n = (za * null_sd + zb * alt_sd) ** 2 / delta**2
    if continuity:
        n = n / 4 * (1 + math.sqrt(1 + 2 * (ratio + 1) / (n * ratio * delta))) ** 2
    return n


def sample_size_two_proportions(
    p_control: float,
    p_treated: float,
    *,
    ratio: float = 1.0,
    alpha: float = PLAN_ALPHA,
    power: float = PLAN_POWER,
    continuity_correction: bool = False,
) -> tuple[int, int]:
    """(n_control, n_treated), n_treated = ratio · n_control, for a two-sided test at `alpha`
    to detect p_treated against p_control with probability `power`.

    Fleiss's formula (Fleiss, Levin & Paik 2003, eq. 4.14) without continuity correction by
    default — pooled variance under H0, unpooled under H1 — each group rounded up:
        n_c = [z_{1−α/2}·√(p̄q̄(1 + 1/r)) + z_{1−β}·√(p_c q_c + p_t q_t / r)]² / (p_t − p_c)²,
        p̄ = (p_c + r·p_t)/(1 + r).
    Equal groups at p 0.10 vs 0.15, α 0.05, 80% → 686 each; R's documented
    `power.prop.test(p1 = .5, p2 = .75, power = .9)` → n = 76.7 (77 here). Rates are clipped to
    [0, 1]. Raises ValueError when the rates are equal (no sample detects a zero difference).
    """
    if ratio <= 0:
        raise ValueError("ratio must be positive")
    n = _n_control(_clip(p_control), _clip(p_treated), ratio, alpha, power, continuity_correction)
    if math.isinf(n):
        raise ValueError("p_treated equals p_control: no sample size detects no difference")
    return math.ceil(n - 1e-9), math.ceil(n * ratio - 1e-9)


def power_two_proportions(
    p_control: float,
    p_treated: float,
    n_control: float,
    n_treated: float,
    *,
    alpha: float = PLAN_ALPHA,
) -> float:
    """The probability that the two-sided test at `alpha` detects p_treated vs p_control with
    these group sizes: Φ((|Δ|·√n_c − z_{1−α/2}·√(p̄q̄(1 + 1/r))) / √(p_c q_c + p_t q_t / r)),
    r = n_t/n_c — the same equation solved for power, ignoring the far tail (as R's
    `power.prop.test` does by default: n = 50 at 0.5 vs 0.75 → 0.740)."""
    from scipy.special import ndtr

    if n_control <= 0 or n_treated <= 0:
        return 0.0
    p0, p1 = _clip(p_control), _clip(p_treated)
    r = n_treated / n_control
    za, _ = _z(alpha, 0.5)
    pbar = (p0 + r * p1) / (1 + r)
    null_sd = math.sqrt(pbar * (1 - pbar) * (1 + 1 / r))
    alt_sd = math.sqrt(p0 * (1 - p0) + p1 * (1 - p1) / r)
    if alt_sd == 0:  # both rates 0 or 1 under H1: detected iff they differ
        return 1.0 if p0 != p1 else 0.0
    return float(ndtr((abs(p1 - p0) * math.sqrt(n_control) - za * null_sd) / alt_sd))


def detectable_effect(
    p_control: float,
    n_control: int,
    n_treated: int,
    *,
    alpha: float = PLAN_ALPHA,
    power: float = PLAN_POWER,
) -> float | None:
    """The minimum detectable effect (MDE): the smallest increase Δ in the rate that groups of
    n_control and n_treated detect at `alpha` (two-sided) with probability `power`.

    Solves sample_size_two_proportions' equation n_c(p_c, p_c + Δ, r = n_t/n_c) = n_c for Δ
    (Brent's method on (0, 1 − p_c]). None when a group is empty or not even a rise to 100%
    could be detected (tiny samples, or p_control already 1).
    """
    from scipy.optimize import brentq

    p0 = _clip(p_control)
    if n_control <= 0 or n_treated <= 0 or p0 >= 1:
        return None
    ratio = n_treated / n_control

    def gap(delta: float) -> float:
        return _n_control(p0, p0 + delta, ratio, alpha, power) - n_control

    top = 1.0 - p0
    if gap(top) > 0:
        return None
    low = min(1e-9, top / 2)
    return float(brentq(gap, low, top, xtol=1e-12, rtol=1e-10))


@dataclass(frozen=True)
class PowerPlan:
    """How far a policy's holdout comparison is from detecting a predicted effect.

    effect and rates are fractions (0.05 = 5 percentage points). *_needed are None when the
    effect cannot be detected at all (zero or negative effect, no holdout); days_needed is
    the days still needed from the current size at `eligible_per_day` new users a day, None
    when that is unreachable within max_days (or the volume is 0).
    """

    effect: float
    p_control: float
    p_treated: float
    holdout_share: float
    alpha: float
    power: float
    n_holdout_needed: int | None
    n_treated_needed: int | None
    users_needed: int | None
    eligible_per_day: float
    days_needed: int | None
    max_days: int
    n_holdout_now: int
    n_treated_now: int
    detectable_now: float | None
    note: str = ""

    @property
    def users_now(self) -> int:
        """Users in the comparison so far, holdout and treated together."""
        return self.n_holdout_now + self.n_treated_now

    @property
    def share_of_needed(self) -> float | None:
        """Users so far over users needed (1.0 and above: the planned size is reached)."""
        if not self.users_needed:
            return None
        return self.users_now / self.users_needed

    def as_dict(self) -> dict:
        """The plan as plain JSON values, with the derived `users_now` and `share_of_needed`."""
        return {
            **asdict(self),
            "users_now": self.users_now,
            "share_of_needed": self.share_of_needed,
        }


def holdout_plan(
    p_control: float,
    effect: float,
    holdout_share: float,
    eligible_per_day: float,
    *,
    alpha: float = PLAN_ALPHA,
    power: float = PLAN_POWER,
    max_days: int = 365,
    n_holdout_now: int = 0,
    n_treated_now: int = 0,
) -> PowerPlan:
    """Users and days a policy needs for its holdout comparison to detect `effect` (rate
    points over p_control) at `power`, and the effect detectable at today's size.

    Holdout = control, treated = the rest: ratio r = (1 − h)/h for holdout share h, and
    (n_holdout_needed, n_treated_needed) = sample_size_two_proportions(p_c, p_c + effect, r);
    users_needed is their sum (≈ n_holdout_needed / h). Days still needed at V new users a
    day: ceil(max((n_h − n_h_now)/(V·h), (n_t − n_t_now)/(V·(1 − h)))), 0 once both are met.
    """
    p0 = _clip(p_control)
    p1 = _clip(p0 + effect)
    h = float(holdout_share)
    n_h_now, n_t_now = max(0, int(n_holdout_now)), max(0, int(n_treated_now))
    rate = max(0.0, float(eligible_per_day))
    detectable = detectable_effect(p0, n_h_now, n_t_now, alpha=alpha, power=power)
    common = dict(
        effect=float(effect),
        p_control=p0,
        p_treated=p1,
        holdout_share=h,
        alpha=alpha,
        power=power,
        eligible_per_day=rate,
        max_days=int(max_days),
        n_holdout_now=n_h_now,
        n_treated_now=n_t_now,
        detectable_now=detectable,
    )
    none = dict(n_holdout_needed=None, n_treated_needed=None, users_needed=None, days_needed=None)
    if not 0 < h < 1:
        return PowerPlan(**common, **none, note="no holdout: the effect cannot be measured")
    if p1 <= p0:
        return PowerPlan(
            **common, **none, note="no increase to detect (effect zero, negative or at 100%)"
        )
    n_h, n_t = sample_size_two_proportions(p0, p1, ratio=(1 - h) / h, alpha=alpha, power=power)
    missing_h, missing_t = max(0, n_h - n_h_now), max(0, n_t - n_t_now)
    days: int | None
    note = ""
    if missing_h == 0 and missing_t == 0:
        days = 0
    elif rate <= 0:
        days, note = None, "no new users are being decided: the size will not grow"
    else:
        need = max(missing_h / (rate * h), missing_t / (rate * (1 - h)))
        days = math.ceil(need - 1e-9)
        if days > max_days:
            days, note = None, f"more than {max_days} days at the current volume"
    return PowerPlan(
        **common,
        n_holdout_needed=n_h,
        n_treated_needed=n_t,
        users_needed=n_h + n_t,
        days_needed=days,
        note=note,
    )


@dataclass(frozen=True)
class Money:
    """What a policy's touches brought in and cost, in fen, and the two ratios merchants read."""

    revenue_fen: int
    coupon_cost_fen: int
    message_cost_fen: int
    roi: float | None  # (revenue − coupon − message) / (coupon + message)
    revenue_per_cost: float | None  # revenue / cost, as merchants often quote it

    def as_dict(self) -> dict:
        """The fields as plain JSON values."""
        return asdict(self)


def roi(revenue_fen: int, coupon_cost_fen: int, message_cost_fen: int) -> Money:
    """Return on the money spent: (revenue − cost) / cost, cost = coupons + messages (all fen);
    the ratios are None when nothing was spent (no ratio to speak of)."""
    cost = int(coupon_cost_fen) + int(message_cost_fen)
    rev = int(revenue_fen)
    if cost == 0:
        return Money(rev, int(coupon_cost_fen), int(message_cost_fen), None, None)
    return Money(rev, int(coupon_cost_fen), int(message_cost_fen), (rev - cost) / cost, rev / cost)


def first_per_user(user: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Row index of each user's first row by `order` (ties: the earlier row).

    Recall is compared on each user's first decision in the period: assignment to treatment
    or holdout is random there, while later touches depend on what the first one did (a
    recalled user lapses later, so is touched less often and has fewer windows to return in).
    """
    user = np.asarray(user)
    if user.size == 0:
        return np.zeros(0, dtype=np.int64)
    rows = np.lexsort((np.arange(user.size), np.asarray(order), user))
    first = np.flatnonzero(np.diff(user[rows], prepend=user[rows][0] - 1) != 0)
    return rows[first]


def group_any(group: np.ndarray, flag: np.ndarray, size: int) -> np.ndarray:
    """Per group id 0..size-1: whether any row of the group has the flag (users from touches)."""
    out = np.zeros(size, dtype=bool)
    np.logical_or.at(out, np.asarray(group, dtype=np.int64), np.asarray(flag, dtype=bool))
    return out


def funnel(
    channel: np.ndarray,
    sent: np.ndarray,
    delivered: np.ndarray,
    opened: np.ndarray,
    returned: np.ndarray,
    ordered: np.ndarray,
    n_channels: int,
) -> np.ndarray:
    """(channels × 5) counts: sent → delivered → opened → returned → ordered.

    Parameters
    ----------
    channel : int64 channel index 0..n_channels-1 per touch.
    sent, delivered, opened, returned, ordered : bool per touch, each step reached.
    n_channels : rows of the result.

    Returns
    -------
    int64 (n_channels × 5): touches per channel that reached each step.

    `opened` is only known for channels that report it (the in-app card is opened when shown;
    WeChat does not report subscribe-message opens), so it is NaN-free but may be 0.
    """
    ch = np.asarray(channel, dtype=np.int64)
    cols = [sent, delivered, opened, returned, ordered]
    out = np.zeros((n_channels, 5), dtype=np.int64)
    for j, c in enumerate(cols):
        out[:, j] = np.bincount(ch, weights=np.asarray(c, dtype=bool), minlength=n_channels)
    return out


def cohort_retention(
    cohort: np.ndarray, active: np.ndarray, observable: np.ndarray, n_cohorts: int
) -> tuple[np.ndarray, np.ndarray]:
    """(active counts, observable counts), each (cohorts × weeks).

    `active[u, w]`: user u was active in week w after their cohort's start; `observable[u, w]`:
    that week has fully passed. Rates are active / observable; unobserved cells are 0 / 0.
    """
    c = np.asarray(cohort, dtype=np.int64)
    act = np.asarray(active, dtype=bool)
    obs = np.asarray(observable, dtype=bool)
    weeks = act.shape[1] if act.ndim == 2 else 0
    num = np.zeros((n_cohorts, weeks), dtype=np.int64)
    den = np.zeros((n_cohorts, weeks), dtype=np.int64)
    for w in range(weeks):
        num[:, w] = np.bincount(c, weights=act[:, w] & obs[:, w], minlength=n_cohorts)
        den[:, w] = np.bincount(c, weights=obs[:, w], minlength=n_cohorts)
    return num, den


@dataclass(frozen=True)
class Qini:
    """A Qini curve (see `qini`) and its coefficient: how much better than random a targeting
    score picks the users a touch moves."""

    fraction: np.ndarray  # share of users targeted, 0..1
    gain: np.ndarray  # incremental responders as a share of all users
    coefficient: float  # area between the curve and the random-targeting line

    def as_dict(self, points: int = 11) -> dict:
        """The curve thinned to `points` evenly spaced points (enough to draw) and the
        coefficient, as plain JSON values."""
        idx = np.linspace(0, self.fraction.size - 1, min(points, self.fraction.size)).round()
        idx = idx.astype(int)
        return {
            "fraction": self.fraction[idx].round(4).tolist(),
            "gain": self.gain[idx].round(6).tolist(),
            "coefficient": self.coefficient,
        }


def qini(score: np.ndarray, treated: np.ndarray, outcome: np.ndarray) -> Qini:
    """Qini curve of a targeting rule (Radcliffe 2007): rank users by `score`, highest first;
    after the top k, incremental responders = R_t(k) − R_c(k)·N_t(k)/N_c(k). Both axes are
    divided by the number of users, and the coefficient is the area between that curve and
    the straight line to its end point (what random targeting would gain). Ties in score are
    broken by the original order (stable sort).

    Parameters
    ----------
    score : float64 per user, the targeting rule's score (higher is targeted first).
    treated : bool per user, touched (False: held out).
    outcome : bool per user, responded (returned, say).
    """
    s = np.asarray(score, dtype=np.float64)
    t = np.asarray(treated, dtype=bool)
    y = np.asarray(outcome, dtype=bool)
    n = s.size
    if n == 0:
        return Qini(np.zeros(1), np.zeros(1), 0.0)
    order = np.argsort(-s, kind="stable")
    t, y = t[order], y[order]
    nt = np.cumsum(t)
    nc = np.cumsum(~t)
    rt = np.cumsum(t & y)
    rc = np.cumsum(~t & y)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = rt - np.where(nc > 0, rc * nt / nc, 0.0)
    frac = np.concatenate([[0.0], np.arange(1, n + 1) / n])
    gain = np.concatenate([[0.0], q / n])
    random_line = frac * gain[-1]
    area = float(np.sum((gain[1:] - random_line[1:] + gain[:-1] - random_line[:-1]) / 2) / n)
    return Qini(frac, gain, area)
