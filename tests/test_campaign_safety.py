"""Campaign safety: crashes, concurrent runs, reruns, opt-outs, quiet hours, triggers, migration.

What a merchant would notice if any of these broke: a recall message sent twice, a message
sent to someone who opted out or at midnight, a lost touch, a card that never shows (or
shows forever), a user lost in an upgrade.

Tests that run the `run-campaigns` command as a subprocess point it at the test's database,
SQLite file or the PostgreSQL lane alike, so crashes and concurrent runs are checked on both.
Every test, subprocesses included, runs
on an injected clock at a fixed time (18:00 China time, or a quiet-hours time where quiet
hours are the point), so "sent exactly once" is checked whatever the wall clock says.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from helpers.app import login
from helpers.campaigns import (
    NOW,
    POLICY,
    TODAY,
    add_policy,
    allowances,
    decide_only,
    grant,
    import_history,
    import_users,
    is_quiet,
    run_job,
    statuses,
    touches,
)

from backend.core.calendar import CHINA_OFFSET_MS, MS_PER_DAY
from backend.core.clock import FixedClock, from_ms
from backend.core.policy.allocation import salt_of, stable_unit
from backend.core.policy.guards import HOUR_MS
from backend.services import delivery, locks, touch_claims
from backend.services.campaigns import run_lock
from backend.services.channels import Outcome, channels_for
from backend.services.scoring import score_tenant
from backend.store import db as store_db
from backend.store.models import (
    ALL_MODELS,
    CampaignRun,
    JobLock,
    SchemaVersion,
    Tenant,
    Touch,
    User,
)
from backend.store.models import Policy as PolicyRow
from backend.tasks import delivery as task_delivery

ROOT = Path(__file__).resolve().parent.parent
CHINA_MIDNIGHT_AFTER_T0 = (TODAY + 1) * MS_PER_DAY - CHINA_OFFSET_MS
NIGHT = CHINA_MIDNIGHT_AFTER_T0 - HOUR_MS  # 23:00 China time: quiet hours
MINUTE = 60_000

# The subprocess tests need a database file of their own: run them on the SQLite lane only.
PAY_AGAIN_TITLE = "订单还在等你"
PAY_AGAIN_TEXT = "刚才的支付没有成功，购物车已为你保留，点击继续支付。"


# -- helpers --------------------------------------------------------------------------------


def assert_unique_touches(rows) -> None:
    keys = Counter((r["policy"], r["user"], r["day"], r["step"]) for r in rows)
    assert [k for k, n in keys.items() if n > 1] == []


class Recording:
    """A channel that records who it sent to (and sends nothing)."""

    name = "subscribe"

    def __init__(self) -> None:
        self.sent_to: list[str] = []

    def send(self, touch, to, message, template_id, now_ms):
        self.sent_to.append(to.openid)
        return Outcome("sent", provider_id=f"rec-{touch.id}")


def deliver(app, tenant, now_ms: int, recorder: Recording | None = None):
    with app.app_context():
        t = Tenant.get_by_id(tenant.id)
        channels = channels_for(app)
        if recorder is not None:
            channels["subscribe"] = recorder
        at = FixedClock(from_ms(now_ms))  # a delivery pass at that instant
        return delivery.deliver_due(t, channels, delivery.RetryPolicy(0, 3), clock=at)


def china_hm(ms: int) -> tuple[int, int]:
    local = (ms + CHINA_OFFSET_MS) % MS_PER_DAY
    return local // HOUR_MS, (local % HOUR_MS) // 60_000


# -- the CLI as a subprocess (SQLite only) --------------------------------------------------


def cli_env(db_url: str, now_ms: int, crash: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TEST_CRASH_AFTER_DECIDE"}
    env.update({"DATABASE_URL": db_url, "WECHAT_MODE": "dev", "TEST_NOW_MS": str(now_ms)})
    if crash:
        env["TEST_CRASH_AFTER_DECIDE"] = "1"
    return env


# `python app.py ARGS`, but with the app's clock fixed at TEST_NOW_MS: a process of its own
# (a crash is a real os._exit) on the injected clock. With TEST_CRASH_AFTER_DECIDE this script
# (not the production code) hands the job a hook that kills the process right after the
# decisions are committed, before anything is delivered: the job's CAMPAIGN_AFTER_DECIDE.
CLI_AT = """
import os, sys
from flask.cli import FlaskGroup
from backend.app import create_app
from backend.core.clock import FixedClock, from_ms
clock = FixedClock(from_ms(int(os.environ["TEST_NOW_MS"])))
config = {"CLOCK": clock}
if os.environ.get("TEST_CRASH_AFTER_DECIDE"):
    config["CAMPAIGN_AFTER_DECIDE"] = lambda: os._exit(70)
