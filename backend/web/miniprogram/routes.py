"""Routes the mini-program calls. Each resolves the user from its bearer token."""

from __future__ import annotations

import re

from flask import Blueprint, current_app, g, jsonify, request

from backend.errors import ApiError
from backend.services import (
    cards,
    coupons,
    events,
    privacy,
    ratelimit,
    subscriptions,
    tenants,
    users,
    wechat,
)
from backend.services.campaigns import triggers
from backend.services.event_validation import MP_EVENT_SCHEMA, MP_MAX_AGE_MS
from backend.tasks import delivery as task_delivery
from backend.web.auth import issue_token, require_user
from backend.web.openapi import documented, read_json, validated

bp = Blueprint("mp", __name__, url_prefix="/mp/v1")

MAX_BATCH = 500
_REFERER_APPID = re.compile(r"^https://servicewechat\.com/(wx[0-9a-zA-Z]{8,32})/")

LOGIN_SCHEMA = {
    "type": "object",
    "required": ["code"],
    "additionalProperties": False,
    "properties": {"code": {"type": "string", "minLength": 1, "maxLength": 128}},
}
TOKEN_SCHEMA = {
    "type": "object",
    "properties": {"token": {"type": "string"}, "expires_in": {"type": "integer"}},
}
EVENTS_SCHEMA, _EVENTS_ENVELOPE = events.batch_schemas(MP_EVENT_SCHEMA, MAX_BATCH)
BATCH_RESULT_SCHEMA = {
    "type": "object",
    "properties": {
        "accepted": {"type": "integer"},
        "duplicates": {"type": "integer"},
        "rejected": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"index": {"type": "integer"}, "error": {"type": "string"}},
            },
        },
    },
}
REDEEM_SCHEMA = {
    "type": "object",
    "required": ["order_id", "order_amount_fen"],
    "additionalProperties": False,
    "properties": {
        "order_id": {"type": "string", "minLength": 1, "maxLength": 64},
        "order_amount_fen": {"type": "integer", "minimum": 1, "maximum": 100_000_000},
    },
}
CLAIM_SCHEMA = {
    "type": "object",
    "required": ["template_id"],
    "additionalProperties": False,
    "properties": {
        "template_id": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
        # The phone's idempotency key: a claim resent with it is answered its coupon (200).
        "id": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[\\x21-\\x7e]+$"},
    },
}
WALLET_SCHEMA = {
    "type": "object",
    "properties": {"coupons": {"type": "array", "items": coupons.COUPON_SCHEMA}},
}
ALLOWANCES_SCHEMA = {
    "type": "object",
    "properties": {
        "allowances": {"type": "object", "additionalProperties": {"type": "integer"}},
        "duplicate": {"type": "boolean"},
    },
}
CONSENT_SCHEMA = {"type": "object", "properties": {"marketing_opt_out": {"type": "boolean"}}}


def _now_ms() -> int:
    """The app's clock (a fake one in tests and the simulator), never the wall's."""
    return current_app.config["CLOCK"].now_ms()


def _login_appid() -> str:
    """Which mini-program is logging in: WeChat's Referer, a header, or the configured appid."""
    match = _REFERER_APPID.match(request.headers.get("Referer", ""))
    if match:
        return match.group(1)
    return request.headers.get("X-Huiliu-Appid") or current_app.config["WECHAT_APPID"]


LOGIN_WINDOW_MS = 60_000


