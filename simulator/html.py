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

# The presets' groups in the merchant's words (other policies' groups keep their own names).
GROUP_ZH = {
    "holdout": "对照组（不发消息）",
    "never messaged": "未被决策",
    "same_coupon": "统一发券",
    "multi_touch": "多次触达",
    "subscribe_only": "仅订阅消息",
    "content_for_active": "活跃用户推内容",
    "coupon_for_low_frequency": "低频用户发券",
    "care_then_benefit": "先关怀再给权益",
    "order_notice": "订单提醒",
    "care": "关怀",
    "coupon": "发券",
}


def group_zh(name: str) -> str:
    zh = GROUP_ZH.get(name)
    return name if zh is None else f"{zh}（{name}）" if name != "holdout" else zh


def _yuan(fen: float | None) -> str:
    return "未知" if fen is None else f"{fen / 100:,.2f}"


def _rate_n(rate: float | None, n: int) -> str:
    """A rate with its n; unknown (no one to measure) said so, never 0."""
    return "未知（n=0）" if rate is None or n == 0 else f"{_pct(rate, 0)}（n={n}）"


def policy_section(result: dict) -> str:
    c, arms, up, daily = result["config"], result["arms"], result["uplift"], result["daily"]
    names = list(arms)
    groups = daily.get("group_active") or []
    series = {group_zh(g): [day.get(g, 0) for day in groups] for g in (groups[0] if groups else {})}
    guard = {key.removeprefix("guard_"): daily[key] for key in daily if key.startswith("guard_")}
    guard["quiet_hours_deferred"] = daily.get("quiet_deferred", [])
    cost = list(accumulate(v / 100 for v in daily.get("committed_cost_fen", [])))
    gain = list(accumulate(v / 100 for v in daily.get("incremental_revenue_fen", [])))
    rows = "".join(
        f"<tr><td>{html.escape(group_zh(n))}</td><td>{a['users']}</td><td>{a['recalled']}</td>"
        f"<td>{_rate_n(a['recall_rate'], a['users'])}</td>"
        f"<td>{_rate_n(a['retention_d7'], a.get('retention_d7_n', 0))}</td>"
        f"<td>{_rate_n(a['retention_d30'], a.get('retention_d30_n', 0))}</td>"
        f"<td>{a['messages']}</td><td>{_yuan(a.get('cost', a['coupon_cost']))}</td>"
        f"<td>{_yuan(a.get('committed_coupon_value'))}</td><td>{_yuan(a['revenue'])}</td>"
        f"<td>{_yuan(a['revenue'] - a['revenue_twin'] if 'revenue_twin' in a else None)}</td></tr>"
        for n, a in arms.items()
    )
    effects = "".join(
        f"<tr><td>{html.escape(group_zh(n))}</td><td>{_pp(u['recall_rate'])}</td>"
        f"<td>{_pp_true(u['true_uplift']['recall_rate'])}</td>"
        f"<td>{html.escape(u['recall_rate']['note'] or '')}</td></tr>"
        for n, u in up.items()
    )
    return (
        f"<h2>策略 {html.escape(c['policy'])}</h2>"
        + (f"<p>{html.escape(c['description'])}</p>" if c.get("description") else "")
        + f"<p>{c['users']} 名模拟用户，预热 {c['warmup_days']} 天后运行 {c['days']} 天，随机种子 "
        f"{c['seed']}。</p>"
        "<p>每名用户只计一次，归入其首次决策的分组；收入为该次触达归因窗口内的订单。"
        "实际花费 = 已核销券面值 + 消息费；已发券面值是承诺，单列。增量收入 = 同一批用户"
        "减去其未被触达的孪生体。</p>"
        "<table><tr><th>分组</th><th>用户数</th><th>召回</th><th>召回率</th><th>D7 留存</th>"
        "<th>D30 留存</th><th>消息数</th><th>实际花费 ¥</th><th>已发券面值（承诺）¥</th>"
        "<th>毛收入 ¥</th><th>增量收入（对孪生体）¥</th></tr>"
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
            [group_zh(n) for n in names],
            [arms[n]["recall_rate"] for n in names],
            "召回率",
            [arms[n]["recall"]["lo"] for n in names],
            [arms[n]["recall"]["hi"] for n in names],
            percent=True,
        ),
        "uplift": charts.interval_dots(
            "相对对照组的召回率提升与真实提升",
            [group_zh(n) for n in effects],
            [up[n]["recall_rate"]["diff"] for n in effects],
            [up[n]["recall_rate"]["lo"] for n in effects],
            [up[n]["recall_rate"]["hi"] for n in effects],
            "百分点",
            truth=[up[n]["true_uplift"]["recall_rate"] for n in effects],
        ),
        "retention": charts.line(
            "召回后留存（D7 → D30）",
            ["D7", "D30"],
            # Unknown retention (no return old enough to measure) is a gap, never 0.
            {group_zh(n): [arms[n]["retention_d7"], arms[n]["retention_d30"]] for n in names},
            "留存率",
            percent=True,
        ),
        "money": charts.line(
            "累计成本（承诺：发出的券面值与消息费）与真实增量收入（¥）",
            list(range(1, len(cost) + 1)),
            {"承诺成本": cost, "增量收入（对孪生体）": gain},
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


def _money_zh(fen: float, signed: bool = True) -> str:
    sign = ("+" if fen >= 0 else "-") if signed else ""
    return f"{sign}¥{abs(fen) / 100:,.0f}"


def _count_zh(value: float) -> str:
    v = round(value)
    return f"{v:+,d}" if v else "0"


def _effect_zh(e: dict, money: bool) -> str:
    show = _money_zh if money else _count_zh
    return f"{show(e['value'])}（{show(e['lo'])} 至 {show(e['hi'])}）"


METRIC_ZH = {"profit": "利润", "students": "回访学生数", "revenue": "收入"}


def verdict_zh(out: dict) -> str:
    """The verdict in one Chinese paragraph (as `simulator.run.verdict_sentence`)."""
    c, rows = out["config"], out["ranking"]
    by, best = c["rank_by"], rows[0]
    s, p = best["students"], best["profit"]
    profit = (
        f"多赚 {_money_zh(p['value'], False)} 利润"
        if p["value"] >= 0
        else f"少赚 {_money_zh(-p['value'], False)} 利润"
    )
    parts = [
        f"{best['policy']} 在 {c['days']} 天里比什么都不做多带回约 {round(s['value'])} 名学生"
        f"（95% 区间 {round(s['lo'])} 至 {round(s['hi'])}），"
        f"{profit}（按 {c['margin']:.0%} 毛利计）"
    ]
    money = by != "students"

    def amount(v: float) -> str:
        return _money_zh(v, False) if money else f"{round(v)} 名学生"

    for v in out["verdict"]:
        if v["significant"]:
            better, worse = (v["a"], v["b"]) if v["outcome"] == "better" else (v["b"], v["a"])
            parts.append(f"{better} 的{METRIC_ZH[by]}明显高于 {worse}")
        else:
            parts.append(
                f"{v['a']} 与 {v['b']} 在这个规模下分不出高下（可分辨的最小差异 "
                f"{amount(v['min_detectable'])}）"
            )
    return "；".join(parts) + "。"


def ranking_html(out: dict) -> str:
    """The compare verdict and ranking by paired effect against the twin, for the top of the
    report."""
    c = out["config"]
    rows = "".join(
        f"<tr><td>{i}</td><td>{html.escape(r['policy'])}</td>"
        f"<td>{_effect_zh(r['students'], False)}</td><td>{_effect_zh(r['orders'], False)}</td>"
        f"<td>{_effect_zh(r['revenue'], True)}</td>"
        f"<td>{_money_zh(r['cost']['value'], False)}</td>"
        f"<td>{_effect_zh(r['profit'], True)}</td>"
        f"<td>{_money_zh(r['gross_revenue'], False)}</td>"
        f"<td>{_money_zh(r['committed_coupon_value']['value'], False)}</td></tr>"
        for i, r in enumerate(out["ranking"], 1)
    )
    estimates = "".join(
        f"<tr><td>{html.escape(r['policy'])}</td>"
        f"<td>{_rate_n(r['holdout']['recall']['rate'], r['holdout']['recall']['n'])}</td>"
        f"<td>{_rate_n(r['holdout']['holdout_recall']['rate'], r['holdout']['holdout_users'])}"
        f"</td><td>{_pp(r['holdout']['incremental'])}</td>"
        f"<td>{_pp_true(r['holdout']['true_incremental'])}</td>"
        f"<td>{'对照组太小，测不出本策略的预期效果' if r.get('warning') else ''}</td></tr>"
        for r in out["ranking"]
    )
    seeds = (
        f"随机种子 {c['seed']}"
        if c.get("replicates", 1) == 1
        else f"随机种子 {c['seeds'][0]}–{c['seeds'][-1]} 合并"
    )
    return (
        f'<p class="verdict" id="verdict"><strong>{html.escape(verdict_zh(out))}</strong></p>'
        f"<h2>策略排名（按{METRIC_ZH[c['rank_by']]}；同一批 {c['users']} 名模拟用户、同一组随机数，"
        f"{seeds}）</h2>"
        "<p>每项都是相对未被触达的孪生体、在全校范围内的增量（95% 区间）。实际花费 = 已核销券面值"
        " + 消息费；已发券面值是承诺，单列。</p>"
        "<table><tr><th>排名</th><th>策略</th><th>多回访学生</th><th>多下订单</th><th>增量收入</th>"
        "<th>实际花费</th><th>增量利润</th><th>毛收入</th><th>已发券面值（承诺）</th></tr>"
        f"{rows}</table>"
        "<h3>线上对照组会看到的估计（单次试验，每名用户按首次决策计一次）</h3>"
        "<table><tr><th>策略</th><th>触达组召回率</th><th>对照组召回率</th>"
        "<th>召回率提升（95% 区间）</th><th>孪生体给出的真实提升</th><th>提示</th></tr>"
        f"{estimates}</table>"
    )
