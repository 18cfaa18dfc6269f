"""A simulation's results, measured with production's metrics (backend.core.metrics).

Per arm and for the holdout: the users targeted, recalled, recall rate, retention, messages,
costs, revenue and ROI; per arm against the holdout: the difference in recall rate (Newcombe)
and in revenue per user (bootstrap), each with its 95% interval — and beside each estimate
the `true_uplift` only a simulation knows: the same touched users in the untreated twin.
The shape is the public contract of `simulate --json` (shared/ARCHITECTURE.md).
"""

from __future__ import annotations

import numpy as np

from backend.core import metrics
from simulator.campaign import HELD_OUT, SENT, Campaign


def _users(user: np.ndarray, rows: np.ndarray, flag: np.ndarray) -> tuple[int, int]:
    """(users, users with the flag on any of their rows)."""
    users, idx = np.unique(user[rows], return_inverse=True)
    return users.size, int(metrics.group_any(idx, flag[rows], users.size).sum())


def _per_user_sum(user: np.ndarray, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    users, idx = np.unique(user[rows], return_inverse=True)
    return np.bincount(idx, weights=values[rows], minlength=users.size)


def summarise(campaign: Campaign, last_day: int, coupon_face_fen: dict[str, int], seed: int):
    """The `arms` and `uplift` parts of the simulation output."""
    policy = campaign.policy
    log = campaign.log
    o = log.outcome
    user, arm, status = log.column("user"), log.column("arm"), log.column("status")
    step, channel = log.column("step"), log.column("channel")
    face = np.zeros((len(policy.arms), policy.max_steps), dtype=np.int64)
    for a, spec in enumerate(policy.arms):
        for s, touch in enumerate(spec.touches):
            face[a, s] = coupon_face_fen.get(touch.coupon, 0) if touch.coupon else 0
    coupon_cost = np.where(o["ordered"] & (status == SENT), face[arm, step], 0)
    message_cost = np.where(status == SENT, np.asarray(policy.costs_fen)[channel], 0)
    r = o["return_day"]

    def group(rows: np.ndarray) -> dict:
        n, recalled = _users(user, rows, o["returned"])
        known7 = rows & (r >= 0) & (last_day >= r + 14)
        known30 = rows & (r >= 0) & (last_day >= r + 37)
        money = metrics.roi(
            int(o["revenue_fen"][rows].sum()),
            int(coupon_cost[rows].sum()),
            int(message_cost[rows].sum()),
        )
        return {
            "users": n,
            "targeted": n,
            "recalled": recalled,
            "recall_rate": metrics.rate(recalled, n).rate,
            "recall": metrics.rate(recalled, n).as_dict(),
            "retention_d7": metrics.rate(
                int(o["retained_d7"][known7].sum()), int(known7.sum())
            ).rate,
            "retention_d30": metrics.rate(
                int(o["retained_d30"][known30].sum()), int(known30.sum())
            ).rate,
            "messages": int((rows & (status == SENT)).sum()),
            "touches": int(rows.sum()),
            "coupon_cost": money.coupon_cost_fen,
            "message_cost": money.message_cost_fen,
            "revenue": money.revenue_fen,
            "roi": money.roi,
            "revenue_per_cost": money.revenue_per_cost,
        }

    arms = {}
    uplift = {}
    held = status == HELD_OUT
    arms["holdout"] = group(held)
    for a, spec in enumerate(policy.arms):
        treated = (status == SENT) & (arm == a)
        control = held & (arm == a)  # the holdout users this arm would have touched
        arms[spec.name] = group(treated)
        nt, kt = _users(user, treated, o["returned"])
        nc, kc = _users(user, control, o["returned"])
        _, kt_twin = _users(user, treated, o["returned_twin"])
        rev_t = _per_user_sum(user, treated, o["revenue_fen"])
        rev_c = _per_user_sum(user, control, o["revenue_fen"])
        rev_twin = _per_user_sum(user, treated, o["revenue_fen_twin"])
        uplift[spec.name] = {
            "recall_rate": metrics.newcombe_diff(kt, nt, kc, nc).as_dict(),
            "revenue_per_user_fen": metrics.mean_diff(rev_t, rev_c, seed=seed).as_dict(),
            "true_uplift": {
                "recall_rate": (kt - kt_twin) / nt if nt else None,
                "revenue_per_user_fen": float((rev_t - rev_twin).mean()) if nt else None,
            },
        }
    return arms, uplift
