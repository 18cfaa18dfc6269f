"""The simulation report as one HTML file. Standalone it carries plotly.js inline, so it opens
offline; the dashboard stores the same page pointing at its own copy of plotly.js. Charts come
from backend/presentation/charts (the dashboard draws with the same builders). Labels are in
Simplified Chinese (merchants read it)."""

from __future__ import annotations

import html
from itertools import accumulate

from backend.presentation import charts
from backend.presentation.display import pct as _pct
from backend.presentation.display import pp as _pp_en
from backend.presentation.display import pp_interval as _pp_interval_en

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


def _pp_true(x: float | None) -> str:
    """A difference in percentage points, in Chinese; unknown said so."""
    return "未知" if x is None else _pp_en(x).replace(" pp", " 个百分点")


def _pp(d: dict) -> str:
    """A difference with its 95% interval, in Chinese; unknown said so."""
    if d.get("diff") is None:
        return "未知"
    text = _pp_interval_en(d).replace(" pp", " 个百分点")
    return text.replace("[", "（").replace("]", "）").replace(", ", " 至 ")


def group_zh(name: str) -> str:
    """A group's name as the merchant's page says it (the arm's own name in brackets)."""
    zh = GROUP_ZH.get(name)
    return name if zh is None else f"{zh}（{name}）" if name != "holdout" else zh


def _yuan(fen: float | None) -> str:
    return "未知" if fen is None else f"{fen / 100:,.2f}"


def _rate_n(rate: float | None, n: int) -> str:
    """A rate with its n; unknown (no one to measure) said so, never 0."""
    return "未知（n=0）" if rate is None or n == 0 else f"{_pct(rate, 0)}（n={n}）"


