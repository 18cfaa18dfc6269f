"""The source playbooks' outcomes (SEED_DIGEST §6), measured on the simulated campus.

Counted as the report counts them (backend/core/recall.py): recall is among the students
lapsed at decision, each counted once at their first decision, with the holdout's lapsed
students beside it, so the gap is the messages' doing and not a difference in who was picked.
D30 retention after recall compares the lapsed students a coupon brought back (coupon_blast's
one coupon) with those content brought back (golden_window's caring messages and reminders).

The source's figures: blanket recall about 15% (`coupon_blast`), tiered recall about 35%
(`tiered`), and coupon-recalled students keeping about half the D30 retention of
content-recalled ones (19% vs 38%). The simulated campus meets the first and the third; the
tiered figure is not met (about 4% among the lapsed it targets: its journey starts at 3
silent days, so students lapsing during the trial are first decided while active and count
as retention; its lapsed first decisions are the students already silent 11-28 days at the
trial's start, reached first by the care arm's day-11 coupon). That is who is picked, not how
they answer: with the golden window off tiered still reaches only 12-17% (blanket 26-27%).
The blanket's 15% itself rests on the campus at the default 28-day warm-up (12-13% after 56
days, 8-9% after 90); docs/simulator.md has the measurements.
"""

from __future__ import annotations

import json

from backend.core.metrics import rate
from simulator.run import load_policy, run_simulation

SOURCE = {
    "blanket_recall": 0.15,
    "tiered_recall": 0.35,
    "coupon_d30": 0.19,
    "content_d30": 0.38,
}


def lapsed_recall(result: dict, holdout: bool = False) -> dict:
    """Recall among the lapsed of the policy's arms (or of its holdout), with its n."""
    groups = [g for name, g in result["arms"].items() if (name == "holdout") == holdout]
    k = sum(g["recalled"] for g in groups)
    n = sum(g["lapsed"] for g in groups)
    return rate(k, n).as_dict()


def _retention_d30(result: dict) -> float | None:
    """D30 retention of the treated students recalled, pooled over the policy's arms: the
    retained over the recalled whose D30 is known (each arm's `retention_d30_n`, not all it
    recalled: a return too late in the trial has no D30 yet)."""
    arms = [g for name, g in result["arms"].items() if name != "holdout"]
    known = [g for g in arms if g["retention_d30"] is not None]
    k = sum(round(g["retention_d30"] * g["retention_d30_n"]) for g in known)
    return rate(k, sum(g["retention_d30_n"] for g in known)).rate


def measure(users: int = 4000, days: int = 120, seed: int = 1, params=None) -> dict:
    """The four figures on one simulated campus (the same population for every policy), and
    each policy's holdout beside its recall."""
    runs = {
        name: run_simulation(load_policy(name), users, days, seed, params=params)
        for name in ("coupon_blast", "tiered", "golden_window")
    }
    return {
        "blanket_recall": lapsed_recall(runs["coupon_blast"])["rate"],
        "blanket_holdout": lapsed_recall(runs["coupon_blast"], holdout=True)["rate"],
        "tiered_recall": lapsed_recall(runs["tiered"])["rate"],
        "tiered_holdout": lapsed_recall(runs["tiered"], holdout=True)["rate"],
        "coupon_d30": _retention_d30(runs["coupon_blast"]),
        "content_d30": _retention_d30(runs["golden_window"]),
    }


if __name__ == "__main__":
    got = measure()
    print(json.dumps({k: {"source": SOURCE.get(k), "simulated": v} for k, v in got.items()}))
