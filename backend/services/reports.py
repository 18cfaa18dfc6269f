"""Reports from the database: the core metrics over a tenant's finished touches.

Unit of analysis: the user, at their first decision in the group (a policy, an arm, a tier):
treated if it was decided as a send — delivered or not (intention to treat) — held out if it
was a holdout "would have sent" touch. *Recall* is counted among the users lapsed at that
decision (backend.core.recall: silent past the tiers' risk threshold, from the day's score
snapshot; the recorded tier where there is none), treated against the holdout's lapsed; what
users still active at decision did is their *retention* (`retention_active`), never recall.
Only touches whose window has closed are counted, so a report never mixes final and
provisional outcomes.

Each policy also carries `power`: how far its holdout comparison is from the size that would
detect its effect at 80% power, and how many days that takes at its current volume.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import peewee as pw

from backend.core import metrics
from backend.core.calendar import day_date
from backend.core.recall import lapsed_at_decision
from backend.core.tiers import TierConfig
from backend.services.scoring import tier_config
from backend.store.db import database
from backend.store.models import Policy, Tenant, Touch

DIMENSIONS = ("arm", "tier", "channel")
# Touches the policy decided to send (whatever became of them): what the run budget bounds.
SEND_STATUSES = ("queued", "sending", "sent", "failed", "expired")
# The power block (docs/metrics.md, "Power"): the effect a policy is planned to detect until its
# own holdout comparison shows a significant one, and how far back "current volume" looks.
PLANNING_EFFECT = 0.05  # +5 percentage points of recall
VOLUME_DAYS = 28


@dataclass
class TouchColumns:
    """Finished touches as columns. Text columns are integer codes into `names[column]`."""

    policy: np.ndarray
    arm: np.ndarray
    tier: np.ndarray
    channel: np.ndarray
    status: np.ndarray
    holdout: np.ndarray
    user: np.ndarray
    day: np.ndarray
    step: np.ndarray
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
    lapsed: np.ndarray  # the user was lapsed at decision (core.recall)
    names: dict[str, list[str]]

    def __len__(self) -> int:
        return int(self.user.size)

    def take(self, rows: np.ndarray) -> TouchColumns:
        """The touches at `rows` (a boolean mask or indices); names are shared."""
        parts = {k: v[rows] for k, v in self.__dict__.items() if k != "names"}
        return TouchColumns(**parts, names=self.names)

    def code(self, column: str, name: str) -> int:
        values = self.names[column]
        return values.index(name) if name in values else -1


_TEXT = ("policy", "arm", "tier", "channel", "status")
_SQL = """
SELECT p.name, t.arm, t.tier, t.channel, t.status, t.holdout, t.user_id, t.day, t.step,
       t.returned_ms IS NOT NULL, t.ordered_ms IS NOT NULL, t.opened_ms IS NOT NULL,
       t.attempts > 0, t.revenue_fen, t.coupon_cost_fen, t.message_cost_fen, t.value_fen,
       CASE WHEN t.retained_d7 IS NULL THEN -1 WHEN t.retained_d7 THEN 1 ELSE 0 END,
       CASE WHEN t.retained_d30 IS NULL THEN -1 WHEN t.retained_d30 THEN 1 ELSE 0 END,
       COALESCE(s.term_days_since_visit, -1)
FROM touch t JOIN policy p ON p.id = t.policy_id
LEFT JOIN score_snapshot s
  ON s.tenant_id = t.tenant_id AND s.day = t.day AND s.user_id = t.user_id
