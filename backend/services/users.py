"""Finding and creating the users of one tenant, and the profile a merchant looks up.

The admin API (`GET /admin/v1/users/<openid>`) and the dashboard's user page show the same
profile; both ask here, so the counts and the wallet are read one way.
"""

from __future__ import annotations

from collections.abc import Iterable

from backend.core.clock import china_iso
from backend.errors import ApiError
from backend.services import coupons, subscriptions
from backend.store.db import write_transaction
from backend.store.models import ConsentLog, Event, Order, Tenant, User


def get_or_create(tenant_id: int, openid: str, unionid: str | None, now_ms: int) -> User:
    """The user for an openid, created on first login; safe when two logins race."""
    User.insert(
        tenant=tenant_id, openid=openid, unionid=unionid, created_ms=now_ms
    ).on_conflict_ignore().as_rowcount().execute()
    user = User.get((User.tenant == tenant_id) & (User.openid == openid))
    if unionid and user.unionid != unionid:
        User.update(unionid=unionid).where(User.id == user.id).execute()
        user.unionid = unionid
    return user


def by_openid(tenant_id: int, openid: str) -> User:
    """The tenant's user a merchant names by openid, or a 404 `user_not_found`."""
    user = None
    if "\x00" not in openid:  # PostgreSQL cannot even compare such a string
        user = User.get_or_none((User.tenant == tenant_id) & (User.openid == openid))
    if user is None:
        raise ApiError(404, "user_not_found", f"no user with openid {openid!r}")
    return user


def by_id(tenant_id: int, user_id: int) -> User | None:
    """The user a signed token names, if the row still exists in that tenant (None: erased)."""
    return User.get_or_none((User.id == user_id) & (User.tenant == tenant_id))


def tenant_of(user: User) -> Tenant:
    """The signed-in user's tenant, whose settings and policies a mini-program call uses."""
    return Tenant.get_by_id(user.tenant_id)


def openids(user_ids: Iterable[int]) -> dict[int, str]:
    """Database id to openid, for lists that show whom a touch went to."""
    return dict(User.select(User.id, User.openid).where(User.id.in_(set(user_ids))).tuples())


def profile(tenant_id: int, user: User, now_ms: int) -> dict:
    """A user as a merchant looks them up: when seen, how active, their coupons (status as of
    `now_ms`) and their subscription-message allowances."""
    return {
        "openid": user.openid,
        "unionid": user.unionid,
        "created_at": china_iso(user.created_ms),
        "last_seen_at": china_iso(user.last_seen_ms) if user.last_seen_ms else None,
        "marketing_opt_out": user.marketing_opt_out,
        "events": Event.select().where(Event.user == user.id).count(),
        "orders": Order.select().where(Order.user == user.id).count(),
        "coupons": [coupons.coupon_dict(c, now_ms) for c in coupons.wallet(tenant_id, user.id)],
        "allowances": subscriptions.allowances(user.id),
    }


def consents(tenant_id: int, user_id: int) -> list[dict]:
    """The user's opt-outs and opt-ins, newest first: the dashboard shows the merchant why a
    user gets no marketing (or gets it again)."""
    rows = (
        ConsentLog.select()
        .where((ConsentLog.tenant == tenant_id) & (ConsentLog.user == user_id))
        .order_by(ConsentLog.at_ms.desc())
    )
    return [{"action": c.action, "at": china_iso(c.at_ms)} for c in rows]


def set_contact(user_id: int, contact: dict) -> User:
    """Store where SMS (`phone`) and Official Account messages (`oa_openid`) reach a user
    (None removes one) and return the row as stored."""
    with write_transaction():
        User.update(**contact).where(User.id == user_id).execute()
    return User.get_by_id(user_id)