group = FlaskGroup(create_app=lambda: create_app(config), add_default_commands=False)
group.main(args=sys.argv[1:], prog_name="app.py")
"""


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-c", CLI_AT, "run-campaigns", "--json", *args]


def run_cli(db_url: str, *args: str, now_ms: int, crash: bool = False):
    return subprocess.run(
        cli_command(*args),
        cwd=ROOT,
        env=cli_env(db_url, now_ms, crash),
        capture_output=True,
        text=True,
        timeout=120,
    )


def prepare_tenant(app, client, tenant, users: int, now_ms: int = NOW) -> list[str]:
    """A tenant with an active nightly policy that sends its subscribe message at 08:00
    (already past at 18:00, and the next morning at 23:00).

    Each user holds two allowances: every dev-mode subscribe send spends one, so a user left
    with 0 was sent the message twice."""
    openids = [f"r{u:03d}" for u in range(users)]
    import_users(client, tenant, openids, silent_days=5, now_ms=now_ms)
    grant(app, tenant, openids, count=2, now_ms=now_ms)
    add_policy(client, tenant, POLICY.replace("send_hour: 10", "send_hour: 8"))
    return openids


# -- 1. a crash between deciding and delivering ------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("at", [NOW, NIGHT], ids=["18h", "23h-quiet"])
def test_crash_after_deciding_loses_nothing_and_sends_each_touch_once(
    app, client, tenant, db_url, at
):
    prepare_tenant(app, client, tenant, users=12, now_ms=at)
    quiet = is_quiet(at)
    assert quiet == (at == NIGHT)

    crashed = run_cli(db_url, now_ms=at, crash=True)
    assert crashed.returncode == 70, crashed.stderr[-2000:]
    assert crashed.stdout.strip() == ""  # no summary: it died before finishing
    decided = touches(app, tenant)
    by_status = Counter(r["status"] for r in decided)
    queued = by_status["queued"]
    assert queued > 0 and by_status["sent"] == 0
    assert set(by_status) <= {"queued", "held_out"}
    assert_unique_touches(decided)

    # Straight after the crash the dead run still holds the tenant's lock; the rerun refuses,
    # naming the lock, and changes nothing.
    refused = run_cli(db_url, now_ms=at + MINUTE)
    assert refused.returncode != 0
    assert "lock" in refused.stderr
    assert touches(app, tenant) == decided

    # The dead run renews its lock no more: minutes later it has lapsed and is taken over.
    later = at + run_lock.LOCK_TTL_MS + MINUTE
    assert later - at <= 5 * MINUTE
    second = run_cli(db_url, now_ms=later)
    assert second.returncode == 0, second.stderr[-2000:]
    summary = json.loads(second.stdout)
    assert summary["decided"] == 0 and summary["queued"] == 0  # nothing decided twice
    after = touches(app, tenant)
    assert len(after) == len(decided)
    assert_unique_touches(after)
    by_status = Counter(r["status"] for r in after)
    queued_users = sorted(r["openid"] for r in decided if r["status"] == "queued")
    if not quiet:
        assert summary["sent"] == queued
        assert by_status["sent"] == queued and by_status["queued"] == 0
        for r in after:
            if r["status"] == "sent":
                assert r["provider_id"] == f"dev-{r['id']}"
        assert allowances(app, queued_users) == [1] * queued  # each sent exactly once
    else:  # inside quiet hours: still waiting for 08:00, not lost and not sent
        assert summary["sent"] == 0 and summary["deferred"] == queued
        assert by_status["queued"] == queued and by_status["sent"] == 0
        assert allowances(app, queued_users) == [2] * queued

    third = run_cli(db_url, now_ms=later + MINUTE)
    assert third.returncode == 0, third.stderr[-2000:]
    again = json.loads(third.stdout)
    assert again["decided"] == 0 and again["sent"] == 0
    final = touches(app, tenant)
    assert Counter(r["status"] for r in final) == by_status
    assert [r["sent_ms"] for r in final] == [r["sent_ms"] for r in after]
    assert allowances(app, queued_users) == [2 if quiet else 1] * queued


def test_crashed_run_is_not_listed_as_running_forever(app, client, tenant, db_url):
    """GET /admin/v1/campaign-runs after a crash and a successful rerun: the merchant must not
    see the dead run as still "running" (with no finish time) for ever."""
    prepare_tenant(app, client, tenant, users=5)
    assert run_cli(db_url, now_ms=NOW, crash=True).returncode == 70
    rerun = run_cli(db_url, now_ms=NOW + run_lock.LOCK_TTL_MS + MINUTE)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    runs = client.get("/admin/v1/campaign-runs", headers=tenant.admin).get_json()["runs"]
    assert len(runs) == 2
    newest, crashed = runs
    assert newest["status"] == "done"
    assert crashed["status"] != "running" and crashed["finished_at"] is not None


# -- 2. two runs at once -------------------------------------------------------------------------


@pytest.mark.slow
def test_two_concurrent_runs_send_each_touch_once(app, client, tenant, db_url):
    prepare_tenant(app, client, tenant, users=60)
    assert not is_quiet(NOW)
    procs = [
        subprocess.Popen(
            cli_command(),
            cwd=ROOT,
            env=cli_env(db_url, NOW),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [(p, *p.communicate(timeout=120)) for p in procs]
    summaries = []
    for proc, out, err in results:
        if proc.returncode == 0:
            summaries.append(json.loads(out))
        else:  # the loser is told another run holds the lock
            assert proc.returncode == 1, err[-2000:]
            assert "holds the lock" in err, err[-2000:]
    assert summaries, "neither run succeeded"
    workers = [s for s in summaries if s["decided"] > 0]
    assert len(workers) == 1  # exactly one run did the deciding
    rows = touches(app, tenant)
    assert_unique_touches(rows)
    assert sum(s["decided"] for s in summaries) == len(rows) == 60
    queued = workers[0]["queued"]
    by_status = Counter(r["status"] for r in rows)
    queued_users = [r["openid"] for r in rows if r["status"] in ("queued", "sent")]
    assert len(queued_users) == queued
    assert sum(s["sent"] for s in summaries) == queued == by_status["sent"] > 0
    assert allowances(app, queued_users) == [1] * queued  # nobody got the message twice


def test_two_deliverers_racing_for_one_batch_send_each_touch_once(app, client, tenant, monkeypatch):
    """A web worker's trigger delivery and the nightly run both pick the same due touches;
    the second to claim must get none of them. Deterministic: the other deliverer runs in
    full between this one's SELECT of candidates and its claiming UPDATE."""
    prepare_tenant(app, client, tenant, users=20)
    decided = decide_only(app, tenant)
    queued = decided["queued"]
    assert queued > 0 and not is_quiet(NOW)
    queued_users = sorted(r["openid"] for r in touches(app, tenant) if r["status"] == "queued")
    first, second = Recording(), Recording()
    real = touch_claims.secrets.token_hex
    raced: list[int] = []

    class Racing:
        @staticmethod
        def token_hex(n: int) -> str:
            if not raced:  # the first claim's candidates are chosen: now the rival runs
                raced.append(1)
                raced.append(deliver(app, tenant, NOW, second)["sent"])
            return real(n)

    monkeypatch.setattr(touch_claims, "secrets", Racing)
    counts = deliver(app, tenant, NOW, first)
    assert raced == [1, queued]
    assert sorted(second.sent_to) == queued_users
    assert first.sent_to == [] and counts["sent"] == 0
    assert allowances(app, queued_users) == [1] * queued  # nobody got the message twice
    assert Counter(r["status"] for r in touches(app, tenant))["sent"] == queued


