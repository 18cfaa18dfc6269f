"""The user's rights over their data: marketing opt-out, a full export, and erasure.

HOLDINGS names every table that holds rows about a user (tied to the user row directly or
through another such table), which export section shows them and what erasure does to them.
Export and erasure both walk it, and tests/test_privacy_coverage.py fails when a table that
refers to a user is missing from it, so a table added later cannot be forgotten.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import peewee as pw

from backend.core.calendar import day_date
from backend.core.clock import china_iso
from backend.services.coupons import coupon_dict
from backend.store.db import database
from backend.store.models import (
    BaseModel,
    ConsentLog,
    Coupon,
    CouponTemplate,
    Event,
    NightlyState,
    Order,
    Policy,
    ScoreSnapshot,
    SmsMessage,
    SubscriptionAllowance,
    SubscriptionGrant,
    Touch,
    User,
)

# Why each kind of data is held: shown to the user in their export.
PURPOSES = {
    "profile": "identifies you within this mini-program (openid and, if WeChat gave it, unionid "
    "from WeChat login), records whether you accept marketing messages, and holds the phone "
    "number and Official Account follower id the merchant gave us to reach you by SMS or "
    "Official Account message",
    "events": "what you did in the mini-program, used to measure activity and to decide whether "
    "a reminder or coupon could be useful to you",
    "orders": "your paid orders, used for coupon redemption, spending totals and measuring "
    "whether offers worked; if you erase your data they stay, with no link to you, for the "
    "merchant's accounts",
    "coupons": "coupons issued to you and their use",
    "subscriptions": "which message templates you allowed, so we only send what you accepted",
    "subscription_answers": "each answer you gave to a subscribe-message prompt, so an answer "
    "sent twice is counted once",
    "consent": "a record of each marketing opt-out or opt-in you made, as proof of your choice",
    "scores": "your daily activity scores (tier, activity index, expected orders and value), "
    "computed from your events and orders to decide whether a reminder or coupon could help",
    "messages": "each reminder, message or coupon offer decided for you, whether it was sent or "
    "held back to measure if such messages help, and whether you came back afterwards",
    "sms": "the text messages sent to your phone number, as the record of what was sent",
}

# Columns of the user row and where the export's profile shows them; the rest are not data
# about the person. The coverage test fails when a new User column is in neither.
PROFILE_FIELDS = {
    "openid": "openid",
    "unionid": "unionid",
    "phone": "phone",
    "oa_openid": "oa_openid",
    "created_ms": "created_at",
    "last_seen_ms": "last_seen_at",
    "marketing_opt_out": "marketing_opt_out",
}
NOT_EXPORTED = {
    "id": "the internal row number",
    "tenant": "which mini-program the user belongs to: the one being asked",
    "token_key": "a login secret; showing it would help no one but a thief",
}


@dataclass(frozen=True)
class Holding:
    """One table's rows about a user: the export section showing them, what erasure does
    ("delete", or "anonymise": every link to the user or their rows set to NULL), and the
    condition selecting them."""

    section: str
    erasure: str
    rows: Callable[[User], pw.Expression]


def _touches(user: User) -> pw.Select:
    return Touch.select(Touch.id).where(Touch.user == user.id)


def _sms_rows(user: User) -> pw.Expression:
    """The user's SMS, and outbox rows to their phone whose touch is already gone (left by a
    deleted policy, or by an erasure before the outbox was covered)."""
    cond = SmsMessage.touch.in_(_touches(user))
    if user.phone:
        orphan = SmsMessage.touch.is_null() & (SmsMessage.tenant == user.tenant_id)
        cond |= orphan & (SmsMessage.phone == user.phone)
    return cond


# In erasure order: a table is erased before the tables its rows are found through.
HOLDINGS: dict[type[BaseModel], Holding] = {
    SmsMessage: Holding("sms", "delete", _sms_rows),
    Touch: Holding("messages", "delete", lambda u: Touch.user == u.id),
    Order: Holding(
        "orders",
        "anonymise",
        lambda u: (
            (Order.user == u.id)
            | Order.coupon.in_(Coupon.select(Coupon.id).where(Coupon.user == u.id))
        ),
    ),
    Coupon: Holding("coupons", "delete", lambda u: Coupon.user == u.id),
    Event: Holding("events", "delete", lambda u: Event.user == u.id),
    SubscriptionAllowance: Holding(
        "subscriptions", "delete", lambda u: SubscriptionAllowance.user == u.id
    ),
    SubscriptionGrant: Holding(
        "subscription_answers", "delete", lambda u: SubscriptionGrant.user == u.id
    ),
    ConsentLog: Holding("consent", "delete", lambda u: ConsentLog.user == u.id),
    ScoreSnapshot: Holding("scores", "delete", lambda u: ScoreSnapshot.user == u.id),
    User: Holding("profile", "delete", lambda u: User.id == u.id),
}


def set_marketing(user: User, opt_out: bool, now_ms: int) -> None:
    """Record a user's marketing choice and log it in the consent log (at `now_ms`, UTC epoch
    ms) in one transaction: the log is the proof of what they chose, and when."""
    with database.atomic():
        User.update(marketing_opt_out=opt_out).where(User.id == user.id).execute()
        ConsentLog.create(
            tenant=user.tenant_id,
            user=user.id,
            action="opt_out" if opt_out else "opt_in",
            at_ms=now_ms,
        )
    user.marketing_opt_out = opt_out


def _iso(ms: int | None) -> str | None:
    return china_iso(ms) if ms is not None else None


def _select(model: type[BaseModel], user: User) -> pw.ModelSelect:
    return model.select().where(HOLDINGS[model].rows(user))


def _profile(user: User) -> dict:
    out = {}
    for column, key in PROFILE_FIELDS.items():
        value = getattr(user, column)
        out[key] = _iso(value) if column.endswith("_ms") else value
    return out


def _score(s: ScoreSnapshot) -> dict:
    skip = {"id", "tenant", "user", "day"}
    out: dict = {"date": day_date(s.day).isoformat()}
    out.update(
        {
            f.name: getattr(s, f.name)
            for f in ScoreSnapshot._meta.sorted_fields
            if f.name not in skip
        }
    )
    return out


def _message(t: Touch, policy_names: dict[int, str]) -> dict:
    return {
        "policy": policy_names.get(t.policy_id),
        "date": day_date(t.day).isoformat(),
        "arm": t.arm,
        "step": t.step,
        "channel": t.channel,
        "message": t.message,
        "coupon_template": t.coupon_template,
        "tier": t.tier,
        "held_out": t.holdout,
        "status": t.status,
        "reason": t.reason,
        "sent_at": _iso(t.sent_ms),
        "opened_at": _iso(t.opened_ms),
        "returned_at": _iso(t.returned_ms),
        "ordered_at": _iso(t.ordered_ms),
        "revenue_fen": t.revenue_fen,
        "estimated_value_fen": t.value_fen,
    }


def export(user: User, now_ms: int) -> dict:
    """Every row held about the user, with the purpose of each kind."""
    user = User.get_by_id(user.id)
    touches = list(_select(Touch, user).order_by(Touch.day, Touch.step, Touch.id))
    policy_ids = {t.policy_id for t in touches}
    policy_names = (
        {p.id: p.name for p in Policy.select(Policy.id, Policy.name).where(Policy.id << policy_ids)}
        if policy_ids
        else {}
    )
    coupons = (
        Coupon.select(Coupon, CouponTemplate)
        .join(CouponTemplate)
        .where(HOLDINGS[Coupon].rows(user))
        .order_by(Coupon.expires_ms, Coupon.id)
    )
    return {
        "purposes": PURPOSES,
        "profile": _profile(user),
        "events": [
            {
                "id": e.client_id,
                "type": e.type,
                "ts": china_iso(e.ts_ms),
                "props": json.loads(e.props),
            }
            for e in _select(Event, user).order_by(Event.ts_ms, Event.id)
        ],
        "orders": [
            {
                "order_id": o.order_ref,
                "amount_fen": o.amount_fen,
                "paid_at": china_iso(o.paid_ms),
                "status": o.status,
            }
            for o in _select(Order, user).order_by(Order.paid_ms, Order.id)
        ],
        "coupons": [coupon_dict(c, now_ms) for c in coupons],
        "subscriptions": [
            {"template_id": a.template_id, "remaining": a.remaining, "last_result": a.last_result}
            for a in _select(SubscriptionAllowance, user).order_by(SubscriptionAllowance.id)
        ],
        "subscription_answers": [
            {"id": g.request_id, "results": json.loads(g.results), "at": china_iso(g.created_ms)}
            for g in _select(SubscriptionGrant, user).order_by(SubscriptionGrant.created_ms)
        ],
        "consent": [
            {"action": c.action, "at": china_iso(c.at_ms)}
            for c in _select(ConsentLog, user).order_by(ConsentLog.at_ms, ConsentLog.id)
        ],
        "scores": [_score(s) for s in _select(ScoreSnapshot, user).order_by(ScoreSnapshot.day)],
        "messages": [_message(t, policy_names) for t in touches],
        "sms": [
            {"phone": m.phone, "text": m.text, "at": china_iso(m.created_ms)}
            for m in _select(SmsMessage, user).order_by(SmsMessage.created_ms, SmsMessage.id)
        ],
    }


def _anonymise(model: type[BaseModel], user: User) -> int:
    """Cut every link from the model's rows to the user or to the user's rows; the rows stay."""
    touched: set[int] = set()
    for fk, target in model._meta.refs.items():
        if target is User:
            cond = fk == user.id
        elif target in HOLDINGS:
            cond = fk.in_(target.select(target.id).where(HOLDINGS[target].rows(user)))
        else:
            continue
        ids = [r.id for r in model.select(model.id).where(cond)]
        if ids:
            model.update({fk: None}).where(model.id.in_(ids)).execute()
        touched.update(ids)
    return len(touched)


def erase(user: User) -> dict:
    """Delete the user and everything personal; orders stay, anonymised, for the books.

    Events are deleted outright (not kept as anonymous rows): aggregate counts already taken
    into daily snapshots remain, but no row can be tied back to the person. The SMS outbox goes
    too, so no copy of the phone number or text is left. The tenant's kept nightly scoring
    state, which holds the user's sums by position, is dropped as well.
    """
    counts: dict[str, int] = {}
    with database.atomic():
        for model, holding in HOLDINGS.items():
            if holding.erasure == "anonymise":
                counts[f"{holding.section}_anonymised"] = _anonymise(model, user)
            else:
                counts[holding.section] = model.delete().where(holding.rows(user)).execute()
        # The tenant's kept scoring state (services/nightly_state.py) holds this user's sums
        # among everyone's: it goes too, and the next night rebuilds it without them.
        NightlyState.delete().where(NightlyState.tenant == user.tenant_id).execute()
    return counts
