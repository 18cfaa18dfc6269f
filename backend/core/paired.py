"""Paired effects: what a treatment did to a population, user by user against its twin.

A simulated campus lives every user twice on the same dice: once under the policy and once
untreated (simulator/model.py `twin`). Each user's outcome minus their twin's is a *paired
difference*; organic noise common to both worlds cancels in it, so a campus-wide effect is
measured far more precisely than by a holdout, which compares different people.

The estimand is the total effect over a campus of N users drawn like these ones (the
population-level effect: N times the expected per-user difference). From per-user differences
d (one row per replicate seed, N users each):

    value = N * mean(d)                 (mean over every user of every replicate)
    se    = N * sd(d) / sqrt(R * N)     (= sd * sqrt(N) for one replicate)
    95% interval: value +- z * se,  z = z_0.975 = 1.96

Pooled over R replicates (different seeds: new populations, new dice) the interval holds across
seeds, not only within one, and narrows with sqrt(R). Users are treated as independent draws;
the simulated friendships make them slightly dependent, which the coverage test in
tests/test_simulator_verdict.py checks is small enough for the interval to keep its 95%.

Two policies run on the same users and dice are compared the same way, on the differences of
their per-user outcomes (A's minus B's): better, worse, or cannot be told apart; with the
smallest difference the trial could have resolved at 80% power,
mdd = (z_0.975 + z_0.8) * se. Pure functions over numpy arrays, scikit-learn style.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

from backend.core.power import PLAN_ALPHA, PLAN_POWER

# A merchant's margin on extra revenue: the share of an extra order's price that is profit after
# ingredients, packaging and the platform's cut. Campus food and drink run at roughly 15-30%
# contribution margin; 20% is the cautious middle, under which a ¥5 coupon must bring ¥25 of
# extra revenue to pay for itself. `compare --margin` sets the merchant's own.
DEFAULT_MARGIN = 0.20
# The test's level and power: the same as the holdout's power planner (core.power).
ALPHA = PLAN_ALPHA
POWER = PLAN_POWER

BETTER, WORSE, TIE = "better", "worse", "cannot_tell"


def z_of(alpha: float = ALPHA) -> float:
    """The two-sided normal critical value (1.96 at alpha 0.05)."""
    return NormalDist().inv_cdf(1 - alpha / 2)


@dataclass(frozen=True)
class Effect:
    """A total over the campus with its interval; `users` per replicate, `replicates` R."""

    value: float
    lo: float
    hi: float
    se: float
    users: int
    replicates: int

    def as_dict(self) -> dict:
        """The fields as plain JSON values, for the comparison's --json output."""
        return asdict(self)


def _rows(diff: np.ndarray | list) -> np.ndarray:
    """Per-user differences as a (replicates, users) float array."""
    d = np.asarray(diff, dtype=np.float64)
    if d.ndim == 1:
        d = d[None, :]
    if d.ndim != 2 or d.shape[1] == 0:
        raise ValueError("per-user differences: one row of users per replicate, users > 0")
    return d


def paired_effect(diff: np.ndarray | list, *, alpha: float = ALPHA) -> Effect:
    """The total effect over a campus of this size, from per-user paired differences.

    Parameters
    ----------
    diff : array of shape (n_users,) or (n_replicates, n_users)
        Each user's outcome under the treatment minus their untreated twin's (or minus the
        same user's outcome under another policy), one row per replicate seed.
    alpha : float, default 0.05
        Two-sided level of the interval (0.05: a 95% interval).
    """
    d = _rows(diff)
    r, n = d.shape
    flat = d.ravel()
    sd = float(flat.std(ddof=1)) if flat.size > 1 else 0.0
    value = n * float(flat.mean())
    se = n * sd / np.sqrt(r * n)
    z = z_of(alpha)
    return Effect(value, value - z * se, value + z * se, se, n, r)


def profit(
    revenue_diff: np.ndarray, cost: np.ndarray, margin: float = DEFAULT_MARGIN
) -> np.ndarray:
    """Per-user extra profit: margin on the extra revenue less the money spent on the user."""
    if not 0.0 <= margin <= 1.0:
        raise ValueError("margin is a share of revenue, between 0 and 1")
    return margin * np.asarray(revenue_diff, dtype=np.float64) - np.asarray(cost, np.float64)


def min_detectable(se: float, *, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true difference this trial detects with the given power:
    (z_(1-alpha/2) + z_power) * se (2.80 se at alpha 0.05 and 80% power)."""
    return (z_of(alpha) + NormalDist().inv_cdf(power)) * se


@dataclass(frozen=True)
class Judgement:
    """A against B on the same users: `outcome` is `better` (A is), `worse` or
    `cannot_tell`; `difference` A minus B with its interval; `min_detectable` the smallest
    difference this trial could have resolved (80% power)."""

    a: str
    b: str
    outcome: str
    difference: Effect
    min_detectable: float

    def as_dict(self) -> dict:
        """The judgement as plain JSON values, its difference nested as `Effect.as_dict`."""
        return {
            "a": self.a,
            "b": self.b,
            "outcome": self.outcome,
            "difference": self.difference.as_dict(),
            "min_detectable": self.min_detectable,
        }


def judge(
    a_outcome: np.ndarray,
    b_outcome: np.ndarray,
    names: tuple[str, str] = ("A", "B"),
    *,
    alpha: float = ALPHA,
    power: float = POWER,
) -> Judgement:
    """Policy A against policy B from their per-user outcomes on the same users and dice
    (each, e.g., the user's extra profit against the twin; rows = replicates). A claims to be
    better only when the whole interval of A minus B is above zero."""
    a, b = _rows(a_outcome), _rows(b_outcome)
    if a.shape != b.shape:
        raise ValueError("the two policies must be measured on the same users and replicates")
    diff = paired_effect(a - b, alpha=alpha)
    outcome = BETTER if diff.lo > 0 else WORSE if diff.hi < 0 else TIE
    return Judgement(*names, outcome, diff, min_detectable(diff.se, alpha=alpha, power=power))
