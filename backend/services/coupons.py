"""Coupon templates, issuing within budget, and redeeming at most once.

Both guarantees live in single conditional UPDATE statements, so the database (not a Python
read-then-write) decides who wins a race: `issued_count < budget` for the budget, and
`status = 'issued'` for redemption. The per-user limit is a unique index on (template, user, seq).
"""

from __future__ import annotations

import peewee as pw

from backend.core.clock import china_iso
from backend.errors import ApiError
from backend.store.db import database
from backend.store.models import Coupon, CouponTemplate, Merchant, Order, User

DAY_MS = 86_400_000
MAX_SEQ_ATTEMPTS = 3

TEMPLATE_FIELDS = {
    "name": {"type": "string", "minLength": 1, "maxLength": 100},
    "amount_off_fen": {"type": "integer", "minimum": 1, "maximum": 100_000_000},
    "min_spend_fen": {"type": "integer", "minimum": 0, "maximum": 100_000_000},
    "validity_days": {"type": "integer", "minimum": 1, "maximum": 365},
    "budget": {"type": "integer", "minimum": 0, "maximum": 100_000_000},
    "per_user_limit": {"type": "integer", "minimum": 1, "maximum": 100},
    "merchant": {"type": ["string", "null"], "minLength": 1, "maxLength": 64},
    "claimable": {"type": "boolean"},
    "active": {"type": "boolean"},
}
TEMPLATE_CREATE_SCHEMA = {
    "type": "object",
    "required": ["name", "amount_off_fen", "validity_days", "budget"],
    "additionalProperties": False,
    "properties": TEMPLATE_FIELDS,
}
TEMPLATE_PATCH_SCHEMA = {
    "type": "object",
    "minProperties": 1,
    "additionalProperties": False,
    "properties": TEMPLATE_FIELDS,
}
TEMPLATE_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "issued_count": {"type": "integer"},
        "remaining": {"type": "integer"},
        **TEMPLATE_FIELDS,
    },
}
COUPON_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "template_id": {"type": "integer"},
        "name": {"type": "string"},
        "amount_off_fen": {"type": "integer"},
        "min_spend_fen": {"type": "integer"},
        "merchant": {"type": ["string", "null"]},
        "status": {"type": "string", "enum": ["issued", "redeemed", "expired"]},
        "issued_at": {"type": "string", "description": "China time"},
        "expires_at": {"type": "string", "description": "China time"},
        "redeemed_at": {"type": ["string", "null"]},
        "order_id": {"type": ["string", "null"]},
    },
}


def template_dict(t: CouponTemplate) -> dict:
    """A coupon template as the admin API shows it (money in fen), with what is left of its
    budget."""
    return {
        "id": t.id,
        "name": t.name,
        "amount_off_fen": t.amount_off_fen,
        "min_spend_fen": t.min_spend_fen,
        "validity_days": t.validity_days,
        "budget": t.budget,
        "issued_count": t.issued_count,
        "remaining": t.budget - t.issued_count,
        "per_user_limit": t.per_user_limit,
        "merchant": t.merchant.code if t.merchant_id else None,
        "claimable": t.claimable,
        "active": t.active,
    }


def coupon_dict(c: Coupon, now_ms: int) -> dict:
    """One coupon as its holder and the admin see it (COUPON_SCHEMA): times in China time, and
    an issued coupon past its expiry at `now_ms` (UTC epoch ms) shown as expired, though no
    job has marked it so."""
    t = c.template
    status = c.status
    if status == "issued" and c.expires_ms <= now_ms:
        status = "expired"
    return {
        "id": c.id,
        "template_id": t.id,
        "name": t.name,
        "amount_off_fen": t.amount_off_fen,
        "min_spend_fen": t.min_spend_fen,
        "merchant": t.merchant.code if t.merchant_id else None,
        "status": status,
        "issued_at": china_iso(c.issued_ms),
        "expires_at": china_iso(c.expires_ms),
        "redeemed_at": china_iso(c.redeemed_ms) if c.redeemed_ms else None,
        "order_id": c.order_ref,
    }


def _merchant_id(tenant_id: int, code: str | None) -> int | None:
    if code is None:
        return None
    m = Merchant.get_or_none((Merchant.tenant == tenant_id) & (Merchant.code == code))
    if m is None:
        raise ApiError(400, "unknown_merchant", f"merchant {code!r} does not exist")
    return m.id


