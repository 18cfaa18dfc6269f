"""The nightly run of a platform, 200 tenants × 2,000 students, on one worker process and on two.

    .venv/bin/python bench/nightly.py                       # SQLite database, SQLite queue
    DATABASE_URL=postgresql://... .venv/bin/python bench/nightly.py   # PostgreSQL database
    .venv/bin/python bench/nightly.py --tenants 20 --students 500     # a quick look

The data is built once, untimed, in bulk (tenants, coupon templates and the coupon_blast
preset narrowed to students silent 7 to 10 days, POLICY, through the services; students,
their visits and orders, and two subscribe allowances each as multi-row inserts): each
tenant's students signed up before a 60-day history of campus life (daily visit chances of
0.5%, 5% or 40%; one visit in five an order).
A SQLite database is kept in --folder and reused by the next run with the same shape;
PostgreSQL (DATABASE_URL, emptied first) is built each run.

Every tenant's `nightly_at` is 17:00 China time. Then, in the same run, twice: `app.py worker
--workers 1` and `app.py worker --workers 2` (real processes, bench/loadlib.Worker, the queue
a SQLite file unless HUILIU_QUEUE_URL says otherwise) start on a clock at 16:00 of NIGHT; once
their processes are up the clock moves to 18:00 and every tenant is due; timed from that
moment until every tenant's night is `done` (polled every 0.2 s). A night is the first one of
its tenant (no kept scoring state): score, attribute, decide POLICY, issue the coupons
and send (dev-mode channels). Between the two runs everything a night writes is removed and
the allowances and coupon budgets put back, and the two runs must leave the same outcome
(touches by status, runs done).

The last line is JSON: `tenants`, `students`, `database`, `one_worker_s`, `two_workers_s`,
`speedup` (one / two) and the touches by status.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadlib  # noqa: E402

from backend.app import create_app  # noqa: E402
from backend.core.calendar import MS_PER_DAY, day_start_ms  # noqa: E402
from backend.core.clock import FixedClock, from_ms  # noqa: E402
from backend.services import coupons, policies, tenants  # noqa: E402
from backend.services.policies import preset_source  # noqa: E402
from backend.store import db as store_db  # noqa: E402
from backend.store.migrations import migrate  # noqa: E402
from backend.store.models import (  # noqa: E402
    CampaignRun,
    Coupon,
    CouponTemplate,
    JobLock,
    KeyValue,
    ModelFit,
    NightlyState,
    ScoreSnapshot,
    SmsMessage,
    SubscriptionAllowance,
    TaskFailure,
    Tenant,
    Touch,
    User,
)

NIGHT = 20_522  # 2026-03-10, a term day
HOUR_MS = 3_600_000
NOW = day_start_ms(NIGHT) + 18 * HOUR_MS  # 18:00 China time
HISTORY_DAYS = 60
CHANCES = np.array([0.005, 0.05, 0.4])  # daily visit chance per habit
HABITS = np.array([0.7, 0.2, 0.1])  # share of students per habit
TEMPLATE = "tmpl_coupon_arrived"  # coupon_blast's subscribe message
ALLOWANCES = 2
COUPON = {
    "name": "专属回归券满15减5",
    "amount_off_fen": 500,
    "min_spend_fen": 1500,
    "validity_days": 7,
    "budget": 100_000,
    "per_user_limit": 3,
    "claimable": False,
}
# The coupon_blast preset for the students who lapsed 7 to 10 days ago: a few percent of a
# tenant a night, as on a night of a platform in its stride (the preset's 7 to 90 days would
# write to most of this generated history on its first night, all at once).
POLICY = preset_source("coupon_blast").replace("max_days_silent: 90", "max_days_silent: 10")
# What a night writes: removed between the timed runs.
NIGHT_TABLES = (
    Touch,
    Coupon,
    SmsMessage,
    CampaignRun,
    ScoreSnapshot,
    ModelFit,
    NightlyState,
    JobLock,
    TaskFailure,
    KeyValue,
)


def _students(tenant_id: int, count: int, rng) -> None:
    """`count` students with HISTORY_DAYS of visits (app_open, session_end) and orders."""
    signed_up = day_start_ms(NIGHT - HISTORY_DAYS - 30)
    store_db.execute_many(
        'INSERT INTO "user" (tenant_id, openid, created_ms, marketing_opt_out, token_key)'
        " VALUES (?, ?, ?, ?, ?)",
        [(tenant_id, f"s{i}", signed_up, False, f"k{tenant_id}-{i}") for i in range(count)],
    )
    ids = np.array(
        sorted(u.id for u in User.select(User.id).where(User.tenant == tenant_id)), dtype=np.int64
    )
    chance = CHANCES[rng.choice(3, ids.size, p=HABITS)]
    visits = rng.random((HISTORY_DAYS, ids.size)) < chance  # day × student
    day_index, who = np.nonzero(visits)
    day = NIGHT - HISTORY_DAYS + day_index
    hour = rng.integers(7, 23, day.size)
    ts = day_start_ms(NIGHT - HISTORY_DAYS) + day_index * MS_PER_DAY + hour * HOUR_MS
    events, orders = [], []
    for u, d, t in zip(ids[who].tolist(), day.tolist(), ts.tolist(), strict=True):
        events.append((tenant_id, u, f"o{d}", "app_open", t, t, "{}"))
        events.append((tenant_id, u, f"e{d}", "session_end", t + 600_000, t, '{"duration_s": 300}'))
    buys = np.flatnonzero(rng.random(day.size) < 0.2)
    amounts = rng.integers(500, 4000, buys.size)
    for i, amount in zip(buys.tolist(), amounts.tolist(), strict=True):
        u, d = int(ids[who[i]]), int(day[i])
        orders.append((tenant_id, u, f"{u}-{d}", amount, int(ts[i]) + 60_000))
    store_db.execute_many(
        'INSERT INTO "event" (tenant_id, user_id, client_id, type, ts_ms, received_ms, props)'
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        events,
    )
    store_db.execute_many(
        'INSERT INTO "order" (tenant_id, user_id, order_ref, amount_fen, paid_ms, status)'
        " VALUES (?, ?, ?, ?, ?, 'paid')",
        orders,
    )
    store_db.execute_many(
        "INSERT INTO subscription_allowance"
        " (tenant_id, user_id, template_id, remaining, last_result, updated_ms)"
        " VALUES (?, ?, ?, ?, 'accept', ?)",
        [(tenant_id, u, TEMPLATE, ALLOWANCES, NOW - MS_PER_DAY) for u in ids.tolist()],
    )


def build(tenant_count: int, students: int) -> None:
    """The platform's tenants and their students (in the app context, on an empty schema)."""
    rng = np.random.default_rng(19)
    created = NOW - 120 * MS_PER_DAY
    for i in range(tenant_count):
        with store_db.write_transaction():
            tenant, _ = tenants.create(
                f"wxbench{i:010d}", f"campus {i}", created, settings={"nightly_at": "17:00"}
            )
            coupons.create_template(tenant.id, COUPON, created)
        policies.create(tenant.id, {"source": POLICY, "active": True}, created)
        with store_db.write_transaction():
            _students(tenant.id, students, rng)