def test_lock_refuses_a_second_holder_takes_over_a_stale_one_and_releases(app):
    ttl = 60_000
    with app.app_context():
        assert locks.acquire_lock("job", "a", NOW, ttl)
        assert not locks.acquire_lock("job", "b", NOW + 1, ttl)
        assert not locks.acquire_lock("job", "b", NOW + ttl - 1, ttl)
        assert locks.acquire_lock("other-job", "b", NOW, ttl)  # locks are per name
        # a's lock has expired: b takes it over
        assert locks.acquire_lock("job", "b", NOW + ttl + 1, ttl)
        assert JobLock.get(JobLock.name == "job").holder == "b"
        # a, who lost it, releasing does not free b's lock
        locks.release_lock("job", "a")
        assert not locks.acquire_lock("job", "c", NOW + ttl + 2, ttl)
        locks.release_lock("job", "b")
        assert locks.acquire_lock("job", "c", NOW + ttl + 2, ttl)


def test_job_refuses_while_another_run_holds_the_tenant_lock(app, client, tenant):
    import_history(client, tenant, users=10, silent_days=5)
    add_policy(client, tenant)
    with app.app_context():
        assert locks.acquire_lock(f"campaigns:{tenant.id}", "someone-else", NOW)
    with pytest.raises(run_lock.JobLocked, match="lock"):
        run_job(app, tenant)
    assert statuses(app, tenant) == {}
    with app.app_context():
        assert CampaignRun.select().count() == 0
        locks.release_lock(f"campaigns:{tenant.id}", "someone-else")
    assert run_job(app, tenant)["decided"] == 10
    with app.app_context():
        assert JobLock.select().count() == 0  # the run released its lock