def templates(tenant_id: int) -> list[CouponTemplate]:
    """The tenant's templates in the order they were made: the admin API's list."""
    return list(
        CouponTemplate.select()
        .where(CouponTemplate.tenant == tenant_id)
        .order_by(CouponTemplate.id)
    )


def get_template(tenant_id: int, template_id: int) -> CouponTemplate:
    """The tenant's template, or 404: another tenant's id reads as not found."""
    t = CouponTemplate.get_or_none(
        (CouponTemplate.id == template_id) & (CouponTemplate.tenant == tenant_id)
    )
    if t is None:
        raise ApiError(404, "template_not_found", f"coupon template {template_id} not found")
    return t


def create_template(tenant_id: int, data: dict, now_ms: int) -> CouponTemplate:
    """A new template from validated API data; its merchant is named by code (400 if unknown)."""
    fields = dict(data)
    fields["merchant"] = _merchant_id(tenant_id, fields.pop("merchant", None))
    return CouponTemplate.create(tenant=tenant_id, created_ms=now_ms, **fields)


def update_template(tenant_id: int, template_id: int, data: dict) -> CouponTemplate:
    """Change a template; 409 rather than let its budget fall below the coupons already issued,
    even when an issue runs at the same time."""
    fields = dict(data)
    if "merchant" in fields:
        fields["merchant"] = _merchant_id(tenant_id, fields["merchant"])
    with database.atomic():
        t = get_template(tenant_id, template_id)
        if "budget" in fields and fields["budget"] < t.issued_count:
            raise ApiError(
                409,
                "budget_below_issued",
                f"budget {fields['budget']} is below the {t.issued_count} already issued",
            )
        # The condition repeats the check in SQL so a concurrent issue cannot slip under it.
        query = CouponTemplate.update(**fields).where(CouponTemplate.id == t.id)
        if "budget" in fields:
            query = query.where(CouponTemplate.issued_count <= fields["budget"])
        if query.execute() != 1:
            raise ApiError(409, "budget_below_issued", "coupons were issued meanwhile; retry")
    return get_template(tenant_id, template_id)


def delete_template(tenant_id: int, template_id: int) -> None:
    """Delete a template nothing was issued from; one with coupons out is 409 (its coupons
    and their touches' costs still refer to it: deactivate it instead)."""
    with database.atomic():
        t = get_template(tenant_id, template_id)
        if t.issued_count > 0:
            raise ApiError(
                409,
                "template_in_use",
                "coupons were issued from this template; deactivate it instead (active: false)",
            )
        t.delete_instance()


def claim(
    tenant_id: int, template_id: int, user: User, now_ms: int, request_id: str | None
) -> tuple[Coupon, bool]:
    """A user's claim: (the coupon, whether it was issued now). A claim carrying the
    `request_id` of one already answered gets that coupon again instead of another, so a
    phone may resend a claim whose answer it lost; the same id for another template is 409.

    Parameters
    ----------
    tenant_id, template_id : the tenant and the (claimable) template.
    user : the claiming user.
    now_ms : the app's clock.
    request_id : the phone's idempotency key, or None (every call issues).
    """
    if request_id is None:
        return issue(tenant_id, template_id, user, now_ms, "claim"), True
    found = _claimed(user.id, request_id)
    if found is None:
        try:
            return issue(tenant_id, template_id, user, now_ms, "claim", request_id), True
        except ApiError:
            # A twin of this claim racing ours won: the unique index on (user, request_id)
            # refused ours as the per-user limit's would. Answer the twin's coupon.
            found = _claimed(user.id, request_id)
            if found is None:
                raise
    if found.template_id != template_id:
        raise ApiError(
            409, "claim_id_reused", f"claim id {request_id!r} was used for another template"
        )
    return found, False


def _claimed(user_id: int, request_id: str) -> Coupon | None:
    return Coupon.get_or_none((Coupon.user == user_id) & (Coupon.request_id == request_id))


