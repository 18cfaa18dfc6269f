"""The default campus's shape after warm-up, measured (docs/simulator.md, "Campus shape").

    python -m simulator.shape [--users 20000] [--warmup 28] [--seeds 1 2 3]

No policy runs: the organic campus lives the warm-up from Monday 2026-03-02 (spring term)
and is scored each morning as the simulator scores it. Reported per seed, then averaged:
the share churned (left the campus), daily actives (share of users visiting on the last
week's term weekdays and weekend days), visit-days per user in the last 7 days, paid orders
per visit-day, and the tier shares on the morning after the warm-up.
"""

from __future__ import annotations

import argparse

import numpy as np

from backend.core.calendar import is_weekend
from backend.core.tiers import TIERS
from simulator.model import CampusModel


def measure(users: int, warmup: int, seed: int) -> dict[str, float]:
    """One seed's campus after the warm-up: the measures the module docstring lists."""
    model = CampusModel(users=users, seed=seed, keep_log=False)
    visits, weekend, orders = [], [], []
    for _ in range(warmup):
        model.step()
        day = model.day - 1
        visits.append(int(model.today.visited.sum()))
        weekend.append(bool(is_weekend(day)))
        orders.append(int(model.today.ordered.sum()))
    model.nightly(model.day)  # the morning after the warm-up
    model.close()
    v, w = np.array(visits[-7:]), np.array(weekend[-7:])
    out = {
        "churned": float(model.state.churned.mean()),
        "daily_active_weekday": float(v[~w].mean() / users),
        "daily_active_weekend": float(v[w].mean() / users) if w.any() else float("nan"),
        "visit_days_per_user_last_7": float(v.sum() / users),
        "orders_per_visit_day": float(np.sum(orders[-7:]) / max(v.sum(), 1)),
    }
    for i, name in enumerate(TIERS):
        out[f"tier_{name}"] = float(np.mean(model.scores.tier == i))
    return out


def main() -> None:
    """`python -m simulator.shape`: measure each seed, print them and their mean."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--warmup", type=int, default=28)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    a = ap.parse_args()
    rows = [measure(a.users, a.warmup, s) for s in a.seeds]
    print(f"default campus, {a.users} users, after {a.warmup} days (seeds {a.seeds}):")
    for key in rows[0]:
        vals = [r[key] for r in rows]
        each = ", ".join(f"{100 * x:.1f}" for x in vals)
        if key.startswith(("visit_days", "orders_per")):
            each = ", ".join(f"{x:.2f}" for x in vals)
            print(f"  {key:<28} {np.mean(vals):6.2f}   ({each})")
        else:
            print(f"  {key:<28} {100 * np.mean(vals):5.1f}%   ({each})")


if __name__ == "__main__":
    main()