def policy_section(result: dict) -> str:
    """One policy's part of the report: its groups against the holdout and its daily charts."""
    c, arms, up, daily = result["config"], result["arms"], result["uplift"], result["daily"]
    names = list(arms)
    groups = daily.get("group_active") or []
    series = {group_zh(g): [day.get(g, 0) for day in groups] for g in (groups[0] if groups else {})}
    guard = {key.removeprefix("guard_"): daily[key] for key in daily if key.startswith("guard_")}
    guard["quiet_hours_deferred"] = daily.get("quiet_deferred", [])
    # Money actually spent each day when the campus records it; otherwise the committed cost
    # (every coupon's face value sent plus fees), labelled as such on the chart.
    spent = "spent_cost_fen" in daily
    cost = list(
        accumulate(
            v / 100 for v in daily.get("spent_cost_fen", daily.get("committed_cost_fen", []))
        )
    )
    gain = list(accumulate(v / 100 for v in daily.get("incremental_revenue_fen", [])))
    rows = "".join(
        f"<tr><td>{html.escape(group_zh(n))}</td><td>{a['users']}</td><td>{a['recalled']}</td>"
        f"<td>{_rate_n(a['recall_rate'], a['lapsed'])}</td>"
        f"<td>{_rate_n(a['retention_active']['rate'], a['retention_active']['n'])}</td>"
        f"<td>{_rate_n(a['retention_d7'], a.get('retention_d7_n', 0))}</td>"
        f"<td>{_rate_n(a['retention_d30'], a.get('retention_d30_n', 0))}</td>"
        f"<td>{a['messages']}</td><td>{_yuan(a.get('cost', a['coupon_cost']))}</td>"
        f"<td>{_yuan(a.get('committed_coupon_value'))}</td><td>{_yuan(a['revenue'])}</td>"
        f"<td>{_yuan(a['revenue'] - a['revenue_twin'] if 'revenue_twin' in a else None)}</td></tr>"
        for n, a in arms.items()
    )
    effects = "".join(
        f"<tr><td>{html.escape(group_zh(n))}</td>"
        f"<td>{arms[n]['lapsed'] if n in arms else '未知'}</td>"
        f"<td>{u.get('holdout_lapsed', '未知')}</td><td>{_pp(u['recall_rate'])}</td>"
        f"<td>{_pp_true(u['true_uplift']['recall_rate'])}</td>"
        f"<td>{_pp(u['retention_active'])}</td>"
        f"<td>{html.escape(u['recall_rate']['note'] or '')}</td></tr>"
        for n, u in up.items()
    )
    power = ""
    if "power" in result:
        power = f'<p class="power">{html.escape(power_zh(c["policy"], result["power"]))}</p>'
        said = warning_zh(c["policy"], result["power"]) if result.get("warning") else ""
        if said:
            power += f'<p class="warning" data-policy="{html.escape(c["policy"])}">⚠ {said}</p>'

    return (
        f"<h2>策略 {html.escape(c['policy'])}</h2>"
        + (f"<p>{html.escape(c['description'])}</p>" if c.get("description") else "")
        + f"<p>{c['users']} 名模拟用户，预热 {c['warmup_days']} 天后运行 {c['days']} 天，随机种子 "
        f"{c['seed']}。</p>"
        "<p>每名用户只计一次，归入其首次决策的分组；收入为该次触达归因窗口内的订单。"
        "实际花费 = 已核销券面值 + 消息费；已发券面值是承诺，单列。增量收入 = 同一批用户"
        "减去其未被触达的孪生体。</p>"
        "<p>召回只计决策时已流失（沉默达到流失风险阈值）的用户；决策时仍活跃的用户之后的回访"
        "是留存，不算召回。</p>"
        "<table><tr><th>分组</th><th>用户数</th><th>召回</th><th>召回率（n=流失用户）</th>"
        "<th>活跃用户留存（n=活跃用户）</th><th>D7 留存</th>"
        "<th>D30 留存</th><th>消息数</th><th>实际花费 ¥</th><th>已发券面值（承诺）¥</th>"
        "<th>毛收入 ¥</th><th>增量收入（对孪生体）¥</th></tr>"
        f"{rows}</table>"
        "<table><tr><th>分支</th><th>触达流失用户 n</th><th>对照流失用户 n</th>"
        "<th>相对对照组的召回率提升（95% 区间）</th><th>真实提升</th>"
        "<th>活跃用户留存提升（95% 区间）</th>"
        f"<th>说明</th></tr>{effects}</table>"
        + power
        + _charts(c["policy"], names, arms, up, series, cost, gain, guard, spent)
    )


def _charts(policy, names, arms, up, series, cost, gain, guard, spent=False) -> str:
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
            "累计成本（实际花费：已核销券面值与消息费）与真实增量收入（¥）"
            if spent
            else "累计成本（承诺：发出的券面值与消息费，不是实际花费；实际花费见上表）"
            "与真实增量收入（¥）",
            list(range(1, len(cost) + 1)),
            {"实际花费" if spent else "承诺成本（非实际花费）": cost, "增量收入（对孪生体）": gain},
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


def _month_note(c: dict) -> str:
    return (
        f"每月按 {c.get('month_days', 30)} 天折算：{c['days']} 天试验的效果 × "
        f"{c.get('month_days', 30)}/{c['days']}（假定效果在试验期内均匀发生）"
    )


def verdict_zh(out: dict) -> str:
    """The verdict in one Chinese paragraph (as `simulator.run.verdict_sentence`): a month's
    effect of the best policy against doing nothing, then every pair (a month too)."""
    c, rows = out["config"], out["ranking"]
    by, best = c["rank_by"], rows[0]
    month = best.get("per_month")
    if month is None:  # a trial stored before the per-month figures
        month, c = best, {**c, "days": 30, "month_days": 30}
    s, p = month["students"], month["profit"]
    profit = (
        f"多赚 {_money_zh(p['value'], False)}"
        if p["value"] >= 0
        else f"少赚 {_money_zh(-p['value'], False)}"
    )
    parts = [
        f"{best['policy']} 比什么都不做每月约多召回 {round(s['value'])} 名学生"
        f"（95% 区间 {round(s['lo'])} 至 {round(s['hi'])}）、{profit} 利润"
        f"（按 {c['margin']:.0%} 毛利计；每月 = {c['days']} 天试验的效果 × "
        f"{c.get('month_days', 30)}/{c['days']}）"
    ]
    money = by != "students"

    def amount(v: float) -> str:
        return _money_zh(v, False) if money else f"{round(v)} 名学生"

    for v in out["verdict"]:
        if v["significant"]:
            better, worse = (v["a"], v["b"]) if v["outcome"] == "better" else (v["b"], v["a"])
            parts.append(f"{better} 的{METRIC_ZH[by]}明显高于 {worse}")
        else:
            least = v.get("per_month", {}).get("min_detectable", v["min_detectable"])
            parts.append(
                f"{v['a']} 与 {v['b']} 在这个规模下分不出高下（这个规模下能分辨的最小差异为"
                f"每月 {amount(least)}）"
            )
    return "；".join(parts) + "。"


