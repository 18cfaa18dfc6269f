"""The simulation report as one self-contained HTML file: inline SVG charts, no scripts,
no network — it opens offline. Labels are in Simplified Chinese (merchants read it)."""

from __future__ import annotations

import html
from itertools import accumulate

from backend.core.display import pct as _pct
from backend.core.display import pp as _pp_true
from backend.core.display import pp_interval as _pp
from backend.core.display import ratio as _ratio

PALETTE = ("#2f6fde", "#e4572e", "#17a673", "#f3a712", "#8e44ad", "#555555", "#c0392b")
W, H, PAD = 640, 240, 44


def _scale(values: list[float], lo: float | None = None, hi: float | None = None):
    lo = min(values + [0.0]) if lo is None else lo
    hi = max(values + [lo + 1e-9]) if hi is None else hi
    span = hi - lo or 1.0
    return lambda v: H - PAD - (v - lo) / span * (H - 2 * PAD), lo, hi


def line_chart(title: str, series: dict[str, list[float]], y_label: str) -> str:
    if not series or not any(series.values()):
        return f"<h3>{html.escape(title)}</h3><p>无数据</p>"
    every = [v for vals in series.values() for v in vals]
    y, lo, hi = _scale(every)
    n = max(len(v) for v in series.values())

    def x(i: int) -> float:
        return PAD + i / max(n - 1, 1) * (W - 2 * PAD)

    parts = [_axes(lo, hi, y, y_label, n)]
    for k, (name, vals) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(vals))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>')
        parts.append(
            f'<text x="{W - PAD + 4}" y="{PAD + 14 * k}" font-size="11" fill="{color}">'
            f"{html.escape(name)}</text>"
        )
    return _svg(title, parts, extra_width=150)


def bar_chart(title: str, labels: list[str], values, lo=None, hi=None, pct=True) -> str:
    vals = [0.0 if v is None else v for v in values]
    tops = vals + [h for h in (hi or []) if h is not None]
    y, ylo, yhi = _scale(tops, 0.0, max(tops + [1e-9]) * 1.1)
    n = len(vals)
    bw = (W - 2 * PAD) / max(n, 1)
    parts = [_axes(ylo, yhi, y, "%" if pct else "", 0, pct=pct)]
    for i, v in enumerate(vals):
        x0 = PAD + i * bw + bw * 0.15
        color = PALETTE[i % len(PALETTE)]
        parts.append(
            f'<rect x="{x0:.1f}" y="{y(v):.1f}" width="{bw * 0.7:.1f}" '
            f'height="{max(y(0) - y(v), 0):.1f}" fill="{color}" opacity="0.8"/>'
        )
        if lo is not None and lo[i] is not None and hi[i] is not None:
            cx = x0 + bw * 0.35
            parts.append(
                f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y(lo[i]):.1f}" y2="{y(hi[i]):.1f}" '
                'stroke="#222" stroke-width="1.5"/>'
            )
        shown = f"{100 * v:.1f}%" if pct else f"{v:,.0f}"
        parts.append(
            f'<text x="{x0:.1f}" y="{H - PAD + 14}" font-size="11">{html.escape(labels[i][:16])}'
            f'</text><text x="{x0:.1f}" y="{y(v) - 4:.1f}" font-size="10">{shown}</text>'
        )
    return _svg(title, parts)


def _axes(lo, hi, y, label, n, pct=False) -> str:
    ticks = []
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        text = f"{100 * v:.0f}%" if pct else f"{v:,.0f}"
        ticks.append(
            f'<line x1="{PAD}" x2="{W - PAD}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>'
            f'<text x="2" y="{y(v) + 4:.1f}" font-size="10">{text}</text>'
        )
    if n:
        ticks.append(f'<text x="{W / 2:.0f}" y="{H - 6}" font-size="10">第 1–{n} 天</text>')
    ticks.append(f'<text x="2" y="12" font-size="10">{html.escape(label)}</text>')
    return "".join(ticks)


def _svg(title: str, parts: list[str], extra_width: int = 0) -> str:
    return (
        f"<h3>{html.escape(title)}</h3>"
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W + extra_width}" height="{H}" '
        f'role="img" aria-label="{html.escape(title)}">{"".join(parts)}</svg>'
    )


