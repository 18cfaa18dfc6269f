"""Delivery past its lease: every touch sent once and recorded only by its claim holder.

A slow WeChat (a second or more per call) makes a batch outlive its 5-minute lease; a second
deliverer then claims the rest of it. These tests move the injected clock inside a fake slow
channel, so the lease runs out at a known point whatever the wall clock says (18:00 China
time, outside quiet hours), and count who was sent what.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections import Counter

import pytest
from helpers.campaigns import (
    NOW,
    POLICY,
    TODAY,
    add_policy,
    allowances,
    decide_only,
    grant,
    import_users,
    is_quiet,
    touches,
)

from backend.core.clock import FixedClock, from_ms
from backend.services import channels as channels_module
from backend.services import coupons, delivery, touch_claims
from backend.services.campaigns import job, run_lock
from backend.services.channels import Outcome, channels_for
from backend.services.locks import acquire_lock, release_lock, renew_lock
from backend.store.models import CampaignRun, Coupon, CouponTemplate, JobLock, Tenant, Touch

MINUTE = 60_000
COUPON = "回归券满20减5"
COUPON_POLICY = POLICY.replace(
    "{day: 0, channel: subscribe, message: saved}",
    f"{{day: 0, channel: subscribe, message: saved, coupon: {COUPON}}}",
)
RETRY = delivery.RetryPolicy(0, 3)


class Channel:
    """A subscribe channel that records every send into a shared list and, if told, is slow:
    each call moves the injected clock on, and may run something mid-call (a second
    deliverer, a lock thief)."""

    name = "subscribe"

    def __init__(self, log: list[str], clock=None, minutes: float = 0, during=None) -> None:
        self.log = log
        self.clock = clock
        self.minutes = minutes
        self.during = during or {}
        self.calls = 0

    def send(self, touch, to, message, template_id, now_ms):
        self.calls += 1
        self.log.append(to.openid)
        if self.clock is not None and self.minutes:
            self.clock.advance(minutes=self.minutes)
        if self.calls in self.during:
            self.during[self.calls]()
        return Outcome("sent", provider_id=f"p-{touch.id}")


def channels(app, channel: Channel) -> dict:
    out = channels_for(app)
    out["subscribe"] = channel
    return out


def deliver(app, tenant, channel: Channel, clock=None, now_ms: int | None = None):
    """Deliver on `clock`, or on a clock standing at `now_ms` (a deliverer at another time)."""
    t = Tenant.get_by_id(tenant.id)
    at = clock if now_ms is None else FixedClock(from_ms(now_ms))
    return delivery.deliver_due(t, channels(app, channel), RETRY, clock=at)


def prepare(app, client, tenant, users: int = 12, policy: str = POLICY) -> list[str]:
    """Users due for the comeback message at NOW, each with two allowances (a user left with
    none was sent the message twice), and the day's decisions in the outbox."""
    openids = [f"f{u:03d}" for u in range(users)]
    import_users(client, tenant, openids, silent_days=5, now_ms=NOW)
    grant(app, tenant, openids, count=2)
    add_policy(client, tenant, policy)
    decided = decide_only(app, tenant)
    assert decided["queued"] >= 6 and decided["sent"] == 0
    return sorted(r["openid"] for r in touches(app, tenant) if r["status"] == "queued")


def coupon_template(client, tenant) -> int:
    resp = client.post(
        "/admin/v1/coupon-templates",
        json={
            "name": COUPON,
            "amount_off_fen": 500,
            "min_spend_fen": 2000,
            "validity_days": 3,
            "budget": 100,
            "per_user_limit": 5,  # generous, so a second coupon to one user would show
        },
        headers=tenant.admin,
    )
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["id"]


