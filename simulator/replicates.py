"""Replicates: one policy on the same campus size over many seeds, with Mesa's `batch_run`.

Each replicate is a `CampusModel` run for a fixed number of days; its last collected row
carries the results against the holdout and the truth, so the spread of estimates — and how
often their intervals cover the truth — can be read across seeds.
"""

from __future__ import annotations

from collections.abc import Iterable

import mesa

from backend.core.policy import Policy
from simulator.model import CampusModel
from simulator.run import DEFAULT_COUPONS


def replicates(
    policy: Policy,
    users: int,
    days: int,
    seeds: Iterable[int],
    warmup: int = 28,
    coupons: dict | None = None,
) -> list[dict]:
    """One row per seed: the seed, the last day's measures and `result` (arms, uplift)."""
    rows = mesa.batch_run(
        CampusModel,
        parameters={
            "users": users,
            "policy": [policy],
            "warmup_days": warmup,
            "run_days": warmup + days,
            # Lists, not dicts: batch_run would sweep over a dict's keys.
            "coupon_face_fen": [dict(DEFAULT_COUPONS if coupons is None else coupons)],
        },
        rng=list(seeds),
        max_steps=warmup + days,
        data_collection_period=-1,
        number_processes=1,
        display_progress=False,
    )
    return sorted(rows, key=lambda r: r["seed"])
