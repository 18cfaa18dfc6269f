"""Lifecycle tiers: new, active, low-frequency, churn-risk, churned — and why.

Thresholds live in TierConfig, one per tenant (its settings override the defaults). Silence
is counted in term days (core.calendar), so a vacation is never read as churn.

Rules, first match wins:
  churned       silent for >= churned_silent_days term days (default 30)
  churn_risk    silent for >= risk_silent_days term days (default 7: the playbooks' classic
                flag), or BG/NBD risk 1 − P(alive) >= risk_score_threshold (0.78 in one
                playbook), or the activity early warning fired
  new           first seen at most new_days ago (default 7)
  low_frequency fewer than low_frequency_visit_days visit days in the last 30 (default 4,
                i.e. less than weekly)
  active        everyone else
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

TIERS = ["new", "active", "low_frequency", "churn_risk", "churned"]
NEW, ACTIVE, LOW, RISK, CHURNED = range(5)

# Why a user has their tier; rendered to text by the service with the user's numbers.
REASONS = [
    "first_seen_recently",
    "visits_regularly",
    "visits_rarely",
    "silent_term_days",
    "low_p_alive",
    "early_warning",
    "silent_long",
]


@dataclass(frozen=True)
class TierConfig:
    """A tenant's tier thresholds (see the module docstring for the rules they feed).

    The silences (`risk_silent_days`, `churned_silent_days`) are term days; `new_days` is
    calendar days since first seen; `low_frequency_visit_days` a count of visit days in the
    last 30; `risk_score_threshold` is on 1 − P(alive); `worth_ltv_fen` is in fen;
    `value_horizon_days` is how far ahead expected orders and value are counted.
    """

    new_days: int = 7
    risk_silent_days: int = 7
    churned_silent_days: int = 30
    risk_score_threshold: float = 0.78
    low_frequency_visit_days: int = 4
    worth_ltv_fen: int = 10_000  # 100 yuan: "has paid before" in the worth-recalling rule
    value_horizon_days: int = 30

    @classmethod
    def from_settings(cls, overrides: dict | None) -> TierConfig:
        """Defaults overridden by a tenant's `tiers` settings; anything off is a ValueError.

        Settings come from an admin over the API, so a wrong type must be a clear 400, not a
        crash at scoring time: unknown keys, non-numbers, NaN, infinity, negatives and
        fractions where a count of days is meant are all refused.
        """
        if overrides is None:
            overrides = {}
        if not isinstance(overrides, dict):
            raise ValueError("tier settings must be an object")
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown tier settings: {sorted(unknown)}")
        values = asdict(cls())
        for key, value in overrides.items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ValueError(f"tier setting {key} must be a number")
            if not 0 <= value < math.inf:
                raise ValueError(f"tier setting {key} must be a finite non-negative number")
            if isinstance(values[key], int) and value != int(value):
                raise ValueError(f"tier setting {key} must be a whole number")
            values[key] = type(values[key])(value)
        if not values["risk_score_threshold"] <= 1:
            raise ValueError("tier setting risk_score_threshold must be between 0 and 1")
        return cls(**values)


def assign_tiers(
    term_days_since_visit: np.ndarray,
    age_days: np.ndarray,
    visit_days_30: np.ndarray,
    risk_score: np.ndarray,
    warning: np.ndarray,
    config: TierConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Each user's tier and why, by the module's rules (first match wins).

    Parameters
    ----------
    term_days_since_visit : int64 term days since the last visit (columns.NEVER if never).
    age_days : int64 calendar days since first seen.
    visit_days_30 : int64 days with a visit in the last 30.
    risk_score : float64 1 − P(alive); NaN when unknown (never risky unless the threshold
        is 0).
    warning : bool, the activity early warning fired.
    config : the tenant's thresholds.

    Returns
    -------
    (tier, reason) : int8 per user, indices into TIERS and REASONS.
    """
    silent = np.asarray(term_days_since_visit)
    risk = np.asarray(risk_score, dtype=np.float64)
    risky = risk >= config.risk_score_threshold
    if config.risk_score_threshold <= 0:  # an unknown risk (NaN) counts as 0
        risky |= np.isnan(risk)
    rules = [
        (silent >= config.churned_silent_days, CHURNED, 6),
        (silent >= config.risk_silent_days, RISK, 3),
        (risky, RISK, 4),
        (np.asarray(warning, dtype=bool), RISK, 5),
        (np.asarray(age_days) <= config.new_days, NEW, 0),
        (np.asarray(visit_days_30) < config.low_frequency_visit_days, LOW, 2),
    ]
    # First match wins: rule k of the 6 ranks 6 − k, the best-ranked rule that holds is kept
    # (small-integer arithmetic, no masked writes), then tier and reason are looked up.
    shape = np.broadcast_shapes(*(np.shape(c) for c, _, _ in rules))
    best = np.zeros(shape, dtype=np.int8)  # 0: no rule holds
    for rank, (condition, _, _) in enumerate(reversed(rules), start=1):
        np.maximum(best, np.multiply(condition, np.int8(rank), dtype=np.int8), out=best)
    tiers = np.array([ACTIVE, *(t for _, t, _ in reversed(rules))], dtype=np.int8)
    reasons = np.array([1, *(r for _, _, r in reversed(rules))], dtype=np.int8)
    return np.take(tiers, best), np.take(reasons, best)