# -- 3. reruns ------------------------------------------------------------------------------------


def test_next_day_rerun_adds_only_the_users_who_became_due(app, client, tenant):
    early = [f"a{u:03d}" for u in range(20)]  # silent 5 days: due today
    late = [f"b{u:03d}" for u in range(10)]  # silent 2 days: due from tomorrow
    import_users(client, tenant, early, silent_days=5, now_ms=NOW)
    import_users(client, tenant, late, silent_days=2, now_ms=NOW)
    grant(app, tenant, early + late)
    add_policy(client, tenant)
    first = run_job(app, tenant)
    before = touches(app, tenant)
    assert first["decided"] == len(before) == 20
    assert {r["openid"] for r in before} == set(early)

    second = run_job(app, tenant, now=NOW + MS_PER_DAY, day=TODAY + 1)
    after = touches(app, tenant)
    assert after[: len(before)] == before  # yesterday's touches untouched
    new = after[len(before) :]
    assert second["decided"] == len(new) == 10
    assert {r["openid"] for r in new} == set(late)
    assert all(r["day"] == TODAY + 1 and r["step"] == 0 for r in new)
    assert second["sent"] == sum(r["status"] == "sent" for r in new) == second["queued"]
    assert_unique_touches(after)


def test_same_day_rerun_after_rescoring_adds_only_the_new_users(app, client, tenant):
    import_history(client, tenant, users=15, silent_days=5)
    first_users = [f"u{u:03d}" for u in range(15)]
    grant(app, tenant, first_users)
    add_policy(client, tenant)
    first = run_job(app, tenant)
    before = touches(app, tenant)
    assert first["decided"] == 15

    newcomers = [f"n{u:03d}" for u in range(5)]
    import_users(client, tenant, newcomers, silent_days=5, now_ms=NOW)
    grant(app, tenant, newcomers)
    with app.app_context():
        score_tenant(Tenant.get_by_id(tenant.id), TODAY)  # `python app.py score`
    second = run_job(app, tenant)
    after = touches(app, tenant)
    assert after[: len(before)] == before
    assert second["decided"] == 5
    assert {r["openid"] for r in after[len(before) :]} == set(newcomers)
    assert_unique_touches(after)


# -- 4. opt-out between decide and deliver ------------------------------------------------------


