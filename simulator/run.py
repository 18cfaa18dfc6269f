"""Running simulations: one policy against its holdout and the twin (`run_simulation`), or
several on the same campus and dice, ranked and judged pair by pair (`compare`). Their text for
a terminal is simulator/terminal.py, their HTML report simulator/html.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from backend.core import metrics, paired, power, seeds
from backend.core.policy import Policy, parse_policy
from simulator import fanout
from simulator.model import CampusModel
from simulator.params import SimParams
from simulator.results import play
from simulator.terminal import power_warning, verdict_sentence

# The preset policies hand out this coupon; its face value is what a redemption costs.
DEFAULT_COUPONS = {"专属回归券满15减5": (500, 1500)}  # face value, minimum spend


def policy_path(ref: str) -> Path:
    """A preset name (seeds/policies/NAME.yaml) or a path to a policy file."""
    path = Path(ref)
    if not path.exists():
        path = seeds.preset_path(ref)
    if not path.exists():
        names = seeds.preset_names()
        raise ValueError(f"no policy file {ref!r} and no preset of that name; presets: {names}")
    return path


def load_policy(ref: str) -> Policy:
    """A preset or a policy file, parsed and checked as production parses a merchant's."""
    return parse_policy(policy_path(ref).read_text(encoding="utf-8"))


def run_simulation(
    policy: Policy,
    users: int,
    days: int,
    seed: int,
    warmup: int = 28,
    progress: Callable[[int], None] | None = None,
    coupons: dict[str, tuple[int, int]] | None = None,
    params: SimParams | None = None,
) -> dict:
    """`params`: the campus's parameters (a calibrated file, `SimParams.load`); None for the
    defaults. Its response overrides, if any, drive the answers to messages. The result carries
    `holdout` (what production's report would show, `pooled`), `power` (can this policy's own
    holdout detect the effect the twin predicts? `power_plan`) and `warning` (said when not)."""
    result = simulate_paired(policy, users, days, seed, warmup, progress, coupons, params)[0]
    estimate = pooled(result)
    plan = power_plan(policy, estimate, days)
    result["holdout"] = estimate
    result["power"] = plan
    result["warning"] = power_warning(policy.name, plan)
    return result


def simulate_paired(
    policy: Policy,
    users: int,
    days: int,
    seed: int,
    warmup: int = 28,
    progress: Callable[[int], None] | None = None,
    coupons: dict[str, tuple[int, int]] | None = None,
    params: SimParams | None = None,
) -> tuple[dict, dict[str, np.ndarray]]:
    """One simulation: its simulate-shaped results and each user's trial books in both
    worlds (`CampusModel.per_user`)."""
    faces = dict(DEFAULT_COUPONS if coupons is None else coupons)
    model = CampusModel(
        users=users,
        seed=seed,
        policy=policy,
        coupon_face_fen=faces,
        warmup_days=warmup,
        params=params,
    )
    try:
        arms, uplift, daily = play(model, warmup + days, progress)
    finally:
        model.close()
    config = {
        "policy": policy.name,
        "description": policy.description,
        "users": users,
        "days": days,
        "seed": seed,
        "warmup_days": warmup,
    }
    if params is not None:
        config["params"] = params.extra.get("summary", "custom parameters")
    result = {
        "config": config,
        "arms": arms,
        "uplift": uplift,
        "daily": daily.iloc[warmup:].to_dict(orient="list"),
    }
    return result, model.per_user()


