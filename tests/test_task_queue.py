"""The task queue on its embedded default, Huey's SQLite storage: real tasks on a real queue
file, run by hand (tests/helpers/queue.py) on the injected clock, on SQLite and PostgreSQL
app databases.

What an operator would notice if these broke: a campus's night run twice or not at all, run at
the wrong hour, one broken campus stopping every campus after it, a failing campus retried for
ever, an event's message waiting for the nightly run, due touches never swept up.

The days are 2026-03-11 (a Wednesday) in China time: its 02:00 is 2026-03-10 18:00 UTC.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import date, datetime, timedelta

import pytest
from helpers.app import login, make_tenant
from helpers.campaigns import (
    NOW,
    POLICY,
    TODAY,
    add_policy,
    allowances,
    decide_only,
    grant,
    import_users,
    touches,
)
from helpers.queue import drain, pending, scheduled, sqlite_queue, tick

from backend.core.calendar import day_number
from backend.core.clock import CHINA_TZ
from backend.services import locks
from backend.services.campaigns import job, run_lock
from backend.services.scoring import score_tenant
from backend.store.models import CampaignRun, JobLock, TaskFailure, Tenant
from backend.tasks import nightly, queue, runtime

DAY = day_number(date(2026, 3, 11))


def china(hour: int, minute: int, day: int = 11) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=CHINA_TZ)


@pytest.fixture
def tasks(app, tmp_path):
    with sqlite_queue(app, tmp_path / "queue.sqlite3") as huey:
        yield huey


def at(clock, when: datetime) -> datetime:
    """The app's clock to `when`, which the caller then ticks or drains at."""
    clock.set(when)
    return when


def runs(app) -> list[tuple[int, int, str]]:
    with app.app_context():
        rows = CampaignRun.select().order_by(CampaignRun.tenant, CampaignRun.id)
        return [(r.tenant_id, r.day, r.status) for r in rows]


def set_nightly_at(client, tenant, value: str):
    return client.patch("/admin/v1/settings", json={"nightly_at": value}, headers=tenant.admin)


@pytest.fixture
def second_scheduler(monkeypatch):
    """Tick as another worker machine would: another holder for the lock rows."""

    def as_other():
        monkeypatch.setattr(nightly, "holder", lambda: "other-machine:1")

    return as_other


# -- the queue fixture itself ------------------------------------------------------------------


def test_the_queue_goes_back_to_memory_even_when_the_test_fails(app, tmp_path):
    with pytest.raises(RuntimeError, match="boom"), sqlite_queue(app, tmp_path / "q.sqlite3") as q:
        assert not queue.is_immediate()
        assert type(q.storage).__name__ == "SqliteStorage"
        assert runtime.current() is app
        raise RuntimeError("boom")
    assert queue.is_immediate()
    assert type(queue.huey.storage).__name__ == "MemoryStorage"
    with pytest.raises(RuntimeError, match="no app for tasks"):
        runtime.current()


# -- a tenant's night at its own China time ---------------------------------------------------


def test_the_night_is_queued_at_the_tenants_china_time_and_runs_once(
    app, client, clock, tenant, other_tenant, tasks, second_scheduler
):
    refused = set_nightly_at(client, tenant, "25:00")
    assert refused.status_code == 400, refused.get_json()
    assert set_nightly_at(client, tenant, "02:00").status_code == 200
    assert set_nightly_at(client, other_tenant, "03:30").status_code == 200

    assert "nightly_tick" in tick(at(clock, china(1, 59)))
    assert pending() == []

    # 02:00 China is 18:00 UTC the day before: the minute's tick and the 5-minute sweep fire.
    assert {"delivery_sweep", "nightly_tick"} <= set(tick(at(clock, china(2, 0))))
    assert pending() == [("nightly", (tenant.id, DAY))]
    second_scheduler()  # another machine's scheduler, the same minute: nothing more
    tick(china(2, 0))
    assert pending() == [("nightly", (tenant.id, DAY))]

    assert drain(china(2, 0)) == ["nightly"]
    assert runs(app) == [(tenant.id, DAY, "done")]
    assert pending() == [] and scheduled(china(2, 0)) == []

    for minute in (1, 2, 59):
        tick(at(clock, china(2, minute)))
    tick(at(clock, china(3, 29)))
    assert pending() == []

    tick(at(clock, china(3, 30)))
    assert pending() == [("nightly", (other_tenant.id, DAY))]
    assert drain(china(3, 30)) == ["nightly"]
    tick(at(clock, china(3, 31)))
    tick(at(clock, china(23, 59)))
    assert pending() == []
    assert runs(app) == [(tenant.id, DAY, "done"), (other_tenant.id, DAY, "done")]

    # The next China day, each at its time again.
    tick(at(clock, china(2, 0, day=12)))
    assert pending() == [("nightly", (tenant.id, DAY + 1))]


