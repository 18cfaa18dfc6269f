"""The campaign job driven as a merchant would: history imported through the admin API,
allowances granted, a policy posted, the nightly job run (with or without delivery), and what
it left in the outbox read back. The clock stands at T0 (18:00 China time) unless a test says
otherwise."""

from __future__ import annotations

import textwrap

from backend.core.calendar import MS_PER_DAY, china_day
from backend.core.clock import FixedClock, from_ms, to_ms
from backend.core.policy.guards import next_allowed_ms
from backend.services import delivery
from backend.services.campaigns import job
from backend.services.channels import channels_for
from backend.store.models import SubscriptionAllowance, Tenant, Touch, User

from .app import T0

DAY_MS = 86_400_000
NOW = to_ms(T0)  # 2026-03-10 18:00 China time
TODAY = int(china_day(NOW))

POLICY = textwrap.dedent(
    """
    name: comeback
    eligibility:
      tiers: [low_frequency, churn_risk, churned]
      min_days_silent: 3
      max_days_silent: 60
    timing:
      lapse_after_days: 3
      send_hour: 10
    holdout_share: 0.3
    arms:
      - name: care
        touches:
          - {day: 0, channel: subscribe, message: saved}
          - {day: 7, channel: sms, message: sms_hi}
    messages:
      saved:
        kind: reminder
        template_id: tmpl_saved
        page: pages/index/index
        fields:
          thing1: 你收藏的菜品还在
          date2: "{today}"
      sms_hi:
        kind: caring
        text: 【校园外卖】好久不见，常点的店铺都还在营业。
    """
)


def import_history(client, tenant, users: int, silent_days: int, visits: int = 3) -> None:
    """`users` users who visited on `visits` days, the last one `silent_days` ago."""
    events = []
    for u in range(users):
        for k in range(visits):
            ts = NOW - (silent_days + 3 * k) * DAY_MS
            events.append({"user": f"u{u:03d}", "id": f"e{u}-{k}", "type": "app_open", "ts": ts})
    resp = client.post("/admin/v1/events/import", json={"events": events}, headers=tenant.admin)
    assert resp.status_code == 200 and resp.get_json()["accepted"] == len(events)


def import_users(client, tenant, openids, silent_days: int, now_ms: int, visits: int = 3):
    """Users (by openid) who visited on `visits` days, the last one `silent_days` before now."""
    events = [
        {
            "user": openid,
            "id": f"{openid}-{k}",
            "type": "app_open",
            "ts": now_ms - (silent_days + 3 * k) * MS_PER_DAY,
        }
        for openid in openids
        for k in range(visits)
    ]
    resp = client.post("/admin/v1/events/import", json={"events": events}, headers=tenant.admin)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["accepted"] == len(events)


def grant_all(app, tenant, template: str = "tmpl_saved", count: int = 1) -> None:
    with app.app_context():
        SubscriptionAllowance.delete().where(
            SubscriptionAllowance.template_id == template
        ).execute()
        for user in User.select().where(User.tenant == tenant.id):
            SubscriptionAllowance.insert(
                tenant=tenant.id,
                user=user.id,
                template_id=template,
                remaining=count,
                last_result="accept",
                updated_ms=NOW,
            ).execute()


def grant(app, tenant, openids, count: int = 1, now_ms: int = NOW) -> None:
    """`count` subscribe allowances for the comeback message (tmpl_saved) to these users."""
    with app.app_context():
        for user in User.select().where((User.tenant == tenant.id) & User.openid.in_(openids)):
            SubscriptionAllowance.insert(
                tenant=tenant.id,
                user=user.id,
                template_id="tmpl_saved",
                remaining=count,
                last_result="accept",
                updated_ms=now_ms,
            ).execute()


def add_policy(client, tenant, source: str = POLICY, active: bool = True):
    resp = client.post(
        "/admin/v1/policies", json={"source": source, "active": active}, headers=tenant.admin
    )
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


def run_job(app, tenant, *, dry_run=False, now=NOW, day=TODAY):
    with app.app_context():
        t = Tenant.get_by_id(tenant.id)
        channels = channels_for(app)

        def deliver(tt, now_ms):
            at = FixedClock(from_ms(now_ms))  # the job's instant, standing still
            return delivery.deliver_due(tt, channels, delivery.RetryPolicy(0, 3), clock=at)

        return job.run(t, day, now, dry_run=dry_run, deliver=deliver)


def decide_only(app, tenant, *, now_ms: int = NOW, day: int = TODAY) -> dict:
    """The job without delivery: decisions written to the outbox, nothing sent."""
    with app.app_context():
        return job.run(Tenant.get_by_id(tenant.id), day, now_ms, deliver=None)


def statuses(app, tenant) -> dict[str, int]:
    with app.app_context():
        out: dict[str, int] = {}
        for t in Touch.select().where(Touch.tenant == tenant.id):
            out[t.status] = out.get(t.status, 0) + 1
        return out


def touches(app, tenant) -> list[dict]:
    """Every touch of the tenant with its user's openid, oldest first."""
    with app.app_context():
        q = (
            Touch.select(Touch, User.openid)
            .join(User, on=(Touch.user == User.id))
            .where(Touch.tenant == tenant.id)
            .order_by(Touch.id)
            .dicts()
        )
        return list(q)


def allowances(app, openids) -> list[int]:
    """The subscribe allowances each of these users has left, in the order given."""
    with app.app_context():
        left = dict(
            SubscriptionAllowance.select(User.openid, SubscriptionAllowance.remaining)
            .join(User, on=(SubscriptionAllowance.user == User.id))
            .where(User.openid.in_(list(openids)))
            .tuples()
        )
    return [left[o] for o in openids]


def is_quiet(ms: int) -> bool:
    """Whether `ms` falls in quiet hours (a send then waits for the next allowed instant)."""
    return next_allowed_ms(ms) != ms
