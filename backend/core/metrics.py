"""Did it work: recall, retention, ROI and the effect against the holdout, once for everyone.

Columns in, numbers out. The backend's reports and the simulator call these same functions,
so the same data gives the same numbers. Every formula is documented in docs/metrics.md with a
worked example; the tests check those examples by hand.

Intervals are 95%: Wilson's score interval for a proportion, Newcombe's hybrid score interval
(method 10, 1998) for a difference of two proportions, and a percentile bootstrap (seeded) for
a difference of mean revenue per user — a normal (Welch) interval once both groups are large,
where the bootstrap says the same thing slower. A comparison with fewer than MIN_GROUP users
in either group is marked `enough: False` and says so: its interval is too wide to mean
anything. How big a holdout must be for that, and how long it takes, is core.power.
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
