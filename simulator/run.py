"""Running a simulation for the command line: one policy, its results, a terminal table."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from backend.core import metrics, paired, power, seeds
from backend.core.display import pct as _pct
from backend.core.display import pp, pp_interval, ratio
from backend.core.policy import Policy, parse_policy
from simulator.model import CampusModel
from simulator.params import SimParams
from simulator.results import play

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
    result["warning"] = _power_warning(policy.name, plan)
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
    arms, uplift, daily = play(model, warmup + days, progress)
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


def summary_table(result: dict) -> str:
    c = result["config"]
    lines = [
        f"policy {c['policy']}: {c['users']} simulated users, {c['days']} days after "
        f"{c['warmup_days']} days of history, seed {c['seed']}",
        f"  {'group':<28} {'users':>6} {'recalled':>8} {'rate':>6} {'D7':>6} {'D30':>6} "
        f"{'messages':>8} {'ROI':>6}",
    ]
    if "params" in c:
        lines.insert(1, f"  campus parameters: {c['params']}")
    for name, g in result["arms"].items():
        roi = ratio(g["roi"])
        lines.append(
            f"  {name:<28} {g['users']:>6} {g['recalled']:>8} {_pct(g['recall_rate'])} "
            f"{_pct(g['retention_d7'])} {_pct(g['retention_d30'])} {g['messages']:>8} {roi:>6}"
        )
    lines.append("  effect on recall rate against the holdout (95% interval) vs the truth:")
    for name, u in result["uplift"].items():
        est, truth = u["recall_rate"], u["true_uplift"]["recall_rate"]
        shown, true_text = pp_interval(est), pp(truth)
        note = f"  ({est['note']})" if est["note"] else ""
        lines.append(f"  {name:<28} estimate {shown}; true {true_text}{note}")
    if "power" in result:
        lines.append(power_line(result["power"], result["config"]["policy"]))
    if result.get("warning"):
        lines.append(f"  warning: {result['warning']}")
    return "\n".join(lines)


def power_line(plan: dict | None, name: str) -> str:
    """The holdout's power plan in one line: the effect the twin predicts on recall, the
    smallest effect the holdout detects at this size (80% power) and the size it needs."""
    if not plan:
        return f"  power plan for {name}'s holdout: unknown (no holdout or no predicted effect)"
    if plan.get("error"):
        return f"  power plan for {name}'s holdout: {plan['error']}"
    now = plan.get("detectable_now")
    can = "unknown" if now is None else f"{100 * now:.1f} pp"
    need = plan.get("users_needed")
    needs = "cannot be reached" if need is None else f"{need:,} decided students"
    return (
        f"  power plan for {name}'s holdout ({plan['holdout_share']:.0%} held out): predicted "
        f"effect {100 * plan['effect']:+.1f} pp on recall; detectable now {can} with "
        f"{plan['users_now']:,} decided students; 80% power needs {needs}"
    )


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
) -> dict:
    """Every policy on the same population and the same dice (seeds seed..seed+R-1), ranked
    by its paired effect against the untreated twin on `rank_by`, every pair judged on the
    same users (backend/core/paired.py). Beside it, per policy, the holdout estimate
    production would see in one trial of this size (seed `seed`) and its power plan.
    `coupons`: name -> (face value, minimum spend) in fen (the presets' by default)."""
    if rank_by not in RANK_BY:
        raise ValueError(f"rank by one of {RANK_BY}, not {rank_by!r}")
    if replicates < 1:
        raise ValueError("at least one replicate")
    names = [p.name for p in policies]
    if len(set(names)) != len(names):
        raise ValueError(f"each policy once: {names}")
    per: dict[str, dict[str, list[np.ndarray]]] = {n: {} for n in names}
    results: dict[str, dict] = {}
    seeds = list(range(seed, seed + replicates))
    for s in seeds:
        for p in policies:
            result, books = simulate_paired(p, users, days, s, warmup, progress, coupons, params)
            if s == seed:
                results[p.name] = result
            for k, v in per_user_effects(books, margin).items():
                per[p.name].setdefault(k, []).append(v)
    rows = []
    for p in policies:
        d = per[p.name]
        estimate = pooled(results[p.name])
        plan = power_plan(p, estimate, days)
        row = {"policy": p.name, **{m: _effect(d[m]) for m in METRICS}}
        row["committed_coupon_value"] = _effect(d["committed_coupon_value"])
        row["gross_revenue"] = float(np.mean([g.sum() for g in d["gross_revenue"]]))
        row["per_month"] = {
            m: per_month(row[m], days) for m in (*METRICS, "committed_coupon_value")
        }
        row["per_month"]["gross_revenue"] = round(row["gross_revenue"] * MONTH_DAYS / days, 4)
        row["description"] = p.description
        row["holdout"] = estimate
        row["power"] = plan
        row["warning"] = _power_warning(p.name, plan)
        # The simulate-shaped result carries them too, as `simulate` does (the report's pages).
        results[p.name].update(holdout=estimate, power=plan, warning=row["warning"])
        rows.append(row)
    rows.sort(key=lambda r: -r[rank_by]["value"])
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
        "verdict": verdict,
        "results": [results[n] for n in names],
    }
    out["summary"] = verdict_sentence(out)
    return out