def test_opt_out_after_the_decision_stops_the_send(app, client, tenant):
    codes = [f"o{u}" for u in range(10)]
    openids = [f"dev_{c}" for c in codes]  # what a dev-mode login with code c becomes
    import_users(client, tenant, openids, silent_days=5, now_ms=NOW)
    grant(app, tenant, openids)
    add_policy(client, tenant)
    decided = decide_only(app, tenant)
    assert decided["queued"] > 1 and decided["sent"] == 0
    queued = [r for r in touches(app, tenant) if r["status"] == "queued"]
    leaver = queued[0]["openid"]

    h = login(client, tenant, leaver.removeprefix("dev_"))
    resp = client.post("/mp/v1/me/opt-out", headers=h)
    assert resp.status_code == 200 and resp.get_json() == {"marketing_opt_out": True}

    wechat = Recording()
    counts = deliver(app, tenant, NOW, wechat)
    rows = {r["openid"]: r for r in touches(app, tenant)}
    assert rows[leaver]["status"] == "skipped" and rows[leaver]["reason"] == "opted_out"
    assert rows[leaver]["sent_ms"] is None
    assert allowances(app, [leaver]) == [1]  # nothing spent on them
    sent_to = wechat.sent_to
    assert leaver not in sent_to
    others = sorted(r["openid"] for r in queued[1:])
    assert sorted(sent_to) == others
    assert counts["sent"] == len(others) and counts["skipped"] == 1
    assert all(rows[o]["status"] == "sent" for o in others)


# -- 5. quiet hours at the moment of sending ----------------------------------------------------


def test_touches_due_during_quiet_hours_wait_for_8am(app, client, tenant, clock):
    import_history(client, tenant, users=12, silent_days=5)
    grant(app, tenant, [f"u{u:03d}" for u in range(12)])
    add_policy(client, tenant)
    decided = decide_only(app, tenant)
    queued = decided["queued"]
    assert queued > 0

    eleven_pm = NOW + 5 * HOUR_MS  # 23:00 China time
    eight_am = CHINA_MIDNIGHT_AFTER_T0 + 8 * HOUR_MS
    assert china_hm(eleven_pm) == (23, 0) and china_hm(eight_am) == (8, 0)
    counts = deliver(app, tenant, eleven_pm)
    assert counts["sent"] == 0 and counts["deferred"] == queued
    waiting = [r for r in touches(app, tenant) if r["status"] == "queued"]
    assert len(waiting) == queued
    for r in waiting:
        assert max(r["send_after_ms"], r["next_attempt_ms"]) == eight_am
        assert r["reason"] == "quiet_hours"
        assert r["attempts"] == 0  # a deferral is not a failed attempt
        assert r["sent_ms"] is None

    assert deliver(app, tenant, eight_am - 60_000)["sent"] == 0  # 07:59: still quiet
    five_past = eight_am + 5 * 60_000
    clock.set(datetime.fromtimestamp(five_past / 1000, UTC))
    counts = deliver(app, tenant, five_past)
    assert counts["sent"] == queued
    rows = touches(app, tenant)
    sent = [r for r in rows if r["status"] == "sent"]
    assert len(sent) == queued and {r["sent_ms"] for r in sent} == {five_past}
    assert all(r["attempts"] == 1 and r["reason"] == "" for r in sent)


def test_nothing_is_sent_inside_quiet_hours_whatever_the_send_hour(app, client, tenant):
    """A policy planned for 23:00 is moved to 08:00 the next morning, not sent at night."""
    import_history(client, tenant, users=8, silent_days=5)
    grant(app, tenant, [f"u{u:03d}" for u in range(8)])
    add_policy(client, tenant, POLICY.replace("send_hour: 10", "send_hour: 23"))
    night = CHINA_MIDNIGHT_AFTER_T0 - HOUR_MS // 2  # 23:30
    out = run_job(app, tenant, now=night)
    assert out["queued"] > 0 and out["sent"] == 0
    assert out["quiet_hours_deferred"] == out["queued"] + out["held_out"]
    for r in touches(app, tenant):
        if r["status"] == "queued":
            assert r["send_after_ms"] == CHINA_MIDNIGHT_AFTER_T0 + 8 * HOUR_MS


# -- 6. event triggers -------------------------------------------------------------------------


def held_out(appid: str, policy: str, user_ids) -> np.ndarray:
    ids = np.asarray(user_ids, dtype=np.int64)
    return stable_unit(ids, salt_of(appid, policy, "holdout")) < 0.1


