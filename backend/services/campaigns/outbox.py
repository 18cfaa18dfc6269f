"""Decisions into the outbox: touch rows, written once per (policy, user, day, step).

Delivery (services/delivery.py) works only from these rows, so what is written here in one
transaction is what will be sent, held out or shown as skipped with its reason.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from backend.core.calendar import day_date
from backend.core.clock import china_iso
from backend.core.policy import CHANNELS, HOLDOUT, REASONS, SEND, SKIPPED, Decisions, Policy
from backend.core.policy.guards import HOUR_MS, next_send_ms, planned_send_ms
from backend.core.tiers import TIERS
from backend.services.campaigns.population import Population
from backend.store.db import write_transaction
from backend.store.models import Policy as PolicyRow
from backend.store.models import Touch

EXPIRY_MS = 24 * HOUR_MS  # a touch not sent within a day of its time is not sent at all


def touch_rows(
    tenant_id: int,
    row: PolicyRow,
    policy: Policy,
    pop: Population,
    d: Decisions,
    day: int,
    now_ms: int,
    run_id: int | None,
) -> list[dict]:
    """The touch rows of a policy's decisions for `day`: `queued` (the outbox), `held_out`,
    or `skipped` with the reason, each with when it may go out and when it expires.

    `run_id` is the job run that decided them (None for triggers and previews); `now_ms`
    dates skips and, for a `send_now` trigger policy, the send.
    """
    acting = np.flatnonzero((d.status == SEND) | (d.status == HOLDOUT) | (d.status == SKIPPED))
    planned = planned_send_ms(day, d.defer_days, d.send_hour)
    out = []
    for i in acting:
        arm = policy.arms[d.arm[i]]
        touch = arm.touches[d.step[i]]
        status = {SEND: "queued", HOLDOUT: "held_out", SKIPPED: "skipped"}[int(d.status[i])]
        if policy.send_now:
            at = next_send_ms(now_ms, CHANNELS[touch.channel])
        elif d.status[i] == SKIPPED:
            at = now_ms
        else:
            at = int(planned[i])
        out.append(
            {
                "tenant": tenant_id,
                "policy": row.id,
                "run": run_id,
                "user": int(pop.user_ids[i]),
                "day": day,
                "arm": arm.name,
                "step": int(d.step[i]),
                "channel": CHANNELS[touch.channel],
                "message": touch.message,
                "coupon_template": touch.coupon,
                "tier": TIERS[int(pop.tier[i])],
                "holdout": bool(d.status[i] == HOLDOUT),
                "status": status,
                "reason": REASONS[int(d.reason[i])],
                "send_after_ms": at,
                "expires_ms": at + EXPIRY_MS,
                "sent_ms": at if status == "held_out" else None,
                "message_cost_fen": policy.costs_fen[touch.channel] if status == "queued" else 0,
                "value_fen": int(pop.value_fen[i]),
                "quiet_deferred": bool(d.quiet_deferred[i]),
            }
        )
    return out


_KEY = ("tenant", "policy", "user", "day", "step")


def write_touches(rows: list[dict]) -> Counter:
    """Insert in one transaction; rows already decided (same policy, user, day, step) are
    left as they are, except a skip that has become a send or holdout. Returns what was
    newly written, by status."""
    written: Counter = Counter()
    if not rows:
        return written
    with write_transaction():
        for start in range(0, len(rows), 500):
            chunk = rows[start : start + 500]
            for r in chunk:
                query = Touch.insert(**r)
                if r["status"] == "skipped":
                    query = query.on_conflict_ignore()
                else:
                    # A user skipped earlier today (no allowance yet, say) whom an hourly
                    # rerun can now reach: the skipped row becomes the real decision.
                    changes = {k: v for k, v in r.items() if k not in _KEY}
                    query = query.on_conflict(
                        conflict_target=[Touch.policy, Touch.user, Touch.day, Touch.step],
                        update=changes,
                        where=(Touch.status == "skipped"),
                    )
                if query.as_rowcount().execute():
                    written[r["status"]] += 1
    return written


def touch_dict(t: Touch) -> dict:
    """A touch as the admin API and the dashboard show it: names, China times, its outcome."""

    def at(ms):
        return china_iso(ms) if ms is not None else None

    return {
        "id": t.id,
        "policy": t.policy.name,
        "date": day_date(t.day).isoformat(),
        "arm": t.arm,
        "step": t.step,
        "channel": t.channel,
        "message": t.message,
        "tier": t.tier,
        "holdout": t.holdout,
        "status": t.status,
        "reason": t.reason or None,
        "send_after": at(t.send_after_ms),
        "sent_at": at(t.sent_ms),
        "attempts": t.attempts,
        "wechat_errcode": t.wechat_errcode,
        "coupon_id": t.coupon_id,
        "returned_at": at(t.returned_ms),
        "ordered_at": at(t.ordered_ms),
        "revenue_fen": t.revenue_fen,
        "coupon_cost_fen": t.coupon_cost_fen,
        "message_cost_fen": t.message_cost_fen,
        "final": t.attributed,
    }
