"""Calibration's text report: the fitted parameters and the response fit, for a terminal.

Apart from the fits so that what is fitted and how it is shown change separately; the record it
reads is the one written to the parameters file (`SimParams.extra`).
"""

from __future__ import annotations

from simulator.params import SimParams


def describe(params: SimParams) -> str:
    """The fitted parameters for a terminal."""
    e = params.extra
    lines = [e.get("summary", "simulator parameters")]
    fit = e.get("fit", {})
    if fit:
        f = fit["factors"]
        lines.append(
            f"  × defaults: visit rate {f['visit']:.3f}, half-life {f['half_life']:.3f}, "
            f"order share {f['order']:.3f}, order value {f['aov']:.3f}, spread {f['sigma']:.3f}"
        )
        kept = {k: " (default)" if f[k] is None else "" for k in ("exam", "brk")}
        lines.append(
            f"  calendar: weekend {params.weekend_factor:.3f}, "
            f"exams {params.exam_factor:.3f}{kept['exam']}, "
            f"breaks {params.break_factor:.3f}{kept['brk']}; "
            + ("converged" if fit["converged"] else "NOT converged")
            + f" after {fit['iterations']} rounds"
        )
    lines.append(
        f"  {'persona':<16} {'share':>6} {'visit_p':>8} {'half-life':>9} {'order_p':>8} "
        f"{'median ¥':>8} {'sigma':>6}"
    )
    for p in params.personas:
        lines.append(
            f"  {p.name:<16} {p.share:>6.2f} {p.visit_p:>8.3f} {p.half_life_days:>9.1f} "
            f"{p.order_p:>8.3f} {p.aov_fen / 100:>8.2f} {p.aov_sigma:>6.3f}"
        )
    response = e.get("response")
    if isinstance(response, str):
        lines.append(f"  response rates: {response}")
    elif isinstance(response, dict) and "cells" in response:
        lines.extend(describe_response(response))
    return "\n".join(lines)


def describe_response(record: dict) -> list[str]:
    """Terminal lines: a line per cell (n, estimate and interval, used or default) and the
    factor of each kind."""
    lines = [
        f"  response rates, {record['first_decisions']} first decisions "
        f"(each user once per policy) against a simulated campus of "
        f"{record['simulated_users']} users:",
        f"    {'kind':<9} {'tier':<14} {'treated':>7} {'holdout':>7} {'effect (95%)':>22} "
        f"{'simulated':>9}  used",
    ]
    for r in record["cells"]:
        sim = "—" if r["simulated_effect"] is None else f"{100 * r['simulated_effect']:+.1f} pp"
        eff = f"{100 * r['effect']:+.1f} pp [{100 * r['lo']:+.1f}, {100 * r['hi']:+.1f}]"
        used = "yes" if r["used"] else f"no: {r['why_not']}"
        lines.append(
            f"    {r['kind']:<9} {r['tier']:<14} {r['treated']:>7} {r['holdout']:>7} "
            f"{eff:>22} {sim:>9}  {used}"
        )
    for kind, k in record["kinds"].items():
        if k.get("fitted"):
            lines.append(
                f"    {kind}: × {k['factor']:.2f} of the table (raw {k['raw_factor']:.2f}, "
                f"95% [{k['lo']:.2f}, {k['hi']:.2f}], shrunk {100 * k['shrinkage']:.0f}%)"
            )
        elif k["cells"]:
            lines.append(f"    {kind}: kept at the table ({k['why_not']})")
    return lines