def test_a_worker_down_at_two_still_runs_the_night_once_when_it_comes_back(
    app, clock, tenant, tasks, second_scheduler
):
    """No scheduler ticked at 02:00 (the default time); the first tick, at 09:00, queues it."""
    tick(at(clock, china(9, 0)))
    second_scheduler()
    tick(china(9, 0))
    assert pending() == [("nightly", (tenant.id, DAY))]
    assert drain(china(9, 0)) == ["nightly"]
    for minute in (1, 2, 30):
        tick(at(clock, china(9, minute)))
    assert pending() == []
    assert runs(app) == [(tenant.id, DAY, "done")]


def test_a_queued_night_that_is_lost_is_queued_again_after_its_lease(app, clock, tenant, tasks):
    """Huey drops a task whose worker is killed: the claim lapses and the tick queues again."""
    tick(at(clock, china(2, 0)))
    assert queue.huey.dequeue().name == "nightly"  # taken by a worker that then died
    tick(at(clock, china(2, 19)))
    assert pending() == []  # the claim's 20 minutes are running
    tick(at(clock, china(2, 21)))
    assert pending() == [("nightly", (tenant.id, DAY))]
    assert drain(china(2, 21)) == ["nightly"]
    assert runs(app) == [(tenant.id, DAY, "done")]


def test_a_night_run_by_hand_shares_the_lock_and_the_queued_task_then_does_nothing(
    app, clock, tenant, tasks
):
    """`run-campaigns` by hand holds the tenant's lock when the queued night starts: the task
    asks again once that lock could have lapsed (not a failure), and then finds it done."""
    t = at(clock, china(2, 0))
    tick(t)
    by_hand = run_lock.lock_name(tenant.id)
    with app.app_context():
        assert locks.acquire_lock(by_hand, "operator:1", clock.now_ms(), run_lock.LOCK_TTL_MS)
    assert drain(t) == ["nightly"]
    assert runs(app) == [] and pending() == []
    assert scheduled(t) == [("nightly", (tenant.id, DAY), run_lock.LOCK_TTL_MS / 1000)]
    with app.app_context():
        locks.release_lock(by_hand, "operator:1")

    at(clock, china(2, 1))
    result = app.test_cli_runner().invoke(args=["run-campaigns", "--json"])
    assert result.exit_code == 0, result.output
    assert runs(app) == [(tenant.id, DAY, "done")]

    assert drain(at(clock, t + timedelta(seconds=180))) == ["nightly"]
    assert runs(app) == [(tenant.id, DAY, "done")]  # not run twice
    assert scheduled(t) == [] and pending() == []
    with app.app_context():
        assert TaskFailure.select().count() == 0
    tick(at(clock, china(2, 30)))
    assert pending() == []


