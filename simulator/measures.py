"""The daily measures a campus model records: its Mesa DataCollector.

One row per simulated day, collected when the day closes (`CampusModel.step`): the campus
(active users, orders, revenue, who left), the tiers of the morning's scores, the job's
decisions and why it skipped users, the day's spend, and on the last day of a run of fixed
length the run's `result` (as Mesa's batch_run expects). The columns' order is the order of
`simulate --json`'s `daily` series (shared/ARCHITECTURE.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import mesa
import numpy as np

from backend.core.calendar import day_date
from backend.core.policy import HOLDOUT, SEND, SKIPPED
from backend.core.tiers import TIERS

if TYPE_CHECKING:  # the model imports this module: typing only, no cycle at run time
    from simulator.model import CampusModel

DECISION_COUNTS = (("sent", SEND), ("held_out", HOLDOUT), ("skipped", SKIPPED))
GUARD_REASONS = (
    "capped_30d",
    "capped_channel",
    "suppressed",
    "no_permission",
    "stop_loss",
    "budget",
)


def collector() -> mesa.DataCollector:
    """A DataCollector over one `CampusModel`: each reporter reads the day just closed
    (`m.day - 1`), the morning's decisions (`m.decisions`) and the day's activity."""
    reasons = _ReasonCounts()
    tiers = _TierCounts()
    return mesa.DataCollector(
        model_reporters={
            "date": lambda m: day_date(m.day - 1).isoformat(),
            "active": lambda m: int(np.count_nonzero(m.today.visited)),
            "orders": lambda m: int(np.count_nonzero(m.today.ordered)),
            "revenue_fen": lambda m: int(m.today.amount_fen.sum()),
            "left": lambda m: int(np.count_nonzero(m.today.left)),
            "churned": lambda m: int(np.count_nonzero(m.state.churned)),
            "mean_engagement": lambda m: float(m.state.engagement.mean()),
            **{f"tier_{name}": (lambda m, i=i: tiers.count(m, i)) for i, name in enumerate(TIERS)},
            **{label: (lambda m, s=status: _decided(m, s)) for label, status in DECISION_COUNTS},
            **{f"guard_{r}": (lambda m, r=r: reasons.count(m, r)) for r in GUARD_REASONS},
            "quiet_deferred": _quiet,
            "group_active": _group_active,
            "committed_cost_fen": _committed_cost,
            "spent_cost_fen": lambda m: (
                0 if m.campaign is None else m.campaign.log.spent_on(m.day - 1)
            ),
            # rank_by uplift: "model" (a fitted learner ranked the day), "risk" (none
            # yet: production's fallback), "" for other policies or no decision.
            "uplift_ranking": lambda m: (
                "" if m.campaign is None else m.campaign.ranking.get(m.day - 1, "")
            ),
            "result": lambda m: None if m.running else m.result(),
            "incremental_revenue_fen": lambda m: (
                0
                if m.twin_today is None
                else int(m.today.amount_fen.sum() - m.twin_today.amount_fen.sum())
            ),
        }
    )


def _decided(m: CampusModel, status: int) -> int:
    """Users the morning's decisions put in `status` (sent, held out, skipped)."""
    return 0 if m.decisions is None else m.decisions.count(status)


def _committed_cost(m: CampusModel) -> int:
    """Tonight's spend as decided: message costs plus coupon face values."""
    return 0 if m.decisions is None else int(m.decisions.cost_fen.sum())


def _quiet(m: CampusModel) -> int:
    """Sends the quiet hours pushed to the next morning."""
    return 0 if m.decisions is None else int(m.decisions.quiet_deferred.sum())


class _ReasonCounts:
    """The morning's skip reasons, counted once per decision (not once per reason column)."""

    def __init__(self) -> None:
        self._of = None
        self._counts: dict[str, int] = {}

    def count(self, m: CampusModel, name: str) -> int:
        """Users skipped today for reason `name` (a guard of core.policy)."""
        if m.decisions is None:
            return 0
        if self._of is not m.decisions:
            self._of, self._counts = m.decisions, m.decisions.reason_counts()
        return self._counts.get(name, 0)


class _TierCounts:
    """Users per tier in the morning's scores, counted once a day (one bincount, not a
    pass over every user per tier)."""

    def __init__(self) -> None:
        self._day: int | None = None
        self._counts = np.zeros(0, dtype=np.int64)

    def count(self, m: CampusModel, tier: int) -> int:
        """Users in `tier` (an index into TIERS) this morning."""
        if self._day != m.day:
            self._day = m.day
            self._counts = np.bincount(m.scores.tier, minlength=len(TIERS))
        return int(self._counts[tier])


def _group_active(m: CampusModel) -> dict[str, int]:
    """Today's visitors by the group each user was last decided into."""
    if m.campaign is None:
        return {}
    names = ["never messaged", "holdout", *[a.name for a in m.campaign.policy.arms]]
    visitors = m.campaign.group[np.flatnonzero(m.today.visited)]
    visitors += 2  # -2 never, -1 holdout, arms
    counts = np.bincount(visitors, minlength=len(names))
    return dict(zip(names, map(int, counts), strict=True))
