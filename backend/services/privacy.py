"""The user's rights over their data: marketing opt-out, a full export, and erasure."""

from __future__ import annotations

import json

from backend.clock import china_iso
from backend.services.coupons import coupon_dict, wallet
from backend.store.db import database
from backend.store.models import (
    ConsentLog,
    Coupon,
    Event,
    Order,
    SubscriptionAllowance,
    SubscriptionGrant,
    User,
)

# Why each kind of data is held: shown to the user in their export.
PURPOSES = {
    "profile": "identifies you within this mini-program (openid from WeChat login) and records "
    "whether you accept marketing messages",
    "events": "what you did in the mini-program, used to measure activity and to decide whether "
    "a reminder or coupon could be useful to you",
    "orders": "your paid orders, used for coupon redemption, spending totals and measuring "
    "whether offers worked",
    "coupons": "coupons issued to you and their use",
    "subscriptions": "which message templates you allowed, so we only send what you accepted",
    "consent": "a record of each marketing opt-out or opt-in you made, as proof of your choice",
}


def set_marketing(user: User, opt_out: bool, now_ms: int) -> None:
    with database.atomic():
        User.update(marketing_opt_out=opt_out).where(User.id == user.id).execute()
        ConsentLog.create(
            tenant=user.tenant_id,
            user=user.id,
            action="opt_out" if opt_out else "opt_in",
            at_ms=now_ms,
        )
    user.marketing_opt_out = opt_out


def export(user: User, now_ms: int) -> dict:
    """Every row held about the user, with the purpose of each kind."""
    user = User.get_by_id(user.id)
    events = Event.select().where(Event.user == user.id).order_by(Event.ts_ms, Event.id)
    orders = Order.select().where(Order.user == user.id).order_by(Order.paid_ms)
    allowances = SubscriptionAllowance.select().where(SubscriptionAllowance.user == user.id)
    consent = ConsentLog.select().where(ConsentLog.user == user.id).order_by(ConsentLog.at_ms)
    return {
        "purposes": PURPOSES,
        "profile": {
            "openid": user.openid,
            "unionid": user.unionid,
            "created_at": china_iso(user.created_ms),
            "last_seen_at": china_iso(user.last_seen_ms) if user.last_seen_ms else None,
            "marketing_opt_out": user.marketing_opt_out,
        },
        "events": [
            {
                "id": e.client_id,
                "type": e.type,
                "ts": china_iso(e.ts_ms),
                "props": json.loads(e.props),
            }
            for e in events
        ],
        "orders": [
            {
                "order_id": o.order_ref,
                "amount_fen": o.amount_fen,
                "paid_at": china_iso(o.paid_ms),
                "status": o.status,
            }
            for o in orders
        ],
        "coupons": [coupon_dict(c, now_ms) for c in wallet(user.tenant_id, user.id)],
        "subscriptions": [
            {"template_id": a.template_id, "remaining": a.remaining, "last_result": a.last_result}
            for a in allowances
        ],
        "consent": [{"action": c.action, "at": china_iso(c.at_ms)} for c in consent],
    }


def erase(user: User) -> dict:
    """Delete the user and everything personal; orders stay, anonymised, for the books.

    Events are deleted outright (not kept as anonymous rows): aggregate counts already taken
    into daily snapshots remain, but no row can be tied back to the person.
    """
    with database.atomic():
        counts = {
            "events": Event.delete().where(Event.user == user.id).execute(),
            "coupons": Coupon.delete().where(Coupon.user == user.id).execute(),
            "subscriptions": SubscriptionAllowance.delete()
            .where(SubscriptionAllowance.user == user.id)
            .execute(),
            "consent": ConsentLog.delete().where(ConsentLog.user == user.id).execute(),
            "orders_anonymised": Order.update(user=None).where(Order.user == user.id).execute(),
        }
        SubscriptionGrant.delete().where(SubscriptionGrant.user == user.id).execute()
        User.delete().where(User.id == user.id).execute()
    return counts