def built(tenant_count: int, students: int) -> bool:
    return (
        Tenant.select().count() == tenant_count and User.select().count() == tenant_count * students
    )


def sqlite_kept(path: Path, tenant_count: int, students: int) -> bool:
    """Whether the kept SQLite file holds this shape of data; if not it is removed."""
    if path.exists():
        with sqlite3.connect(path) as conn:
            try:
                counts = conn.execute(
                    'SELECT (SELECT COUNT(*) FROM tenant), (SELECT COUNT(*) FROM "user")'
                ).fetchone()
            except sqlite3.Error:
                counts = None
        if counts == (tenant_count, tenant_count * students):
            return True
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return False


def reset_nights() -> None:
    """Remove what the nights wrote; allowances and coupon budgets as before them."""
    with store_db.write_transaction():
        Touch.update(coupon=None).execute()
        for model in NIGHT_TABLES:
            model.delete().execute()
        CouponTemplate.update(issued_count=0).execute()
        SubscriptionAllowance.update(remaining=ALLOWANCES).execute()


def outcome() -> dict:
    """What the nights left: runs by status, touches by status, coupons issued."""
    runs = Counter(r.status for r in CampaignRun.select(CampaignRun.status))
    touches = Counter(t.status for t in Touch.select(Touch.status))
    return {
        "runs": dict(runs),
        "touches": dict(sorted(touches.items())),
        "coupons": Coupon.select().count(),
    }