def pooled(result: dict) -> dict:
    """What production's report would show for this policy: recall among the users lapsed at
    decision (core.recall) on both sides, each user counted once (at their first decision),
    and one `metrics.newcombe_diff` of all the policy's lapsed treated users against its lapsed
    holdout — the same call backend/services/reports.py makes, not a second formula. Beside it
    the twin's truth for the same users, the arms' true effects weighted by their lapsed treated
    users. `treated` and `holdout_users` are the lapsed users compared (the recall rates' n,
    and what the power plan counts); the active users' returns are retention, not here."""
    names = [n for n in result["arms"] if n != "holdout"]
    arms = [result["arms"][n] for n in names]
    held = result["arms"]["holdout"]
    treated = sum(g["lapsed"] for g in arms)
    recalled = sum(g["recalled"] for g in arms)
    incremental = metrics.newcombe_diff(
        recalled, treated, held["recalled"], held["lapsed"]
    ).as_dict()
    true = [
        (result["uplift"][n]["true_uplift"]["recall_rate"], g["lapsed"])
        for n, g in zip(names, arms, strict=True)
    ]
    true = [(t, n) for t, n in true if t is not None]
    true_weight = sum(n for _, n in true)
    return {
        "treated": treated,
        "recalled": recalled,
        "recall": metrics.rate(recalled, treated).as_dict(),
        "holdout_users": held["lapsed"],
        "holdout_recalled": held["recalled"],
        "holdout_recall": metrics.rate(held["recalled"], held["lapsed"]).as_dict(),
        "incremental": incremental,
        "true_incremental": sum(t * n for t, n in true) / true_weight if true_weight else None,
        "messages": sum(g["messages"] for g in arms),
        "cost": sum(g["cost"] for g in arms),
        "committed_coupon_value": sum(g["committed_coupon_value"] for g in arms),
        "revenue": sum(g["revenue"] for g in arms),
    }


METRICS = ("students", "orders", "revenue", "cost", "profit")
# The merchant's unit of time: effects are also said per 30 days, the trial's total scaled by
# 30/days (a straight proportion: it assumes the effect accrues evenly over the trial).
MONTH_DAYS = 30
RANK_BY = ("profit", "students", "revenue")
UNITS = {"students": "students", "orders": "orders", "revenue": "fen", "cost": "fen"}


def one_run(
    policy: Policy,
    users: int,
    days: int,
    seed: int,
    warmup: int,
    coupons: dict[str, tuple[int, int]] | None,
    params: SimParams | None,
    margin: float,
    keep_result: bool,
    progress: Callable[[int], None] | None,
) -> tuple[dict | None, dict[str, np.ndarray]]:
    """One of `compare`'s runs (`compare_runs`): its result (if `keep_result`) and its per-user
    effects, the only parts `gather` keeps (so a child process or a task sends back no more)."""
    result, books = simulate_paired(policy, users, days, seed, warmup, progress, coupons, params)
    return (result if keep_result else None), per_user_effects(books, margin)


def per_user_effects(books: dict[str, np.ndarray], margin: float) -> dict[str, np.ndarray]:
    """Each user's outcome under the policy minus their untreated twin's: returning (visited
    in the trial), orders, revenue (fen); what was spent on them (fen; the twin spends
    nothing) and the extra profit at `margin`; and the coupon value committed to them."""
    revenue = books["revenue_fen"] - books["twin_revenue_fen"]
    return {
        "students": books["visited"].astype(np.int64) - books["twin_visited"],
        "orders": books["orders"].astype(np.int64) - books["twin_orders"],
        "revenue": revenue,
        "cost": books["cost_fen"],
        "profit": paired.profit(revenue, books["cost_fen"], margin),
        "committed_coupon_value": books["committed_coupon_fen"],
        "gross_revenue": books["revenue_fen"],
    }


def _effect(rows: list[np.ndarray]) -> dict:
    e = paired.paired_effect(np.vstack(rows)).as_dict()
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in e.items()}


def per_month(e: dict, days: int) -> dict:
    """A trial total (value/lo/hi/se) as a 30-day figure: scaled by MONTH_DAYS / days."""
    k = MONTH_DAYS / max(days, 1)
    return {key: round(e[key] * k, 4) for key in ("value", "lo", "hi", "se") if key in e}


