"""Reports from the database: the core metrics over a tenant's finished touches.

Unit of analysis: the user, at their first decision in the group (a policy, an arm, a tier):
treated if it was decided as a send — delivered or not (intention to treat) — held out if it
was a holdout "would have sent" touch. *Recall* is counted among the users lapsed at that
decision (backend.core.recall: silent past the tiers' risk threshold, from the day's score
snapshot; the recorded tier where there is none), treated against the holdout's lapsed; what
users still active at decision did is their *retention* (`retention_active`), never recall.
Only touches whose window has closed are counted, so a report never mixes final and
provisional outcomes.

Each policy also carries `power` (services/report_power.py): how far its holdout comparison is
from the size that would detect its effect at 80% power, and how many days that takes at its
current volume. The touches are read as core.touches.TouchColumns, the type calibration reads.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import peewee as pw

from backend.core import metrics
from backend.core.calendar import day_date
from backend.core.recall import lapsed_at_decision
from backend.core.tiers import TierConfig
from backend.core.touches import TouchColumns
from backend.errors import ApiError
from backend.services import policies
from backend.services.attribution import MEASURED
from backend.services.report_power import designs, power
from backend.services.scoring import parse_day, tier_config
from backend.store.db import database
from backend.store.models import SEND_STATUSES, CouponTemplate, Policy, Tenant, Touch

DIMENSIONS = ("arm", "tier", "channel")

# A nullable flag as 1 yes, 0 no, -1 not yet known.
_KNOWN = "CASE WHEN {0} IS NULL THEN -1 WHEN {0} THEN 1 ELSE 0 END"
# What `load` reads, by TouchColumns field: the SQL of each column and its dtype (None: text,
# coded). A column is found by its name here, never by its place in the SELECT.
_COLUMNS: tuple[tuple[str, str, type | None], ...] = (
    ("policy", "p.name", None),
    ("arm", "t.arm", None),
    ("tier", "t.tier", None),
    ("channel", "t.channel", None),
    ("status", "t.status", None),
    ("holdout", "t.holdout", bool),
    ("user", "t.user_id", np.int64),
    ("day", "t.day", np.int64),
    ("step", "t.step", np.int64),
    ("returned", "t.returned_ms IS NOT NULL", bool),
    ("ordered", "t.ordered_ms IS NOT NULL", bool),
    ("opened", "t.opened_ms IS NOT NULL", bool),
    ("attempted", "t.attempts > 0", bool),
    ("revenue", "t.revenue_fen", np.int64),
    ("coupon_cost", "t.coupon_cost_fen", np.int64),
    ("message_cost", "t.message_cost_fen", np.int64),
    ("value", "t.value_fen", np.int64),
    ("retained_d7", _KNOWN.format("t.retained_d7"), np.int8),
    ("retained_d30", _KNOWN.format("t.retained_d30"), np.int8),
    # Not a column of its own: with the tier it says whether the user was lapsed at decision.
    ("term_days_silent", "COALESCE(s.term_days_since_visit, -1)", np.int64),
)
# Calibration also reads each touch's message (for its kind); the report does not, and coding
# one more text column costs time over a tenant's million touches.
_MESSAGE = ("message", "t.message", None)
_SQL = """
SELECT {columns}
FROM touch t JOIN policy p ON p.id = t.policy_id
LEFT JOIN score_snapshot s
  ON s.tenant_id = t.tenant_id AND s.day = t.day AND s.user_id = t.user_id
