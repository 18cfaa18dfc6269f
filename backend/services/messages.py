"""Filling a policy's message with a user's facts, and checking it before WeChat sees it.

WeChat refuses over-long template fields with 47003 and punishes marketing wording in service
notices (template removed, then sending bans). Both are checked here, before any send, so a
defect is a clear local error instead of a penalty.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from backend.core.policy.spec import Message

# WeChat's subscribe/template field types, by key prefix, and their limits.
FIELD_LIMITS = {
    "thing": 20,
    "phrase": 5,
    "name": 10,
    "number": 32,
    "character_string": 32,
    "letter": 32,
    "symbol": 5,
    "car_number": 8,
    "phone_number": 17,
}
_NUMBER = re.compile(r"^\d+(\.\d+)?$")
_AMOUNT = re.compile(r"^[¥￥]?\d{1,10}(\.\d{1,2})?元?$")
_CHINESE = re.compile(r"^[\u4e00-\u9fff]+$")
_CHARSTR = re.compile(r"^[\x21-\x7e]+$")
_TIME = re.compile(r"^\d{4}(-\d{2}-\d{2}|年\d{1,2}月\d{1,2}日)( \d{2}:\d{2}(:\d{2})?)?$")

# Promotional wording WeChat treats as marketing in service notices (WECHAT_RULES.md).
# A coupon the user already holds may be named; selling one may not.
MARKETING_WORDS = (
    "优惠",
    "折扣",
    "打折",
    "特价",
    "促销",
    "红包",
    "返利",
    "返现",
    "免费",
    "限时",
    "秒杀",
    "抢购",
    "福利",
    "活动",
    "大促",
    "赠送",
    "满减",
    "积分",
)
SMS_OPT_OUT = "拒收请回复R"


class MessageDefect(ValueError):
    """A message that must not be sent as it is (counted as a defect, never retried)."""


@dataclass(frozen=True)
class Rendered:
    """A message filled in for one user and checked for its channel: `fields` the WeChat
    template data (key -> value), `text`/`title` the SMS or in-app card, `page` the
    mini-program page the message opens."""

    fields: dict[str, str]  # subscribe / OA template data
    text: str | None  # SMS and in-app
    title: str | None
    page: str | None


def field_type(key: str) -> str:
    """The WeChat field type a template data key names: `thing1` -> thing."""
    return key.rstrip("0123456789")


def check_field(key: str, value: str) -> None:
    """Refuse (MessageDefect) a value WeChat would refuse for its field type, or that uses
    marketing wording where WeChat forbids it: found before sending, not as errcode 47003."""
    kind = field_type(key)
    if not value:
        raise MessageDefect(f"{key} is empty")
    if kind in ("thing", "name", "phrase") and any(w in value for w in MARKETING_WORDS):
        word = next(w for w in MARKETING_WORDS if w in value)
        raise MessageDefect(f"{key} contains marketing wording {word!r}")
    limit = FIELD_LIMITS.get(kind)
    if limit is not None and len(value) > limit:
        raise MessageDefect(f"{key} is {len(value)} characters; WeChat allows {limit}")
    if kind == "phrase" and not _CHINESE.match(value):
        raise MessageDefect(f"{key} must be Chinese characters only")
    if kind == "number" and not _NUMBER.match(value):
        raise MessageDefect(f"{key} must be a number")
    if kind == "amount" and not _AMOUNT.match(value):
        raise MessageDefect(f"{key} must be an amount like ¥5.00")
    if kind == "character_string" and not _CHARSTR.match(value):
        raise MessageDefect(f"{key} must be letters, digits and symbols")
    if kind in ("time", "date") and not _TIME.match(value):
        raise MessageDefect(f"{key} must be a date like 2026-11-23")


def _fill(text: str, context: dict[str, str]) -> str:
    try:
        return text.format_map(context)
    except (KeyError, ValueError) as exc:
        raise MessageDefect(f"cannot fill {text!r}: {exc}") from None


def render(message: Message, channel: str, context: dict[str, str]) -> Rendered:
    """The message with the user's facts filled in, checked for its channel."""
    if channel in ("subscribe", "oa_template"):
        fields = {k: _fill(v, context) for k, v in message.fields.items()}
        for key, value in fields.items():
            check_field(key, value)
        return Rendered(fields, None, None, message.page)
    text = _fill(message.text or "", context)
    if channel == "sms":
        if SMS_OPT_OUT not in text:
            text = f"{text}{SMS_OPT_OUT}"
        if len(text) > 300:
            raise MessageDefect(f"SMS text is {len(text)} characters; the limit is 300")
    title = _fill(message.title, context) if message.title else None
    return Rendered({}, text, title, message.page)