def policy_section(result: dict) -> str:
    c, arms, up, daily = result["config"], result["arms"], result["uplift"], result["daily"]
    names = list(arms)
    groups = daily.get("group_active") or []
    series = {g: [day.get(g, 0) for day in groups] for g in (groups[0] if groups else {})}
    guard = {key.removeprefix("guard_"): daily[key] for key in daily if key.startswith("guard_")}
    guard["quiet_hours_deferred"] = daily.get("quiet_deferred", [])
    cost = list(accumulate(v / 100 for v in daily.get("committed_cost_fen", [])))
    gain = list(accumulate(v / 100 for v in daily.get("incremental_revenue_fen", [])))
    rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{a['users']}</td><td>{a['recalled']}</td>"
        f"<td>{_pct(a['recall_rate'], 0)}</td><td>{_pct(a['retention_d7'], 0)}</td>"
        f"<td>{_pct(a['retention_d30'], 0)}</td><td>{a['messages']}</td>"
        f"<td>{a['coupon_cost'] / 100:.2f}</td><td>{a['revenue'] / 100:.2f}</td>"
        f"<td>{_ratio(a['roi'])}</td></tr>"
        for n, a in arms.items()
    )
    effects = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{_pp(u['recall_rate'])}</td>"
        f"<td>{_pp_true(u['true_uplift']['recall_rate'])}</td>"
        f"<td>{html.escape(u['recall_rate']['note'] or '')}</td></tr>"
        for n, u in up.items()
    )
    return (
        f"<h2>策略 {html.escape(c['policy'])}</h2>"
        f"<p>{c['users']} 名模拟用户，预热 {c['warmup_days']} 天后运行 {c['days']} 天，随机种子 "
        f"{c['seed']}。</p>"
        "<table><tr><th>分组</th><th>触达用户</th><th>召回</th><th>召回率</th><th>D7 留存</th>"
        "<th>D30 留存</th><th>消息数</th><th>券成本 ¥</th><th>收入 ¥</th><th>ROI</th></tr>"
        f"{rows}</table>"
        "<table><tr><th>分支</th><th>相对对照组的召回率提升（95% 区间）</th><th>真实提升</th>"
        f"<th>说明</th></tr>{effects}</table>"
        + line_chart("各组每日活跃用户", series, "人")
        + bar_chart(
            "各组召回率（95% 区间）",
            names,
            [arms[n]["recall_rate"] for n in names],
            [arms[n]["recall"]["lo"] for n in names],
            [arms[n]["recall"]["hi"] for n in names],
        )
        + line_chart(
            "召回后留存（D7 → D30）",
            {n: [arms[n]["retention_d7"] or 0, arms[n]["retention_d30"] or 0] for n in names},
            "留存率",
        )
        + line_chart("累计成本与真实增量收入（¥）", {"成本": cost, "增量收入": gain}, "¥")
        + line_chart("护栏每日拦截与延后", guard, "次")
    )


STYLE = (
    "body{font-family:sans-serif;max-width:900px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
    "font-size:13px}th{background:#f4f4f4}h3{margin-top:1.5em;font-size:15px}"
)


def render(results: list[dict], title: str = "回流 · 模拟校园报告", ranking: str = "") -> str:
    body = "".join(policy_section(r) for r in results)
    return (
        '<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{ranking}{body}</body></html>"
    )


def ranking_html(out: dict) -> str:
    """The compare ranking and its verdicts, for the top of the report."""
    rows = "".join(
        f"<tr><td>{i}</td><td>{html.escape(r['policy'])}</td><td>{r['treated']}</td>"
        f"<td>{_pp(r['incremental'])}</td><td>{_pp_true(r['true_incremental'])}</td>"
        f"<td>{r['messages']}</td><td>{r['cost'] / 100:.2f}</td></tr>"
        for i, r in enumerate(out["ranking"], 1)
    )
    verdicts = "".join(
        f"<li>{html.escape(v['better'])} "
        f"{'显著优于' if v['significant'] else '未显著优于'} {html.escape(v['than'])}："
        f"{100 * v['difference']:+.1f} pp [{100 * v['lo']:+.1f}, {100 * v['hi']:+.1f}]</li>"
        for v in out["verdicts"]
    )
    return (
        "<h2>策略排名（同一批模拟用户、同一组随机数）</h2>"
        "<table><tr><th>排名</th><th>策略</th><th>触达用户</th><th>召回率提升（95% 区间）</th>"
        f"<th>真实提升</th><th>消息数</th><th>成本 ¥</th></tr>{rows}</table><ul>{verdicts}</ul>"
    )