def test_a_night_finished_by_another_copy_after_the_first_check_is_not_run_again(
    app, clock, tenant, tasks, monkeypatch
):
    """Two copies of a night (a lapsed claim re-queued it while the first was still waiting):
    the other copy finishes between this one's first look and its taking the lock. The look
    under the lock sees it done, so the night is not run twice."""
    t = at(clock, china(2, 0))
    tick(t)
    real = nightly.nightly_schedule.is_done

    def finished_meanwhile(tenant_id: int, day: int) -> bool:
        answer = real(tenant_id, day)
        if not answer:  # the other copy runs the night right after this look
            assert job.run(tenant, day, clock.now_ms(), clock=clock) is not None
        return answer

    monkeypatch.setattr(nightly.nightly_schedule, "is_done", finished_meanwhile)
    assert drain(t) == ["nightly"]
    assert runs(app) == [(tenant.id, DAY, "done")]


def test_one_tenants_broken_settings_row_stops_no_other_tenants_night(
    app, clock, tenant, other_tenant, tasks
):
    with app.app_context():
        Tenant.update(settings="not json").where(Tenant.id == tenant.id).execute()
        Tenant.update(settings="null").where(Tenant.id == other_tenant.id).execute()
    tick(at(clock, china(2, 0)))
    assert sorted(pending()) == [("nightly", (tenant.id, DAY)), ("nightly", (other_tenant.id, DAY))]


def test_claims_of_past_nights_are_deleted_not_kept_for_ever(app, clock, tenant, tasks):
    tick(at(clock, china(2, 0)))
    drain(china(2, 0))
    with app.app_context():
        assert JobLock.select().where(JobLock.name.startswith("nightly-queued:")).count() == 1
    tick(at(clock, china(2, 0, day=12)))  # a day later: yesterday's claim lapsed a day ago
    with app.app_context():
        assert JobLock.select().where(JobLock.name.startswith("nightly-queued:")).count() == 2
    tick(at(clock, china(2, 0, day=15)))  # both ended more than two days ago
    with app.app_context():
        names = [r.name for r in JobLock.select().where(JobLock.name.startswith("nightly-"))]
    assert names == [f"nightly-queued:{tenant.id}:{DAY + 4}"]


# -- one failing tenant ------------------------------------------------------------------------


def test_a_failing_tenant_is_retried_with_backoff_then_recorded_and_stops_no_one(
    app, clock, tenant, other_tenant, tasks, monkeypatch
):
    third = make_tenant(app, "wxtest00000000003")
    bad = other_tenant.id  # the middle one: tenants after it must still run
    real_attribute = job.attribute

    def attribute(tenant_id: int, now_ms: int):
        if tenant_id == bad:
            raise RuntimeError("scoring blew up")
        return real_attribute(tenant_id, now_ms)

    monkeypatch.setattr(job, "attribute", attribute)

    t = at(clock, china(2, 0))
    tick(t)
    assert pending() == [("nightly", (i, DAY)) for i in (tenant.id, bad, third.id)]
    assert drain(t) == ["nightly"] * 3
    assert Counter(runs(app)) == Counter(
        {(tenant.id, DAY, "done"): 1, (bad, DAY, "failed"): 1, (third.id, DAY, "done"): 1}
    )

    # Tried again after 1, 2 and 4 minutes (Huey's schedule), the ticks queueing no more.
    for delay in (60, 120, 240):
        assert scheduled(t) == [("nightly", (bad, DAY), float(delay))]
        tick(at(clock, t + timedelta(seconds=30)))
        assert pending() == []
        t = at(clock, t + timedelta(seconds=delay))
        assert drain(t) == ["nightly"]
    assert scheduled(t) == [] and pending() == []

    with app.app_context():
        failures = [(f.task, f.tenant_id, f.key, f.attempts, f.error) for f in TaskFailure.select()]
    assert failures == [("nightly", bad, str(DAY), 4, "RuntimeError: scoring blew up")]
    assert [s for i, _, s in runs(app) if i == bad] == ["failed"] * 4

    # Given up for today: not queued again, even once the claim's lease has lapsed.
    for when in (china(2, 30), china(23, 59)):
        tick(at(clock, when))
    assert pending() == []
    assert [r for r in runs(app) if r[0] != bad] == [
        (tenant.id, DAY, "done"),
        (third.id, DAY, "done"),
    ]

    # Tomorrow it is tried afresh (the cause may have been fixed).
    monkeypatch.setattr(job, "attribute", real_attribute)
    tick(at(clock, china(2, 0, day=12)))
    assert ("nightly", (bad, DAY + 1)) in pending()


