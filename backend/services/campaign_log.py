"""What the campaign job left for merchants to read: its runs and the touches it decided,
newest first, as the admin API and the dashboard list them."""

from __future__ import annotations

import json

from backend.core.calendar import day_date
from backend.core.clock import china_iso
from backend.store.models import CampaignRun, Touch
from backend.store.models import Policy as PolicyRow

RECENT_RUNS = 50


def recent_runs(tenant_id: int) -> list[dict]:
    """The tenant's latest job runs with their status and summary: did last night's run
    finish, and what did it do."""
    rows = (
        CampaignRun.select()
        .where(CampaignRun.tenant == tenant_id)
        .order_by(CampaignRun.id.desc())
        .limit(RECENT_RUNS)
    )
    return [
        {
            "id": r.id,
            "date": day_date(r.day).isoformat(),
            "status": r.status,
            "started_at": china_iso(r.started_ms),
            "finished_at": china_iso(r.finished_ms) if r.finished_ms else None,
            "summary": json.loads(r.summary),
        }
        for r in rows
    ]


def user_touches(tenant_id: int, user_id: int, limit: int) -> list[Touch]:
    """The user's latest `limit` touches with their policy's name: what was decided for
    them, sent, held out or skipped, and why."""
    return list(
        Touch.select(Touch, PolicyRow.name)
        .join(PolicyRow)
        .where((Touch.tenant == tenant_id) & (Touch.user == user_id))
        .order_by(Touch.day.desc(), Touch.id.desc())
        .limit(limit)
    )


def policy_touches(tenant_id: int, policy_id: int, limit: int) -> list[Touch]:
    """The policy's latest `limit` touches with its name, for its page's recent list."""
    return list(
        Touch.select(Touch, PolicyRow.name)
        .join(PolicyRow)
        .where((Touch.tenant == tenant_id) & (Touch.policy == policy_id))
        .order_by(Touch.day.desc(), Touch.id.desc())
        .limit(limit)
    )
