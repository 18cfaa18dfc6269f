"""Delivery from the outbox: claim due touches, re-check the guard rails, send, record.

The claim on a touch and its lease are services/touch_claims.py. A batch is claimed by moving
its touches from `queued` to `sending` with a lease and a fresh
random claim token in one conditional UPDATE, so two deliverers (two runs, two web workers)
never claim the same row. The token fences everything after the claim: right before each
send the deliverer confirms, in one conditional UPDATE, that the touch still carries its token
and its lease has time left, and renews the lease for that one send; the coupon, the result,
a requeue are all written only `WHERE claim_token = ours`. A deliverer whose lease ran out (a
slow WeChat, a stalled process) and whose touches were claimed again finds the token changed
and neither sends nor records them.

A worker that dies (SIGKILL, a lost machine) leaves `sending` rows whose lease runs out. Those
whose send had not begun are queued again and sent once. The confirming UPDATE right before the
channel call stamps `send_started_ms`; a lapsed claim with that stamp may have reached the
student (WeChat may have accepted the message before the worker died), so it is never sent
again: it is recorded `sent` with reason `unconfirmed` (counted against the caps and its
subscribe allowance, as a send). A touch is therefore sent at most once, and none is lost from
the books; what an interrupted send did is the one thing not known.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace

import numpy as np

from backend.core.calendar import MS_PER_DAY
from backend.core.clock import china_iso
from backend.core.policy import CHANNELS, Policy, PolicyError
from backend.core.policy.caps import CAP_DAYS, CAP_STATUSES, cap_counts, caps_reached, window_start
from backend.core.policy.guards import next_send_ms
from backend.errors import ApiError
from backend.services import channel_halts, coupons, policies, telemetry, touch_claims
from backend.services import channels as channel_setup  # a module: tests replace channels_for
from backend.services.campaigns.learnt import policy_state
from backend.services.channels import Channel, Outcome, Recipient
from backend.services.messages import MessageDefect, render
from backend.store.db import write_transaction
from backend.store.models import (
    CouponTemplate,
    SubscriptionAllowance,
    Tenant,
    Touch,
    User,
)
from backend.store.models import Policy as PolicyRow

log = logging.getLogger(__name__)

LOST = "lost_claim"  # the count of touches another deliverer took over from this one

# Called with "now" before each send by a caller that must prove it is still entitled to run
# (the campaign job renews its run lock); raising stops delivery cleanly. Per context, so a
# background delivery thread never inherits the job's.
_heartbeat: ContextVar[Callable[[int], None] | None] = ContextVar("heartbeat", default=None)


@contextmanager
def heartbeat(beat: Callable[[int], None]) -> Iterator[None]:
    """Run `beat(now_ms)` before every send of deliver_due calls inside this block."""
    token = _heartbeat.set(beat)
    try:
        yield
    finally:
        _heartbeat.reset(token)


@dataclass(frozen=True)
class RetryPolicy:
    """How a send WeChat asked us to retry is retried: backoff doubling from base_ms, and
    failed for good after max_attempts (the app's DELIVERY_RETRY_BASE_S and _MAX_ATTEMPTS)."""

    base_ms: int = 30_000  # first retry after this, doubling per attempt
    max_attempts: int = 5


def deliver_due(
    tenant: Tenant,
    channels: dict[str, Channel],
    retry: RetryPolicy = RetryPolicy(),
    *,
    clock,
) -> Counter:
    """Send every due touch of the tenant; returns counts (sent, failed, deferred, ...).

    `clock` (the app's) is read afresh for every claim, confirm and record: a run that lasts
    (a slow WeChat) must renew each lease from the real "now", or its renewals would fall
    behind and a deliverer on the real clock would take over touches it is still sending.
    There is deliberately no fixed `now_ms` to pass instead.
    """
    cache: dict = {}
    counts = touch_claims.housekeeping(tenant.id, clock.now_ms(), lambda t: _template_of(cache, t))
    beat = _heartbeat.get()

    # Loops until nothing is due: a touch that must wait (backoff, quiet hours, a halted
    # channel) is requeued for later and not claimable now, so this ends.
    while batch := touch_claims.claim(tenant.id, clock.now_ms()):
        for i, touch in enumerate(batch):
            at = clock.now_ms()
            try:
                if beat is not None:
                    beat(at)
            except BaseException:
                touch_claims.release(batch[i:])
                raise
            try:
                outcome = _deliver_one(tenant, touch, at, channels, retry, cache)
                counts[outcome] += 1
                telemetry.count_send(touch.channel, outcome)
            except BaseException:
                # This touch may have gone out (its lease decides); the rest surely did not.
                touch_claims.release(batch[i + 1 :])
                raise
    counts["deferred"] = (
        Touch.select().where((Touch.tenant == tenant.id) & (Touch.status == "queued")).count()
    )
    return counts


def _paused(cache: dict, policy_id: int, policy: Policy, tenant_id: int) -> dict[str, bool]:
    """Arms the stop-loss has paused, worked out once per delivery run and policy."""
    key = ("paused", policy_id)
    if key not in cache:
        state = policy_state(tenant_id, PolicyRow.get_by_id(policy_id), policy)
        cache[key] = {a.name: bool(p) for a, p in zip(policy.arms, state.paused, strict=True)}
    return cache[key]


def _template_of(cache: dict, touch: Touch) -> str | None:
    """The subscribe template of a touch's message (its policy read once per delivery)."""
    policy = _policy(cache, touch.policy_id)
    if policy is None or touch.message not in policy.messages:
        return None
    return policy.messages[touch.message].template_id


def _policy(cache: dict, policy_id: int) -> Policy | None:
    """The touch's policy, or None if its stored source no longer parses (a row stored
    before the parser got stricter): such touches fail alone instead of blocking the outbox."""
    key = ("policy", policy_id)
    if key not in cache:
        try:
            cache[key] = policies.loaded(PolicyRow.get_by_id(policy_id))
        except PolicyError as exc:
            log.warning("policy %s cannot be read, its touches fail: %s", policy_id, exc)
            cache[key] = None
    return cache[key]


def _deliver_one(tenant, touch, now_ms, channels, retry, cache) -> str:
    def done(status: str, outcome: str, **changes) -> str:
        return outcome if touch_claims.finish(touch, status, **changes) else LOST

    def later(outcome: str, **changes) -> str:
        return outcome if touch_claims.requeue(touch, **changes) else LOST

    policy = _policy(cache, touch.policy_id)
    if policy is None:
        return done("failed", "failed", reason="policy_unreadable")
    user = User.get_or_none(User.id == touch.user_id)
    # Re-checked at the moment of sending: the world may have moved since the decision.
    allowed = next_send_ms(now_ms, touch.channel)
    if allowed != now_ms:
        return later("deferred", at_ms=allowed, reason="quiet_hours", quiet_deferred=True)
    if user is None or user.marketing_opt_out:
        return done("skipped", "skipped", reason="opted_out")
    halt = channel_halts.halted_until(tenant.id, touch.channel, now_ms)
    if halt is not None:
        return later("deferred", at_ms=halt, reason="channel_halted")
    if _paused(cache, touch.policy_id, policy, tenant.id).get(touch.arm):
        return done("skipped", "skipped", reason="stop_loss")
    cap = _cap_reason(touch, policy)
    if cap:
        return done("skipped", "skipped", reason=cap)
    message = policy.messages[touch.message]
    if touch.channel == "subscribe" and _allowance(touch.user_id, message.template_id) < 1:
        return done("skipped", "skipped", reason="no_permission")
    try:
        coupon = _coupon_for(tenant, touch, user, now_ms)
        rendered = render(message, touch.channel, message_context(tenant, touch, coupon))
    except _ClaimLost:
        return LOST
    except _CouponUnavailable as exc:
        return done("skipped", "skipped", reason=str(exc))
    except MessageDefect as exc:
        log.error("touch %s not sent, message defect: %s", touch.id, exc)
        return done("failed", "failed", reason="bad_template_data")
    if rendered.page:
        # The page the message opens carries the touch's id, so the mini-program can post a
        # message_open event naming it: the funnel's "opened", which WeChat never reports.
        glue = "&" if "?" in rendered.page else "?"
        rendered = replace(rendered, page=f"{rendered.page}{glue}touch_id={touch.id}")
    to = Recipient(user.openid, user.oa_openid, user.phone)
    if not touch_claims.confirm(touch, now_ms):
        # Another deliverer holds it now, or our lease ran out: give it back (if still ours)
        # for a fresh claim, and send nothing.
        touch_claims.release([touch])
        return LOST
    outcome = channels[touch.channel].send(touch, to, rendered, message.template_id, now_ms)
    return _record(tenant, touch, outcome, now_ms, retry, message.template_id)


def _record(tenant, touch, outcome: Outcome, now_ms, retry: RetryPolicy, template_id) -> str:
    if outcome.kind == "sent":
        with write_transaction():
            got = (
                Touch.update(
                    status="sent",
                    sent_ms=now_ms,
                    provider_id=outcome.provider_id,
                    lease_until_ms=None,
                    claim_token=None,
                    send_started_ms=None,
                    reason="",
                    wechat_errcode=None,  # an earlier attempt's error is not this touch's outcome
                )
                .where(touch_claims.ours(touch))
                .execute()
            )
            if got == 1 and touch.channel == "subscribe":
                SubscriptionAllowance.update(remaining=SubscriptionAllowance.remaining - 1).where(
                    (SubscriptionAllowance.user == touch.user_id)
                    & (SubscriptionAllowance.template_id == template_id)
                    & (SubscriptionAllowance.remaining > 0)
                ).execute()
        if got != 1:
            log.warning("touch %s sent, but its claim was taken over; not recorded", touch.id)
            return LOST
        return "sent"
    if outcome.allowance_gone:
        with write_transaction():
            SubscriptionAllowance.update(remaining=0).where(
                (SubscriptionAllowance.user == touch.user_id)
                & (SubscriptionAllowance.template_id == template_id)
            ).execute()
    if outcome.kind == "halt":
        until = outcome.until_ms or now_ms + MS_PER_DAY
        channel_halts.halt(tenant.id, touch.channel, until, outcome.reason)
        # Not the touch's failure: the attempt the confirm counted is taken back.
        held = touch_claims.requeue(
            touch,
            at_ms=outcome.until_ms or now_ms + MS_PER_DAY,
            reason=outcome.reason,
            wechat_errcode=outcome.errcode,
            attempts=Touch.attempts - 1,
        )
        return "deferred" if held else LOST
    if outcome.kind == "retry":
        attempts = touch.attempts  # the confirm already counted this attempt
        if attempts >= retry.max_attempts:
            held = touch_claims.finish(
                touch, "failed", reason=outcome.reason, wechat_errcode=outcome.errcode
            )
            return "failed" if held else LOST
        backoff = retry.base_ms * (2 ** (attempts - 1))
        held = touch_claims.requeue(
            touch, at_ms=now_ms + backoff, reason=outcome.reason, wechat_errcode=outcome.errcode
        )
        return "retry" if held else LOST
    held = touch_claims.finish(
        touch, "failed", reason=outcome.reason, wechat_errcode=outcome.errcode
    )
    return "failed" if held else LOST


def _cap_reason(touch: Touch, policy: Policy) -> str:
    """The 30-day and weekly caps of the touch's decision day, checked again against the
    user's other touches as they stand now (core.policy.caps: one meaning for both).

    A decision counts the touches already decided, so this only bites when two decisions
    raced (an event trigger beside the nightly job): the touch delivered first is skipped, the
    other then fits, and the user never gets more than the caps allow.
    """
    others = list(
        Touch.select(Touch.day, Touch.channel)
        .where(
            (Touch.user == touch.user_id)
            & (Touch.id != touch.id)
            & Touch.status.in_(CAP_STATUSES)
            & (Touch.day >= window_start(touch.day, CAP_DAYS))
        )
        .tuples()
    )
    day = np.array([d for d, _ in others], dtype=np.int64)
    channel = np.array([CHANNELS.index(c) for _, c in others], dtype=np.int64)
    touches_30d, channel_week = cap_counts(np.zeros(day.size, np.int64), day, channel, 1, touch.day)
    ch = np.array([CHANNELS.index(touch.channel)])
    over_30d, over_week = caps_reached(policy, touches_30d, channel_week[:, ch[0]], ch)
    if over_30d[0]:
        return "capped_30d"
    if over_week[0]:
        return "capped_channel"
    return ""


def _allowance(user_id: int, template_id: str | None) -> int:
    row = SubscriptionAllowance.get_or_none(
        (SubscriptionAllowance.user == user_id) & (SubscriptionAllowance.template_id == template_id)
    )
    return 0 if row is None else int(row.remaining)


class _CouponUnavailable(Exception):
    pass


class _ClaimLost(Exception):
    """The claim changed hands before the coupon could be linked: nothing was issued."""


def _coupon_for(tenant: Tenant, touch: Touch, user: User, now_ms: int):
    """Issue the touch's coupon once (a retried send reuses it).

    Issue and link are one transaction, fenced by the claim: a crash between them, or a
    deliverer that lost its claim, leaves no coupon behind to be issued again on the retry.
    """
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
        with write_transaction():
            coupon = coupons.issue(tenant.id, template.id, user, now_ms, source="policy")
            linked = (
                Touch.update(coupon=coupon.id)
                .where(touch_claims.ours(touch) & Touch.coupon.is_null())
                .execute()
            )
            if linked != 1:
                raise _ClaimLost()  # rolls the issue back with it
    except ApiError as exc:
        raise _CouponUnavailable(f"coupon_{exc.code}") from None
    touch.coupon = coupon
    return coupon


def message_context(tenant: Tenant, touch: Touch, coupon) -> dict[str, str]:
    """The values a message's placeholders are filled with ({app_name}, {coupon_amount} ...):
    the one context delivery and the in-app card both render with."""
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


# -- delivery run by a task (after an event trigger, the queue's sweep) ----------------------


def deliver_now(app, tenant_id: int) -> Counter:
    """Deliver a tenant's due touches with the app's channels, retries and clock; the queue's
    `deliver` task runs this (backend/tasks/delivery.py), so an event request does not wait
    for WeChat. The caller provides the app context and the connection."""
    tenant = Tenant.get_or_none(Tenant.id == tenant_id)
    if tenant is None:  # erased or deleted since the task was queued
        return Counter()
    # The app's clock, read as the run goes on: a "now" frozen at the start would let this
    # task's leases lapse while it still sends (see deliver_due).
    return deliver_due(
        tenant, channel_setup.channels_for(app), retry_policy(app), clock=app.config["CLOCK"]
    )


def retry_policy(app) -> RetryPolicy:
    """The app's configured RetryPolicy."""
    return RetryPolicy(
        base_ms=int(app.config["DELIVERY_RETRY_BASE_S"] * 1000),
        max_attempts=app.config["DELIVERY_MAX_ATTEMPTS"],
    )