def _power_warning(name: str, plan: dict | None) -> str:
    """Said when this policy's own holdout, at the size simulated, cannot detect the effect
    the twin predicts for it (80% power): production's report would read it as noise."""
    if not plan or plan.get("days_needed") == 0:
        return ""
    detectable = plan.get("detectable_now")
    can = f" (it detects {100 * detectable:.1f} pp at best)" if detectable else ""
    effect = f"{100 * plan['effect']:+.1f} pp" if plan.get("effect") is not None else "its"
    more = ""
    if plan.get("users_needed"):
        need, now = plan["users_needed"], plan.get("users_now", 0)
        more = f"; it needs about {need:,} decided students (has {now:,})"
    if plan.get("days_needed"):
        more += f", {plan['days_needed']} more days at this volume"
    elif plan.get("note"):
        more += f"; {plan['note']}"
    return (
        f"{name}'s own holdout cannot detect its predicted effect ({effect} on recall) at "
        f"this size{can}{more}"
    )


def _amount(metric: str, value: float, signed: bool = False) -> str:
    """A students/orders count or a money amount (fen) as a merchant reads it."""
    if metric in ("students", "orders"):
        v = int(round(value))  # no "-0"
        return f"{v:+,d}" if signed else f"{abs(v):,d}"
    text = f"¥{abs(value) / 100:,.0f}"
    return ("-" if value < 0 else "+") + text if signed else text


def verdict_sentence(out: dict) -> str:
    """The verdict in one paragraph: what the best policy did against doing nothing a month
    (the trial's total × 30/days, said so), which pairs the trial separates and which it
    cannot (with the smallest difference it could have resolved, a month too)."""
    c, rows, by = out["config"], out["ranking"], out["config"]["rank_by"]
    best = rows[0]
    s, p = best["per_month"]["students"], best["per_month"]["profit"]
    size = f"{c['users']:,} students"
    if c["replicates"] > 1:
        size += f", {c['replicates']} seeds"
    more = "more" if p["value"] >= 0 else "less"
    parts = [
        f"{best['policy']} brings back about {s['value']:,.0f} more students "
        f"(95%: {s['lo']:,.0f} to {s['hi']:,.0f}) and {_amount('profit', p['value'])} {more} "
        f"profit (at a {c['margin']:.0%} margin) a month than doing nothing (a month = "
        f"{MONTH_DAYS} days: the {c['days']}-day trial's effect × {MONTH_DAYS}/{c['days']}; "
        f"over the {c['days']} days {best['students']['value']:,.0f} students and "
        f"{_amount('profit', best['profit']['value'], True)} profit)"
    ]
    beaten = [v["b"] for v in out["verdict"] if v["a"] == best["policy"] and v["significant"]]
    if beaten:
        parts.append(f"it beats {' and '.join(beaten)} on {by}")
    ties = [v for v in out["verdict"] if not v["significant"]]
    for v in ties:
        least = v["per_month"]["min_detectable"]
        parts.append(
            f"{v['a']} and {v['b']} cannot be told apart on {by} at this size ({size}; "
            f"smallest resolvable difference {_amount(by, least)} a month)"
        )
    clear = [v for v in out["verdict"] if v["significant"] and v["a"] != best["policy"]]
    for v in clear:
        parts.append(f"{v['a']} beats {v['b']}")
    return "; ".join(parts) + "."


def _with_interval(metric: str, e: dict) -> str:
    return (
        f"{_amount(metric, e['value'], True)} [{_amount(metric, e['lo'], True)}, "
        f"{_amount(metric, e['hi'], True)}]"
    )


