"""The report as a terminal table (the JSON form is the report dict itself)."""

from __future__ import annotations

from backend.presentation.display import pct as _pct
from backend.presentation.display import pp as _pp1
from backend.presentation.display import pp_interval as _pp
from backend.presentation.display import ratio as _ratio
from backend.presentation.display import yuan as _yuan


def _row(label: str, g: dict) -> str:
    roi = g["money"]["roi"]
    return (
        f"  {label[:30]:<30} {g['lapsed_users']:>7} {g['recall_rate']['k']:>8} "
        f"{_pct(g['recall_rate']['rate'])} {g['holdout_lapsed_users']:>7} "
        f"{_pct(g['holdout_recall_rate']['rate'])}  {_pp(g['incremental_recall']):<26} "
        f"{_yuan(g['revenue_per_user_fen']):>9} {_ratio(roi):>6}"
    )


def power_line(w: dict) -> str:
    """How far the policy's holdout comparison is from detecting its effect (reports.power)."""
    if w["p_control"] is None:
        return f"  power: {w['note']}"
    why = "observed" if w["effect_source"] == "observed" else "planning"
    base = "holdout" if w["p_control_source"] == "holdout" else "all users"
    aim = (
        f"to detect {_pp1(w['effect'])} ({why} effect) over {_pct(w['p_control']).strip()} "
        f"({base})\n         at 80% power with a {_pct(w['holdout_share']).strip()} holdout"
    )
    if w["users_needed"] is None:
        size = f"no size is enough {aim}"
    else:
        size = (
            f"{w['users_so_far']} of {w['users_needed']} users needed "
            f"({_pct(w['share_of_needed']).strip()}; holdout {w['holdout_users_so_far']} of "
            f"{w['holdout_users_needed']}) {aim}"
        )
    days = w["days_needed_at_current_volume"]
    when = (
        "reached"
        if days == 0
        else f"about {days} more days at {w['eligible_per_day']:.1f} new users/day"
        if days is not None
        else "not reachable at the current volume"
    )
    mde = w["detectable_now"]
    seen = f"detectable now {_pp1(mde)}" if mde is not None else "nothing detectable yet"
    note = f" ({w['note']})" if w["note"] else ""
    return f"  power: {size}; {when}{note}; {seen}"


def render(report: dict) -> str:
    """`report` without `--json`: each policy's recall, retention and money against its
    holdout, as a table a merchant reads in a terminal (`services.reports.report`'s dict)."""
    span = f"{report['from'] or 'start'} … {report['to'] or 'now'}"
    lines = [
        f"Recall report ({span}); only touches whose attribution window has closed",
        "  recall counts users lapsed at decision (silent past the tiers' risk threshold);",
        "  users still active when decided are counted under retention, never recall",
    ]
    if not report["policies"]:
        lines.append("  no finished touches yet")
    notes = []
    for p in report["policies"]:
        lines.append(f"\npolicy {p['policy']}")
        lines.append(
            f"  {'group':<30} {'lapsed':>7} {'recalled':>8} {'rate':>6} {'holdout':>7} "
            f"{'rate':>6}  {'incremental recall [95%]':<26} {'rev/user':>9} {'ROI':>6}"
        )
        lines.append(_row("all", p))
        for dim in ("arm", "tier", "channel"):
            for g in p[f"by_{dim}"]:
                lines.append(_row(f"{dim} {g[dim]}", g))
                note = g["incremental_recall"]["note"]
                if note:
                    notes.append(f"  {p['policy']} {dim} {g[dim]}: {note}")
        money = p["money"]
        lines.append(
            f"  money: revenue {_yuan(money['revenue_fen'])}, "
            f"coupons {_yuan(money['coupon_cost_fen'])}, "
            f"messages {_yuan(money['message_cost_fen'])}; revenue/cost "
            f"{_ratio(money['revenue_per_cost'])}"
        )
        if p["active_users"] or p["holdout_active_users"]:
            a, h = p["retention_active"], p["holdout_retention_active"]
            lines.append(
                f"  active at decision (retention, not recall): back {_pct(a['rate'])} of "
                f"{a['n']} vs holdout {_pct(h['rate'])} of {h['n']}: "
                f"{_pp(p['incremental_retention_active'])}"
            )
        d7, d30 = p["retention_d7"], p["retention_d30"]
        lines.append(
            f"  retention after recall: D7 {_pct(d7['rate'])} of {d7['n']}, "
            f"D30 {_pct(d30['rate'])} of {d30['n']}"
        )
        if p.get("power"):
            lines.append(power_line(p["power"]))
        if p["funnel"]:
            lines.append("  funnel   channel       sent delivered opened returned ordered")
            for f in p["funnel"]:
                lines.append(
                    f"           {f['channel']:<12} {f['sent']:>5} {f['delivered']:>9} "
                    f"{f['opened']:>6} {f['returned']:>8} {f['ordered']:>7}"
                )
    if notes:
        lines.append("\nintervals that mean nothing yet:")
        lines.extend(notes)
    if report["ledger"]:
        lines.append("\nguard-rail ledger (why users were not messaged)")
        for r in report["ledger"][-30:]:
            skipped = ", ".join(f"{k} {v}" for k, v in sorted(r["skipped"].items())) or "none"
            failed = ", ".join(f"{k} {v}" for k, v in sorted(r["failed"].items()))
            lines.append(
                f"  {r['date']} {r['policy']:<16} sent {r['sent']:>5}, holdout {r['held_out']:>4}, "
                f"quiet-hours deferred {r['quiet_hours_deferred']:>4}; skipped: {skipped}"
                + (f"; failed: {failed}" if failed else "")
            )
    return "\n".join(lines)
