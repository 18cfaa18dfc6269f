"""Trigger policies decided when their event arrives, inside the request that stored it."""

from __future__ import annotations

import logging

from backend.core.calendar import china_day
from backend.core.policy import Policy, decide
from backend.services import policies
from backend.services.campaigns.learnt import policy_state
from backend.services.campaigns.outbox import touch_rows, write_touches
from backend.services.campaigns.population import latest_snapshot_day, population
from backend.store.models import Policy as PolicyRow
from backend.store.models import Tenant

log = logging.getLogger(__name__)


def on_events(tenant: Tenant, triggers: dict[str, set[int]], now_ms: int, seed: int = 0) -> int:
    """Decide trigger policies for users whose events just arrived; returns touches queued.

    `triggers` maps an event type to the users who sent it. Decided within the request that
    stored the event; delivery happens right after (see delivery.kick). One policy's failure
    is logged and does not stop the others (the caller must not fail the request either).
    """
    queued = 0
    day = int(china_day(now_ms))
    for row, policy in policies.active_rows(tenant.id, trigger=True):
        users = sorted(triggers.get(policy.trigger or "", set()))
        if not users:
            continue
        try:
            queued += _trigger_policy(tenant, row, policy, users, day, now_ms, seed)
        except Exception:
            log.exception("trigger policy %s of tenant %s failed", row.name, tenant.appid)
    return queued


def _trigger_policy(
    tenant: Tenant, row: PolicyRow, policy: Policy, users: list[int], day: int, now_ms: int, seed
) -> int:
    """Decide one trigger policy for `users` on the latest scores; returns touches queued."""
    snapshot_day = latest_snapshot_day(tenant.id, day)
    if snapshot_day is None:
        return 0
    pop = population(tenant.id, row, policy, day, snapshot_day, only=users, triggered=users)
    if not len(pop.user_ids):
        return 0
    state = policy_state(tenant.id, row, policy)
    d = decide(policy, pop.state, state, salt=tenant.appid, day=day, seed=seed)
    rows = touch_rows(tenant.id, row, policy, pop, d, day, now_ms, None)
    return write_touches(rows)["queued"]