@pytest.fixture
def kicked(monkeypatch):
    """The deliveries event requests queued (tenant ids). The tests' queue runs each task at
    once, in the request (helpers.app: QUEUE_URL memory://), so they are done on return."""
    calls: list[int] = []
    original = task_delivery.after_trigger

    def after_trigger(app, tenant_id):
        calls.append(tenant_id)
        return original(app, tenant_id)

    monkeypatch.setattr(task_delivery, "after_trigger", after_trigger)
    return calls


def payment_failed(client, h, event_id: str, ts_ms: int):
    resp = client.post(
        "/mp/v1/events",
        json={"events": [{"id": event_id, "type": "payment_failed", "ts": ts_ms}]},
        headers=h,
    )
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["accepted"] == 1
    return resp


def cards(client, h) -> list[dict]:
    resp = client.get("/mp/v1/reengagement", headers=h)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["cards"]


@pytest.fixture
def payment_failed_tenant(app, client, tenant):
    """60 scored users (dev_p000 ...) and the payment_failed preset switched on."""
    openids = [f"dev_p{u:03d}" for u in range(60)]
    import_users(client, tenant, openids, silent_days=5, now_ms=NOW)
    with app.app_context():
        score_tenant(Tenant.get_by_id(tenant.id), TODAY)
        ids = {u.openid: u.id for u in User.select().where(User.tenant == tenant.id)}
    resp = client.post(
        "/admin/v1/policies",
        json={"preset": "payment_failed", "active": True},
        headers=tenant.admin,
    )
    assert resp.status_code == 201, resp.get_json()
    out = held_out(tenant.appid, "payment_failed", [ids[o] for o in openids])
    treated = [o.removeprefix("dev_") for o, h in zip(openids, out, strict=True) if not h]
    holdout = [o.removeprefix("dev_") for o, h in zip(openids, out, strict=True) if h]
    assert 0 < len(holdout) < 15  # about a tenth
    return treated, holdout


def test_payment_failed_event_gets_a_card_shown_once(
    app, client, tenant, kicked, payment_failed_tenant
):
    treated, _ = payment_failed_tenant
    h = login(client, tenant, treated[0])
    payment_failed(client, h, "pf-1", NOW - 60_000)
    assert kicked == [tenant.id]
    rows = [r for r in touches(app, tenant) if r["openid"] == f"dev_{treated[0]}"]
    assert len(rows) == 1
    assert rows[0]["channel"] == "in_app" and rows[0]["status"] == "sent"
    with app.app_context():
        assert PolicyRow.get_by_id(rows[0]["policy"]).name == "payment_failed"

    shown = cards(client, h)
    assert len(shown) == 1
    assert shown[0]["title"] == PAY_AGAIN_TITLE and shown[0]["text"] == PAY_AGAIN_TEXT
    assert cards(client, h) == []  # shown once

    # The nightly job leaves event-triggered policies alone.
    assert "payment_failed" not in run_job(app, tenant)["policies"]


def test_a_card_that_cannot_be_shown_is_not_marked_opened(
    app, client, tenant, kicked, payment_failed_tenant
):
    """A card skipped because its policy's stored source no longer reads was never shown: it
    stays unopened (the funnel counts only shown cards) and is shown once the policy is fixed."""
    treated, _ = payment_failed_tenant
    h = login(client, tenant, treated[0])
    payment_failed(client, h, "pf-skip", NOW - 60_000)
    assert kicked == [tenant.id]
    with app.app_context():
        row = PolicyRow.get(PolicyRow.name == "payment_failed")
        source = row.source
        PolicyRow.update(source="name: payment_failed\nsurprise: yes\n").where(
            PolicyRow.id == row.id
        ).execute()
    assert cards(client, h) == []
    with app.app_context():
        touch = Touch.get(Touch.policy == row.id)
        assert touch.status == "sent" and touch.opened_ms is None
        PolicyRow.update(source=source).where(PolicyRow.id == row.id).execute()
    shown = cards(client, h)
    assert [(c["id"], c["title"]) for c in shown] == [(touch.id, PAY_AGAIN_TITLE)]
    with app.app_context():
        assert Touch.get_by_id(touch.id).opened_ms is not None


def test_payment_failed_event_older_than_an_hour_triggers_nothing(
    app, client, tenant, kicked, payment_failed_tenant
):
    treated, _ = payment_failed_tenant
    h = login(client, tenant, treated[1])
    payment_failed(client, h, "pf-old", NOW - 61 * 60_000)
    assert kicked == []
    assert touches(app, tenant) == []
    assert deliver(app, tenant, NOW)["sent"] == 0
    assert cards(client, h) == []


