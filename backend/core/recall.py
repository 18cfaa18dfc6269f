"""Who can be *recalled*, and when a return counts as retained: one definition for everyone.

Recall is bringing back a user who had lapsed at decision time; what a user who was still
active does after a touch is *retention*, never recall (shared/ARCHITECTURE.md, "Words that
mean one thing"). The live report (backend/services/reports.py), the dashboard that reads it
and the simulator (simulator/results.py, simulator/campaign.py) all split their users here.

**Lapsed at decision**: silent for at least the tiers' silence threshold —
`TierConfig.risk_silent_days` term days (7 by default, the playbooks' classic "7 days without
opening" flag; SEED_DIGEST §1), the silence from which the tiers call a user churn-risk (and,
past `churned_silent_days`, churned). A user the tiers flag as at risk by their score while
still visiting (silent 2 days, say) is not lapsed: what they do next is retention.

Where the silence at decision is not known (a touch with no score snapshot of its day, or a
simulated log that records only the tier), the tier recorded at decision decides: churned and
churn-risk are lapsed, new, active and low-frequency are not — the tiers put anyone silent past
the threshold in one of the first two (core.tiers, first match wins), so the two agree except
for users flagged at risk by their score alone.

**Retained at D7 / D30** (metrics.RETENTION_DAYS, RETENTION_WINDOW_DAYS): a visit on a day in
[return + d, return + d + 7); known once that week has passed. `retained_on` counts it in days
for the simulator's daily books; production's attribution (services/attribution.py) counts the
same weeks from the same constants in milliseconds from the return, and the fast = end-to-end
test holds the two equal touch by touch.
"""

from __future__ import annotations

import numpy as np

from backend.core.metrics import RETENTION_DAYS, RETENTION_WINDOW_DAYS
from backend.core.tiers import CHURNED, RISK, TIERS, TierConfig

LAPSED_TIERS = (TIERS[RISK], TIERS[CHURNED])
# D30 retention is known this many days after the return (the simulator keeps its touches'
# books open this long).
RETENTION_TAIL_DAYS = max(RETENTION_DAYS) + RETENTION_WINDOW_DAYS


def lapsed_at_decision(
    tier: np.ndarray,
    term_days_silent: np.ndarray | None = None,
    config: TierConfig | None = None,
) -> np.ndarray:
    """Per touch: was its user lapsed when it was decided?

    `tier`: tier names (str) or indices into TIERS, as recorded at decision;
    `term_days_silent`: term days since the last visit at decision, -1 (or None) where not
    known; `config`: the tenant's tier thresholds (defaults if None)."""
    config = config or TierConfig()
    tier = np.asarray(tier)
    if tier.dtype.kind in "iu":
        by_tier = (tier == RISK) | (tier == CHURNED)
    else:
        by_tier = np.isin(tier, LAPSED_TIERS)
    if term_days_silent is None:
        return by_tier
    silent = np.asarray(term_days_silent, dtype=np.int64)
    return np.where(silent >= 0, silent >= config.risk_silent_days, by_tier)


def retained_on(return_day: np.ndarray, day: int, d: int) -> np.ndarray:
    """Whether a visit on `day` counts toward retention at D`d` after each `return_day`
    (-1: not returned)."""
    r = np.asarray(return_day, dtype=np.int64)
    return (r >= 0) & (day >= r + d) & (day < r + d + RETENTION_WINDOW_DAYS)


def retention_known(return_day: np.ndarray, last_day: int, d: int) -> np.ndarray:
    """Whether retention at D`d` is known by the end of `last_day` (its week has passed)."""
    r = np.asarray(return_day, dtype=np.int64)
    return (r >= 0) & (last_day >= r + d + RETENTION_WINDOW_DAYS)