WHERE t.tenant_id = {p} AND t.attributed AND t.status IN ('sent', 'failed', 'expired', 'held_out')
"""


def _codes(values) -> tuple[np.ndarray, list[str]]:
    """Integer codes for a column of strings, and the strings in code order."""
    seen: dict[str, int] = {}
    codes = np.fromiter((seen.setdefault(v, len(seen)) for v in values), dtype=np.int32)
    return codes, list(seen)


def load(
    tenant_id: int,
    policy: str | None = None,
    day_from: int | None = None,
    day_to: int | None = None,
) -> TouchColumns:
    """Finished touches (window closed) decided as sends or holdouts, in one query.

    Through the driver's cursor rather than peewee's row objects: a tenant's report reads
    every finished touch, and building a Python object per row would cost most of its time.
    """
    ph = database.param
    sql = _SQL.format(p=ph)
    params: list = [tenant_id]
    if policy is not None:
        sql += f" AND p.name = {ph}"
        params.append(policy)
    if day_from is not None:
        sql += f" AND t.day >= {ph}"
        params.append(day_from)
    if day_to is not None:
        sql += f" AND t.day <= {ph}"
        params.append(day_to)
    rows = database.execute_sql(sql, params).fetchall()
    cols = list(zip(*rows, strict=True)) if rows else [()] * 20
    tiers = _tier_config(tenant_id)
    names = {}
    coded = {}
    for i, key in enumerate(_TEXT):
        coded[key], names[key] = _codes(cols[i])

    def num(i, dtype):
        return np.array(cols[i], dtype=dtype) if rows else np.zeros(0, dtype=dtype)

    return TouchColumns(
        **coded,
        holdout=num(5, bool),
        user=num(6, np.int64),
        day=num(7, np.int64),
        step=num(8, np.int64),
        returned=num(9, bool),
        ordered=num(10, bool),
        opened=num(11, bool),
        attempted=num(12, bool),
        revenue=num(13, np.int64),
        coupon_cost=num(14, np.int64),
        message_cost=num(15, np.int64),
        value=num(16, np.int64),
        retained_d7=num(17, np.int8),
        retained_d30=num(18, np.int8),
        lapsed=lapsed_at_decision(np.array(cols[2], dtype=object), num(19, np.int64), tiers),
        names=names,
    )


def _tier_config(tenant_id: int) -> TierConfig:
    """The tenant's tier thresholds (its `tiers` settings over the defaults), which say who
    was lapsed at decision."""
    return tier_config(Tenant.get_by_id(tenant_id))


def _per_user(t: TouchColumns):
    """One row per user: their first touch in the group (docs/metrics.md, "the unit")."""
    first = metrics.first_per_user(t.user, t.day * 10 + t.step)
    return {
        "returned": t.returned[first],
        "ordered": t.ordered[first],
        "revenue": t.revenue[first].astype(np.float64),
        "lapsed": t.lapsed[first],
        "retained_d7": t.retained_d7[first],
        "retained_d30": t.retained_d30[first],
        "n": int(first.size),
    }


def _rate(flag: np.ndarray, rows: np.ndarray) -> metrics.Rate:
    return metrics.rate(int(flag[rows].sum()), int(rows.sum()))


def compare(t: TouchColumns, seed: int = 0) -> dict:
    """Every measure for one group of touches: treated against holdout, each user once (at
    their first decision). Recall among the users lapsed at decision; the returns of those
    still active are their retention (`retention_active`)."""
    treated = t.take(~t.holdout)
    held = t.take(t.holdout)
    ut, uh = _per_user(treated), _per_user(held)
    recall_t = _rate(ut["returned"], ut["lapsed"])
    recall_h = _rate(uh["returned"], uh["lapsed"])
    active_t = _rate(ut["returned"], ~ut["lapsed"])
    active_h = _rate(uh["returned"], ~uh["lapsed"])
    money = metrics.roi(
        int(treated.revenue.sum()), int(treated.coupon_cost.sum()), int(treated.message_cost.sum())
    )
    recalled = ut["lapsed"] & ut["returned"]
    return {
        "treated_users": ut["n"],
        "holdout_users": uh["n"],
        "lapsed_users": recall_t.n,
        "holdout_lapsed_users": recall_h.n,
        "recall_rate": recall_t.as_dict(),
        "holdout_recall_rate": recall_h.as_dict(),
        "incremental_recall": metrics.newcombe_diff(
            recall_t.k, recall_t.n, recall_h.k, recall_h.n
        ).as_dict(),
        "active_users": active_t.n,
        "holdout_active_users": active_h.n,
        "retention_active": active_t.as_dict(),
        "holdout_retention_active": active_h.as_dict(),
        "incremental_retention_active": metrics.newcombe_diff(
            active_t.k, active_t.n, active_h.k, active_h.n
        ).as_dict(),
        "order_rate": metrics.rate(int(ut["ordered"].sum()), ut["n"]).as_dict(),
        "holdout_order_rate": metrics.rate(int(uh["ordered"].sum()), uh["n"]).as_dict(),
        "revenue_per_user_fen": float(ut["revenue"].mean()) if ut["n"] else None,
        "holdout_revenue_per_user_fen": float(uh["revenue"].mean()) if uh["n"] else None,
        "incremental_revenue_per_user_fen": metrics.mean_diff(
            ut["revenue"], uh["revenue"], seed=seed
        ).as_dict(),
        "money": money.as_dict(),
        "retention_d7": _retention(recalled, ut["retained_d7"]),
        "retention_d30": _retention(recalled, ut["retained_d30"]),
        "touches": int(len(treated)),
        "holdout_touches": int(len(held)),
    }


def _retention(recalled: np.ndarray, flag: np.ndarray) -> dict:
    """Retention after recall: of the users recalled (lapsed at their first decision and
    back in its window), the share still active in the week after D7 / D30, where known."""
    known = recalled & (flag >= 0)
    return metrics.rate(int((flag[known] == 1).sum()), int(known.sum())).as_dict()


def funnel(t: TouchColumns) -> list[dict]:
    treated = t.take(~t.holdout)
    if not len(treated):
        return []
    names = t.names["channel"]
    table = metrics.funnel(
        treated.channel,
        treated.attempted,
        treated.status == t.code("status", "sent"),
        treated.opened,
        treated.returned,
        treated.ordered,
        len(names),
    )
    keys = ("sent", "delivered", "opened", "returned", "ordered")
    present = np.bincount(treated.channel, minlength=len(names)) > 0
    return [
        dict(channel=names[c], **dict(zip(keys, map(int, table[c]), strict=True)))
        for c in sorted(np.flatnonzero(present), key=lambda c: names[c])
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
        "spend": spend(tenant_id, policy, day_from, day_to),
    }
    designs = _designs(tenant_id, policy)
    for code in sorted(np.unique(t.policy), key=lambda c: t.names["policy"][c]):
        p = t.take(np.flatnonzero(t.policy == code))
        entry = {"policy": t.names["policy"][code], **compare(p, seed)}
        entry["power"] = power(entry, designs.get(entry["policy"]))
        for dim in DIMENSIONS:
            values = getattr(p, dim)
            labels = t.names[dim]
            entry[f"by_{dim}"] = [
                {dim: labels[c], **compare(p.take(np.flatnonzero(values == c)), seed)}
                for c in sorted(np.unique(values), key=lambda c: labels[c])
            ]
        entry["funnel"] = funnel(p)
        entry["cohorts"] = cohorts(p)
        users = _qini_users(p)
        entry["qini_by_value"] = (
            metrics.qini(users["score"], users["treated"], users["returned"]).as_dict()
            if np.any(~p.holdout)
            else None
        )
        out["policies"].append(entry)
    return out


@dataclass(frozen=True)
class Design:
    """What the power block needs to know of a policy beyond its touches."""

    holdout_share: float | None  # as configured now; None if the stored source is unreadable
    live: bool
    eligible_per_day: float  # users decided for the first time a day, lately


def _designs(tenant_id: int, policy: str | None = None) -> dict[str, Design]:
    """Per policy: its holdout share, whether it runs, and its current volume — users whose
    first decision (a send or a holdout, finished or not) fell in the last VOLUME_DAYS of the
    policy's decisions, per day. Volume ignores the report's date filter: it is about now."""
    from backend.core.policy import PolicyError
    from backend.services.policies import loaded

    query = Policy.select().where(Policy.tenant == tenant_id)
    if policy is not None:
        query = query.where(Policy.name == policy)
    rows = list(query)
    live = [row.id for row in rows if row.active]  # only a running policy has a volume
    per_day: dict[int, dict[int, int]] = defaultdict(dict)
    if live:
        ph = database.param
        statuses = ", ".join(f"'{s}'" for s in (*SEND_STATUSES, "held_out"))
        sql = f"""
            SELECT f.policy_id, f.first_day, COUNT(*) FROM (
                SELECT policy_id, user_id, MIN(day) AS first_day FROM touch
                WHERE tenant_id = {ph} AND policy_id IN ({", ".join([ph] * len(live))})
                  AND status IN ({statuses})
                GROUP BY policy_id, user_id
            ) f GROUP BY f.policy_id, f.first_day
        """
        for pid, day, count in database.execute_sql(sql, [tenant_id, *live]).fetchall():
            per_day[int(pid)][int(day)] = int(count)
    out = {}
    for row in rows:
        try:
            share: float | None = loaded(row).holdout_share
        except PolicyError:  # a stored source the parser now refuses: use the observed share
            share = None
        days = per_day.get(row.id, {})
        volume = 0.0
        if days and row.active:
            last = max(days)
            span = min(VOLUME_DAYS, last - min(days) + 1)
            volume = sum(n for d, n in days.items() if d > last - span) / span
        out[row.name] = Design(share, bool(row.active), volume)
    return out


def power(entry: dict, design: Design | None) -> dict:
    """How far a policy's holdout comparison is from the size that detects its effect at 80%
    power (metrics.holdout_plan; docs/metrics.md, "Power").

    The comparison is recall, so its users are those lapsed at decision. Baseline p_control:
    the holdout's recall rate once it has MIN_GROUP users, before that the rate over all the
    policy's lapsed users (treated and held out). Effect: the observed
    incremental recall once its 95% interval is above 0, before that PLANNING_EFFECT (+5 pp).
    """
    n_h, n_t = entry["holdout_lapsed_users"], entry["lapsed_users"]
    held, treated = entry["holdout_recall_rate"], entry["recall_rate"]
    if n_h >= metrics.MIN_GROUP:
        p_control, baseline = held["rate"], "holdout"
    elif n_h + n_t:
        p_control, baseline = (held["k"] + treated["k"]) / (n_h + n_t), "all_users"
    else:
        p_control, baseline = None, None
    diff = entry["incremental_recall"]
    if diff["enough"] and diff["lo"] is not None and diff["lo"] > 0:
        effect, source = diff["diff"], "observed"
    else:
        effect, source = PLANNING_EFFECT, "planning"
    share = design.holdout_share if design is not None else None
    if share is None:
        share = n_h / (n_h + n_t) if n_h + n_t else 0.0
    live = design is not None and design.live
    volume = design.eligible_per_day if design is not None else 0.0
    # The volume counts every first decision; only the lapsed enter the recall comparison, so
    # scale it by the lapsed share seen so far (days would otherwise come out too few).
    decided = entry["treated_users"] + entry["holdout_users"]
    if decided:
        volume *= (n_h + n_t) / decided
    out = {
        "effect": effect,
        "effect_source": source,
        "p_control": p_control,
        "p_control_source": baseline,
        "holdout_share": share,
        "live": live,
        "eligible_per_day": volume,
        "users_so_far": n_h + n_t,
        "holdout_users_so_far": n_h,
        "users_needed": None,
        "holdout_users_needed": None,
        "share_of_needed": None,
        "days_needed_at_current_volume": None,
        "detectable_now": None,
        "note": "no finished decisions yet",
    }
    if p_control is None:
        return out
    plan = metrics.holdout_plan(
        p_control, effect, share, volume, n_holdout_now=n_h, n_treated_now=n_t
    )
    note = plan.note
    if not live and plan.days_needed != 0:
        note = "policy is not running: the sample will not grow"
    out.update(
        users_needed=plan.users_needed,
        holdout_users_needed=plan.n_holdout_needed,
        share_of_needed=plan.share_of_needed,
        days_needed_at_current_volume=plan.days_needed if live or plan.days_needed == 0 else None,
        detectable_now=plan.detectable_now,
        note=note,
    )
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


def _within(q, policy: str | None, day_from: int | None, day_to: int | None):
    """A touch query narrowed to the report's filter (the query joins Policy)."""
    if policy is not None:
        q = q.where(Policy.name == policy)
    if day_from is not None:
        q = q.where(Touch.day >= day_from)
    if day_to is not None:
        q = q.where(Touch.day <= day_to)
    return q


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
            Touch.arm,
            pw.fn.COUNT(Touch.id),
            pw.fn.SUM(pw.Case(None, [(Touch.quiet_deferred, 1)], 0)),
        )
        .join(Policy)
        .where(Touch.tenant == tenant_id)
        .group_by(Policy.name, Touch.day, Touch.status, Touch.reason, Touch.arm)
    )
    q = _within(q, policy, day_from, day_to)
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
            "sends_by_arm": {},
        }
    )
    for name, day, status, reason, arm, count, quiet in q.tuples():
        r = rows[(name, day)]
        if status in SEND_STATUSES:
            r["sends_by_arm"][arm] = r["sends_by_arm"].get(arm, 0) + count
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