def power_plan(policy: Policy, estimate: dict, days: int) -> dict | None:
    """Whether this policy's own holdout can detect its own predicted effect (the twin's, on
    recall at first decision): backend.core.power.holdout_plan at the volume simulated."""
    plan = getattr(power, "holdout_plan", None)
    p0, effect = estimate["holdout_recall"]["rate"], estimate["true_incremental"]
    if plan is None or p0 is None or effect is None:
        return None
    eligible = (estimate["treated"] + estimate["holdout_users"]) / max(days, 1)
    try:
        out = plan(
            p0,
            effect,
            policy.holdout_share,
            eligible,
            n_holdout_now=estimate["holdout_users"],
            n_treated_now=estimate["treated"],
        ).as_dict()
    except ValueError as exc:  # e.g. no effect to detect
        return {"error": str(exc), "detectable_now": False}
    return out


def compare(
    policies: list[Policy],
    users: int,
    days: int,
    seed: int,
    warmup: int = 28,
    progress: Callable[[int], None] | None = None,
    params: SimParams | None = None,
    coupons: dict[str, tuple[int, int]] | None = None,
    replicates: int = 1,
    rank_by: str = "profit",
    margin: float = paired.DEFAULT_MARGIN,
    processes: int | None = None,
) -> dict:
    """Every policy on the same population and the same dice (seeds seed..seed+R-1), ranked
    by its paired effect against the untreated twin on `rank_by`, every pair judged on the
    same users (backend/core/paired.py). Beside it, per policy, the holdout estimate
    production would see in one trial of this size (seed `seed`) and its power plan.
    `coupons`: name -> (face value, minimum spend) in fen (the presets' by default).
    `processes`: how many runs at once (simulator/fanout.py; None: one per core); the
    answer is the same bits however many. The runs (`compare_runs`) may as well be computed
    elsewhere, one at a time (`one_run`: the dashboard's trial spreads them over a task
    queue's workers), and handed to `gather` in their order."""
    if rank_by not in RANK_BY:
        raise ValueError(f"rank by one of {RANK_BY}, not {rank_by!r}")
    runs = compare_runs(policies, users, days, seed, warmup, params, coupons, replicates, margin)
    answers = fanout.run_all(one_run, runs, progress, processes)
    return gather(policies, answers, users, days, seed, warmup, params, replicates, rank_by, margin)


def compare_runs(
    policies: list[Policy],
    users: int,
    days: int,
    seed: int,
    warmup: int = 28,
    params: SimParams | None = None,
    coupons: dict[str, tuple[int, int]] | None = None,
    replicates: int = 1,
    margin: float = paired.DEFAULT_MARGIN,
) -> list[tuple]:
    """A comparison's independent runs, in the order `gather` takes their answers: each
    policy on each seed (seed-major), as `one_run`'s arguments less its progress callback.
    Each builds its own model from its own seed and shares nothing with the others."""
    if replicates < 1:
        raise ValueError("at least one replicate")
    names = [p.name for p in policies]
    if len(set(names)) != len(names):
        raise ValueError(f"each policy once: {names}")
    seeds = range(seed, seed + replicates)
    return [
        (p, users, days, s, warmup, coupons, params, margin, s == seed)
        for s in seeds
        for p in policies
    ]


