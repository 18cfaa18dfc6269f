"""Delivery as tasks: right after an event trigger, and a sweep every few minutes for due
touches (retries coming due, quiet-hour deferrals, claims a dead worker left)."""

from __future__ import annotations

from huey import crontab

from backend.services import delivery as delivery_service
from backend.services import locks, touch_claims
from backend.tasks.nightly import holder
from backend.tasks.queue import huey
from backend.tasks.runtime import in_app, serving

SWEEP_EVERY_MIN = 5


@huey.task(name="deliver")
def deliver(tenant_id: int) -> None:
    """Send a tenant's due touches. Safe to run twice at once: each touch is claimed under a
    token with a lease before it is sent (services/delivery.py)."""
    with in_app() as app:
        delivery_service.deliver_now(app, tenant_id)


def after_trigger(app, tenant_id: int) -> None:
    """An event fired a trigger policy: deliver its touch on the queue, not in the request."""
    with serving(app):
        deliver(tenant_id)


@huey.periodic_task(crontab(minute=f"*/{SWEEP_EVERY_MIN}"), name="delivery_sweep")
def delivery_sweep() -> None:
    """Queue a delivery for each tenant with touches due, at most one per tenant a sweep."""
    with in_app() as app:
        queue_due_deliveries(app.config["CLOCK"].now_ms())


def queue_due_deliveries(now_ms: int) -> list[int]:
    """Queue `deliver` for the tenants with due touches; returns those queued."""
    queued = []
    for tenant_id in touch_claims.due_tenants(now_ms):
        name = f"delivery-queued:{tenant_id}"
        if locks.acquire_lock(name, holder(), now_ms, SWEEP_EVERY_MIN * 60_000 - 1):
            deliver(tenant_id)
            queued.append(tenant_id)
    return queued
