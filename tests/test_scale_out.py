"""Scale-out: two web processes and two worker processes on one PostgreSQL and one Redis.

200 small tenants are due at once (each `nightly_at` 17:00 China time, the workers' clock at
18:00 of 2026-03-10). Both workers run the scheduler, so both ticks find every tenant due;
the claim makes each night queued once, and the nights fan out over both workers (each run
is logged with its worker's pid). The next day one worker is SIGKILLed in the middle of a
night (decided, nothing delivered, holding the run lock and the claim) while the others
are running: Huey loses that task, the other worker finishes the rest, and once the clock
passes the claim's lease (services/nightly_schedule.CLAIM_TTL_MS) the surviving scheduler
queues the night again and it finishes there. Every tenant's night is done once a day, and
every touch decided is sent once (the channels' own log, the allowances spent), held out or
failed: none twice, none left queued or sending.

The workers run `app.py worker --workers 1` through bench/loadlib.WORKER_AT: their clock is
real time plus an offset the test writes to a file (the CLI_AT pattern of
test_campaign_safety.py), their scheduler looks every TICK_S seconds instead of every minute,
and they log each finished night and each channel send. PostgreSQL only: two web servers
and two workers on one SQLite file is not a deployment this test is about.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
from helpers.app import T0, build_app, close_app

from backend.core.calendar import china_day
from backend.core.clock import FixedClock, to_ms
from backend.services import coupons, policies, tenants
from backend.services.campaigns.run_lock import LOCK_TTL_MS
from backend.services.nightly_schedule import CLAIM_TTL_MS
from backend.store.models import CampaignRun, Coupon, SubscriptionAllowance, Touch, User

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import loadlib  # noqa: E402

pytestmark = pytest.mark.slow

TENANTS = 200
NOW = to_ms(T0)  # 2026-03-10 18:00 China time
DAY = int(china_day(NOW))
HOUR = 3_600_000
DAY_MS = 24 * HOUR
TICK_S = 2
TEMPLATE = "tmpl_coupon_arrived"  # coupon_blast's subscribe message
ALLOWANCES = 2  # each: one send spends one, so a user sent twice shows it
# Each tenant's students: (openid prefix, how many, days since their last visit at NOW).
# coupon_blast writes to students silent 7 to 90 days: the "a"s on day DAY, the "b"s and
# "d"s become silent enough on DAY + 1 and DAY + 2, the "c" is active.
STUDENTS = (("a", 3, 8), ("b", 2, 6), ("d", 2, 5), ("c", 1, 1))
COUPON = {
    "name": "专属回归券满15减5",
    "amount_off_fen": 500,
    "min_spend_fen": 1500,
    "validity_days": 7,
    "budget": 5000,
    "per_user_limit": 3,
    "claimable": False,
}


def wait_for(what: str, check, timeout_s: float, processes=()) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        for p in processes:
            if p.proc.poll() is not None:
                raise AssertionError(f"{what}: a process exited: {p.log_tail()}")
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


class Clock:
    """The workers' clock: real time plus the offset in the file they read."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset_ms = path, 0

    def set(self, at_ms: int) -> None:
        """The workers' "now" is `at_ms` from this instant on (and goes on in real time)."""
        self.offset_ms = at_ms - time.time_ns() // 1_000_000
        loadlib.set_clock(self.path, self.offset_ms)

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms


def create_tenants(app) -> list[tuple[int, str]]:
    """TENANTS tenants through the services: a coupon template and coupon_blast (a shipped
    preset) active, nightly at 17:00. Returns (tenant id, admin API key) of each."""
    out = []
    with app.app_context():
        for i in range(TENANTS):
            created = NOW - 30 * DAY_MS
            tenant, key = tenants.create(
                f"wxscale{i:010d}", f"campus {i}", created, settings={"nightly_at": "17:00"}
            )
            coupons.create_template(tenant.id, COUPON, created)
            policies.create(tenant.id, {"preset": "coupon_blast", "active": True}, created)
            out.append((tenant.id, key))
    return out