def issue(
    tenant_id: int,
    template_id: int,
    user: User,
    now_ms: int,
    source: str,
    request_id: str | None = None,
) -> Coupon:
    """Issue one coupon, or 409 if the budget or the user's limit is used up. `request_id`:
    a claim's idempotency key, stored with the coupon (see `claim`)."""
    with database.atomic():
        t = get_template(tenant_id, template_id)
        if not t.active:
            raise ApiError(409, "template_inactive", "this coupon template is not active")
        taken = (
            CouponTemplate.update(issued_count=CouponTemplate.issued_count + 1)
            .where(
                (CouponTemplate.id == t.id)
                & (CouponTemplate.issued_count < CouponTemplate.budget)
                & CouponTemplate.active
            )
            .execute()
        )
        if taken != 1:
            raise ApiError(409, "budget_exhausted", "this coupon's budget is used up")
        held = Coupon.select().where((Coupon.template == t.id) & (Coupon.user == user.id)).count()
        if held >= t.per_user_limit:
            raise ApiError(409, "per_user_limit", "the user already holds the most allowed")
        # Two concurrent issues to one user may pick the same seq; the unique index refuses
        # the second, and the whole transaction (budget slot included) rolls back.
        try:
            with database.atomic():
                return Coupon.create(
                    tenant=tenant_id,
                    template=t.id,
                    user=user.id,
                    seq=held + 1,
                    source=source,
                    issued_ms=now_ms,
                    expires_ms=now_ms + t.validity_days * DAY_MS,
                    request_id=request_id,
                )
        except pw.IntegrityError:
            raise ApiError(
                409, "per_user_limit", "the user already holds the most allowed"
            ) from None


def wallet(tenant_id: int, user_id: int) -> list[Coupon]:
    """Every coupon a user holds, soonest to expire first (with their templates loaded)."""
    return list(
        Coupon.select(Coupon, CouponTemplate)
        .join(CouponTemplate)
        .where((Coupon.tenant == tenant_id) & (Coupon.user == user_id))
        .order_by(Coupon.expires_ms, Coupon.id)
    )


def redeem(
    tenant_id: int,
    user_id: int,
    coupon_id: int,
    order_ref: str,
    order_amount_fen: int,
    now_ms: int,
) -> Coupon:
    """Spend a coupon on an order; exactly one of any number of racing calls succeeds, and an
    order takes at most one coupon (unique (tenant, order_ref): a race is refused by the
    index, with the same 409 as the check before it)."""
    try:
        with database.atomic():
            return _redeem(tenant_id, user_id, coupon_id, order_ref, order_amount_fen, now_ms)
    except pw.IntegrityError:
        raise _order_used(order_ref) from None


def _order_used(order_ref: str) -> ApiError:
    return ApiError(
        409, "order_already_used", f"order {order_ref!r} has already been paid with a coupon"
    )


def _order_taken(tenant_id: int, order_ref: str) -> bool:
    """Has another coupon of the tenant been redeemed against this order?"""
    return (
        Coupon.select()
        .where((Coupon.tenant == tenant_id) & (Coupon.order_ref == order_ref))
        .exists()
    )


def _redeem(tenant_id, user_id, coupon_id, order_ref, order_amount_fen, now_ms) -> Coupon:
    c = Coupon.get_or_none(
        (Coupon.id == coupon_id) & (Coupon.tenant == tenant_id) & (Coupon.user == user_id)
    )
    if c is None:
        raise ApiError(404, "coupon_not_found", f"coupon {coupon_id} not found")
    if c.status == "redeemed" and c.order_ref == order_ref:
        return c  # this very redemption, resent after a lost answer: done once already
    if order_amount_fen < c.template.min_spend_fen:
        raise ApiError(
            409,
            "below_min_spend",
            f"order of {order_amount_fen} fen is below the {c.template.min_spend_fen} "
            "fen this coupon needs",
        )
    if c.status == "issued" and _order_taken(tenant_id, order_ref):
        raise _order_used(order_ref)
    won = (
        Coupon.update(status="redeemed", redeemed_ms=now_ms, order_ref=order_ref)
        .where((Coupon.id == c.id) & (Coupon.status == "issued") & (Coupon.expires_ms > now_ms))
        .execute()
    )
    if won != 1:
        fresh = Coupon.get_by_id(c.id)
        if fresh.status == "redeemed":
            raise ApiError(409, "already_redeemed", "this coupon has already been used")
        raise ApiError(409, "coupon_expired", "this coupon has expired")
    Order.update(coupon=c.id).where(
        (Order.tenant == tenant_id) & (Order.order_ref == order_ref) & Order.coupon.is_null()
    ).execute()
    return Coupon.get_by_id(c.id)