def test_a_deliverer_whose_lease_ran_out_neither_sends_nor_records(app, client, tenant, clock):
    """A claims the whole batch and sends slowly (2 minutes a call); while A sends its third
    touch, B finds the rest of A's claim lapsed and delivers it. A must send none of those."""
    template_id = coupon_template(client, tenant)
    queued = prepare(app, client, tenant, policy=COUPON_POLICY)
    assert not is_quiet(NOW)
    sent: list[str] = []
    b_counts: list[Counter] = []
    with app.app_context():
        b = Channel(sent)

        def second_deliverer():
            b_counts.append(deliver(app, tenant, b, clock=clock))

        a = Channel(sent, clock, minutes=2, during={3: second_deliverer})
        a_counts = deliver(app, tenant, a, clock=clock)

    assert sorted(sent) == queued  # every queued touch sent, and none twice
    assert Counter(sent).most_common(1)[0][1] == 1
    assert a.calls == 3 and b.calls == len(queued) - 3
    assert a_counts["sent"] == 3 and a_counts[delivery.LOST] == len(queued) - 3
    assert b_counts[0]["sent"] == len(queued) - 3
    rows = [r for r in touches(app, tenant) if r["openid"] in queued]
    assert {r["status"] for r in rows} == {"sent"}
    assert all(r["claim_token"] is None and r["lease_until_ms"] is None for r in rows)
    assert allowances(app, queued) == [1] * len(queued)  # one allowance spent each
    with app.app_context():
        # One coupon per touch, issued once and linked to it; nobody holds two.
        issued = list(Coupon.select())
        assert len(issued) == len(queued)
        assert sorted(c.id for c in issued) == sorted(r["coupon"] for r in rows)
        assert max(Counter(c.user_id for c in issued).values()) == 1
        assert CouponTemplate.get_by_id(template_id).issued_count == len(queued)


def test_a_sending_touch_whose_lease_ran_out_is_queued_again_and_sent_once(
    app, client, tenant, clock
):
    """A deliverer claims the batch and dies. Inside the lease nobody may send those touches;
    after it they are queued again and sent once, and the dead deliverer, should it wake,
    cannot record over them."""
    queued = prepare(app, client, tenant)
    sent: list[str] = []
    with app.app_context():
        stale = touch_claims.claim(tenant.id, NOW)  # claimed, then the process died
        assert len(stale) == len(queued)
        assert deliver(app, tenant, Channel(sent), now_ms=NOW + 4 * MINUTE)["sent"] == 0
        assert {r["status"] for r in touches(app, tenant) if r["openid"] in queued} == {"sending"}
        later = NOW + touch_claims.LEASE_MS + MINUTE
        counts = deliver(app, tenant, Channel(sent), now_ms=later)
        assert counts["sent"] == len(queued)
        assert sorted(sent) == queued
        # The dead deliverer's claim is fenced off: it can record nothing now.
        assert not touch_claims.finish(stale[0], "failed", reason="late")
        assert not touch_claims.confirm(stale[0], later)
        assert deliver(app, tenant, Channel(sent), now_ms=later + MINUTE)["sent"] == 0
    rows = [r for r in touches(app, tenant) if r["openid"] in queued]
    assert {r["status"] for r in rows} == {"sent"}
    assert {r["sent_ms"] for r in rows} == {later}
    assert all(r["attempts"] == 1 for r in rows)
    assert sorted(sent) == queued
    assert allowances(app, queued) == [1] * len(queued)


def test_a_crash_between_issuing_a_coupon_and_linking_it_leaves_no_coupon(
    app, client, tenant, clock, monkeypatch
):
    template_id = coupon_template(client, tenant)
    queued = prepare(app, client, tenant, policy=COUPON_POLICY)
    real_issue = coupons.issue

    def issue_then_crash(*args, **kwargs):
        real_issue(*args, **kwargs)
        raise RuntimeError("process died between issue and link")

    monkeypatch.setattr(coupons, "issue", issue_then_crash)
    sent: list[str] = []
    with app.app_context():
        with pytest.raises(RuntimeError, match="between issue and link"):
            deliver(app, tenant, Channel(sent), now_ms=NOW)
        assert sent == []
        assert Coupon.select().count() == 0  # rolled back with the link that never happened
        assert CouponTemplate.get_by_id(template_id).issued_count == 0
        # The touches behind the crashed one went back to the queue at once.
        left = Counter(r["status"] for r in touches(app, tenant) if r["openid"] in queued)
        assert left == {"sending": 1, "queued": len(queued) - 1}

        monkeypatch.setattr(coupons, "issue", real_issue)
        later = NOW + touch_claims.LEASE_MS + MINUTE
        assert deliver(app, tenant, Channel(sent), now_ms=later)["sent"] == len(queued)
        issued = list(Coupon.select())
        assert len(issued) == len(queued)
        assert max(Counter(c.user_id for c in issued).values()) == 1
        assert CouponTemplate.get_by_id(template_id).issued_count == len(queued)
        linked = [t.coupon_id for t in Touch.select().where(Touch.status == "sent")]
        assert sorted(linked) == sorted(c.id for c in issued)
    assert sorted(sent) == queued


