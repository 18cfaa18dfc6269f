"""A simulation's results, measured with production's metrics (backend.core.metrics).

Per arm and for the holdout: the users targeted; among those lapsed at decision
(backend.core.recall) the recalled and the recall rate, and among those still active the
share who came back in the window (`retention_active`: retention, never recall); retention
after recall at D7/D30, messages, costs, revenue and ROI. Per arm against the holdout users
who would have received it: the difference in recall among the lapsed and in active users'
retention (Newcombe), and in revenue per user (bootstrap), each with its 95% interval — and
beside each estimate the `true_uplift` only a simulation knows: the same touched users in the
untreated twin. The shape is the public contract of `simulate --json` (shared/ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from backend.core import metrics
from backend.core.metrics import RETENTION_DAYS
from backend.core.policy.history import touch_order
from backend.core.recall import lapsed_at_decision, retention_known
from backend.core.tiers import TierConfig
from simulator.campaign import Campaign
from simulator.touch_log import HELD_OUT, SENT, SKIP

if TYPE_CHECKING:  # the model imports this module: typing only, no cycle at run time
    from simulator.model import CampusModel


def _first(user: np.ndarray, order: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Indices of each user's first touch among `rows` (docs/metrics.md, "the unit")."""
    idx = np.flatnonzero(rows)
    return idx[metrics.first_per_user(user[idx], order[idx])]


def summarise(campaign: Campaign, last_day: int, seed: int, tier_config: TierConfig | None = None):
    """The `arms` and `uplift` parts of the simulation output. `tier_config`: the tier
    thresholds the simulation scored with (the model's `tier_config`; defaults if None), which
    say who was lapsed at decision as the tenant's say it in the live report.

    Each user is counted once, in the group of their first decision of the trial (sent in an
    arm, or held out from one): their recall, retention and attributed revenue are those of
    that first touch; the messages and money spent on them (every later touch too) are their
    group's. An arm is compared with the holdout users who would have received that arm."""
    c = _columns(campaign, tier_config)
    known = {d: retention_known(c["return_day"], last_day, d) for d in RETENTION_DAYS}
    first = np.zeros(c["user"].size, dtype=bool)
    first[_first(c["user"], c["order"], (c["status"] == SENT) | (c["status"] == HELD_OUT))] = True
    arms = {}
    uplift = {}
    held = first & (c["status"] == HELD_OUT)
    arms["holdout"] = _group(c, known, held)
    for a, spec in enumerate(campaign.policy.arms):
        treated = first & c["sent"] & (c["arm"] == a)
        would_have = held & (c["arm"] == a)  # the holdout users this arm would have touched
        arms[spec.name] = _group(c, known, treated)
        uplift[spec.name] = _uplift(c, np.flatnonzero(treated), np.flatnonzero(would_have), seed)
    return arms, uplift


def _columns(campaign: Campaign, tier_config: TierConfig | None) -> dict[str, np.ndarray]:
    """The campaign log's columns `summarise` reads, one row per touch, by the log's names,
    and those derived from them: `sent`; `coupon_cost` (face value of a redeemed coupon sent),
    `committed` (of every coupon sent), `message_cost`; `order` (core.policy.history's
    touch order, by day then step) and `lapsed` (at decision)."""
    log = campaign.log
    names = ("user", "arm", "status", "returned", "return_day", "revenue_fen", "redeemed")
    names += ("retained_d7", "retained_d30", "returned_twin", "revenue_fen_twin")
    c = {name: log.column(name) for name in names}
    c["sent"] = c["status"] == SENT
    c["coupon_cost"] = np.where(c["redeemed"] & c["sent"], log.column("coupon_face_fen"), 0)
    c["committed"] = np.where(c["sent"], log.column("coupon_face_fen"), 0)
    c["message_cost"] = log.column("message_cost_fen")
    c["order"] = touch_order(log.column("day"), log.column("step"))
    # Lapsed at decision by the one definition (core.recall), exactly as the live report
    # reads it: the silence in the morning's scores the touch was decided on (production's
    # score snapshot of the touch's day), the tier recorded then where it is unknown.
    c["lapsed"] = lapsed_at_decision(
        log.column("tier"), log.column("term_days_silent"), tier_config
    )
    return c


