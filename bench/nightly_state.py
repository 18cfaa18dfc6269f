"""Production's nightly `score` with the kept scoring state against the rebuild it replaces.

    .venv/bin/python bench/nightly_state.py                  # 100,000 users, 3 nights
    .venv/bin/python bench/nightly_state.py --users 20000 --nights 2

A tenant in a fresh SQLite database (a temporary folder), generated untimed and written with
bulk inserts: USERS students who signed up before the history began, 130 days of campus
life (most students dormant on any night: daily visit chances of 0.5%, 5% or 40%, so ~5% of
students visit on a given day, as on the simulated campus), each visit an app_open and a
session_end (its duration in the props, which the loader parses) and one in five an order.
Each night adds the day's events, about 1% of them dated one to three days earlier (phones
syncing their offline queue), a few sign-ups and one erasure.

Timed per night, in the same process (perf_counter), after a first night that builds the
state (timed as `first_night_s`):

* `kept_s`: `scoring.score_tenant` going on from the kept state (services/nightly_state.py):
  the kept state read, the database's totals checked, the recent days' rows loaded, the day
  closed and the state kept again, scores, the snapshot written;
* `rebuild_s`: the same night as `score_tenant` ran before the state existed, as the
  baseline: `load_columns` (121 days of events, every order, all-time first and last
  events), `score_users`, the same snapshot written.

The snapshot (one row per student, both paths) is most of either night at this size, so the
part before it is timed as well (`kept_scoring_s`, `rebuild_scoring_s`). The snapshots of
both paths are compared row for row (the run stops if they differ). The last line is one
JSON object: medians over the nights, `ratio` = rebuild / kept (whole night) and
`ratio_scoring` (without the snapshot write).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.app import create_app  # noqa: E402
from backend.core.calendar import day_start_ms  # noqa: E402
from backend.core.clock import FixedClock  # noqa: E402
from backend.core.scoring import refit_due, score_users  # noqa: E402
from backend.services import nightly_state, scoring, tenants  # noqa: E402
from backend.store import db as store_db  # noqa: E402
from backend.store.migrations import migrate  # noqa: E402
from backend.store.models import ScoreSnapshot, Tenant, User  # noqa: E402

FIRST_NIGHT = 20_540  # a term day in 2026
HISTORY_DAYS = 130
CHANCES = np.array([0.005, 0.05, 0.4])  # daily visit chance per habit
HABITS = np.array([0.7, 0.2, 0.1])  # share of students per habit
HOUR_MS = 3_600_000


def _events_of(rng, users: np.ndarray, day: int, late: float) -> tuple[list, list]:
    """Event rows and order rows of the visits of `users` on `day` (a share `late` of the
    visits dated one to three days earlier)."""
    dated = day - np.where(rng.random(users.size) < late, rng.integers(1, 4, users.size), 0)
    hour = rng.integers(7, 23, users.size)
    secs = np.round(rng.lognormal(6, 1, users.size), 1)
    events, orders = [], []
    for u, d, h, s in zip(
        users.tolist(), dated.tolist(), hour.tolist(), secs.tolist(), strict=True
    ):
        ts = day_start_ms(d) + h * HOUR_MS
        events.append((u, f"o{day}-{d}", "app_open", ts, ts, "{}"))
        events.append(
            (u, f"s{day}-{d}", "session_end", ts + 600_000, ts, json.dumps({"duration_s": s}))
        )
    buy = np.flatnonzero(rng.random(users.size) < 0.2)
    for i in buy.tolist():
        u, d = int(users[i]), int(dated[i])
        paid = day_start_ms(d) + int(hour[i]) * HOUR_MS + 60_000
        orders.append((u, f"{u}-{day}-{d}", int(rng.integers(500, 4000)), paid))
    return events, orders


def _insert(tenant_id: int, events: list, orders: list) -> None:
    with store_db.write_transaction():
        store_db.execute_many(
            'INSERT INTO "event" (tenant_id, user_id, client_id, type, ts_ms, received_ms, props)'
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(tenant_id, *e) for e in events],
        )
        store_db.execute_many(
            'INSERT INTO "order" (tenant_id, user_id, order_ref, amount_fen, paid_ms, status)'
            " VALUES (?, ?, ?, ?, ?, 'paid')",
            [(tenant_id, *o) for o in orders],
        )


def _sign_up(tenant_id: int, count: int, created_ms: int, start: int) -> np.ndarray:
    with store_db.write_transaction():
        store_db.execute_many(
            'INSERT INTO "user" (tenant_id, openid, created_ms, marketing_opt_out, token_key)'
            " VALUES (?, ?, ?, 0, ?)",
            [(tenant_id, f"o{start + i}", created_ms, f"k{start + i}") for i in range(count)],
        )
    rows = User.select(User.id).where(User.tenant == tenant_id).order_by(User.id.desc())
    return np.array(sorted(r.id for r in rows.limit(count)), dtype=np.int64)


def _history(tenant_id: int, users: int, rng) -> tuple[np.ndarray, np.ndarray]:
    ids = _sign_up(tenant_id, users, day_start_ms(FIRST_NIGHT - HISTORY_DAYS - 30), 0)
    chance = CHANCES[rng.choice(3, users, p=HABITS)]
    for day in range(FIRST_NIGHT - HISTORY_DAYS, FIRST_NIGHT):
        events, orders = _events_of(rng, ids[rng.random(users) < chance], day, 0.0)
        _insert(tenant_id, events, orders)
    return ids, chance


def _rebuild_night(tenant: Tenant, day: int) -> float:
    """score_tenant as it was before the kept state: load_columns and score_users, then
    the same snapshot write. Returns the seconds before the write."""
    start = time.perf_counter()
    calendar, config = scoring.tenant_setup(tenant)
    cols = scoring.load_columns(tenant.id, day)
    last = scoring._last_fit(tenant.id, day - 1)
    reused = None if last is None or refit_due(last.day, day) else scoring._params(last)
    scores = score_users(
        cols.events, cols.orders, len(cols.user_ids), day, calendar, config,
        first_seen=cols.first_seen, last_seen=cols.last_seen, params=reused,
    )  # fmt: skip
    columns = scoring._snapshot_columns(tenant.id, day, cols.user_ids, scores)
    scoring_s = time.perf_counter() - start
    fields, rows = scoring._insert_rows(columns)
    with store_db.database.atomic():
        ScoreSnapshot.delete().where(
            (ScoreSnapshot.tenant == tenant.id) & (ScoreSnapshot.day == day)
        ).execute()
        scoring._insert_snapshot(fields, rows)  # the same write score_tenant makes
    return scoring_s


def _snapshot(tenant_id: int, day: int) -> list[tuple]:
    return list(
        ScoreSnapshot.select()
        .where((ScoreSnapshot.tenant == tenant_id) & (ScoreSnapshot.day == day))
        .order_by(ScoreSnapshot.user)
        .tuples()
    )


def _kept_night(tenant: Tenant, day: int) -> tuple[float, float, str, int]:
    """score_tenant with the kept state: (whole seconds, seconds before the snapshot write,
    why rebuilt, bytes kept)."""
    marks: dict[str, object] = {}
    night_of, columns_of = nightly_state.night_of, scoring._snapshot_columns

    def night(*args):
        marks["night"] = night_of(*args)
        return marks["night"]

    def columns(*args):
        out = columns_of(*args)
        marks["scored"] = time.perf_counter()
        return out

    nightly_state.night_of, scoring._snapshot_columns = night, columns
    try:
        start = time.perf_counter()
        scoring.score_tenant(tenant, day)
        whole = time.perf_counter() - start
    finally:
        nightly_state.night_of, scoring._snapshot_columns = night_of, columns_of
    n = marks["night"]
    return whole, marks["scored"] - start, n.rebuilt, n.kept_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--nights", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    folder = tempfile.mkdtemp(prefix="huiliu-nightly-")
    clock = FixedClock(
        datetime.fromtimestamp(day_start_ms(FIRST_NIGHT + args.nights + 1) / 1000, UTC)
    )
    app = create_app({"DATABASE_URL": f"sqlite:///{folder}/bench.sqlite3", "CLOCK": clock})
    out: dict[str, object] = {"users": args.users, "nights": args.nights}
    with app.app_context():
        migrate(store_db.database, clock.now_ms())
        row, _ = tenants.create("wxbenchnightly0001", "bench", day_start_ms(FIRST_NIGHT - 200))
        t0 = time.perf_counter()
        ids, chance = _history(row.id, args.users, rng)
        out["generate_s"] = round(time.perf_counter() - t0, 1)
        tenant = Tenant.get_by_id(row.id)
        kept, kept_scoring, rebuilt, rebuilt_scoring, why = [], [], [], [], []
        for k in range(args.nights + 1):
            day = FIRST_NIGHT + k
            new = _sign_up(tenant.id, 20, day_start_ms(day) + 9 * HOUR_MS, args.users + 20 * k)
            gone = int(ids[k * 97 % ids.size])
            User.delete().where(User.id == gone).execute()  # an erasure
            keep = ids != gone
            ids, chance = (
                np.concatenate([ids[keep], new]),
                np.concatenate([chance[keep], [0.4] * 20]),
            )
            events, orders = _events_of(rng, ids[rng.random(ids.size) < chance], day, 0.01)
            _insert(tenant.id, events, orders)
            whole, before_write, reason, kept_bytes = _kept_night(tenant, day)
            mine = _snapshot(tenant.id, day)
            if k == 0:
                out["first_night_s"], out["first_night_reason"] = round(whole, 2), reason
                out["state_bytes"] = kept_bytes
                continue
            why.append(reason)
            kept.append(whole)
            kept_scoring.append(before_write)
            start = time.perf_counter()
            rebuilt_scoring.append(_rebuild_night(tenant, day))
            rebuilt.append(time.perf_counter() - start)
            if _snapshot(tenant.id, day) != mine:
                raise SystemExit(f"night {day}: the kept state's snapshot differs from the rebuild")
    med = statistics.median
    out.update(
        kept_s=round(med(kept), 3),
        rebuild_s=round(med(rebuilt), 3),
        kept_scoring_s=round(med(kept_scoring), 3),
        rebuild_scoring_s=round(med(rebuilt_scoring), 3),
        ratio=round(med(rebuilt) / med(kept), 2),
        ratio_scoring=round(med(rebuilt_scoring) / med(kept_scoring), 2),
        nights_rebuilt=sum(bool(w) for w in why),
        snapshots_equal=True,
        kept_each_s=[round(x, 3) for x in kept],
        rebuild_each_s=[round(x, 3) for x in rebuilt],
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
