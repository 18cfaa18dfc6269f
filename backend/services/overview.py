"""What the dashboard's overview shows besides the report: tiers over time and who slipped
this week. Read from the nightly score snapshots, so the numbers are the ones the job used."""

from __future__ import annotations

import peewee as pw

from backend.core.calendar import day_date
from backend.core.tiers import TIERS
from backend.services.scoring import latest_day
from backend.store.models import ScoreSnapshot, User

TIER_CHART_DAYS = 60  # how far back the overview's tiers-over-time chart reaches
LAPSE_WINDOW_DAYS = 7
LAPSED_SHOWN = 20


def tier_history(tenant_id: int, days: int = TIER_CHART_DAYS) -> dict:
    """Users per tier on each scored day of the last `days` (oldest first): the overview's
    chart of how the tenant's users move between tiers."""
    last = latest_day(tenant_id)
    if last is None:
        return {"dates": [], "tiers": {t: [] for t in TIERS}}
    rows = (
        ScoreSnapshot.select(ScoreSnapshot.day, ScoreSnapshot.tier, pw.fn.COUNT(ScoreSnapshot.id))
        .where((ScoreSnapshot.tenant == tenant_id) & (ScoreSnapshot.day > last - days))
        .group_by(ScoreSnapshot.day, ScoreSnapshot.tier)
        .tuples()
    )
    counts: dict[int, dict[str, int]] = {}
    for day, tier, n in rows:
        counts.setdefault(day, {})[tier] = int(n)
    ordered = sorted(counts)
    return {
        "dates": [day_date(d).isoformat() for d in ordered],
        "tiers": {t: [counts[d].get(t, 0) for d in ordered] for t in TIERS},
    }


def lapsed_this_week(tenant_id: int, limit: int = LAPSED_SHOWN) -> dict:
    """Users whose tier got worse over the last week (e.g. active → churn risk), most valuable
    first: the people a merchant would call about."""
    last = latest_day(tenant_id)
    if last is None:
        return {"date": None, "since": None, "count": 0, "users": []}
    rank = {t: i for i, t in enumerate(TIERS)}
    before_day = (
        ScoreSnapshot.select(pw.fn.MAX(ScoreSnapshot.day))
        .where(
            (ScoreSnapshot.tenant == tenant_id) & (ScoreSnapshot.day <= last - LAPSE_WINDOW_DAYS)
        )
        .scalar()
    )
    if before_day is None:
        return {"date": day_date(last).isoformat(), "since": None, "count": 0, "users": []}
    # Only users whose tier changed between the two days come out of the database.
    before = ScoreSnapshot.alias()
    changed = (
        ScoreSnapshot.select(
            User.openid,
            before.tier,
            ScoreSnapshot.tier,
            ScoreSnapshot.days_since_visit,
            ScoreSnapshot.value_fen,
        )
        .join(User, on=(ScoreSnapshot.user == User.id))
        .join_from(
            ScoreSnapshot,
            before,
            on=(
                (before.user == ScoreSnapshot.user)
                & (before.tenant == tenant_id)
                & (before.day == before_day)
            ),
        )
        .where(
            (ScoreSnapshot.tenant == tenant_id)
            & (ScoreSnapshot.day == last)
            & (ScoreSnapshot.tier != before.tier)
            & (before.tier != "new")  # not a level of engagement: new → active is no slip
        )
        .tuples()
    )
    slipped = [
        {
            "openid": openid,
            "from": was,
            "to": tier,
            "days_since_visit": int(silent),
            "value_fen": int(value),
        }
        for openid, was, tier, silent, value in changed
        if rank[tier] > rank[was]
    ]
    slipped.sort(key=lambda u: (-u["value_fen"], u["openid"]))
    return {
        "date": day_date(last).isoformat(),
        "since": day_date(before_day).isoformat(),
        "count": len(slipped),
        "users": slipped[:limit],
    }
