"""A policy's dry run for the admin and the dashboard: what the job would decide, sent nowhere."""

from __future__ import annotations

from backend.core.calendar import day_date
from backend.core.policy import Policy, decide
from backend.errors import ApiError
from backend.services.campaigns.learnt import policy_state
from backend.services.campaigns.outbox import touch_rows
from backend.services.campaigns.population import latest_snapshot_day, population
from backend.services.campaigns.summary import policy_summary, sample
from backend.store.models import Policy as PolicyRow


def preview(row: PolicyRow, policy: Policy, day: int, now_ms: int) -> dict:
    """Dry run of `policy` (saved, or an edit of the saved `row`) on the latest scored day up
    to `day`: what the job would decide, written and sent nowhere."""
    tenant_id = row.tenant_id
    snap = latest_snapshot_day(tenant_id, day)
    if snap is None:
        raise ApiError(404, "not_scored", "no scores yet: run `python app.py score`")
    pop = population(tenant_id, row, policy, day, snap)
    state = policy_state(tenant_id, row, policy)
    d = decide(policy, pop.state, state, salt=row.tenant.appid, day=day)
    rows = touch_rows(tenant_id, row, policy, pop, d, day, now_ms, None)
    out = policy_summary(policy, pop, d)
    out["sample"] = sample(rows, pop)
    out["date"] = day_date(day).isoformat()
    out["scores_from"] = day_date(snap).isoformat()
    out["paused_arms"] = [a.name for a, p in zip(policy.arms, state.paused, strict=True) if p]
    return out
