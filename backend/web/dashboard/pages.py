"""The dashboard's pages: overview, policies, user lookup.

Each page gathers its numbers from the services the admin API and `python app.py report` use
(the report itself for every measure), then describes its charts with backend.presentation.charts.
"""

from __future__ import annotations

from flask import current_app, g, render_template, request
from markupsafe import Markup

from backend.core.calendar import china_day
from backend.core.policy.spec import CHANNELS
from backend.core.tiers import TIERS, TierConfig
from backend.errors import ApiError
from backend.presentation import charts
from backend.services import campaign_log, policies, reports, scoring, users
from backend.services import overview as overview_data
from backend.services.campaigns import outbox, preview
from backend.web import explain
from backend.web.dashboard.blueprint import bp
from backend.web.dashboard.labels import GUARD_ZH
from backend.web.dashboard.session import login_required

RECENT_TOUCHES = 50  # on a policy's page
USER_TOUCHES = 100  # on a user's page


def _now_ms() -> int:
    """The app's clock (a fake one in tests and the simulator), never the wall's."""
    return current_app.config["CLOCK"].now_ms()


def _today() -> int:
    """Today's China day number by the app's clock: the day a dry run decides for."""
    return int(china_day(_now_ms()))


@bp.app_template_global("chart")
def _chart(figure: dict, name: str) -> Markup:
    """Templates draw a chart described by backend.presentation.charts as
    `{{ chart(figure, name) }}`."""
    return Markup(charts.figure_div(figure, name))


# Overview ---------------------------------------------------------------------------------


@bp.get("/")
@login_required
def overview():
    """A merchant's first page: are the policies working (against their holdouts), what they
    cost, and who slipped this week."""
    policy, day_from, day_to = reports.parse_span(g.tenant_id, request.args, _today())
    rep = reports.report(g.tenant_id, policy, day_from, day_to)
    try:
        today = scoring.summary(g.tenant_id, None)
    except ApiError:
        today = None  # not scored yet: the page says so
    history = overview_data.tier_history(g.tenant_id)
    live = [row.name for row, _ in policies.active_rows(g.tenant_id)]
    shown = [p for p in rep["policies"] if policy is not None or p["policy"] in live]
    figures = _overview_figures(today, history, shown, rep["spend"])
    return render_template(
        "dashboard/overview.html",
        report=rep,
        shown=shown,
        live=live,
        today=today,
        lapsed=overview_data.lapsed_this_week(g.tenant_id),
        lapsed_after_days=_lapsed_after_days(),
        figures=figures,
        filter={
            "policy": policy or "",
            "from": request.args.get("from", ""),
            "to": request.args.get("to", ""),
        },
        all_policies=[r.name for r in policies.all_rows(g.tenant_id)],
    )


def _lapsed_after_days() -> int:
    """The silence (term days) past which a user counts as lapsed at decision, for the
    page's explanation (core.recall: the tenant's churn-risk silence threshold)."""
    try:
        return scoring.tier_config(g.tenant).risk_silent_days
    except ValueError:  # settings are checked when saved; the defaults if ever not
        return TierConfig().risk_silent_days


def _fen(x: float | None) -> float | None:
    """Fen to yuan for a chart axis, keeping a missing value missing."""
    return None if x is None else x / 100


def _pair_bars(title: str, shown: list[dict], keys: tuple[str, str], ns: tuple[str, str]):
    """A rate for the policy's users beside its holdout's, each bar named with its n."""
    names = [p["policy"] for p in shown]
    return charts.bars(
        title,
        [
            f"{p['policy']}·{group}（n={p[n]}）"
            for p in shown
            for group, n in zip(("策略组", "对照组"), ns, strict=True)
        ],
        [p[k]["rate"] for p in shown for k in keys],
        "比例",
        [p[k]["lo"] for p in shown for k in keys],
        [p[k]["hi"] for p in shown for k in keys],
        percent=True,
        colors=[c for _ in names for c in (charts.PALETTE[0], charts.PALETTE[5])],
    )


