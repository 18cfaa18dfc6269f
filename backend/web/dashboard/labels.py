"""What the dashboard shows for codes and numbers: Chinese labels and display formats,
registered as Jinja filters (`{{ tier|tier_zh }}`, `{{ rate|pct }}`, ...)."""

from __future__ import annotations

from backend.web.dashboard.blueprint import bp
from backend.web.explain import TIER_ZH

# Why a user was not messaged (core.policy REASONS), as a merchant would say it.
GUARD_ZH = {
    "opted_out": "用户已退订",
    "tier": "分层不符",
    "segment": "分群不符",
    "silence": "沉默天数不符",
    "not_worth": "不值得召回",
    "low_value": "价值过低",
    "no_trigger": "无触发事件",
    "no_arm_for_tier": "无对应分支",
    "waiting": "未到下一步",
    "missed": "错过时机",
    "journey_done": "旅程已结束",
    "not_targeted": "不在目标比例内",
    "suppressed": "连续忽略后抑制",
    "stop_loss": "止损暂停",
    "capped_30d": "30 天上限",
    "capped_channel": "渠道周上限",
    "no_permission": "无发送许可",
    "budget": "超出预算",
    "quiet_hours_deferred": "免打扰延后",
}

CHANNEL_ZH = {
    "subscribe": "订阅消息",
    "oa_template": "公众号模板消息",
    "sms": "短信",
    "in_app": "小程序内卡片",
}
STATUS_ZH = {
    "queued": "排队中",
    "sending": "发送中",
    "sent": "已发送",
    "held_out": "对照组",
    "skipped": "被拦截",
    "failed": "失败",
    "expired": "过期未发",
}
RUN_STATUS_ZH = {
    "queued": "排队中",
    "running": "运行中",
    "done": "已完成",
    "failed": "失败",
    "cancelled": "已取消",
    "stalled": "已中断",
}
LABELS = {
    "tier_zh": TIER_ZH,
    "guard_zh": GUARD_ZH,
    "channel_zh": CHANNEL_ZH,
    "status_zh": STATUS_ZH,
    "run_status_zh": RUN_STATUS_ZH,
}
for _name, _table in LABELS.items():
    bp.add_app_template_filter(lambda code, table=_table: table.get(code, code), _name)


# What a number the report could not compute (no users, no cost) reads as: never 0 or a dash
# a merchant might take for nothing.
UNKNOWN = "未知"


@bp.app_template_filter("pct")
def pct(x) -> str:
    """A rate as a merchant reads it (12.3%); unknown, never 0, when it could not be computed."""
    return UNKNOWN if x is None else f"{100 * x:.1f}%"


@bp.app_template_filter("yuan")
def yuan(fen) -> str:
    """Fen as yuan (¥12.30); unknown when there is no amount."""
    return UNKNOWN if fen is None else f"¥{fen / 100:,.2f}"


@bp.app_template_filter("pp")
def pp(d: dict | float | None) -> str:
    """A difference in percentage points, with its interval when it has one."""
    if isinstance(d, int | float):
        return f"{100 * d:+.1f} 个百分点"
    if not d or d.get("diff") is None:
        return UNKNOWN
    text = f"{100 * d['diff']:+.1f} 个百分点"
    if d.get("lo") is not None:
        text += f"（95% 区间 {100 * d['lo']:+.1f} ~ {100 * d['hi']:+.1f}）"
    return text


@bp.app_template_filter("ratio")
def ratio(x) -> str:
    """A ratio such as ROI to two places; unknown when it could not be computed."""
    return UNKNOWN if x is None else f"{x:.2f}"


@bp.app_template_filter("when")
def when(iso: str | None) -> str:
    """An ISO China time as a merchant reads it: 2026-03-10 18:00. None here means it has not
    happened (not sent, not back), not that it is unknown: a dash."""
    return "—" if not iso else iso.replace("T", " ")[:16]
