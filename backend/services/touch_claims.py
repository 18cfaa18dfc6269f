"""The claim on a touch: who may send it, for how long, and what a lapsed claim becomes.

A batch is claimed by moving its touches from `queued` to `sending` with a lease and a fresh
random claim token in one conditional UPDATE (`claim`), so two deliverers never claim the same
row; every later write is fenced by that token (`ours`). Right before the channel is called
`confirm` renews the lease for that one send, counts the attempt and stamps the send as begun.
A lapsed claim (`housekeeping`) is queued again, unless its send had begun: that one may have
reached the student and is recorded `sent`, `unconfirmed`, never sent again. The sending
itself, and why, is services/delivery.py.
"""

from __future__ import annotations

import logging
import secrets
from collections import Counter
from collections.abc import Callable

from backend.services import telemetry
from backend.store.db import write_transaction
from backend.store.models import SubscriptionAllowance, Touch

log = logging.getLogger(__name__)

LEASE_MS = 5 * 60 * 1000  # a claim, and each send's renewal of it, last this long
BATCH = 200


def housekeeping(
    tenant_id: int, now_ms: int, template_of: Callable[[Touch], str | None]
) -> Counter:
    """Settle touches whose lease ran out (an interrupted send is recorded, the rest queued
    again); expire those too late to be worth sending."""
    out: Counter = Counter()
    lapsed = (
        (Touch.tenant == tenant_id) & (Touch.status == "sending") & (Touch.lease_until_ms < now_ms)
    )
    with write_transaction():
        out["unconfirmed"] = _settle_interrupted(
            lapsed & Touch.send_started_ms.is_null(False), template_of
        )
        # A crashed or stalled deliverer's lapsed claim: clearing the token fences it out.
        Touch.update(status="queued", lease_until_ms=None, claim_token=None).where(lapsed).execute()
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


def _settle_interrupted(where, template_of: Callable[[Touch], str | None]) -> int:
    """Record the lapsed claims whose send had begun as sent, `unconfirmed`: the student may
    have the message, so it is never sent again; its subscribe allowance is spent as a send's
    (WeChat spends it when it accepts)."""
    rows = list(Touch.select().where(where))
    for t in rows:
        Touch.update(
            status="sent",
            sent_ms=t.send_started_ms,
            reason="unconfirmed",
            lease_until_ms=None,
            claim_token=None,
            send_started_ms=None,
        ).where((Touch.id == t.id) & (Touch.status == "sending")).execute()
        template_id = template_of(t) if t.channel == "subscribe" else None
        if template_id:
            SubscriptionAllowance.update(remaining=SubscriptionAllowance.remaining - 1).where(
                (SubscriptionAllowance.user == t.user_id)
                & (SubscriptionAllowance.template_id == template_id)
                & (SubscriptionAllowance.remaining > 0)
            ).execute()
    for t in rows:
        telemetry.count_send(t.channel, "unconfirmed")
    if rows:
        log.warning("touches %s: send interrupted; recorded unconfirmed", [t.id for t in rows])
    return len(rows)


def _due(tenant_id: int, now_ms: int):
    return (
        (Touch.tenant == tenant_id)
        & (Touch.status == "queued")
        & (Touch.send_after_ms <= now_ms)
        & (Touch.next_attempt_ms <= now_ms)
    )


def claim(tenant_id: int, now_ms: int) -> list[Touch]:
    """Claim up to BATCH due touches under one fresh token; they come back carrying it."""
    candidates = [
        tid
        for (tid,) in Touch.select(Touch.id)
        .where(_due(tenant_id, now_ms))
        .order_by(Touch.send_after_ms, Touch.id)
        .limit(BATCH)
        .tuples()
    ]
    if not candidates:
        return []
    token = secrets.token_hex(16)
    with write_transaction():
        Touch.update(status="sending", lease_until_ms=now_ms + LEASE_MS, claim_token=token).where(
            Touch.id.in_(candidates) & _due(tenant_id, now_ms)
        ).execute()
    return list(
        Touch.select()
        .where((Touch.claim_token == token) & (Touch.status == "sending"))
        .order_by(Touch.send_after_ms, Touch.id)
    )


def ours(touch: Touch):
    """The fence: the row is still `sending` under this deliverer's claim."""
    return (
        (Touch.id == touch.id)
        & (Touch.status == "sending")
        & (Touch.claim_token == touch.claim_token)
    )


def confirm(touch: Touch, now_ms: int) -> bool:
    """The last write before the channel is called: is the claim still ours with lease left?
    If so, in the same UPDATE, the lease is renewed for this send, the attempt counted and the
    send stamped as begun (from here a lapsed claim may have reached the student: see the
    module's docstring)."""
    with write_transaction():
        got = (
            Touch.update(
                lease_until_ms=now_ms + LEASE_MS,
                attempts=Touch.attempts + 1,
                send_started_ms=now_ms,
            )
            .where(ours(touch) & (Touch.lease_until_ms > now_ms))
            .execute()
        )
    if got == 1:
        touch.attempts += 1
    return got == 1


def release(touches: list[Touch]) -> None:
    """Give claimed, unsent touches back to the queue (only those still ours)."""
    if not touches:
        return
    with write_transaction():  # one batch shares one token: a single fenced UPDATE
        Touch.update(status="queued", lease_until_ms=None, claim_token=None).where(
            Touch.id.in_([t.id for t in touches])
            & (Touch.status == "sending")
            & (Touch.claim_token == touches[0].claim_token)
        ).execute()


def finish(touch: Touch, status: str, **changes) -> bool:
    """Move the touch on from `sending`; False (nothing written) if the claim is no longer
    ours."""
    with write_transaction():
        got = (
            Touch.update(
                status=status,
                lease_until_ms=None,
                claim_token=None,
                send_started_ms=None,
                **changes,
            )
            .where(ours(touch))
            .execute()
        )
    if got != 1:
        log.warning("touch %s: claim taken over by another deliverer; not recorded", touch.id)
    return got == 1


def requeue(touch: Touch, *, at_ms: int, reason: str = "", **changes) -> bool:
    """Give the touch back to the queue for another attempt at `at_ms` (if still ours)."""
    return finish(touch, "queued", next_attempt_ms=at_ms, reason=reason, **changes)


def due_tenants(now_ms: int) -> list[int]:
    """The tenants with touches to deliver now: due ones, or ones whose claim lapsed (a
    deliverer died holding them), which `deliver_due` queues again and sends."""
    due = (
        (Touch.status == "queued")
        & (Touch.send_after_ms <= now_ms)
        & (Touch.next_attempt_ms <= now_ms)
    ) | ((Touch.status == "sending") & (Touch.lease_until_ms < now_ms))
    rows = Touch.select(Touch.tenant).where(due).distinct().order_by(Touch.tenant)
    return [r.tenant_id for r in rows]