def test_a_kicked_delivery_renews_its_leases_on_the_apps_clock(
    app, client, tenant, clock, monkeypatch
):
    """The delivery an event trigger queues (delivery.deliver_now) sends slowly, 2 minutes a call on
    the app's clock; during its third send a deliverer on the same clock (the nightly job, a
    later kick) runs. The kicked thread renewed the lease of the touch it is sending from the
    clock's "now", so nobody takes that touch over; the second deliverer takes only the
    claimed-but-unsent rest, whose claim lapsed. Every touch goes out once."""
    queued = prepare(app, client, tenant)
    assert not is_quiet(NOW)
    sent: list[str] = []
    b_counts: list[Counter] = []

    def second_deliverer():
        b_counts.append(deliver(app, tenant, Channel(sent), clock=clock))

    a = Channel(sent, clock, minutes=2, during={3: second_deliverer})
    real = channels_module.channels_for
    monkeypatch.setattr(channels_module, "channels_for", lambda app: {**real(app), "subscribe": a})

    def kicked():  # the queue's `deliver` task, on a worker of its own
        with app.app_context():
            delivery.deliver_now(app, tenant.id)

    thread = threading.Thread(target=kicked)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive()

    assert Counter(sent).most_common(1)[0][1] == 1  # nobody was sent a message twice
    assert sorted(sent) == queued
    assert a.calls == 3 and b_counts[0]["sent"] == len(queued) - 3
    rows = [r for r in touches(app, tenant) if r["openid"] in queued]
    assert {r["status"] for r in rows} == {"sent"}
    assert all(r["attempts"] == 1 for r in rows)
    assert allowances(app, queued) == [1] * len(queued)


def test_deliver_due_has_no_frozen_now():
    """`clock` is required and there is no fixed "now" to pass instead: a caller cannot
    forget it and deliver on a time frozen at the start."""
    params = inspect.signature(delivery.deliver_due).parameters
    assert "now_ms" not in params
    assert params["clock"].default is inspect.Parameter.empty
    assert params["clock"].kind is inspect.Parameter.KEYWORD_ONLY


# -- the job's run lock --------------------------------------------------------------------------


def test_renew_lock_extends_only_the_holders_lock(app):
    ttl = 3 * MINUTE
    with app.app_context():
        assert acquire_lock("job", "a", NOW, ttl)
        assert renew_lock("job", "a", NOW + 2 * MINUTE, ttl)
        # Renewed: still held at a time the first TTL had run out.
        assert not acquire_lock("job", "b", NOW + 4 * MINUTE, ttl)
        assert not renew_lock("job", "b", NOW + 4 * MINUTE, ttl)
        # a stops renewing; after the TTL b takes over, and a's renewal now fails.
        assert acquire_lock("job", "b", NOW + 2 * MINUTE + ttl + 1, ttl)
        assert not renew_lock("job", "a", NOW + 6 * MINUTE, ttl)
        assert JobLock.get(JobLock.name == "job").holder == "b"
        release_lock("job", "b")
        assert not renew_lock("job", "b", NOW + 7 * MINUTE, ttl)


def test_a_crashed_runs_lock_lapses_within_minutes(app, client, tenant):
    assert run_lock.LOCK_TTL_MS <= 5 * MINUTE
    prepare(app, client, tenant)
    name = f"campaigns:{tenant.id}"
    with app.app_context():
        assert acquire_lock(name, "crashed-run", NOW, run_lock.LOCK_TTL_MS)
        t = Tenant.get_by_id(tenant.id)
        with pytest.raises(run_lock.JobLocked):
            job.run(t, TODAY, NOW + MINUTE)
        out = job.run(t, TODAY, NOW + run_lock.LOCK_TTL_MS + MINUTE)
        assert out["decided"] == 0  # the crashed run had decided already
        assert JobLock.select().count() == 0


def run_with(app, tenant, channel: Channel, clock) -> dict:
    t = Tenant.get_by_id(tenant.id)
    chans = channels(app, channel)

    def send(tt, now_ms):
        return delivery.deliver_due(tt, chans, RETRY, clock=clock)

    return job.run(t, TODAY, clock.now_ms(), deliver=send, clock=clock)


def test_a_long_run_renews_its_lock_so_nobody_takes_it(app, client, tenant, clock):
    """A run whose delivery lasts three times the lock's TTL (a minute a send) keeps it."""
    openids = [f"f{u:03d}" for u in range(12)]
    import_users(client, tenant, openids, silent_days=5, now_ms=NOW)
    grant(app, tenant, openids, count=2)
    add_policy(client, tenant)
    name = f"campaigns:{tenant.id}"
    refused: list[bool] = []

    def intruder():
        refused.append(not acquire_lock(name, "intruder", clock.now_ms(), run_lock.LOCK_TTL_MS))

    sent: list[str] = []
    channel = Channel(sent, clock, minutes=1)
    channel.during = {k: intruder for k in range(1, 20)}
    with app.app_context():
        out = run_with(app, tenant, channel, clock)
        assert out["sent"] == len(sent) >= 6
        assert clock.now_ms() - NOW > 2 * run_lock.LOCK_TTL_MS
        assert refused == [True] * len(sent)
        assert JobLock.select().count() == 0
        assert [r.status for r in CampaignRun.select()] == ["done"]