def _limited_code_exchange(tenant, code: str) -> wechat.WechatIdentity:
    """code2Session behind limits counted in the database (every worker agrees), so junk
    codes cannot spend the app's quota for everyone: logins per client address, failed
    exchanges per address (one prober stops long before the tenant does), and failed exchanges
    per tenant, a high circuit breaker against many addresses at once. Each attempt is
    reserved before WeChat is asked; a success gives its failure reservations back."""
    cfg, now = current_app.config, _now_ms()
    address = request.remote_addr or "unknown"
    limit = cfg["LOGIN_PER_ADDRESS_PER_MIN"]
    ratelimit.enforce(f"mp-login:{address}", limit, LOGIN_WINDOW_MS, now, "too many logins")
    failures: list[ratelimit.Reservation] = []
    for key, limit in (
        (f"mp-login-failed-addr:{address}", cfg["LOGIN_FAILURES_PER_ADDRESS_PER_MIN"]),
        (f"mp-login-failed:{tenant.id}", cfg["LOGIN_FAILURES_PER_TENANT_PER_MIN"]),
    ):
        try:
            failures.append(
                ratelimit.enforce(key, limit, LOGIN_WINDOW_MS, now, "too many failed logins")
            )
        except ApiError:
            for reservation in failures:  # no exchange happened: nothing failed
                ratelimit.refund(reservation)
            raise
    identity = wechat.code_to_session(current_app.extensions["wechat_client"](), code)
    for reservation in failures:  # the exchange worked: not a failure
        ratelimit.refund(reservation)
    return identity


@bp.post("/login")
@documented(
    "Exchange a wx.login code for a bearer token",
    request=LOGIN_SCHEMA,
    response=TOKEN_SCHEMA,
    errors=(404, 429, 502, 503),
)
def login():
    """The mini-program's first call: WeChat vouches for the user, Huiliu knows them from then on
    by a token."""
    body = validated(LOGIN_SCHEMA)
    appid = _login_appid()
    tenant = tenants.by_appid(appid) if appid else None
    if tenant is None:
        raise ApiError(404, "unknown_app", "no tenant is registered for this mini-program appid")
    cfg = current_app.config
    if cfg["WECHAT_MODE"] == "dev":
        identity = wechat.WechatIdentity(openid=f"dev_{body['code']}", unionid=None)
    else:
        if tenant.appid != cfg["WECHAT_APPID"] or not cfg["WECHAT_SECRET"]:
            raise ApiError(502, "wechat_not_configured", "no WeChat secret configured for this app")
        identity = _limited_code_exchange(tenant, body["code"])
    user = users.get_or_create(tenant.id, identity.openid, identity.unionid, _now_ms())
    issued = issue_token(user)
    return jsonify({"token": issued.token, "expires_in": issued.expires_in})


@bp.post("/events")
@documented(
    f"Log a batch of up to {MAX_BATCH} events (idempotent per event id)",
    request=EVENTS_SCHEMA,
    response=BATCH_RESULT_SCHEMA,
    auth="bearer",
    errors=(413,),
)
@require_user
def post_events():
    """Visits, orders and the rest are what scoring reads; an event that starts a trigger policy
    is decided at once."""
    now = _now_ms()
    result = events.ingest(
        read_json(),
        envelope=_EVENTS_ENVELOPE,
        item_schema=MP_EVENT_SCHEMA,
        max_batch=MAX_BATCH,
        earliest_ms=now - MP_MAX_AGE_MS,
        tenant_id=g.tenant_id,
        now_ms=now,
        user_id=g.user.id,
    )
    if result.triggers:
        # Trigger policies decide now; delivery is a task on the queue (backend/tasks), so
        # this answer does not wait for WeChat.
        # The events are stored: a failing trigger is logged, never the phone's problem (a
        # 500 would make it resend the batch for ever).
        try:
            tenant = users.tenant_of(g.user)
            if triggers.on_events(tenant, result.triggers, now):
                task_delivery.after_trigger(current_app._get_current_object(), g.tenant_id)
        except Exception:
            current_app.logger.exception("event triggers failed for tenant %s", g.tenant_id)
    return jsonify(result.as_dict())


@bp.get("/reengagement")
@documented(
    "Welcome-back cards waiting for this user (shown once: fetching marks them opened)",
    response=cards.CARD_SCHEMA,
    auth="bearer",
)
@require_user
def reengagement():
    """The in-app channel: welcome-back cards reach a user who opens the app, no WeChat template
    needed."""
    tenant = users.tenant_of(g.user)
    return jsonify({"cards": cards.take_cards(tenant, g.user.id, _now_ms())})