def test_payment_failed_holdout_user_gets_no_card(
    app, client, tenant, kicked, payment_failed_tenant
):
    _, holdout = payment_failed_tenant
    h = login(client, tenant, holdout[0])
    payment_failed(client, h, "pf-h", NOW)
    deliver(app, tenant, NOW)
    rows = touches(app, tenant)
    assert [(r["openid"], r["status"]) for r in rows] == [(f"dev_{holdout[0]}", "held_out")]
    assert cards(client, h) == []


def test_payment_failed_card_for_a_user_who_joined_after_the_nightly_scoring(
    app, client, tenant, kicked, payment_failed_tenant
):
    """The preset is for every tier including `new`, and a first order is where a payment most
    often fails; a user who first opened the app today (after the nightly scores) must get
    the card too, not only from tomorrow on."""
    for n in range(5):
        h = login(client, tenant, f"newcomer{n}")
        with app.app_context():
            uid = User.get(User.openid == f"dev_newcomer{n}").id
        if not held_out(tenant.appid, "payment_failed", [uid])[0]:
            break
    payment_failed(client, h, "pf-first-order", NOW)
    assert kicked == [tenant.id]
    shown = cards(client, h)
    assert [(c["title"], c["text"]) for c in shown] == [(PAY_AGAIN_TITLE, PAY_AGAIN_TEXT)]


# -- 7. migration from schema version 2 -----------------------------------------------------------


def test_v2_database_migrates_to_latest_keeping_users(app):
    from playhouse.migrate import PostgresqlMigrator, SqliteMigrator
    from playhouse.migrate import migrate as run_ops

    from backend.store.migrations import LATEST, MIGRATIONS, current_version, migrate

    with app.app_context():
        db = store_db.database.obj
        db.drop_tables(ALL_MODELS + [SchemaVersion], safe=True, cascade=not store_db.is_sqlite())
        # Schema version 2 as it shipped: v1 + v2 tables, and a user table without the columns
        # v3 adds (v1 creates tables from today's models, so take them off again).
        db.create_tables([SchemaVersion])
        for version, step in enumerate(MIGRATIONS[:2], start=1):
            step(db)
            SchemaVersion.create(version=version, applied_ms=NOW)
        migrator = PostgresqlMigrator(db) if not store_db.is_sqlite() else SqliteMigrator(db)
        run_ops(migrator.drop_column("user", "phone"), migrator.drop_column("user", "oa_openid"))
        assert {"phone", "oa_openid"}.isdisjoint(c.name for c in db.get_columns("user"))
        assert not db.table_exists("touch")
        assert current_version(db) == 2

        db.execute_sql(
            "INSERT INTO tenant (appid, name, created_ms, settings) VALUES (%s, %s, %s, %s)"
            if not store_db.is_sqlite()
            else "INSERT INTO tenant (appid, name, created_ms, settings) VALUES (?, ?, ?, ?)",
            ("wxold0000000001", "old campus", NOW, "{}"),
        )
        tenant_id = Tenant.get(Tenant.appid == "wxold0000000001").id
        param = "?" if store_db.is_sqlite() else "%s"
        # v1 builds today's user table (token_key NOT NULL since v7): give the row one.
        db.execute_sql(
            f'INSERT INTO "user" (tenant_id, openid, created_ms, marketing_opt_out, token_key) '
            f"VALUES ({param}, {param}, {param}, {param}, {param})",
            (tenant_id, "old-user", NOW, True, "0" * 32),
        )

        assert migrate(db, NOW) == (2, LATEST)
        assert current_version(db) == LATEST
        columns = {c.name for c in db.get_columns("user")}
        assert {"phone", "oa_openid"} <= columns
        user = User.get(User.openid == "old-user")
        assert user.tenant_id == tenant_id and user.marketing_opt_out is True
        assert user.phone is None and user.oa_openid is None
        for model in (PolicyRow, Touch, JobLock, CampaignRun):
            assert db.table_exists(model._meta.table_name)
        assert migrate(db, NOW) == (LATEST, LATEST)  # again: nothing to do
