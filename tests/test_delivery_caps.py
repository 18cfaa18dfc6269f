"""Delivery re-checks the caps with the decision's meaning (core.policy.caps): touches counted
by the China day they were decided for, queued, sending, sent and held out alike.

The decision already counts every touch decided before it, so the re-check matters when two
decisions raced; here the "raced" touches are written beside a queued one after deciding.
"""

from __future__ import annotations

import pytest
from helpers.campaigns import NOW, POLICY, TODAY, add_policy, decide_only, grant_all, import_history

from backend.core.clock import FixedClock, from_ms
from backend.services import delivery
from backend.services.channels import channels_for
from backend.store.models import Tenant, Touch

FAR = NOW + 30 * 86_400_000  # a raced queued touch that is not due in this test


def deliver_one_with_others(app, client, tenant, others, policy=POLICY) -> str:
    """Decide, add `others` ((status, day) touches of the same user), deliver: the first
    queued touch's status and reason afterwards."""
    import_history(client, tenant, users=10, silent_days=5)
    grant_all(app, tenant)
    add_policy(client, tenant, policy)
    decide_only(app, tenant)
    with app.app_context():
        first = Touch.select().where(Touch.status == "queued").order_by(Touch.id).dicts().get()
        for status, day in others:
            row = {k: v for k, v in first.items() if k != "id"}
            row.update(status=status, day=day, send_after_ms=FAR, expires_ms=FAR + 1)
            Touch.insert(**row).execute()
        Touch.update(status="skipped").where(
            (Touch.status == "queued") & (Touch.id != first["id"]) & (Touch.day == TODAY)
        ).execute()  # only the one touch is delivered
        t = Tenant.get_by_id(tenant.id)
        clock = FixedClock(from_ms(NOW))
        delivery.deliver_due(t, channels_for(app), delivery.RetryPolicy(0, 3), clock=clock)
        after = Touch.get_by_id(first["id"])
    return after.status if after.status != "skipped" else after.reason


@pytest.mark.parametrize(
    "others, outcome",
    [
        ([("held_out", TODAY - 1), ("sent", TODAY - 2), ("queued", TODAY - 29)], "capped_30d"),
        ([("sent", TODAY - 1), ("sent", TODAY - 2), ("sent", TODAY - 30)], "sent"),
        ([("failed", TODAY - 1), ("expired", TODAY - 2), ("skipped", TODAY - 3)], "sent"),
    ],
    ids=["three-in-30-days", "one-outside-the-window", "not-counted-statuses"],
)
def test_the_30_day_cap_at_sending(app, client, tenant, others, outcome):
    assert deliver_one_with_others(app, client, tenant, others) == outcome


@pytest.mark.parametrize(
    "day, outcome", [(TODAY - 6, "capped_channel"), (TODAY - 7, "sent")], ids=["in", "out"]
)
def test_the_weekly_channel_cap_at_sending(app, client, tenant, day, outcome):
    policy = POLICY + "caps:\n  per_channel_week: {subscribe: 1}\n"
    assert deliver_one_with_others(app, client, tenant, [("sent", day)], policy) == outcome
