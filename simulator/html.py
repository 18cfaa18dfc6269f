"""The simulation report as one HTML file. Standalone it carries plotly.js inline, so it opens
offline; the dashboard stores the same page pointing at its own copy of plotly.js. Charts come
from backend/core/charts (the dashboard draws with the same builders). Labels are in
Simplified Chinese (merchants read it)."""

from __future__ import annotations

import html
from itertools import accumulate

from backend.core import charts
from backend.core.display import pct as _pct
from backend.core.display import pp as _pp_true
from backend.core.display import pp_interval as _pp
from backend.core.display import ratio as _ratio


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
        + _charts(c["policy"], names, arms, up, series, cost, gain, guard)
    )


def _charts(policy, names, arms, up, series, cost, gain, guard) -> str:
    days = list(range(1, 1 + max((len(v) for v in series.values()), default=0)))
    effects = list(up)
    figures = {
        "active": charts.line("各组每日活跃用户", days, series, "人", "第几天"),
        "recall": charts.bars(
            "各组召回率（95% 区间）",
            names,
            [arms[n]["recall_rate"] for n in names],
            "召回率",
            [arms[n]["recall"]["lo"] for n in names],
            [arms[n]["recall"]["hi"] for n in names],
            percent=True,
        ),
        "uplift": charts.interval_dots(
            "相对对照组的召回率提升与真实提升",
            effects,
            [up[n]["recall_rate"]["diff"] for n in effects],
            [up[n]["recall_rate"]["lo"] for n in effects],
            [up[n]["recall_rate"]["hi"] for n in effects],
            "百分点",
            truth=[up[n]["true_uplift"]["recall_rate"] for n in effects],
        ),
        "retention": charts.line(
            "召回后留存（D7 → D30）",
            ["D7", "D30"],
            {n: [arms[n]["retention_d7"] or 0, arms[n]["retention_d30"] or 0] for n in names},
            "留存率",
            percent=True,
        ),
        "money": charts.line(
            "累计成本与真实增量收入（¥）",
            list(range(1, len(cost) + 1)),
            {"成本": cost, "增量收入": gain},
            "¥",
            "第几天",
        ),
        "guard": charts.line(
            "护栏每日拦截与延后", list(range(1, len(days) + 1)), guard, "次", "第几天"
        ),
    }
    return "".join(charts.figure_div(fig, f"{policy}:{key}") for key, fig in figures.items())


STYLE = (
    "body{font-family:sans-serif;max-width:900px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
    "font-size:13px}th{background:#f4f4f4}h3{margin-top:1.5em;font-size:15px}"
)


def render(
    results: list[dict],
    title: str = "回流 · 模拟校园报告",
    ranking: str = "",
    script_urls: tuple[str, str] | None = None,
) -> str:
    """The report page. Without `script_urls` plotly.js and the renderer are inlined (one
    self-contained file); with them (plotly.js, renderer) the page links to those instead."""
    body = "".join(policy_section(r) for r in results)
    if script_urls is None:
        scripts = (
            f"<script>{charts.plotly_js_path().read_text(encoding='utf-8')}</script>"
            f"<script>{charts.render_js()}</script>"
        )
    else:
        scripts = "".join(f'<script src="{html.escape(u)}"></script>' for u in script_urls)
    return (
        '<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{ranking}{body}{scripts}</body></html>"
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
