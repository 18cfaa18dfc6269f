"""Delivery from the outbox: claim due touches, re-check the guard rails, send, record.

A touch is claimed by moving it from `queued` to `sending` with a lease in one conditional
UPDATE, so two deliverers (two runs, two web workers) never send the same row. A worker that
dies mid-send leaves a `sending` row whose lease runs out; it is queued again, which is the
one window where a message can go out twice (WeChat accepted it, we did not record it).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, replace

from backend.clock import china_iso
from backend.core.calendar import MS_PER_DAY
from backend.core.policy import CHANNELS, Policy
from backend.core.policy.guards import next_send_ms
from backend.errors import ApiError
from backend.services import coupons, policies
from backend.services.channels import Channel, Outcome, Recipient
from backend.services.messages import MessageDefect, render
from backend.store.db import write_transaction
from backend.store.models import (
    CouponTemplate,
    KeyValue,
    SubscriptionAllowance,
    Tenant,
    Touch,
    User,
)
from backend.store.models import Policy as PolicyRow

log = logging.getLogger(__name__)

LEASE_MS = 5 * 60 * 1000
BATCH = 200


@dataclass(frozen=True)
class RetryPolicy:
    base_ms: int = 30_000  # first retry after this, doubling per attempt
    max_attempts: int = 5


def _halt_key(tenant_id: int, channel: str) -> str:
    return f"channel_halt:{tenant_id}:{channel}"


def halted_until(tenant_id: int, channel: str, now_ms: int) -> int | None:
    row = KeyValue.get_or_none(KeyValue.key == _halt_key(tenant_id, channel))
    if row is None or row.expires_ms is None or row.expires_ms <= now_ms:
        return None
    return int(row.expires_ms)


def _halt(tenant_id: int, channel: str, until_ms: int, reason: str) -> None:
    with write_transaction():
        KeyValue.insert(
            key=_halt_key(tenant_id, channel), value=reason, expires_ms=until_ms
        ).on_conflict(
            conflict_target=[KeyValue.key], preserve=[KeyValue.value, KeyValue.expires_ms]
        ).execute()


def _housekeeping(tenant_id: int, now_ms: int) -> Counter:
    """Requeue touches whose lease ran out; expire those too late to be worth sending."""
    out: Counter = Counter()
    with write_transaction():
        Touch.update(status="queued", lease_until_ms=None).where(
            (Touch.tenant == tenant_id)
            & (Touch.status == "sending")
            & (Touch.lease_until_ms < now_ms)
        ).execute()
        out["expired"] = (
            Touch.update(status="expired", reason="not_sent_in_time")
            .where(
                (Touch.tenant == tenant_id)
                & (Touch.status == "queued")
                & (Touch.expires_ms <= now_ms)
            )
            .execute()
        )
    return out


def _claim(tenant_id: int, now_ms: int) -> list[Touch]:
    candidates = list(
        Touch.select(Touch.id)
        .where(
            (Touch.tenant == tenant_id)
            & (Touch.status == "queued")
            & (Touch.send_after_ms <= now_ms)
            & (Touch.next_attempt_ms <= now_ms)
        )
        .order_by(Touch.send_after_ms, Touch.id)
        .limit(BATCH)
        .tuples()
    )
    claimed = []
    for (tid,) in candidates:
        with write_transaction():
            got = (
                Touch.update(
                    status="sending",
                    lease_until_ms=now_ms + LEASE_MS,
                    attempts=Touch.attempts + 1,
                )
                .where((Touch.id == tid) & (Touch.status == "queued"))
                .execute()
            )
        if got == 1:
            claimed.append(Touch.get_by_id(tid))
    return claimed


def _finish(touch: Touch, status: str, **changes) -> None:
    with write_transaction():
        Touch.update(status=status, lease_until_ms=None, **changes).where(
            (Touch.id == touch.id) & (Touch.status == "sending")
        ).execute()


def _requeue(touch: Touch, *, at_ms: int, reason: str = "", **changes) -> None:
    _finish(touch, "queued", next_attempt_ms=at_ms, reason=reason, **changes)


def deliver_due(
    tenant: Tenant,
    now_ms: int,
    channels: dict[str, Channel],
    retry: RetryPolicy = RetryPolicy(),
    clock=None,
) -> Counter:
    """Send every due touch of the tenant; returns counts (sent, failed, deferred, ...)."""
    counts = _housekeeping(tenant.id, now_ms)
    cache: dict = {}
    # Loops until nothing is due: a touch that must wait (backoff, quiet hours, a halted
    # channel) is requeued for later and not claimable now, so this ends.
    while batch := _claim(tenant.id, clock.now_ms() if clock is not None else now_ms):
        for touch in batch:
            now = clock.now_ms() if clock is not None else now_ms
            counts[_deliver_one(tenant, touch, now, channels, retry, cache)] += 1
    counts["deferred"] = (
        Touch.select().where((Touch.tenant == tenant.id) & (Touch.status == "queued")).count()
    )
    return counts


def _paused(cache: dict, policy_id: int, policy: Policy, tenant_id: int) -> dict[str, bool]:
    """Arms the stop-loss has paused, worked out once per delivery run and policy."""
    key = ("paused", policy_id)
    if key not in cache:
        from backend.services.campaigns import policy_state

        state = policy_state(tenant_id, PolicyRow.get_by_id(policy_id), policy)
        cache[key] = {a.name: bool(p) for a, p in zip(policy.arms, state.paused, strict=True)}
    return cache[key]


def _policy(cache: dict[int, Policy], policy_id: int) -> Policy:
    if policy_id not in cache:
        cache[policy_id] = policies.loaded(PolicyRow.get_by_id(policy_id))
    return cache[policy_id]


def _deliver_one(tenant, touch, now_ms, channels, retry, cache) -> str:
    policy = _policy(cache, touch.policy_id)
    user = User.get_or_none(User.id == touch.user_id)
    # Re-checked at the moment of sending: the world may have moved since the decision.
    allowed = next_send_ms(now_ms, touch.channel)
    if allowed != now_ms:
        _requeue(
            touch,
            at_ms=allowed,
            reason="quiet_hours",
            attempts=Touch.attempts - 1,
            quiet_deferred=True,
        )
        return "deferred"
    if user is None or user.marketing_opt_out:
        _finish(touch, "skipped", reason="opted_out")
        return "skipped"
    halt = halted_until(tenant.id, touch.channel, now_ms)
    if halt is not None:
        _requeue(touch, at_ms=halt, reason="channel_halted", attempts=Touch.attempts - 1)
        return "deferred"
    if _paused(cache, touch.policy_id, policy, tenant.id).get(touch.arm):
        _finish(touch, "skipped", reason="stop_loss")
        return "skipped"
    cap = _cap_reason(touch, policy)
    if cap:
        _finish(touch, "skipped", reason=cap)
        return "skipped"
    message = policy.messages[touch.message]
    if touch.channel == "subscribe" and _allowance(touch.user_id, message.template_id) < 1:
        _finish(touch, "skipped", reason="no_permission")
        return "skipped"
    try:
        coupon = _coupon_for(tenant, touch, user, now_ms)
        rendered = render(message, touch.channel, message_context(tenant, touch, coupon))
    except _CouponUnavailable as exc:
        _finish(touch, "skipped", reason=str(exc))
        return "skipped"
    except MessageDefect as exc:
        log.error("touch %s not sent, message defect: %s", touch.id, exc)
        _finish(touch, "failed", reason="bad_template_data")
        return "failed"
    if rendered.page:
        # The page the message opens carries the touch's id, so the mini-program can post a
        # message_open event naming it: the funnel's "opened", which WeChat never reports.
        glue = "&" if "?" in rendered.page else "?"
        rendered = replace(rendered, page=f"{rendered.page}{glue}touch_id={touch.id}")
    to = Recipient(user.openid, user.oa_openid, user.phone)
    outcome = channels[touch.channel].send(touch, to, rendered, message.template_id, now_ms)
    return _record(tenant, touch, outcome, now_ms, retry, message.template_id)


def _record(tenant, touch, outcome: Outcome, now_ms, retry: RetryPolicy, template_id) -> str:
    if outcome.kind == "sent":
        with write_transaction():
            if touch.channel == "subscribe":
                SubscriptionAllowance.update(remaining=SubscriptionAllowance.remaining - 1).where(
                    (SubscriptionAllowance.user == touch.user_id)
                    & (SubscriptionAllowance.template_id == template_id)
                    & (SubscriptionAllowance.remaining > 0)
                ).execute()
            Touch.update(
                status="sent",
                sent_ms=now_ms,
                provider_id=outcome.provider_id,
                lease_until_ms=None,
                reason="",
                wechat_errcode=None,  # an earlier attempt's error is not this touch's outcome
            ).where((Touch.id == touch.id) & (Touch.status == "sending")).execute()
        return "sent"
    if outcome.allowance_gone:
        with write_transaction():
            SubscriptionAllowance.update(remaining=0).where(
                (SubscriptionAllowance.user == touch.user_id)
                & (SubscriptionAllowance.template_id == template_id)
            ).execute()
    if outcome.kind == "halt":
        _halt(tenant.id, touch.channel, outcome.until_ms or now_ms + MS_PER_DAY, outcome.reason)
        _requeue(
            touch,
            at_ms=outcome.until_ms or now_ms + MS_PER_DAY,
            reason=outcome.reason,
            wechat_errcode=outcome.errcode,
            attempts=Touch.attempts - 1,
        )
        return "deferred"
    if outcome.kind == "retry":
        attempts = touch.attempts  # the claim already counted this attempt
        if attempts >= retry.max_attempts:
            _finish(touch, "failed", reason=outcome.reason, wechat_errcode=outcome.errcode)
            return "failed"
        backoff = retry.base_ms * (2 ** (attempts - 1))
        _requeue(
            touch, at_ms=now_ms + backoff, reason=outcome.reason, wechat_errcode=outcome.errcode
        )
        return "retry"
    _finish(touch, "failed", reason=outcome.reason, wechat_errcode=outcome.errcode)
    return "failed"


def _cap_reason(touch: Touch, policy: Policy) -> str:
    """The 30-day and weekly caps against what has actually gone out since the decision."""
    recent = Touch.select().where(
        (Touch.user == touch.user_id)
        & (Touch.id != touch.id)
        & Touch.status.in_(("sent", "sending"))
        & (Touch.sent_ms > touch.send_after_ms - 30 * MS_PER_DAY)
    )
    if recent.count() >= policy.touches_per_30d:
        return "capped_30d"
    week = recent.where(
        (Touch.channel == touch.channel) & (Touch.sent_ms > touch.send_after_ms - 7 * MS_PER_DAY)
    ).count()
    if week >= policy.per_channel_week[CHANNELS.index(touch.channel)]:
        return "capped_channel"
    return ""


def _allowance(user_id: int, template_id: str | None) -> int:
    row = SubscriptionAllowance.get_or_none(
        (SubscriptionAllowance.user == user_id) & (SubscriptionAllowance.template_id == template_id)
    )
    return 0 if row is None else int(row.remaining)


class _CouponUnavailable(Exception):
    pass


def _coupon_for(tenant: Tenant, touch: Touch, user: User, now_ms: int):
    """Issue the touch's coupon once (a retried send reuses it)."""
    if not touch.coupon_template:
        return None
    if touch.coupon_id is not None:
        return touch.coupon
    template = CouponTemplate.get_or_none(
        (CouponTemplate.tenant == tenant.id) & (CouponTemplate.name == touch.coupon_template)
    )
    if template is None:
        raise _CouponUnavailable("coupon_template_missing")
    try:
        coupon = coupons.issue(tenant.id, template.id, user, now_ms, source="policy")
    except ApiError as exc:
        raise _CouponUnavailable(f"coupon_{exc.code}") from None
    with write_transaction():
        Touch.update(coupon=coupon.id).where(Touch.id == touch.id).execute()
    return coupon