WHERE t.tenant_id = {p} AND t.attributed AND t.status IN ({statuses})
"""


def load(
    tenant_id: int,
    policy: str | None = None,
    day_from: int | None = None,
    day_to: int | None = None,
    with_messages: bool = False,
) -> TouchColumns:
    """Finished touches (window closed) decided as sends or holdouts, in one query.

    Through the driver's cursor rather than peewee's row objects: a tenant's report reads
    every finished touch, and building a Python object per row would cost most of its time.
    The set is attribution's MEASURED (intention to treat), narrowed by the report's filter.

    Returns
    -------
    TouchColumns with every column but `kind` (and `message` unless `with_messages`); `user`
    is the database user id, `lapsed` decided by the tenant's tiers (core.recall).
    """
    spec = (*_COLUMNS, _MESSAGE) if with_messages else _COLUMNS
    ph = database.param
    sql = _SQL.format(
        columns=", ".join(expr for _, expr, _ in spec),
        p=ph,
        statuses=", ".join(f"'{s}'" for s in MEASURED),
    )
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
    values = list(zip(*rows, strict=True)) if rows else [()] * len(spec)
    text, numbers = {}, {}
    for (name, _, dtype), column in zip(spec, values, strict=True):
        if dtype is None:
            text[name] = column
        else:
            numbers[name] = np.array(column, dtype=dtype)
    silent = numbers.pop("term_days_silent")
    lapsed = lapsed_at_decision(
        np.array(text["tier"], dtype=object), silent, _tier_config(tenant_id)
    )
    return TouchColumns.with_text(**text, **numbers, lapsed=lapsed)


def _tier_config(tenant_id: int) -> TierConfig:
    """The tenant's tier thresholds (its `tiers` settings over the defaults), which say who
    was lapsed at decision."""
    return tier_config(Tenant.get_by_id(tenant_id))


def _per_user(t: TouchColumns):
    """One row per user: their first touch in the group (docs/metrics.md, "the unit")."""
    first = metrics.first_per_user(t.user, t.order())
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
    still active are their retention (`retention_active`).

    Parameters
    ----------
    t : the group's touches, as `load` gives them (holdout, user, day, step, returned,
        ordered, revenue and the costs, lapsed, retained_d7/d30).
    seed : the bootstrap's seed for the revenue difference.

    Returns
    -------
    The measures by name (docs/metrics.md), each rate with its interval.
    """
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
    """Per channel, how the treated touches thinned out: sent, delivered, opened, returned,
    ordered. Where a channel loses its users shows here, not in the recall rate.

    Parameters
    ----------
    t : touches with holdout, channel, attempted, status, opened, returned and ordered.

    Returns
    -------
    One row per channel that sent, by channel name.
    """
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
    """Recalled users by ISO week of the decision × still active at D7 and D30: whether the
    users a policy brings back stay, week by week.

    Parameters
    ----------
    t : touches with holdout, returned, day and retained_d7/d30 (-1 not yet known).

    Returns
    -------
    One row per week with a treated return, oldest first.
    """
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
    """The live report: per policy (and by arm, tier, channel) the measures of `compare`, its
    power, funnel, cohorts and Qini, beside the ledger and the spend. The API, the dashboard
    and the command line all show this one dictionary."""
    t = load(tenant_id, policy, day_from, day_to)
    out = {
        "from": day_date(day_from).isoformat() if day_from is not None else None,
        "to": day_date(day_to).isoformat() if day_to is not None else None,
        "policies": [],
        "ledger": ledger(tenant_id, policy, day_from, day_to),
        "spend": spend(tenant_id, policy, day_from, day_to),
    }
    by_policy = designs(tenant_id, policy)
    for code in sorted(np.unique(t.policy), key=lambda c: t.names["policy"][c]):
        p = t.take(np.flatnonzero(t.policy == code))
        entry = {"policy": t.names["policy"][code], **compare(p, seed)}
        entry["power"] = power(entry, by_policy.get(entry["policy"]))
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


def _qini_users(p: TouchColumns) -> dict:
    """One row per (user, group): targeting by the estimated value the policy saw.

    Parameters
    ----------
    p : one policy's touches, with user, holdout, value and returned.

    Returns
    -------
    score (the highest value seen), treated and returned, one per (user, group).
    """
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
        spec = policies.loaded(row)
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
    start, end = args.get("from") or None, args.get("to") or None
    day_from = parse_day(start, today) if start else None
    day_to = parse_day(end, today) if end else None
    if day_from is not None and day_to is not None and day_from > day_to:
        raise ApiError(400, "invalid_date", "from is after to")
    policy = args.get("policy") or None
    if policy is not None:
        policies.get(tenant_id, policy)  # 404 for an unknown policy, not an empty report
    return policy, day_from, day_to