# -- delivery ----------------------------------------------------------------------------------


def test_an_event_trigger_queues_a_deliver_task_that_sends_the_touch(app, client, tenant, tasks):
    openids = [f"dev_p{u:03d}" for u in range(40)]
    import_users(client, tenant, openids, silent_days=5, now_ms=NOW)
    with app.app_context():
        score_tenant(Tenant.get_by_id(tenant.id), TODAY)
    resp = client.post(
        "/admin/v1/policies",
        json={"preset": "payment_failed", "active": True},
        headers=tenant.admin,
    )
    assert resp.status_code == 201, resp.get_json()

    threads_before = {t.name for t in threading.enumerate()}
    for openid in openids:  # the first user the policy treats (about a tenth are held out)
        h = login(client, tenant, openid.removeprefix("dev_"))
        resp = client.post(
            "/mp/v1/events",
            json={"events": [{"id": f"pf-{openid}", "type": "payment_failed", "ts": NOW}]},
            headers=h,
        )
        assert resp.status_code == 200, resp.get_json()
        rows = [r for r in touches(app, tenant) if r["openid"] == openid]
        if rows and rows[0]["status"] == "queued":
            break
    else:
        raise AssertionError("no user got a payment_failed touch")

    # Queued on the queue, not sent in the request nor on a thread of the web worker.
    assert pending() == [("deliver", (tenant.id,))]
    assert {t.name for t in threading.enumerate()} <= threads_before
    assert [r["status"] for r in touches(app, tenant)] == ["queued"]

    assert drain(datetime.fromtimestamp(NOW / 1000, CHINA_TZ)) == ["deliver"]
    sent = touches(app, tenant)
    assert [(r["openid"], r["channel"], r["status"]) for r in sent] == [(openid, "in_app", "sent")]
    shown = client.get("/mp/v1/reengagement", headers=h).get_json()["cards"]
    assert len(shown) == 1


def test_the_delivery_sweep_queues_a_tenant_with_due_touches_once_a_window(
    app, client, clock, tenant, other_tenant, tasks, second_scheduler
):
    # The comeback message goes at 08:00; at 18:00 China (T0) it is due.
    openids = [f"r{u:03d}" for u in range(12)]
    import_users(client, tenant, openids, silent_days=5, now_ms=NOW)
    grant(app, tenant, openids, count=2, now_ms=NOW)
    add_policy(client, tenant, POLICY.replace("send_hour: 10", "send_hour: 8"))
    for t in (tenant, other_tenant):  # the nights are not the point here
        assert set_nightly_at(client, t, "23:00").status_code == 200
    queued = decide_only(app, tenant)["queued"]
    assert queued > 0

    t0 = datetime.fromtimestamp(NOW / 1000, CHINA_TZ)  # 18:00, a sweep minute
    assert "delivery_sweep" in tick(at(clock, t0))
    assert pending() == [("deliver", (tenant.id,))]  # the other tenant has nothing due
    second_scheduler()
    tick(t0)
    assert "delivery_sweep" not in tick(at(clock, t0 + timedelta(minutes=1)))
    assert pending() == [("deliver", (tenant.id,))]

    tick(at(clock, t0 + timedelta(minutes=5)))  # the next window: still due, asked again
    assert pending() == [("deliver", (tenant.id,))] * 2
    assert drain(clock.now()) == ["deliver", "deliver"]  # the second finds nothing to send
    rows = touches(app, tenant)
    sent = sorted(r["openid"] for r in rows if r["status"] == "sent")
    assert len(sent) == queued
    assert allowances(app, sent) == [1] * queued  # each sent once

    tick(at(clock, t0 + timedelta(minutes=10)))
    assert pending() == []
