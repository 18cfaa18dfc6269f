"""The power block of a report: how far each policy's holdout comparison is from the size
that would detect its effect at 80% power, and how many days that takes at its current volume
(docs/metrics.md, "Power"). Apart from the measures because it needs what the touches do not
say: the policy's configured holdout share, whether it runs, and how many users it decides a day.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from backend.core import metrics
from backend.core.policy import PolicyError
from backend.core.power import holdout_plan
from backend.services.policies import loaded
from backend.store.db import database
from backend.store.models import SEND_STATUSES, Policy

# The effect a policy is planned to detect until its own holdout comparison shows a significant
# one, and how far back "current volume" looks.
PLANNING_EFFECT = 0.05  # +5 percentage points of recall
VOLUME_DAYS = 28


@dataclass(frozen=True)
class Design:
    """What the power block needs to know of a policy beyond its touches."""

    holdout_share: float | None  # as configured now; None if the stored source is unreadable
    live: bool
    eligible_per_day: float  # users decided for the first time a day, lately


def designs(tenant_id: int, policy: str | None = None) -> dict[str, Design]:
    """Per policy: its holdout share, whether it runs, and its current volume — users whose
    first decision (a send or a holdout, finished or not) fell in the last VOLUME_DAYS of the
    policy's decisions, per day. Volume ignores the report's date filter: it is about now."""
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
    power (core.power.holdout_plan; docs/metrics.md, "Power").

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
    plan = holdout_plan(p_control, effect, share, volume, n_holdout_now=n_h, n_treated_now=n_t)
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
