"""A simulation's results as terminal text: `simulate`'s table, `compare`'s table and its
verdict sentence, and the power plan's line and warning (the HTML report is simulator/html.py).

Text only: it reads the result dicts `simulator.run` builds (a month is their
`config.month_days`), so the commands can print them without loading the model.
"""

from __future__ import annotations

from backend.core import paired
from backend.presentation.display import pct as _pct
from backend.presentation.display import pp, pp_interval, ratio


def summary_table(result: dict) -> str:
    """`simulate`'s table: each group's users, recall, retention, messages and ROI, each
    arm's estimated effect on recall beside the twin's truth, the power plan and warning."""
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


def power_warning(name: str, plan: dict | None) -> str:
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
    month = c["month_days"]
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
        f"{month} days: the {c['days']}-day trial's effect × {month}/{c['days']}; "
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
    """An effect (value/lo/hi) with its 95% interval, signed, as a merchant reads it."""
    return (
        f"{_amount(metric, e['value'], True)} [{_amount(metric, e['lo'], True)}, "
        f"{_amount(metric, e['hi'], True)}]"
    )


def _n(rate: dict) -> str:
    """A rate and its denominator ("12.5% of 1,024"), or a dash when there is none."""
    return "–" if rate["rate"] is None else f"{100 * rate['rate']:.1f}% of {rate['n']:,}"


def compare_table(out: dict) -> str:
    """`compare`'s terminal report: the verdict sentence, then the ranking over the trial
    and a month, every pair judged, and what production's holdout would show per policy."""
    lines = _compare_head(out)
    lines += _month_rows(out)
    lines += _pair_rows(out)
    lines += _holdout_rows(out)
    return "\n".join(lines)


def _compare_head(out: dict) -> list[str]:
    """The verdict, what was compared, and the ranking by the trial's totals."""
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
    return lines


def _month_rows(out: dict) -> list[str]:
    """The ranking again as a month's effect (the trial's totals × month_days / days)."""
    k, month = out["config"]["days"], out["config"]["month_days"]
    lines = [
        f"A month ({month} days: the {k}-day totals above × {month}/{k}, assuming the "
        "effect accrues evenly):",
        f"  {'rank':<4} {'policy':<16} {'extra students':<22} {'extra orders':<22} "
        f"{'extra revenue':<28} {'spent':>8} {'extra profit':<28} {'gross revenue':>13}",
    ]
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
    return lines


def _pair_rows(out: dict) -> list[str]:
    """Every pair's paired difference on the ranking metric, over the trial and a month,
    with the smallest difference the trial could resolve."""
    c = out["config"]
    k, m = c["days"], c["rank_by"]
    lines = [f"Every pair on {m} (A minus B on the same students):"]
    for v in out["verdict"]:
        said = {
            paired.BETTER: f"{v['a']} is better than {v['b']}",
            paired.WORSE: f"{v['a']} is worse than {v['b']}",
            paired.TIE: f"{v['a']} and {v['b']} cannot be told apart",
        }[v["outcome"]]
        pm = v["per_month"]
        lines.append(
            f"  {said}: {_amount(m, v['difference'], True)} [{_amount(m, v['lo'], True)}, "
            f"{_amount(m, v['hi'], True)}] over {k} days, {_amount(m, pm['difference'], True)} "
            f"[{_amount(m, pm['lo'], True)}, {_amount(m, pm['hi'], True)}] a month; smallest "
            f"resolvable {_amount(m, v['min_detectable'])} ({_amount(m, pm['min_detectable'])} "
            "a month)"
        )
    return lines


def _holdout_rows(out: dict) -> list[str]:
    """Per policy, the holdout estimate production would report from one trial of this
    size, its power plan and its warning."""
    lines = [
        f"What production's holdout would show in one trial of this size (seed "
        f"{out['config']['seed']}; each "
        "student once, at first decision; each arm against the holdout it would have reached):"
    ]
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
    return lines