def import_students(webs, made: list[tuple[int, str]]) -> None:
    """Each tenant's students' visits through the admin import, alternately on each web."""
    session = requests.Session()
    for i, (_, key) in enumerate(made):
        events = [
            {
                "user": f"{prefix}{n}",
                "id": f"{prefix}{n}-{k}",
                "type": "app_open",
                "ts": NOW - (silent + 4 * k) * DAY_MS,
            }
            for prefix, count, silent in STUDENTS
            for n in range(count)
            for k in range(3)
        ]
        resp = session.post(
            f"{webs[i % 2].base}/admin/v1/events/import",
            json={"events": events},
            headers={"X-Api-Key": key},
            timeout=30,
        )
        assert resp.status_code == 200 and resp.json()["accepted"] == len(events), resp.text


def grant_allowances(app) -> None:
    with app.app_context():
        rows = [
            {
                "tenant": u.tenant_id,
                "user": u.id,
                "template_id": TEMPLATE,
                "remaining": ALLOWANCES,
                "last_result": "accept",
                "updated_ms": NOW - DAY_MS,
            }
            for u in User.select()
        ]
        SubscriptionAllowance.insert_many(rows).execute()


def done_runs(app, day: int) -> Counter:
    """tenant id -> its `done` campaign runs for `day`."""
    with app.app_context():
        q = CampaignRun.select(CampaignRun.tenant).where(
            (CampaignRun.day == day) & (CampaignRun.status == "done")
        )
        return Counter(r.tenant_id for r in q)


def runs_by_status(app) -> Counter:
    with app.app_context():
        return Counter((r.day, r.status) for r in CampaignRun.select())


def check_sends(app, sends: list[list], now_ms: int) -> Counter:
    """Every decided touch sent once (the channels' log), held out or failed; none twice,
    none queued or sending though due; allowances spent once per send; a coupon at most
    once per touch. Returns the touches by (day, status)."""
    with app.app_context():
        touches = list(Touch.select())
        spent = {
            a.user_id: ALLOWANCES - a.remaining
            for a in SubscriptionAllowance.select().where(
                SubscriptionAllowance.template_id == TEMPLATE
            )
        }
        issued = Coupon.select().count()
    sent_by_channel = Counter(touch_id for _, touch_id, kind in sends if kind == "sent")
    assert [t for t, n in sent_by_channel.items() if n > 1] == [], "a touch sent twice"
    sent_rows = {t.id for t in touches if t.status == "sent"}
    assert set(sent_by_channel) == sent_rows, "sent but not recorded, or recorded but not sent"
    due = [t for t in touches if t.send_after_ms <= now_ms]
    assert [t.id for t in due if t.status in ("queued", "sending", "expired")] == []
    per_user = Counter(
        t.user_id for t in touches if t.status == "sent" and t.channel == "subscribe"
    )
    assert {u: n for u, n in spent.items() if n} == dict(per_user), "allowances spent != sends"
    with_coupon = Counter(t.coupon_id for t in touches if t.coupon_id is not None)
    assert max(with_coupon.values(), default=0) <= 1 and issued == len(with_coupon)
    return Counter((t.day, t.status) for t in touches)


