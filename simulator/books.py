"""Each user's books over the trial days, in the treated world and in the untreated twin:
what the paired verdict (backend/core/paired.py) is computed from, user by user."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from simulator.campaign import Campaign
from simulator.campus import DayActivity
from simulator.touch_log import SENT


@dataclass
class TrialBooks:
    """One world's per-user totals over the trial days."""

    visited: np.ndarray
    visit_days: np.ndarray
    orders: np.ndarray
    revenue_fen: np.ndarray

    @classmethod
    def empty(cls, n: int) -> TrialBooks:
        """Books of `n` users before the trial's first day."""
        return cls(
            np.zeros(n, dtype=bool),
            np.zeros(n, dtype=np.int32),
            np.zeros(n, dtype=np.int32),
            np.zeros(n, dtype=np.int64),
        )

    def add(self, day: DayActivity) -> None:
        """One trial day's activity into the totals."""
        self.visited |= day.visited
        self.visit_days += day.visited
        self.orders += day.ordered
        self.revenue_fen += day.amount_fen

    def columns(self) -> dict[str, np.ndarray]:
        """The totals as named columns (the fields' names), one row per user."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def per_user(books: dict[str, TrialBooks], campaign: Campaign, n: int) -> dict[str, np.ndarray]:
    """The books of both worlds (`books["treated"]`, `books["twin"]`, the latter's columns
    prefixed `twin_`) and what the treatment spent on each of the `n` users, read from the
    campaign's touch log: `message_cost_fen`, `coupon_cost_fen` (face value of the coupons
    redeemed), `cost_fen` (their sum) and `committed_coupon_fen` (of every coupon sent)."""
    out = {}
    for world, prefix in (("treated", ""), ("twin", "twin_")):
        out |= {prefix + k: v.copy() for k, v in books[world].columns().items()}
    log = campaign.log
    user, sent = log.column("user", skipped=False), log.column("status", skipped=False) == SENT
    face = log.column("coupon_face_fen", skipped=False)
    redeemed = log.column("redeemed", skipped=False)

    def per(values: np.ndarray) -> np.ndarray:
        return np.bincount(user, weights=values, minlength=n).astype(np.int64)

    out["message_cost_fen"] = per(log.column("message_cost_fen", skipped=False))
    out["coupon_cost_fen"] = per(np.where(redeemed & sent, face, 0))
    out["cost_fen"] = out["message_cost_fen"] + out["coupon_cost_fen"]
    out["committed_coupon_fen"] = per(np.where(sent, face, 0))
    return out