def spend(
    tenant_id: int,
    policy: str | None = None,
    day_from: int | None = None,
    day_to: int | None = None,
) -> list[dict]:
    """Per policy and day: the spend committed by the day's sends (message cost plus each
    coupon's face value, as the job's budget counts it) beside the policy's run budget."""
    from backend.services.policies import loaded
    from backend.store.models import CouponTemplate

    q = (
        Touch.select(
            Policy.id,
            Touch.day,
            Touch.coupon_template,
            pw.fn.COUNT(Touch.id),
            pw.fn.SUM(Touch.message_cost_fen),
        )
        .join(Policy)
        .where((Touch.tenant == tenant_id) & ~Touch.holdout & Touch.status.in_(SEND_STATUSES))
        .group_by(Policy.id, Touch.day, Touch.coupon_template)
    )
    q = _within(q, policy, day_from, day_to)
    rows = list(q.tuples())
    # Faces by template name, whichever version of the policy named the coupon.
    named = {r[2] for r in rows if r[2]}
    faces = dict(
        CouponTemplate.select(CouponTemplate.name, CouponTemplate.amount_off_fen)
        .where((CouponTemplate.tenant == tenant_id) & CouponTemplate.name.in_(named))
        .tuples()
    )
    out = []
    for row in Policy.select().where(Policy.id.in_({r[0] for r in rows})).order_by(Policy.name):
        spec = loaded(row)
        days: dict = defaultdict(lambda: {"sends": 0, "committed_fen": 0})
        for pid, day, coupon, count, message_fen in rows:
            if pid == row.id:
                d = days[day]
                d["sends"] += count
                d["committed_fen"] += int(message_fen or 0) + count * faces.get(coupon, 0)
        out.append(
            {
                "policy": row.name,
                "run_budget_fen": spec.run_budget_fen,
                "committed_fen": sum(d["committed_fen"] for d in days.values()),
                "days": [{"date": day_date(k).isoformat(), **v} for k, v in sorted(days.items())],
            }
        )
    return out


def parse_span(tenant_id: int, args, today: int) -> tuple[str | None, int | None, int | None]:
    """A report's filter from query arguments (policy, from, to), checked: the API and the
    dashboard take the same filter the same way."""
    from backend.errors import ApiError
    from backend.services import policies
    from backend.services.scoring import parse_day

    start, end = args.get("from") or None, args.get("to") or None
    day_from = parse_day(start, today) if start else None
    day_to = parse_day(end, today) if end else None
    if day_from is not None and day_to is not None and day_from > day_to:
        raise ApiError(400, "invalid_date", "from is after to")
    policy = args.get("policy") or None
    if policy is not None:
        policies.get(tenant_id, policy)  # 404 for an unknown policy, not an empty report
    return policy, day_from, day_to
