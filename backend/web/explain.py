"""A user's scores as people read them: the API answers in English, the dashboard in Chinese.

The numbers are backend.services.scoring's (one snapshot row per user and day); only their
phrasing lives here, beside the other words the web layer shows.
"""

from __future__ import annotations

from typing import Protocol

from backend.core.calendar import day_date
from backend.core.tiers import TierConfig
from backend.services import scoring


class ScoreFacts(Protocol):
    """The fields of a score snapshot row (store.models.ScoreSnapshot) a reason quotes."""

    day: int
    tier: str
    reason: str
    segment: str
    r: int
    f: int
    m: int
    age_days: int
    visit_days_30: int
    days_since_visit: int
    term_days_since_visit: int
    p_alive: float | None
    expected_orders: float
    value_fen: int
    activity_index: float
    baseline: float
    warning: bool
    worth_recalling: bool
    spend_fen_total: int
    invites_total: int
    content_total: int
    usual_hour: int


# The reasons behind a score, as facts with their numbers, phrased per language: the API
# answers in English, the merchant's dashboard in Simplified Chinese. One list of facts.
REASON_TEXT = {
    "en": {
        "first_seen_recently": "first seen {age_days} days ago (new for {new_days} days)",
        "visits_regularly": "{visit_days_30} visit days in the last 30",
        "visits_rarely": "only {visit_days_30} visit days in the last 30 (fewer than {low_days})",
        "silent_term_days": "no visit for {term_silent} term days (churn risk from {risk_days})",
        "low_p_alive": "P(alive) {p_alive:.2f}: churn risk {risk:.2f} >= {risk_threshold}",
        "low_p_alive_unknown": "low P(alive)",
        "early_warning": "activity index {activity:.0f} stayed below 20% of their "
        "baseline {baseline:.0f} for 3 days",
        "silent_long": "no visit for {term_silent} term days (churned from {churned_days})",
        "tier": "tier {tier}: ",
        "break_days": "{break_days} of the {silent} silent days fell in a break and do not count",
        "segment": "segment {segment}: R{r} F{f} M{m}",
        "ltv": "paid {spend} fen in total (> {ltv})",
        "invites": "invited {invites} friends",
        "content": "wrote {content} reviews/comments",
        "worth": "worth recalling: {hits} of 3 ({which})",
        "not_worth": "not worth recalling: {hits} of 3 ({which})",
        "none": "none",
        "value": "expected {expected:.2f} orders in the next {horizon} days, worth {value} fen",
    },
    "zh": {
        "first_seen_recently": "{age_days} 天前首次出现（{new_days} 天内算新用户）",
        "visits_regularly": "近 30 天有 {visit_days_30} 天访问",
        "visits_rarely": "近 30 天仅 {visit_days_30} 天访问（少于 {low_days} 天）",
        "silent_term_days": "已 {term_silent} 个在校日未访问（满 {risk_days} 天即有流失风险）",
        "low_p_alive": "存活概率 {p_alive:.2f}，流失风险 {risk:.2f} ≥ {risk_threshold}",
        "low_p_alive_unknown": "存活概率低",
        "early_warning": "活跃指数 {activity:.0f} 连续 3 天低于其基线 {baseline:.0f} 的 20%",
        "silent_long": "已 {term_silent} 个在校日未访问（满 {churned_days} 天即算流失）",
        "tier": "分层「{tier_zh}」：",
        "break_days": "沉默的 {silent} 天中有 {break_days} 天是假期，不计入",
        "segment": "RFM 分群 {segment}：R{r} F{f} M{m}",
        "ltv": "累计消费 {spend} 分（> {ltv}）",
        "invites": "邀请了 {invites} 位好友",
        "content": "发表了 {content} 条评价/评论",
        "worth": "值得召回：满足 3 项中的 {hits} 项（{which}）",
        "not_worth": "不值得召回：满足 3 项中的 {hits} 项（{which}）",
        "none": "无",
        "value": "预计未来 {horizon} 天下单 {expected:.2f} 次，价值 {value} 分",
    },
}
TIER_ZH = {
    "new": "新用户",
    "active": "活跃",
    "low_frequency": "低频",
    "churn_risk": "流失风险",
    "churned": "已流失",
}


def explain(row: ScoreFacts, config: TierConfig, lang: str = "en") -> list[str]:
    """Plain reasons behind a user's tier, segment and value, with their numbers."""
    text = REASON_TEXT[lang]
    facts = {
        "tier": row.tier,
        "tier_zh": TIER_ZH.get(row.tier, row.tier),
        "age_days": row.age_days,
        "new_days": config.new_days,
        "visit_days_30": row.visit_days_30,
        "low_days": config.low_frequency_visit_days,
        "term_silent": row.term_days_since_visit,
        "risk_days": config.risk_silent_days,
        "churned_days": config.churned_silent_days,
        "p_alive": row.p_alive,
        "risk": 1 - (row.p_alive or 0),
        "risk_threshold": config.risk_score_threshold,
        "activity": row.activity_index,
        "baseline": row.baseline,
    }
    key = row.reason
    if key == "low_p_alive" and row.p_alive is None:
        key = "low_p_alive_unknown"
    reasons = [text["tier"].format(**facts) + text[key].format(**facts)]
    if row.days_since_visit != row.term_days_since_visit:
        reasons.append(
            text["break_days"].format(
                break_days=row.days_since_visit - row.term_days_since_visit,
                silent=row.days_since_visit,
            )
        )
    reasons.append(text["segment"].format(segment=row.segment, r=row.r, f=row.f, m=row.m))
    hits = [
        text["ltv"].format(spend=row.spend_fen_total, ltv=config.worth_ltv_fen)
        if row.spend_fen_total > config.worth_ltv_fen
        else None,
        text["invites"].format(invites=row.invites_total) if row.invites_total else None,
        text["content"].format(content=row.content_total) if row.content_total else None,
    ]
    hits = [h for h in hits if h]
    which = ("; " if lang == "en" else "；").join(hits) or text["none"]
    verdict = "worth" if row.worth_recalling else "not_worth"
    reasons.append(text[verdict].format(hits=len(hits), which=which))
    reasons.append(
        text["value"].format(
            expected=row.expected_orders, horizon=config.value_horizon_days, value=row.value_fen
        )
    )
    return reasons


def user_scores(tenant, user, day: int | None, lang: str = "en") -> dict:
    """One user's scores with their reasons: the admin API's answer (English) and the
    dashboard's user page (Chinese) show the same row in their reader's language.

    `tenant` and `user` are the request's store rows (the web layer does not import the store).

    Raises ApiError 404 (`not_scored`) when the user has no snapshot for that day.
    """
    row = scoring.score_row(tenant.id, user.id, day)
    return {
        "openid": user.openid,
        "date": day_date(row.day).isoformat(),
        "tier": row.tier,
        "segment": row.segment,
        "activity_index": row.activity_index,
        "baseline": row.baseline,
        "early_warning": row.warning,
        "rfm": {"r": row.r, "f": row.f, "m": row.m},
        "p_alive": row.p_alive,
        "expected_orders": row.expected_orders,
        "value_fen": row.value_fen,
        "worth_recalling": row.worth_recalling,
        "days_since_visit": row.days_since_visit,
        "term_days_since_visit": row.term_days_since_visit,
        "usual_hour": row.usual_hour,
        "reasons": explain(row, scoring.tier_config(tenant), lang),
    }