def _n(rate: dict) -> str:
    return "–" if rate["rate"] is None else f"{100 * rate['rate']:.1f}% of {rate['n']:,}"


def compare_table(out: dict) -> str:
    c = out["config"]
    seeds = (
        f"seed {c['seed']}"
        if c["replicates"] == 1
        else f"seeds {c['seeds'][0]}..{c['seeds'][-1]} pooled"
    )
    lines = [
        out["summary"],
        "",
        f"{len(c['policies'])} policies on the same {c['users']:,} simulated students and dice, "
        f"{c['days']} days after {c['warmup_days']} of history, {seeds}; ranked by {c['rank_by']}.",
        f"Against the untreated twin, over the whole campus and all {c['days']} days (95% "
        "intervals); money actually "
        "spent = redeemed coupons + message fees:",
        f"  {'rank':<4} {'policy':<16} {'extra students':<22} {'extra orders':<22} "
        f"{'extra revenue':<28} {'spent':>8} {'extra profit':<28} {'gross revenue':>13} "
        f"{'coupons sent (committed)':>24}",
    ]
    if "params" in c:
        lines.insert(3, f"campus parameters: {c['params']}")
    for i, r in enumerate(out["ranking"], 1):
        lines.append(
            f"  {i:<4} {r['policy']:<16} {_with_interval('students', r['students']):<22} "
            f"{_with_interval('orders', r['orders']):<22} "
            f"{_with_interval('revenue', r['revenue']):<28} "
            f"{_amount('cost', r['cost']['value']):>8} "
            f"{_with_interval('profit', r['profit']):<28} "
            f"{_amount('revenue', r['gross_revenue']):>13} "
            f"{_amount('cost', r['committed_coupon_value']['value']):>24}"
        )
    k = c["days"]
    lines.append(
        f"A month ({MONTH_DAYS} days: the {k}-day totals above × {MONTH_DAYS}/{k}, assuming the "
        "effect accrues evenly):"
    )
    lines.append(
        f"  {'rank':<4} {'policy':<16} {'extra students':<22} {'extra orders':<22} "
        f"{'extra revenue':<28} {'spent':>8} {'extra profit':<28} {'gross revenue':>13}"
    )
    for i, r in enumerate(out["ranking"], 1):
        m = r["per_month"]
        lines.append(
            f"  {i:<4} {r['policy']:<16} {_with_interval('students', m['students']):<22} "
            f"{_with_interval('orders', m['orders']):<22} "
            f"{_with_interval('revenue', m['revenue']):<28} "
            f"{_amount('cost', m['cost']['value']):>8} "
            f"{_with_interval('profit', m['profit']):<28} "
            f"{_amount('revenue', m['gross_revenue']):>13}"
        )
    lines.append(f"Every pair on {c['rank_by']} (A minus B on the same students):")
    for v in out["verdict"]:
        said = {
            paired.BETTER: f"{v['a']} is better than {v['b']}",
            paired.WORSE: f"{v['a']} is worse than {v['b']}",
            paired.TIE: f"{v['a']} and {v['b']} cannot be told apart",
        }[v["outcome"]]
        m = c["rank_by"]
        pm = v["per_month"]
        lines.append(
            f"  {said}: {_amount(m, v['difference'], True)} [{_amount(m, v['lo'], True)}, "
            f"{_amount(m, v['hi'], True)}] over {k} days, {_amount(m, pm['difference'], True)} "
            f"[{_amount(m, pm['lo'], True)}, {_amount(m, pm['hi'], True)}] a month; smallest "
            f"resolvable {_amount(m, v['min_detectable'])} ({_amount(m, pm['min_detectable'])} "
            "a month)"
        )
    lines.append(
        f"What production's holdout would show in one trial of this size (seed {c['seed']}; each "
        "student once, at first decision; each arm against the holdout it would have reached):"
    )
    for r in out["ranking"]:
        h = r["holdout"]
        lines.append(
            f"  {r['policy']:<16} recalled {_n(h['recall'])} vs holdout {_n(h['holdout_recall'])}: "
            f"{pp_interval(h['incremental'])} (twin's truth {pp(h['true_incremental'])}); "
            f"{h['messages']:,} messages, {_amount('cost', h['cost'])} spent, "
            f"{_amount('revenue', h['revenue'])} gross revenue in the touched students' windows"
        )
        lines.append("  " + power_line(r["power"], r["policy"]))
        if r["warning"]:
            lines.append(f"    warning: {r['warning']}")
    return "\n".join(lines)