def _overview_figures(today, history, shown, spend) -> dict:
    """The overview's charts: tiers today and over time, each policy against its holdout, and
    spend per policy."""
    figs = {}
    if today:
        figs["tiers_today"] = charts.bars(
            f"今日各分层人数（{today['date']}）",
            [explain.TIER_ZH[t] for t in TIERS],
            [today["tiers"][t] for t in TIERS],
            "人",
        )
    if len(history["dates"]) >= 2:  # a trend needs two scored days
        figs["tiers_history"] = charts.stacked_area(
            "各分层人数变化",
            history["dates"],
            {explain.TIER_ZH[t]: history["tiers"][t] for t in TIERS},
            "人",
        )
    if shown:
        names = [p["policy"] for p in shown]
        figs["recall"] = _pair_bars(
            "流失用户召回率：策略组 vs 对照组（95% 区间）",
            shown,
            ("recall_rate", "holdout_recall_rate"),
            ("lapsed_users", "holdout_lapsed_users"),
        )
        figs["retention_active"] = _pair_bars(
            "活跃用户留存：策略组 vs 对照组（95% 区间）",
            shown,
            ("retention_active", "holdout_retention_active"),
            ("active_users", "holdout_active_users"),
        )
        figs["uplift"] = charts.interval_dots(
            "流失用户召回率提升（对比对照组的流失用户，95% 区间）",
            names,
            [p["incremental_recall"]["diff"] for p in shown],
            [p["incremental_recall"]["lo"] for p in shown],
            [p["incremental_recall"]["hi"] for p in shown],
            "百分点",
        )
        figs["revenue"] = charts.interval_dots(
            "每用户增量收入 ¥（对比对照组，95% 区间）",
            names,
            [_fen(p["incremental_revenue_per_user_fen"]["diff"]) for p in shown],
            [_fen(p["incremental_revenue_per_user_fen"]["lo"]) for p in shown],
            [_fen(p["incremental_revenue_per_user_fen"]["hi"]) for p in shown],
            "¥",
            percent=False,
        )
        if any(p["retention_d30"]["rate"] is not None for p in shown):
            figs["retention"] = charts.bars(
                "召回用户 D30 留存（95% 区间）",
                [f"{p['policy']}（n={p['retention_d30']['n']}）" for p in shown],
                [p["retention_d30"]["rate"] for p in shown],
                "留存率",
                [p["retention_d30"]["lo"] for p in shown],
                [p["retention_d30"]["hi"] for p in shown],
                percent=True,
            )
    for s in spend:
        dates = [d["date"] for d in s["days"]]
        series = {"当日承诺花费 ¥": [d["committed_fen"] / 100 for d in s["days"]]}
        if s["run_budget_fen"] is not None:
            series["单次预算 ¥"] = [s["run_budget_fen"] / 100] * len(dates)
        figs[f"spend:{s['policy']}"] = charts.line(
            f"{s['policy']} 每日花费与预算", dates, series, "¥"
        )
    return figs


# Policies ---------------------------------------------------------------------------------


@bp.get("/policies")
@login_required
def policy_list():
    """The tenant's policies, each with what it is for, active or not."""
    rows = policies.all_rows(g.tenant_id)
    return render_template(
        "dashboard/policies.html", rows=[(r, policies.description(r)) for r in rows]
    )


@bp.get("/policies/<name>")
@login_required
def policy_page(name: str):
    """One policy: how it does, what its guard rails stopped, its recent touches and its source
    to edit."""
    return _policy_view(name)


@bp.post("/policies/<name>/check")
@login_required
def policy_check(name: str):
    """Validate an edited policy file and dry-run it on the latest scores; saves nothing."""
    row = policies.get(g.tenant_id, name)
    source = request.form.get("source", "")
    check: dict = {"source": source}
    try:
        edited = policies.parse(source)
        policies.check_coupons(g.tenant_id, edited)
    except ApiError as exc:
        check["error"] = {"message": exc.message, **exc.extra}
        return _policy_view(name, check), 400
    check["valid"] = True
    if request.form.get("action") == "dry_run":
        try:
            check["preview"] = preview.preview(row, edited, _today(), _now_ms())
        except ApiError as exc:
            check["preview_error"] = exc.message
    return _policy_view(name, check)


