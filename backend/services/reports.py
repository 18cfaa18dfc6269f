"""Reports from the database: the core metrics over a tenant's finished touches.

Unit of analysis: the user. Within a group (a policy, an arm, a tier) a user counts once in
the treated group if any of their touches there was decided as a send — delivered or not
(intention to treat) — and once in the holdout if any was a holdout "would have sent" touch.
A user recalled = any of those touches returned within its window. Only touches whose window
has closed are counted, so a report never mixes final and provisional outcomes.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import peewee as pw

from backend.core import metrics
from backend.core.calendar import day_date
from backend.store.models import Policy, Touch

TREATED = ("sent", "failed", "expired")
DIMENSIONS = ("arm", "tier", "channel")


@dataclass
class TouchColumns:
    policy: np.ndarray  # policy names
    arm: np.ndarray
    tier: np.ndarray
    channel: np.ndarray
    status: np.ndarray
    holdout: np.ndarray
    user: np.ndarray
    day: np.ndarray
    returned: np.ndarray
    ordered: np.ndarray
    opened: np.ndarray
    attempted: np.ndarray
    revenue: np.ndarray
    coupon_cost: np.ndarray
    message_cost: np.ndarray
    value: np.ndarray
    retained_d7: np.ndarray  # 1 yes, 0 no, -1 not yet known
    retained_d30: np.ndarray

    def __len__(self) -> int:
        return int(self.user.size)

    def take(self, mask: np.ndarray) -> TouchColumns:
        return TouchColumns(**{k: v[mask] for k, v in self.__dict__.items()})


def load(
    tenant_id: int,
    policy: str | None = None,
    day_from: int | None = None,
    day_to: int | None = None,
) -> TouchColumns:
    """Finished touches (window closed) decided as sends or holdouts, in one query."""
    q = (
        Touch.select(
            Policy.name,
            Touch.arm,
            Touch.tier,
            Touch.channel,
            Touch.status,
            Touch.holdout,
            Touch.user,
            Touch.day,
            Touch.returned_ms.is_null(False),
            Touch.ordered_ms.is_null(False),
            Touch.opened_ms.is_null(False),
            Touch.attempts > 0,
            Touch.revenue_fen,
            Touch.coupon_cost_fen,
            Touch.message_cost_fen,
            Touch.value_fen,
            Touch.retained_d7,
            Touch.retained_d30,
        )
        .join(Policy)
        .where(
            (Touch.tenant == tenant_id)
            & Touch.attributed
            & Touch.status.in_((*TREATED, "held_out"))
        )
    )
    if policy is not None:
        q = q.where(Policy.name == policy)
    if day_from is not None:
        q = q.where(Touch.day >= day_from)
    if day_to is not None:
        q = q.where(Touch.day <= day_to)
    rows = list(q.tuples())
    cols = list(zip(*rows, strict=True)) if rows else [()] * 18

    def arr(i, dtype=None):
        return np.array(cols[i], dtype=dtype) if rows else np.array([], dtype=dtype)

    def tri(i):
        return np.array([-1 if v is None else int(v) for v in cols[i]], dtype=np.int8)

    return TouchColumns(
        policy=arr(0, object),
        arm=arr(1, object),
        tier=arr(2, object),
        channel=arr(3, object),
        status=arr(4, object),
        holdout=arr(5, bool),
        user=arr(6, np.int64),
        day=arr(7, np.int64),
        returned=arr(8, bool),
        ordered=arr(9, bool),
        opened=arr(10, bool),
        attempted=arr(11, bool),
        revenue=arr(12, np.int64),
        coupon_cost=arr(13, np.int64),
        message_cost=arr(14, np.int64),
        value=arr(15, np.int64),
        retained_d7=tri(16) if rows else np.array([], np.int8),
        retained_d30=tri(17) if rows else np.array([], np.int8),
    )


def _per_user(t: TouchColumns):
    """Collapse touches to users: any returned / ordered, summed revenue and costs."""
    users, idx = np.unique(t.user, return_inverse=True)
    n = users.size
    return {
        "returned": metrics.group_any(idx, t.returned, n),
        "ordered": metrics.group_any(idx, t.ordered, n),
        "revenue": np.bincount(idx, weights=t.revenue, minlength=n),
        "n": n,
    }


def compare(t: TouchColumns, seed: int = 0) -> dict:
    """Every measure for one group of touches: treated against holdout."""
    treated = t.take(~t.holdout)
    held = t.take(t.holdout)
    ut, uh = _per_user(treated), _per_user(held)
    recall_t = metrics.rate(int(ut["returned"].sum()), ut["n"])
    recall_h = metrics.rate(int(uh["returned"].sum()), uh["n"])
    money = metrics.roi(
        int(treated.revenue.sum()), int(treated.coupon_cost.sum()), int(treated.message_cost.sum())
    )
    return {
        "treated_users": ut["n"],
        "holdout_users": uh["n"],
        "recall_rate": recall_t.as_dict(),
        "holdout_recall_rate": recall_h.as_dict(),
        "incremental_recall": metrics.newcombe_diff(
            recall_t.k, recall_t.n, recall_h.k, recall_h.n
        ).as_dict(),
        "order_rate": metrics.rate(int(ut["ordered"].sum()), ut["n"]).as_dict(),
        "holdout_order_rate": metrics.rate(int(uh["ordered"].sum()), uh["n"]).as_dict(),
        "revenue_per_user_fen": float(ut["revenue"].mean()) if ut["n"] else None,
        "holdout_revenue_per_user_fen": float(uh["revenue"].mean()) if uh["n"] else None,
        "incremental_revenue_per_user_fen": metrics.mean_diff(
            ut["revenue"], uh["revenue"], seed=seed
        ).as_dict(),
        "money": money.as_dict(),
        "retention_d7": _retention(treated, treated.retained_d7),
        "retention_d30": _retention(treated, treated.retained_d30),
        "touches": int(len(treated)),
        "holdout_touches": int(len(held)),
    }


def _retention(t: TouchColumns, flag: np.ndarray) -> dict:
    """Share of returned touches whose user was still active in the week after D7 / D30."""
    known = t.returned & (flag >= 0)
    return metrics.rate(int((flag[known] == 1).sum()), int(known.sum())).as_dict()


def funnel(t: TouchColumns) -> list[dict]:
    treated = t.take(~t.holdout)
    names = sorted(set(treated.channel.tolist()))
    if not names:
        return []
    code = np.array([names.index(c) for c in treated.channel], dtype=np.int64)
    table = metrics.funnel(
        code,
        treated.attempted,
        treated.status == "sent",
        treated.opened,
        treated.returned,
        treated.ordered,
        len(names),
    )
    keys = ("sent", "delivered", "opened", "returned", "ordered")
    return [
        dict(channel=n, **dict(zip(keys, map(int, row), strict=True)))
        for n, row in zip(names, table, strict=True)
    ]


def cohorts(t: TouchColumns) -> list[dict]:
    """Recalled users by ISO week of the decision × still active at D7 and D30."""
    treated = t.take(~t.holdout & t.returned)
    if not len(treated):
        return []
    week = (treated.day + 3) // 7  # day 0 (1970-01-01) was a Thursday: weeks start Monday
    weeks, idx = np.unique(week, return_inverse=True)
    flags = np.stack([treated.retained_d7, treated.retained_d30], axis=1)
    num, den = metrics.cohort_retention(idx, flags == 1, flags >= 0, weeks.size)
    out = []
    for i, w in enumerate(weeks):
        out.append(
            {
                "week_of": day_date(int(w) * 7 - 3).isoformat(),
                "recalled": int((idx == i).sum()),
                "d7": metrics.rate(int(num[i, 0]), int(den[i, 0])).as_dict(),
                "d30": metrics.rate(int(num[i, 1]), int(den[i, 1])).as_dict(),
            }
        )
    return out


def report(
    tenant_id: int,
    policy: str | None = None,
    day_from: int | None = None,
    day_to: int | None = None,
    seed: int = 0,
) -> dict:
    t = load(tenant_id, policy, day_from, day_to)
    out = {
        "from": day_date(day_from).isoformat() if day_from is not None else None,
        "to": day_date(day_to).isoformat() if day_to is not None else None,
        "policies": [],
        "ledger": ledger(tenant_id, policy, day_from, day_to),
    }
    for name in sorted(set(t.policy.tolist())):
        p = t.take(t.policy == name)
        entry = {"policy": name, **compare(p, seed)}
        for dim in DIMENSIONS:
            values = getattr(p, dim)
            entry[f"by_{dim}"] = [
                {dim: v, **compare(p.take(values == v), seed)} for v in sorted(set(values.tolist()))
            ]
        entry["funnel"] = funnel(p)
        entry["cohorts"] = cohorts(p)
        treated = p.take(~p.holdout)
        users = _qini_users(p)
        entry["qini_by_value"] = (
            metrics.qini(users["score"], users["treated"], users["returned"]).as_dict()
            if treated.user.size
            else None
        )
        out["policies"].append(entry)
    return out


def _qini_users(p: TouchColumns) -> dict:
    """One row per (user, group): targeting by the estimated value the policy saw."""
    key = p.user * 2 + p.holdout
    keys, idx = np.unique(key, return_inverse=True)
    n = keys.size
    score = np.zeros(n)
    np.maximum.at(score, idx, p.value.astype(np.float64))
    return {
        "score": score,
        "treated": (keys % 2) == 0,
        "returned": metrics.group_any(idx, p.returned, n),
    }


def ledger(
    tenant_id: int,
    policy: str | None = None,
    day_from: int | None = None,
    day_to: int | None = None,
) -> list[dict]:
    """Per policy and day: what was decided and why users were not messaged."""
    q = (
        Touch.select(
            Policy.name,
            Touch.day,
            Touch.status,
            Touch.reason,
            pw.fn.COUNT(Touch.id),
            pw.fn.SUM(pw.Case(None, [(Touch.quiet_deferred, 1)], 0)),
        )
        .join(Policy)
        .where(Touch.tenant == tenant_id)
        .group_by(Policy.name, Touch.day, Touch.status, Touch.reason)
    )
    if policy is not None:
        q = q.where(Policy.name == policy)
    if day_from is not None:
        q = q.where(Touch.day >= day_from)
    if day_to is not None:
        q = q.where(Touch.day <= day_to)
    rows: dict = defaultdict(
        lambda: {
            "decided": 0,
            "sent": 0,
            "held_out": 0,
            "queued": 0,
            "expired": 0,
            "quiet_hours_deferred": 0,
            "skipped": {},
            "failed": {},
        }
    )
    for name, day, status, reason, count, quiet in q.tuples():
        r = rows[(name, day)]
        r["decided"] += count
        r["quiet_hours_deferred"] += int(quiet or 0)
        if status in ("skipped", "failed"):
            r[status][reason or "unknown"] = r[status].get(reason or "unknown", 0) + count
        elif status in ("queued", "sending"):
            r["queued"] += count
        elif status in r:
            r[status] += count
    return [
        {"policy": name, "date": day_date(day).isoformat(), **v}
        for (name, day), v in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1]))
    ]
