"""What a run, a dry run or a preview reports: counts per status, per tier × arm, a sample."""

from __future__ import annotations

from collections import Counter

import numpy as np

from backend.core.calendar import day_date
from backend.core.clock import china_iso
from backend.core.policy import HOLDOUT, SEND, SKIPPED, Decisions, Policy
from backend.core.policy.guards import next_allowed_ms
from backend.core.tiers import TIERS
from backend.services.campaigns.population import Population
from backend.store.models import Tenant

DELIVERED = ("sent", "deferred", "failed", "expired")  # what delivery's counts add


def new_summary(tenant: Tenant, day: int, now_ms: int, dry_run: bool) -> dict:
    """A run's summary before anything is decided (the shape `run-campaigns --json` prints)."""
    return {
        "tenant": tenant.appid,
        "date": day_date(day).isoformat(),
        "dry_run": dry_run,
        "decided": 0,
        "held_out": 0,
        "queued": 0,
        "sent": 0,
        "deferred": 0,
        "skipped": 0,
        "failed": 0,
        "expired": 0,
        "quiet_hours_deferred": 0,
        "quiet_hours_now": next_allowed_ms(now_ms) != now_ms,
        "skipped_by_reason": {},
        "policies": {},
        "policies_unreadable": [],
    }


def add_policy(summary: dict, policy: Policy, per: dict, written: Counter, d: Decisions) -> None:
    """Add one policy's outcome to the run's summary: its table (`per`), the touches newly
    written by status, and how many quiet hours pushed to the morning."""
    per["written"] = dict(written)
    summary["policies"][policy.name] = per
    summary["held_out"] += written["held_out"]
    summary["queued"] += written["queued"]
    summary["skipped"] += written["skipped"]
    summary["decided"] += sum(written.values())
    summary["quiet_hours_deferred"] += int(d.quiet_deferred.sum())


def policy_summary(policy: Policy, pop: Population, d: Decisions) -> dict:
    """Counts by tier × arm of sends and holdouts (what --dry-run shows first)."""
    table: dict[str, dict[str, dict[str, int]]] = {}
    for status, label in ((SEND, "send"), (HOLDOUT, "holdout")):
        for i in np.flatnonzero(d.status == status):
            tier = TIERS[int(pop.tier[i])]
            arm = policy.arms[int(d.arm[i])].name
            cell = table.setdefault(tier, {}).setdefault(arm, {"send": 0, "holdout": 0})
            cell[label] += 1
    return {
        "users": len(pop.user_ids),
        "send": d.count(SEND),
        "holdout": d.count(HOLDOUT),
        "skipped": d.count(SKIPPED),
        "by_tier_arm": table,
        "reasons": d.reason_counts(),
    }


def sample(rows: list[dict], pop: Population, k: int = 10) -> list[dict]:
    """The first `k` touch rows that act (sent or held out), as a merchant reads them."""
    openid = dict(zip(pop.user_ids.tolist(), pop.openids, strict=True))
    picked = [r for r in rows if r["status"] != "skipped"][:k]
    return [
        {
            "user": openid[r["user"]],
            "tier": r["tier"],
            "arm": r["arm"],
            "holdout": r["holdout"],
            "channel": r["channel"],
            "step": r["step"],
            "message": r["message"],
            "coupon": r["coupon_template"],
            "send_at": china_iso(r["send_after_ms"]),
        }
        for r in picked
    ]