def _policy_view(name: str, check: dict | None = None):
    """The policy page, with the result of a check of an edited source when there is one."""
    row = policies.get(g.tenant_id, name)
    spec = policies.readable(row)
    ledger = reports.ledger(g.tenant_id, name)
    rep = reports.report(g.tenant_id, name)
    entry = next((p for p in rep["policies"] if p["policy"] == name), None)
    touches = campaign_log.policy_touches(g.tenant_id, row.id, RECENT_TOUCHES)
    openids = users.openids(t.user_id for t in touches)
    return render_template(
        "dashboard/policy.html",
        row=row,
        spec=spec,
        entry=entry,
        ledger=ledger,
        guard_totals=_guard_totals(ledger),
        touches=[dict(outbox.touch_dict(t), user=openids.get(t.user_id)) for t in touches],
        figures=_policy_figures(spec, ledger),
        check=check,
        source=(check or {}).get("source", row.source),
        tier_names=TIERS,
        channel_names=CHANNELS,
    )


def _guard_totals(ledger: list[dict]) -> dict:
    """How many users each guard rail stopped over the ledger's days, for the page's table."""
    out: dict[str, int] = {}
    for r in ledger:
        for reason, n in r["skipped"].items():
            out[reason] = out.get(reason, 0) + n
        out["quiet_hours_deferred"] = out.get("quiet_hours_deferred", 0) + r["quiet_hours_deferred"]
    return out


def _policy_figures(spec, ledger: list[dict]) -> dict:
    """The policy's charts: how the bandit shared sends between arms, and the guard rails by day."""
    if not ledger:
        return {}
    dates = [r["date"] for r in ledger]
    arms = [a.name for a in spec.arms]
    arms += sorted({a for r in ledger for a in r["sends_by_arm"]} - set(arms))
    reasons = sorted({k for r in ledger for k in r["skipped"]})
    guard = {GUARD_ZH.get(k, k): [r["skipped"].get(k, 0) for r in ledger] for k in reasons}
    guard[GUARD_ZH["quiet_hours_deferred"]] = [r["quiet_hours_deferred"] for r in ledger]
    return {
        "shares": charts.stacked_area(
            "各分支发送占比（多臂老虎机的分配）",
            dates,
            {a: [r["sends_by_arm"].get(a, 0) for r in ledger] for a in arms},
            "占比",
            share=True,
        ),
        "guard": charts.line("护栏每日拦截与延后", dates, guard, "人次"),
    }


# User lookup ------------------------------------------------------------------------------


@bp.get("/users")
@login_required
def user_lookup():
    """A merchant answering a user (a complaint, a question): profile, scores with reasons,
    touches, coupons, consent."""
    openid = request.args.get("openid", "").strip()
    if not openid:
        return render_template("dashboard/user.html", openid="", user=None)
    try:
        user = users.by_openid(g.tenant_id, openid)
    except ApiError:
        return render_template("dashboard/user.html", openid=openid, user=None, missing=True), 404
    try:
        scores = explain.user_scores(g.tenant, user, None, lang="zh")
    except ApiError:
        scores = None
    profile = users.profile(g.tenant_id, user, _now_ms())
    touches = campaign_log.user_touches(g.tenant_id, user.id, USER_TOUCHES)
    return render_template(
        "dashboard/user.html",
        openid=openid,
        user=user,
        created_at=profile["created_at"],
        last_seen_at=profile["last_seen_at"],
        events=profile["events"],
        orders=profile["orders"],
        scores=scores,
        touches=[outbox.touch_dict(t) for t in touches],
        coupons=profile["coupons"],
        allowances=profile["allowances"],
        consents=users.consents(g.tenant_id, user.id),
    )