def test_a_run_that_loses_its_lock_stops_cleanly(app, client, tenant, clock):
    openids = [f"f{u:03d}" for u in range(12)]
    import_users(client, tenant, openids, silent_days=5, now_ms=NOW)
    grant(app, tenant, openids, count=2)
    add_policy(client, tenant)
    name = f"campaigns:{tenant.id}"

    def thief():  # the run stalled past its TTL and another run took the lock
        JobLock.update(holder="thief", expires_ms=clock.now_ms() + run_lock.LOCK_TTL_MS).where(
            JobLock.name == name
        ).execute()

    sent: list[str] = []
    channel = Channel(sent, clock, minutes=1, during={2: thief})
    with app.app_context():
        with pytest.raises(run_lock.JobLockLost):
            run_with(app, tenant, channel, clock)
        assert len(sent) == 2  # nothing sent after the loss was found
        statuses = Counter(t.status for t in Touch.select().where(Touch.status != "held_out"))
        assert statuses["sent"] == 2 and statuses["sending"] == 0 and statuses["queued"] >= 4
        (run,) = CampaignRun.select()
        assert run.status == "failed" and "lock" in run.summary
        assert JobLock.get(JobLock.name == name).holder == "thief"  # not released by the loser


def test_a_decision_phase_longer_than_the_ttl_keeps_the_lock(
    app, client, tenant, clock, monkeypatch
):
    """Deciding one policy takes longer than the lock's TTL (the clock moves on by TTL + 1
    minute inside it, with no phase boundary or send to renew at). The run's heartbeat renews
    the lock on the clock meanwhile, so an intruder is refused and the run ends `done`."""
    openids = [f"f{u:03d}" for u in range(12)]
    import_users(client, tenant, openids, silent_days=5, now_ms=NOW)
    grant(app, tenant, openids, count=2)
    add_policy(client, tenant)
    name = f"campaigns:{tenant.id}"
    monkeypatch.setattr(run_lock, "LOCK_HEARTBEAT_S", 0.01)  # real seconds between renewals
    real = job.decide_policy
    refused: list[bool] = []

    def held_past_now() -> bool:
        return JobLock.get(JobLock.name == name).expires_ms > clock.now_ms()

    def slow_decide(*args, **kwargs):
        out = real(*args, **kwargs)
        clock.advance(milliseconds=run_lock.LOCK_TTL_MS + MINUTE)
        for _ in range(3000):  # wait for the heartbeat to renew (it ticks every 10 ms)
            if held_past_now():
                break
            time.sleep(0.01)
        assert held_past_now(), "the lock lapsed during the long phase"
        refused.append(not acquire_lock(name, "intruder", clock.now_ms(), run_lock.LOCK_TTL_MS))
        return out

    monkeypatch.setattr(job, "decide_policy", slow_decide)
    sent: list[str] = []
    with app.app_context():
        out = run_with(app, tenant, Channel(sent), clock)
        assert refused == [True]
        assert out["sent"] == len(sent) >= 6
        assert [r.status for r in CampaignRun.select()] == ["done"]
        assert JobLock.select().count() == 0  # released, and not renewed after the run
        assert not [t for t in threading.enumerate() if t.name == f"lock-{name}"]  # stopped


def test_the_heartbeat_stops_renewing_once_its_lock_was_taken(app, clock, monkeypatch):
    """A heartbeat that finds its lock taken never renews again, and the run's next beat
    raises: a run that died (or lost its lock) does not hold the tenant's job."""
    monkeypatch.setattr(run_lock, "LOCK_HEARTBEAT_S", 0.01)
    ttl = run_lock.LOCK_TTL_MS
    with app.app_context():
        assert acquire_lock("campaigns:x", "run", NOW, ttl)
        lock = run_lock.RunLock("campaigns:x", "run", NOW, clock)
        clock.advance(milliseconds=ttl + MINUTE)
        assert acquire_lock("campaigns:x", "thief", clock.now_ms(), ttl)
        lock.start()
        for _ in range(3000):
            if lock.lost:
                break
            time.sleep(0.01)
        lock.stop()
        assert lock.lost
        assert JobLock.get(JobLock.name == "campaigns:x").holder == "thief"
        with pytest.raises(run_lock.JobLockLost):
            lock.beat()