def warning_zh(name: str, plan: dict | None) -> str:
    """The power warning in the merchant's words: this policy's own holdout, at this size,
    cannot detect the effect the twin predicts, so the live report would read it as noise."""
    if not plan or plan.get("error") or plan.get("days_needed") == 0:
        return ""
    now = plan.get("detectable_now")
    can = "未知" if now is None else f"{100 * now:.1f} 个百分点"
    need = plan.get("users_needed")
    needs = "无法达到" if need is None else f"约 {need:,} 名被决策的学生"
    days = plan.get("days_needed")
    when = (
        f"，按当前量还需约 {days} 天"
        if days
        else f"，按当前量 {plan.get('max_days', 365)} 天内达不到"
    )
    return (
        f"{name} 自己的对照组在这个规模下测不出它的预期效果：孪生体预计它使召回率提高 "
        f"{100 * plan['effect']:+.1f} 个百分点，而对照组现在只能测出 {can}以上的提升"
        f"（80% 把握）；要测出需要{needs}（现有 {plan.get('users_now', 0):,} 名）{when}。"
        "线上报告在此之前会把它的效果显示为“不显著”。"
    )


def power_zh(name: str, plan: dict | None) -> str:
    """The holdout's power plan as a sentence (always shown, warning or not)."""
    if not plan:
        return f"{name} 的对照组功效：未知（没有对照组或没有可预期的效果）。"
    if plan.get("error"):
        return f"{name} 的对照组功效：未知（{plan['error']}）。"
    now = plan.get("detectable_now")
    can = "未知" if now is None else f"{100 * now:.1f} 个百分点"
    need = plan.get("users_needed")
    needs = "无法达到" if need is None else f"{need:,} 名"
    return (
        f"{name} 的对照组（留出 {plan['holdout_share']:.0%}）：孪生体预计召回率提升 "
        f"{100 * plan['effect']:+.1f} 个百分点；现有 {plan.get('users_now', 0):,} 名被决策学生，"
        f"能测出的最小提升 {can}；80% 把握测出预期效果需要 {needs}。"
    )