def gather(
    policies: list[Policy],
    answers: list[tuple[dict | None, dict[str, np.ndarray]]],
    users: int,
    days: int,
    seed: int,
    warmup: int = 28,
    params: SimParams | None = None,
    replicates: int = 1,
    rank_by: str = "profit",
    margin: float = paired.DEFAULT_MARGIN,
) -> dict:
    """`compare`'s output from its runs' answers (`one_run`'s, in `compare_runs` order):
    wherever and in whatever order the runs were computed, the same bits."""
    if rank_by not in RANK_BY:
        raise ValueError(f"rank by one of {RANK_BY}, not {rank_by!r}")
    names = [p.name for p in policies]
    seeds = list(range(seed, seed + replicates))
    runs = [(p, s) for s in seeds for p in policies]
    per: dict[str, dict[str, list[np.ndarray]]] = {n: {} for n in names}
    results: dict[str, dict] = {}
    for (p, s), (result, effects) in zip(runs, answers, strict=True):
        if s == seed:
            results[p.name] = result
        for k, v in effects.items():
            per[p.name].setdefault(k, []).append(v)
    rows = [_ranking_row(p, per[p.name], results[p.name], days) for p in policies]
    rows.sort(key=lambda r: -r[rank_by]["value"])
    config = {
        "policies": names,
        "users": users,
        "days": days,
        "seed": seed,
        "seeds": seeds,
        "replicates": replicates,
        "warmup_days": warmup,
        "rank_by": rank_by,
        "margin": margin,
        "units": {"students": "students", "orders": "orders", "money": "fen"},
        "month_days": MONTH_DAYS,
        "per_month_scale": round(MONTH_DAYS / days, 6),
    }
    if params is not None:
        config["params"] = results[names[0]]["config"]["params"]
    out = {
        "config": config,
        "ranking": rows,
        "verdict": _verdict(rows, per, rank_by, days),
        "results": [results[n] for n in names],
    }
    out["summary"] = verdict_sentence(out)
    return out


def _ranking_row(p: Policy, d: dict[str, list[np.ndarray]], result: dict, days: int) -> dict:
    """One policy's row of the ranking: its paired effects (`d`: each metric's per-user
    effects, one array per replicate), a month of them, and the holdout estimate with its
    power plan from the first seed's `result` (which gets them too, as `simulate` does)."""
    estimate = pooled(result)
    plan = power_plan(p, estimate, days)
    row = {"policy": p.name, **{m: _effect(d[m]) for m in METRICS}}
    row["committed_coupon_value"] = _effect(d["committed_coupon_value"])
    row["gross_revenue"] = float(np.mean([g.sum() for g in d["gross_revenue"]]))
    row["per_month"] = {m: per_month(row[m], days) for m in (*METRICS, "committed_coupon_value")}
    row["per_month"]["gross_revenue"] = round(row["gross_revenue"] * MONTH_DAYS / days, 4)
    row["description"] = p.description
    row["holdout"] = estimate
    row["power"] = plan
    row["warning"] = power_warning(p.name, plan)
    # The simulate-shaped result carries them too, as `simulate` does (the report's pages).
    result.update(holdout=estimate, power=plan, warning=row["warning"])
    return row


def _verdict(
    rows: list[dict], per: dict[str, dict[str, list[np.ndarray]]], rank_by: str, days: int
) -> list[dict]:
    """Every pair of the ranked policies judged on `rank_by`, on the same users
    (backend/core/paired.py), over the trial and a month."""
    verdict = []
    for i, a in enumerate(rows):
        for b in rows[i + 1 :]:
            j = paired.judge(
                np.vstack(per[a["policy"]][rank_by]),
                np.vstack(per[b["policy"]][rank_by]),
                (a["policy"], b["policy"]),
            )
            diff = j.difference
            verdict.append(
                {
                    "a": j.a,
                    "b": j.b,
                    "metric": rank_by,
                    "outcome": j.outcome,
                    "better": j.a if j.outcome == paired.BETTER else None,
                    "worse": j.b if j.outcome == paired.BETTER else None,
                    "significant": j.outcome != paired.TIE,
                    "difference": round(diff.value, 4),
                    "lo": round(diff.lo, 4),
                    "hi": round(diff.hi, 4),
                    "min_detectable": round(j.min_detectable, 4),
                    "per_month": {
                        k: round(v * MONTH_DAYS / days, 4)
                        for k, v in (
                            ("difference", diff.value),
                            ("lo", diff.lo),
                            ("hi", diff.hi),
                            ("min_detectable", j.min_detectable),
                        )
                    },
                }
            )
    return verdict