def done_count() -> int:
    """Tenants whose night ended: done, or failed (its retries come minutes later and are
    not waited for; the outcome counts the failed runs)."""
    return (
        CampaignRun.select(CampaignRun.tenant)
        .where((CampaignRun.day == NIGHT) & CampaignRun.status.in_(("done", "failed")))
        .distinct()
        .count()
    )


def timed_night(env: dict, folder: Path, processes: int, tenant_count: int) -> float:
    """One worker command with `processes` processes: seconds from "every tenant due" to
    every night done."""
    clock_file = folder / "clock"
    loadlib.set_clock(clock_file, NOW - 2 * HOUR_MS - _real_ms())  # 16:00: nothing due
    queue = folder / "queue.sqlite3"
    for path in (queue, Path(f"{queue}-wal"), Path(f"{queue}-shm")):
        path.unlink(missing_ok=True)
    hooks = {"TEST_CLOCK_FILE": str(clock_file), "TEST_TICK_S": "1"}
    env = {"HUILIU_QUEUE_URL": f"sqlite:///{queue}", **env}
    log = folder / f"worker{processes}.log"
    with loadlib.Worker(env, log, workers=processes, hooks=hooks).start() as worker:
        store_db.database.close()
        loadlib.set_clock(clock_file, NOW - _real_ms())  # 18:00: every tenant due
        start = time.perf_counter()
        deadline = start + 3600
        while done_count() < tenant_count:
            if worker.proc.poll() is not None or time.perf_counter() > deadline:
                raise SystemExit(f"the worker stopped or hung: {worker.log_tail()}")
            store_db.database.close()
            time.sleep(0.2)
        seconds = time.perf_counter() - start
    return seconds


def _real_ms() -> int:
    return time.time_ns() // 1_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--students", type=int, default=2000)
    parser.add_argument("--folder", type=Path, default=loadlib.ROOT / "instance" / "bench-nightly")
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL") or f"sqlite:///{args.folder / 'bench.sqlite3'}"
    postgres = url.startswith("postgres")
    args.folder.mkdir(parents=True, exist_ok=True)
    if postgres:
        loadlib.reset_postgres(url)
    else:
        sqlite_kept(Path(url.removeprefix("sqlite:///")), args.tenants, args.students)
    work = Path(tempfile.mkdtemp(prefix="huiliu-nightly-"))
    app = create_app(
        {"DATABASE_URL": url, "CLOCK": FixedClock(from_ms(NOW)), "QUEUE_URL": "memory://"}
    )
    out: dict[str, object] = {"tenants": args.tenants, "students": args.students}
    out["database"] = "postgresql" if postgres else "sqlite"
    with app.app_context():
        migrate(store_db.database, NOW)
        if not built(args.tenants, args.students):
            start = time.perf_counter()
            build(args.tenants, args.students)
            out["build_s"] = round(time.perf_counter() - start, 1)
        env = loadlib.environment(url)
        seconds, outcomes = {}, []
        for processes in (1, 2):
            reset_nights()
            store_db.database.close()
            seconds[processes] = timed_night(env, work, processes, args.tenants)
            outcomes.append(outcome())
            print(f"{processes} worker process(es): {seconds[processes]:.1f} s", flush=True)
        if outcomes[0] != outcomes[1]:
            raise SystemExit(f"the two runs left different outcomes: {outcomes}")
        reset_nights()
    shutil.rmtree(work, ignore_errors=True)
    out.update(
        one_worker_s=round(seconds[1], 1),
        two_workers_s=round(seconds[2], 1),
        speedup=round(seconds[1] / seconds[2], 2),
        cores=os.cpu_count(),
        outcome=outcomes[0],
        at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    print(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
    main()