def _pairs_zh(out: dict) -> str:
    """Every pair, A minus B on the merchant's objective, over the trial and a month, with the
    smallest difference the trial could have resolved."""
    by = out["config"]["rank_by"]
    money = by != "students"
    show = _money_zh if money else _count_zh
    rows = []
    for v in out["verdict"]:
        said = (
            f"{v['a']} 优于 {v['b']}"
            if v["outcome"] == "better"
            else f"{v['a']} 不如 {v['b']}"
            if v["outcome"] == "worse"
            else f"{v['a']} 与 {v['b']} 分不出高下"
        )
        pm = v.get("per_month") or {}
        month = (
            f"{show(pm['difference'])}（{show(pm['lo'])} 至 {show(pm['hi'])}）" if pm else "未知"
        )
        least = show(pm["min_detectable"]).lstrip("+") if pm else "未知"
        rows.append(
            f"<tr><td>{html.escape(said)}</td>"
            f"<td>{show(v['difference'])}（{show(v['lo'])} 至 {show(v['hi'])}）</td>"
            f"<td>{month}</td><td>{least}</td></tr>"
        )
    return (
        f"<h3>每一对策略（A 减 B，{METRIC_ZH[by]}，同一批学生）</h3>"
        '<table id="pairs"><tr><th>结论</th><th>整个试验期的差异（95% 区间）</th>'
        "<th>每月差异（95% 区间）</th><th>这个规模下能分辨的最小差异（每月）</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def ranking_html(out: dict) -> str:
    """The compare verdict and ranking by paired effect against the twin, for the top of the
    report: a month's effect first, the trial's totals beside it, every pair, each policy's
    description, and what production's holdout would see (with its power)."""
    c = out["config"]

    def month(r: dict, m: str, money: bool) -> str:
        pm = r.get("per_month")
        return _effect_zh(pm[m], money) if pm else "未知"

    rows = "".join(
        f"<tr><td>{i}</td><td>{html.escape(r['policy'])}</td>"
        f"<td>{month(r, 'students', False)}</td><td>{month(r, 'profit', True)}</td>"
        f"<td>{_effect_zh(r['students'], False)}</td><td>{_effect_zh(r['orders'], False)}</td>"
        f"<td>{_effect_zh(r['revenue'], True)}</td>"
        f"<td>{_money_zh(r['cost']['value'], False)}</td>"
        f"<td>{_effect_zh(r['profit'], True)}</td>"
        f"<td>{_money_zh(r['gross_revenue'], False)}</td>"
        f"<td>{_money_zh(r['committed_coupon_value']['value'], False)}</td></tr>"
        for i, r in enumerate(out["ranking"], 1)
    )
    described = "".join(
        f"<li><strong>{html.escape(r['policy'])}</strong>："
        f"{html.escape(r.get('description') or '（无说明）')}</li>"
        for r in out["ranking"]
    )
    estimates = "".join(
        f"<tr><td>{html.escape(r['policy'])}</td>"
        f"<td>{_rate_n(r['holdout']['recall']['rate'], r['holdout']['recall']['n'])}</td>"
        f"<td>{_rate_n(r['holdout']['holdout_recall']['rate'], r['holdout']['holdout_users'])}"
        f"</td><td>{_pp(r['holdout']['incremental'])}</td>"
        f"<td>{_pp_true(r['holdout']['true_incremental'])}</td>"
        f"<td>{html.escape(power_zh(r['policy'], r.get('power')))}</td></tr>"
        for r in out["ranking"]
    )
    warnings = "".join(
        f'<p class="warning" data-policy="{html.escape(r["policy"])}">⚠ '
        f"{html.escape(warning_zh(r['policy'], r.get('power')))}</p>"
        for r in out["ranking"]
        if r.get("warning") and warning_zh(r["policy"], r.get("power"))
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
        f"<ul>{described}</ul>"
        "<p>每项都是相对未被触达的孪生体、在全校范围内的增量（95% 区间）。"
        f"{html.escape(_month_note(c))}。实际花费 = 已核销券面值 + 消息费；已发券面值是承诺，"
        "单列。利润 = 增量收入 × 毛利率 − 实际花费。</p>"
        "<table><tr><th>排名</th><th>策略</th><th>每月多回访学生</th><th>每月增量利润</th>"
        f"<th>多回访学生（{c['days']} 天）</th><th>多下订单</th><th>增量收入</th>"
        "<th>实际花费</th><th>增量利润</th><th>毛收入</th><th>已发券面值（承诺）</th></tr>"
        f"{rows}</table>"
        + _pairs_zh(out)
        + "<h3>线上对照组会看到的估计（单次试验，每名用户按首次决策计一次）</h3>"
        + warnings
        + "<table><tr><th>策略</th><th>触达组召回率（n=流失用户）</th>"
        "<th>对照组召回率（n=流失用户）</th>"
        "<th>召回率提升（95% 区间）</th><th>孪生体给出的真实提升</th><th>对照组功效</th></tr>"
        f"{estimates}</table>"
    )