def _group(c: dict[str, np.ndarray], known: dict[int, np.ndarray], rows: np.ndarray) -> dict:
    """One group's row of `arms`. `rows`: the first decisions of the group's users; `known`:
    per retention day, the touches whose window has ended. Recall is counted among those
    lapsed at decision; retention after recall (D7, D30) among those it recalled; active
    users coming back is their retention (`retention_active`)."""
    user, returned = c["user"], c["returned"]
    n = int(rows.sum())
    lapsed_rows = rows & c["lapsed"]
    active_rows = rows & ~c["lapsed"]
    recall = metrics.rate(int(returned[lapsed_rows].sum()), int(lapsed_rows.sum()))
    theirs = np.isin(user, user[rows]) & c["sent"]  # every message sent to them
    back = lapsed_rows & (c["return_day"] >= 0)
    known7, known30 = back & known[RETENTION_DAYS[0]], back & known[RETENTION_DAYS[1]]
    money = metrics.roi(
        int(c["revenue_fen"][rows].sum()),
        int(c["coupon_cost"][theirs].sum()),
        int(c["message_cost"][theirs].sum()),
    )
    return {
        "users": n,
        "targeted": n,
        "lapsed": recall.n,
        "recalled": recall.k,
        "recall_rate": recall.rate,
        "recall": recall.as_dict(),
        "active": int(active_rows.sum()),
        "retention_active": metrics.rate(
            int(returned[active_rows].sum()), int(active_rows.sum())
        ).as_dict(),
        "retention_d7": metrics.rate(int(c["retained_d7"][known7].sum()), int(known7.sum())).rate,
        "retention_d7_n": int(known7.sum()),
        "retention_d30": metrics.rate(
            int(c["retained_d30"][known30].sum()), int(known30.sum())
        ).rate,
        "retention_d30_n": int(known30.sum()),
        "messages": int(theirs.sum()),
        "touches": int((np.isin(user, user[rows]) & (c["status"] != SKIP)).sum()),
        "coupon_cost": money.coupon_cost_fen,
        "message_cost": money.message_cost_fen,
        "cost": money.coupon_cost_fen + money.message_cost_fen,
        "committed_coupon_value": int(c["committed"][theirs].sum()),
        "revenue": money.revenue_fen,
        "revenue_twin": int(c["revenue_fen_twin"][rows].sum()),
        "roi": money.roi,
        "revenue_per_cost": money.revenue_per_cost,
    }


def _uplift(c: dict[str, np.ndarray], ft: np.ndarray, fc: np.ndarray, seed: int) -> dict:
    """One arm's row of `uplift`: its first touches `ft` against `fc`, the first decisions
    of the holdout users it would have touched; recall among the lapsed, retention among the
    active, revenue per user (bootstrap, `seed`), and beside them the truth: the same
    touched users in the untreated twin."""
    lapsed, returned, twin = c["lapsed"], c["returned"], c["returned_twin"]
    lt, lc = ft[lapsed[ft]], fc[lapsed[fc]]  # recall: among the lapsed only
    nt, kt = lt.size, int(returned[lt].sum())
    nc, kc = lc.size, int(returned[lc].sum())
    kt_twin = int(twin[lt].sum())
    at, ac = ft[~lapsed[ft]], fc[~lapsed[fc]]  # active users' retention
    ka, kac = int(returned[at].sum()), int(returned[ac].sum())
    ka_twin = int(twin[at].sum())
    rev_t = c["revenue_fen"][ft].astype(np.float64)
    rev_c = c["revenue_fen"][fc].astype(np.float64)
    rev_twin = c["revenue_fen_twin"][ft].astype(np.float64)
    return {
        "recall_rate": metrics.newcombe_diff(kt, nt, kc, nc).as_dict(),
        "retention_active": metrics.newcombe_diff(ka, at.size, kac, ac.size).as_dict(),
        "revenue_per_user_fen": metrics.mean_diff(rev_t, rev_c, seed=seed).as_dict(),
        "holdout_users": int(fc.size),
        "holdout_lapsed": nc,
        "holdout_recalled": kc,
        "holdout_active": int(ac.size),
        "true_uplift": {
            "recall_rate": (kt - kt_twin) / nt if nt else None,
            "retention_active": (ka - ka_twin) / at.size if at.size else None,
            "revenue_per_user_fen": float((rev_t - rev_twin).mean()) if nt else None,
        },
    }


def play(model: CampusModel, steps: int, progress: Callable[[int], None] | None = None):
    """Step a campus model (fast or end to end) `steps` days; its (arms, uplift) against the
    holdout with the truth, and the DataCollector's daily series."""
    for _ in range(steps):
        model.step()
        if progress is not None:
            progress(1)
    out = model.result()
    daily = model.datacollector.get_model_vars_dataframe().drop(columns=["result"])
    return out["arms"], out["uplift"], daily