def kill_mid_night(app, clock: Clock, survivor, victim, pause: Path, day: int) -> tuple[int, int]:
    """Day `day`: `victim` stops at its pause point (WORKER_AT's TEST_PAUSE_AT) in the
    middle of a night and is SIGKILLed there while `survivor` runs the others; the killed
    night is queued again only once the clock has passed its claim's lease, and finishes on
    `survivor`. Returns (the killed tenant, the touch being sent or 0)."""
    pause.touch()
    clock.set(NOW + (day - DAY) * DAY_MS)
    paused = Path(f"{pause}.paused")
    wait_for(f"a worker paused on day {day}", paused.exists, 60, (survivor, victim))
    wait_for("some night done", lambda: done_runs(app, day), 30, (survivor,))
    victim.kill()
    ((pid, tenant, on_day, touch_id),) = loadlib.read_log(paused)
    assert pid in victim.pids() and on_day == day
    done = done_runs(app, day)
    assert 0 < len(done) < TENANTS - 1 and tenant not in done  # others still to run

    # Huey lost the task with its worker; the claim keeps the ticks from queueing it again.
    others = lambda: len(done_runs(app, day)) == TENANTS - 1  # noqa: E731
    wait_for(f"the other nights of day {day}", others, 120, (survivor,))
    time.sleep(2 * TICK_S + 1)  # ticks come and go
    assert tenant not in done_runs(app, day)
    assert runs_by_status(app)[(day, "running")] == 1

    # Past the claim's lease (and so the dead run's lock): queued again, finished once.
    assert CLAIM_TTL_MS > LOCK_TTL_MS
    clock.set(clock.now_ms() + CLAIM_TTL_MS + 60_000)
    wait_for("the killed night", lambda: tenant in done_runs(app, day), 60, (survivor,))
    return tenant, touch_id


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_nights_fan_out_over_two_workers_and_survive_a_killed_one(db_url, redis_url, tmp_path):
    app = build_app(db_url, FixedClock(T0))
    env = {**loadlib.environment(db_url), "HUILIU_QUEUE_URL": redis_url}
    clock = Clock(tmp_path / "clock")
    clock.set(NOW - 2 * HOUR)  # 16:00: no night due yet while the processes start
    hooks = {
        "TEST_CLOCK_FILE": str(clock.path),
        "TEST_TICK_S": str(TICK_S),
        "TEST_RUN_LOG": str(tmp_path / "runs.log"),
        "TEST_SEND_LOG": str(tmp_path / "sends.log"),
    }
    sends = lambda: loadlib.read_log(tmp_path / "sends.log")  # noqa: E731
    with contextlib.ExitStack() as stack:
        webs = [
            stack.enter_context(loadlib.Server(env, tmp_path / f"web{i}.log", workers=1).start())
            for i in range(2)
        ]
        made = create_tenants(app)
        import_students(webs, made)
        grant_allowances(app)

        def worker(name: str, **pause) -> loadlib.Worker:
            w = loadlib.Worker(env, tmp_path / f"{name}.log", hooks={**hooks, **pause})
            return stack.enter_context(w.start())

        first = worker("first")
        second = worker("second", TEST_PAUSE_FILE=str(tmp_path / "pause2"), TEST_PAUSE_AFTER="3")

        # -- day one: 200 nights due at once, over both workers, each once ------------------
        clock.set(NOW)
        everyone = lambda: len(done_runs(app, DAY)) == TENANTS  # noqa: E731
        wait_for("200 nights done", everyone, 120, (first, second))
        runs = loadlib.read_log(tmp_path / "runs.log")
        assert Counter((t, d) for _, t, d in runs) == Counter({(t, DAY): 1 for t, _ in made})
        by_pid = Counter(pid for pid, _, _ in runs)
        assert set(by_pid) == {*first.pids(), *second.pids()}, by_pid
        assert min(by_pid.values()) >= TENANTS // 10, f"one worker ran nearly all: {by_pid}"
        assert runs_by_status(app) == Counter({(DAY, "done"): TENANTS})
        assert check_sends(app, sends(), clock.now_ms())[(DAY, "sent")] > 0

        # -- day two: the second worker is killed after deciding a night ----------------------
        kill_mid_night(app, clock, first, second, tmp_path / "pause2", DAY + 1)

        # -- day three: a worker (the second, restarted) is killed right after WeChat took a
        # message and before it was recorded: the one window a resend would send it twice ----
        third = worker(
            "third",
            TEST_PAUSE_FILE=str(tmp_path / "pause3"),
            TEST_PAUSE_AT="sent",
            TEST_PAUSE_AFTER="2",
        )
        victim = third.pids()[0]
        _, touch_id = kill_mid_night(app, clock, first, third, tmp_path / "pause3", DAY + 2)
        first.stop()

    runs = loadlib.read_log(tmp_path / "runs.log")
    expected = {(t, d): 1 for t, _ in made for d in (DAY, DAY + 1, DAY + 2)}
    assert Counter((t, d) for _, t, d in runs) == Counter(expected)
    assert runs_by_status(app) == Counter(
        {(d, "done"): TENANTS for d in (DAY, DAY + 1, DAY + 2)}
        | {(DAY + 1, "abandoned"): 1, (DAY + 2, "abandoned"): 1}
    )
    by_day = check_sends(app, sends(), clock.now_ms())
    assert by_day[(DAY + 1, "sent")] > 0 and by_day[(DAY + 2, "sent")] > 0, by_day
    # The touch the killed worker had just sent: sent once, by the victim; its lapsed claim
    # is settled as sent, `unconfirmed`, never sent again (services/delivery.py).
    assert [(p, k) for p, t, k in sends() if t == touch_id] == [(victim, "sent")]
    with app.app_context():
        killed = Touch.get_by_id(touch_id)
        assert (killed.status, killed.reason, killed.attempts) == ("sent", "unconfirmed", 1)
    close_app(app)
