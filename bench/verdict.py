"""Does the twin's verdict name the right policy? (issue 15)

10 seeds, each one `compare` trial of the three presets coupon_blast, tiered and golden_window
on 20,000 simulated students: 28 days of history then 60 trial days (the demo's length; 30
runs of 20k students take about a minute on 2 cores). For each seed:

- the verdict's winner: the top policy by extra profit against the twin, named only if the
  verdict says it beats every other policy (else the trial names none);
- whether it is the population's winner: the largest mean paired profit over all 10 seeds
  (what a merchant's campus of this size can expect);
- claims the other seeds contradict: a pair said better (or worse) whose direction disagrees
  with the 10-seed pooled difference;
- the baseline, measured in the same runs: the old ranking by incremental recall against each
  policy's own holdout, and how often its winner is the true winner (by profit, and by the
  twin's incremental recall it was meant to rank).

Not counted, because they cannot fail: a claim whose own interval holds 0 (the verdict claims
only when its interval excludes 0), and the named winner against the seed's own top profit
(the winner is the top by that same value).

Runs with no arguments; its last line is one JSON object of the figures.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simulator.run import compare, load_policy  # noqa: E402

PRESETS = ("coupon_blast", "tiered", "golden_window")
SEEDS = range(10)
USERS, DAYS, WARMUP = 20_000, 60, 28


def main() -> dict:
    started = time.monotonic()
    policies = [load_policy(name) for name in PRESETS]
    trials = []
    for seed in SEEDS:
        out = compare(policies, USERS, DAYS, seed, WARMUP)
        rows = {r["policy"]: r for r in out["ranking"]}
        top = out["ranking"][0]["policy"]
        beats = {v["b"] for v in out["verdict"] if v["a"] == top and v["outcome"] == "better"}
        holdout = {n: r["holdout"]["incremental"]["diff"] for n, r in rows.items()}
        true_recall = {n: r["holdout"]["true_incremental"] for n, r in rows.items()}
        trials.append(
            {
                "seed": seed,
                "profit": {n: r["profit"]["value"] for n, r in rows.items()},
                "named": top if len(beats) == len(PRESETS) - 1 else None,
                "verdict": out["verdict"],
                "holdout_winner": max(holdout, key=lambda n: holdout[n] or float("-inf")),
                "true_recall_winner": max(true_recall, key=lambda n: true_recall[n] or 0.0),
                "summary": out["summary"],
            }
        )
        print(f"seed {seed}: {out['summary']}", flush=True)
    mean = {n: sum(t["profit"][n] for t in trials) / len(trials) for n in PRESETS}
    population_winner = max(mean, key=mean.get)
    wrong_way = claims = 0
    for t in trials:
        for v in t["verdict"]:
            if v["outcome"] == "cannot_tell":
                continue
            claims += 1
            sign = 1 if v["outcome"] == "better" else -1
            wrong_way += sign * (mean[v["a"]] - mean[v["b"]]) <= 0
    seed_winner = [max(t["profit"], key=t["profit"].get) for t in trials]
    figures = {
        "seeds": len(trials),
        "users": USERS,
        "days": DAYS,
        "warmup_days": WARMUP,
        "policies": list(PRESETS),
        "winner_named": sum(t["named"] is not None for t in trials),
        "winner_correct_vs_population": sum(t["named"] == population_winner for t in trials),
        "population_winner": population_winner,
        "mean_profit_fen": {n: round(v) for n, v in mean.items()},
        "pair_claims": claims,
        "pairs_judged": sum(len(t["verdict"]) for t in trials),
        "claims_against_pooled_direction": wrong_way,
        "baseline_holdout_winner_correct_by_profit": sum(
            t["holdout_winner"] == w for t, w in zip(trials, seed_winner, strict=True)
        ),
        "baseline_holdout_winner_correct_by_true_recall": sum(
            t["holdout_winner"] == t["true_recall_winner"] for t in trials
        ),
        "seconds": round(time.monotonic() - started, 1),
    }
    return figures


if __name__ == "__main__":
    print(json.dumps(main(), ensure_ascii=False))