def message_context(tenant: Tenant, touch: Touch, coupon) -> dict[str, str]:
    ctx = {
        "app_name": tenant.name[:20],
        "today": china_iso(touch.send_after_ms)[:10],
        "days_silent": "",
        "coupon_name": "",
        "coupon_amount": "",
        "expires": "",
    }
    if coupon is not None:
        t = coupon.template
        ctx["coupon_name"] = t.name[:20]
        ctx["coupon_amount"] = f"¥{t.amount_off_fen // 100}.{t.amount_off_fen % 100:02d}"
        ctx["expires"] = china_iso(coupon.expires_ms)[:10]
    return ctx


# -- delivery right after an event trigger ---------------------------------------------------


def kick(app, tenant_id: int) -> threading.Thread:
    """Deliver a tenant's due touches on a background thread (after an event trigger), so
    the event request does not wait for WeChat."""
    from backend.services.channels import channels_for
    from backend.store import db as store_db

    def work():
        with app.app_context():
            store_db.database.connect(reuse_if_open=True)
            try:
                tenant = Tenant.get_by_id(tenant_id)
                deliver_due(
                    tenant, app.config["CLOCK"].now_ms(), channels_for(app), retry_policy(app)
                )
            except Exception:  # a background thread must log, not die silently
                log.exception("background delivery failed for tenant %s", tenant_id)
            finally:
                if not store_db.database.is_closed():
                    store_db.database.close()

    thread = threading.Thread(target=work, name=f"deliver-{tenant_id}", daemon=True)
    thread.start()
    return thread


def retry_policy(app) -> RetryPolicy:
    return RetryPolicy(
        base_ms=int(app.config["DELIVERY_RETRY_BASE_S"] * 1000),
        max_attempts=app.config["DELIVERY_MAX_ATTEMPTS"],
    )