@bp.get("/coupons")
@documented(
    "The user's coupon wallet with status and expiry", response=WALLET_SCHEMA, auth="bearer"
)
@require_user
def get_wallet():
    """The user's coupons with their state, for the mini-program's wallet page."""
    now = _now_ms()
    held = coupons.wallet(g.tenant_id, g.user.id)
    return jsonify({"coupons": [coupons.coupon_dict(c, now) for c in held]})


@bp.post("/coupons/claim")
@documented(
    "Claim a coupon from a claimable template",
    request=CLAIM_SCHEMA,
    response=coupons.COUPON_SCHEMA,
    status=201,
    also={200: "the coupon issued earlier for this claim's `id` (a resent claim)"},
    auth="bearer",
    errors=(404, 409),
)
@require_user
def claim():
    """A user takes a coupon the merchant made claimable (a public offer), within its budget."""
    body = validated(CLAIM_SCHEMA)
    template = coupons.get_template(g.tenant_id, body["template_id"])
    if not template.claimable:
        raise ApiError(409, "not_claimable", "this coupon can only be given out by the merchant")
    now = _now_ms()
    coupon, issued = coupons.claim(g.tenant_id, template.id, g.user, now, body.get("id"))
    return jsonify(coupons.coupon_dict(coupon, now)), 201 if issued else 200


@bp.post("/coupons/<id:coupon_id>/redeem")
@documented(
    "Redeem one of the user's coupons against an order (at most once)",
    request=REDEEM_SCHEMA,
    response=coupons.COUPON_SCHEMA,
    auth="bearer",
    errors=(404, 409),
)
@require_user
def redeem(coupon_id: int):
    """The till uses a coupon on an order, once: the order it paid for is what attribution
    counts."""
    body = validated(REDEEM_SCHEMA)
    now = _now_ms()
    coupon = coupons.redeem(
        g.tenant_id, g.user.id, coupon_id, body["order_id"], body["order_amount_fen"], now
    )
    return jsonify(coupons.coupon_dict(coupon, now))


@bp.post("/subscriptions")
@documented(
    "Record the result of wx.requestSubscribeMessage",
    request=subscriptions.SUBSCRIPTION_SCHEMA,
    response=ALLOWANCES_SCHEMA,
    auth="bearer",
)
@require_user
def post_subscriptions():
    """WeChat lets a mini-program message a user once per subscription accepted; these are the
    allowances sends spend."""
    body = validated(subscriptions.SUBSCRIPTION_SCHEMA)
    allowances, duplicate = subscriptions.record(g.tenant_id, g.user.id, body, _now_ms())
    return jsonify({"allowances": allowances, "duplicate": duplicate})


@bp.post("/me/opt-out")
@documented(
    "Stop all marketing (recall) messages and offers to this user",
    response=CONSENT_SCHEMA,
    auth="bearer",
)
@require_user
def opt_out():
    """A user refuses marketing: no policy touches them until they opt in again (consent is
    logged)."""
    privacy.set_marketing(g.user, True, _now_ms())
    return jsonify({"marketing_opt_out": True})


@bp.post("/me/opt-in")
@documented("Allow marketing again after an opt-out", response=CONSENT_SCHEMA, auth="bearer")
@require_user
def opt_in():
    """A user who opted out accepts marketing again (logged like the opt-out)."""
    privacy.set_marketing(g.user, False, _now_ms())
    return jsonify({"marketing_opt_out": False})


@bp.get("/me/data")
@documented(
    "Everything held about the user, with why each kind is held",
    response={"type": "object"},
    auth="bearer",
)
@require_user
def my_data():
    """A user may see everything held about them (PIPL): one export of every table that names
    them."""
    return jsonify(privacy.export(g.user, _now_ms()))


@bp.delete("/me")
@documented(
    "Erase the user: events deleted, orders anonymised, everything else deleted",
    response={"type": "object", "properties": {"erased": {"type": "object"}}},
    auth="bearer",
)
@require_user
def erase_me():
    """A user may have their data erased (PIPL): rows deleted or anonymised where reports need
    the count."""
    return jsonify({"erased": privacy.erase(g.user)})
