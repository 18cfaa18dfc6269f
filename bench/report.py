"""The recall report and attribution over 10M events and 1M touches, each beside its SQL.

    .venv/bin/python bench/report.py            # about 4 minutes, no arguments needed

What it does, in a temporary directory (deleted afterwards unless --keep):

1. A fresh SQLite file migrated by the app (`open_database`, `bind`, `migrate`), one tenant,
   the three nightly presets as active policies (the text of seeds/policies/tiered.yaml,
   golden_window.yaml and coupon_blast.yaml) and the presets' coupon template.
2. Seeded data, generated untimed with vectorised numpy and inserted untimed with sqlite3
   `executemany`:

   * USERS users over DAYS days. About half were there before the period starts, the rest
     join at a steady rate; each stays active for an exponential lifetime (mean LIFETIME_DAYS)
     and then stops coming. Per-user visit rates are Gamma distributed (most users visit a
     few times a week, a few several times a day); visits fall on China-time meal hours, most
     at the user's usual hour. EVENTS events in all, ~74% app_open, then page_view,
     add_to_cart, order_paid (each with an `order` row, 3% refunded) and share.
   * TOUCHES touches decided over the TOUCH_DAYS days that end WINDOW + 1 days before the end
     of the events, so every attribution window has closed. Each is a (policy, user, day)
     drawn at random and kept only when the preset would consider it: the user's silence
     (days since their last visit before that day) within the preset's min/max days silent
     and a tier the preset serves (silence < 7 days: active or low-frequency; 7-29: churn
     risk or low-frequency; 30+: churned). The arm is one that serves the tier, the step one
     of its touches (earlier steps likelier), the channel, message and coupon template those
     of the preset's touch, unique per (policy, user, day, step) as the table requires.
     Status: held_out with the preset's holdout share (10%), otherwise sent (~85% of all),
     failed (~3%, WeChat refusals) or expired (~2%). Send times at the user's usual hour (or
     the preset's send hour) moved out of quiet hours as the decision does, delivery a few
     seconds to minutes later; message costs from the presets (SMS 5 fen); value_fen
     lognormal. Every sent coupon touch issued a coupon (`coupon` row).
   * The messages work a little: RESPONSE_SHARE of the touches (all sent ones) bring their
     user back within the window: for half the coupon touches an order_paid that redeems
     the coupon (`order` row with the coupon, coupon redeemed); otherwise a message_open
     naming the touch (props {"touch_id": id}, a tap on the message, which attribution
     counts as opened) for 40% of them, an app_open for the rest. These are part of the
     EVENTS events, not added to them.

   Bulk loading: before the insert every index of the user, event, order, coupon and touch
   tables is dropped and afterwards recreated from the exact SQL the migration wrote (the
   script checks the final list of indexes equals the migrated one); the build connection
   uses journal_mode=DELETE, synchronous=OFF and a large cache, then sets WAL back. No
   ANALYZE is run, as the app never runs it.
3. Attribution, like for like (ATTRIBUTION_REPEATS rounds, medians kept). Each round resets
   the columns attribution writes (untimed, every touch as delivery left it), times
   `backend.services.attribution.attribute(tenant_id, now_ms)` with now at the end of the events
   (every window closed: the nightly pass that fills opened_ms, returned_ms, ordered_ms,
   revenue, coupon cost, attributed and retained_d7/d30), reads the columns back, resets again
   and times `report_sql.sql_attribute`: the same pass in SQL with window functions (a
   running MIN over each user's events and touches for the first visit and first order, a
   running SUM for the revenue in the window, the coupon's redemption, then the retention
   weeks), on the same file through sqlite3 with the app's pragmas. attribute_s and
   sql_attribute_s; ratio_attribution_vs_sql = attribute_s / sql_attribute_s.
4. The report over those precomputed columns (REPEATS runs each, alternating so both see the
   same cache state; medians kept). report_s: `backend.services.reports.report(tenant_id)`
   (all policies, all days) through the app's peewee database. sql_report_s:
   `report_sql.sql_report`, the same aggregates in SQL over the same rows and columns (the
   finished touches joined to policy and score snapshot; per policy, arm, tier and channel,
   treated and holdout, users at their first touch, recall among the lapsed, retention,
   orders, revenue, money; funnel, cohorts, Qini; the ledger, spend and volume queries) with
   the intervals from those sums through the same core.metrics functions.
   ratio_report_vs_sql = report_s / sql_report_s. report_sql's docstring says exactly what
   each baseline does.

Checks: after every round both attributions must leave the touch table's attributed columns
identical, bit for bit (attribution_agrees), and every figure of the report the SQL also
gives must agree (report_agrees: counts exactly, floats to 1e-9 relative; the power block is
not compared, its volume query is run). Either failing makes the exit status 1.

`--events/--touches/--users` give a quick look (`--events 1000000 --touches 100000 --users
20000`: about 30 s). The last line of output is one JSON object; the target is each ratio
<= 3.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, fields
from datetime import date
from itertools import repeat
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from report_sql import (  # noqa: E402  (bench/ is the script's directory, on sys.path)
    ATTRIBUTED,
    attribution_columns,
    compare_report,
    connect,
    reset_attribution,
    sql_attribute,
    sql_report,
)

from backend.core import seeds  # noqa: E402
from backend.core.calendar import CHINA_OFFSET_MS, MS_PER_DAY, china_day, day_number  # noqa: E402
from backend.core.policy.guards import QUIET_END_HOUR, QUIET_START_HOUR  # noqa: E402
from backend.core.policy.spec import CHANNELS, parse_policy  # noqa: E402
from backend.core.tiers import TIERS  # noqa: E402
from backend.services.attribution import MEASURED, attribute  # noqa: E402
from backend.services.reports import ledger, load, report  # noqa: E402
from backend.services.scoring import tier_config  # noqa: E402
from backend.store.db import bind, open_database  # noqa: E402
from backend.store.migrations import migrate  # noqa: E402
from backend.store.models import CouponTemplate, Policy, Tenant  # noqa: E402

SEED = 20260320
EVENTS = 10_000_000
TOUCHES = 1_000_000
USERS = 200_000
REPEATS = 3
ATTRIBUTION_REPEATS = 2
TARGET_RATIO = 3.0
END_DAY = day_number(date(2026, 3, 20))  # events end at 00:00 China time on this day
DAYS = 120
TOUCH_DAYS = 60
LIFETIME_DAYS = 75
RESPONSE_SHARE = 0.03
POLICY_SHARES = {"tiered": 0.45, "golden_window": 0.35, "coupon_blast": 0.20}
COUPON = "专属回归券满15减5"  # the presets' coupon template
COUPON_FACE_FEN, COUPON_MIN_SPEND_FEN, COUPON_VALIDITY_DAYS = 500, 1500, 7
HOUR_MS = 3_600_000
TYPES = np.array(
    ["app_open", "page_view", "add_to_cart", "order_paid", "share", "message_open"], dtype=object
)
TYPE_SHARES = [0.74, 0.17, 0.045, 0.035, 0.01]  # the visits not caused by a touch
APP_OPEN, ORDER_PAID, MESSAGE_OPEN = 0, 3, 5
# Share of visits at each China hour: meals, and late-night snacks (as bench/decide.py).
HOUR_PROFILE = np.array(
    [3, 1.5, 0.7, 0.3, 0.2, 0.3, 1, 4, 5, 3, 4, 9, 10, 5, 3, 3, 4, 8, 9, 6, 5, 6, 6, 5],
    dtype=np.float64,
)
FAIL_REASONS = np.array(["no_allowance", "not_follower", "wechat_error"], dtype=object)
FAIL_CODES = np.array([43101, 43004, -1])
TOUCH_COLUMNS = (
    "tenant_id, policy_id, run_id, user_id, day, arm, step, channel, message, coupon_template, "
    "tier, holdout, status, reason, send_after_ms, expires_ms, attempts, next_attempt_ms, "
    "lease_until_ms, sent_ms, wechat_errcode, provider_id, coupon_id, message_cost_fen, "
    "value_fen, returned_ms, ordered_ms, revenue_fen, coupon_cost_fen, attributed, opened_ms, "
    "quiet_deferred, retained_d7, retained_d30"
)
BULK_TABLES = ("user", "event", "order", "coupon", "touch")


def day_start(day):
    """UTC epoch ms of 00:00 China time on day number(s) `day`."""
    return np.asarray(day, dtype=np.int64) * MS_PER_DAY - CHINA_OFFSET_MS


# -- data -------------------------------------------------------------------------------------


@dataclass
class Users:
    start: np.ndarray  # first active day
    end: np.ndarray  # first day no longer active (exclusive)
    rate: np.ndarray  # relative visit rate
    hour: np.ndarray  # usual China hour
    created_ms: np.ndarray


def make_users(n: int, rng: np.random.Generator) -> Users:
    first = END_DAY - DAYS
    old = rng.random(n) < 0.5
    start = np.where(old, first, first + rng.integers(0, DAYS, n)).astype(np.int64)
    life = np.ceil(rng.exponential(LIFETIME_DAYS, n)).astype(np.int64) + 1
    end = np.minimum(start + life, END_DAY)
    hour = rng.choice(24, size=n, p=HOUR_PROFILE / HOUR_PROFILE.sum())
    created = (
        day_start(start) + hour * HOUR_MS - np.where(old, rng.integers(0, 400, n), 0) * (MS_PER_DAY)
    )
    return Users(start, end, rng.gamma(0.8, 1.0, n), hour, created)


@dataclass
class Events:
    user: np.ndarray  # index 0..n-1
    ts: np.ndarray
    kind: np.ndarray  # index into TYPES


def make_events(users: Users, count: int, rng: np.random.Generator) -> Events:
    """`count` visits spread over each user's active days in proportion to rate × days."""
    days = users.end - users.start
    weight = users.rate * days
    per_user = rng.multinomial(count, weight / weight.sum())
    user = np.repeat(np.arange(users.rate.size), per_user)
    day = np.repeat(users.start, per_user) + (rng.random(count) * np.repeat(days, per_user)).astype(
        np.int64
    )
    usual = rng.random(count) < 0.6
    hour = np.where(
        usual,
        users.hour[user],
        rng.choice(24, size=count, p=HOUR_PROFILE / HOUR_PROFILE.sum()),
    )
    ts = day_start(day) + hour * HOUR_MS + rng.integers(0, HOUR_MS, count)
    kind = rng.choice(len(TYPE_SHARES), size=count, p=TYPE_SHARES).astype(np.int8)
    return Events(user, ts, kind)


@dataclass
class Touches:
    policy: np.ndarray  # index into the policy list
    user: np.ndarray
    day: np.ndarray
    arm: np.ndarray  # arm name
    step: np.ndarray
    channel: np.ndarray  # channel name
    message: np.ndarray
    coupon: np.ndarray  # coupon template name or None
    tier: np.ndarray  # tier name
    status: np.ndarray
    send_after: np.ndarray
    sent: np.ndarray  # -1: NULL
    quiet: np.ndarray
    cost: np.ndarray
    value: np.ndarray

    def take(self, idx: np.ndarray) -> Touches:
        return Touches(**{k: v[idx] for k, v in self.__dict__.items()})


def last_visit_day(keys: np.ndarray, span: int, origin: int, user, at) -> np.ndarray:
    """China day of each user's last event strictly before `at`, or -1 (none)."""
    probe = user * span + (at - origin)
    pos = np.searchsorted(keys, probe, side="left") - 1
    prev = keys[np.maximum(pos, 0)]
    ok = (pos >= 0) & (prev // span == user)
    return np.where(ok, china_day(prev % span + origin), -1)


def candidate_touches(
    m: int, policies: list, users: Users, keys, span, origin, rng: np.random.Generator
) -> Touches:
    """m random (policy, user, day) draws, kept when the preset would consider them."""
    n = users.rate.size
    last_touch_day = END_DAY - 1 - max(p.attribution_window_days for p in policies) - 1
    pol = rng.choice(len(policies), size=m, p=list(POLICY_SHARES.values()))
    user = rng.integers(0, n, m)
    day = rng.integers(last_touch_day - TOUCH_DAYS + 1, last_touch_day + 1, m)
    last = last_visit_day(keys, span, origin, user, day_start(day))
    silence = np.where(last >= 0, day - last, 10_000)
    u = rng.random(m)
    tier_name = np.where(
        silence >= 30,
        "churned",
        np.where(
            silence >= 7,
            np.where(u < 0.7, "churn_risk", "low_frequency"),
            np.where(u < 0.5, "active", "low_frequency"),
        ),
    ).astype(object)
    keep = np.zeros(m, dtype=bool)
    arm = np.empty(m, dtype=object)
    step = np.zeros(m, dtype=np.int64)
    channel = np.empty(m, dtype=object)
    message = np.empty(m, dtype=object)
    coupon = np.full(m, None, dtype=object)
    hour = np.zeros(m, dtype=np.int64)
    cost = np.zeros(m, dtype=np.int64)
    for pi, p in enumerate(policies):
        for ti in p.tiers:
            sel = np.flatnonzero(
                (pol == pi)
                & (tier_name == TIERS[ti])
                & (silence >= p.min_days_silent)
                & (silence <= p.max_days_silent)
            )
            arms = [a for a in p.arms if not a.tiers or ti in a.tiers]
            if not arms or not sel.size:
                continue
            keep[sel] = True
            pick = rng.integers(0, len(arms), sel.size)
            for ai, a in enumerate(arms):
                rows = sel[pick == ai]
                w = 0.55 ** np.arange(len(a.touches))
                st = rng.choice(len(a.touches), size=rows.size, p=w / w.sum())
                arm[rows] = a.name
                step[rows] = st
                for si, t in enumerate(a.touches):
                    r = rows[st == si]
                    channel[r] = CHANNELS[t.channel]
                    message[r] = t.message
                    coupon[r] = t.coupon
                    cost[r] = p.costs_fen[t.channel]
            hour[sel] = users.hour[user[sel]] if p.send_hour is None else p.send_hour
    late = hour >= QUIET_START_HOUR
    quiet = late | (hour < QUIET_END_HOUR)
    send_after = day_start(day + late) + np.where(quiet, QUIET_END_HOUR, hour) * HOUR_MS
    hold = np.array([p.holdout_share for p in policies])[pol]
    u = rng.random(m)
    status = np.where(
        u < hold,
        "held_out",
        np.where(
            u < hold + (1 - hold) * 0.85 / 0.9,
            "sent",
            np.where(u < hold + (1 - hold) * 0.88 / 0.9, "failed", "expired"),
        ),
    ).astype(object)
    delay = np.minimum(rng.exponential(40_000, m).astype(np.int64) + 500, 3_600_000)
    sent = np.select([status == "sent", status == "held_out"], [send_after + delay, send_after], -1)
    cost = np.where(status == "held_out", 0, cost)
    value = np.round(rng.lognormal(np.log(3000), 0.9, m)).astype(np.int64)
    t = Touches(
        pol,
        user,
        day,
        arm,
        step,
        channel,
        message,
        coupon,
        tier_name,
        status,
        send_after,
        sent,
        quiet,
        cost,
        value,
    )
    return t.take(np.flatnonzero(keep))


def make_touches(
    count: int, policies: list, users: Users, ev: Events, rng: np.random.Generator
) -> Touches:
    origin = int(day_start(END_DAY - DAYS))
    span = int(DAYS + 2) * MS_PER_DAY
    keys = np.sort(ev.user * span + (ev.ts - origin))
    names = [f.name for f in fields(Touches)]
    t: Touches | None = None
    drawn, m = 0, count * 3
    while t is None or t.user.size < count:
        new = candidate_touches(m, policies, users, keys, span, origin, rng)
        drawn += m
        if t is not None:
            new = Touches(**{k: np.concatenate([getattr(t, k), getattr(new, k)]) for k in names})
        # unique per (policy, user, day, step), as the table's unique index requires
        key = ((new.policy * users.rate.size + new.user) * 1024 + (END_DAY - new.day)) * 8
        _, first = np.unique(key + new.step, return_index=True)
        t = new.take(np.sort(first))
        m = max(10_000, int((count - t.user.size) * 1.2 * drawn / max(t.user.size, 1)))
    t = t.take(np.arange(count))
    order = np.lexsort((t.send_after, t.policy, t.day))  # decided day by day, policy by policy
    return t.take(order)


@dataclass
class Responses:
    touch: np.ndarray  # touch index
    ts: np.ndarray
    redeem: np.ndarray  # an order_paid redeeming the touch's coupon
    tap: np.ndarray  # a message_open naming the touch


def make_responses(t: Touches, count: int, window_ms: int, rng) -> Responses:
    sent = np.flatnonzero(t.status == "sent")
    pick = np.sort(rng.choice(sent, size=min(count, sent.size), replace=False))
    delay = np.minimum(rng.exponential(1.3 * MS_PER_DAY, pick.size), window_ms - 60_000)
    ts = t.sent[pick] + 60_000 + delay.astype(np.int64)  # inside (sent, sent + window]
    redeem = t.coupon[pick].astype(bool) & (rng.random(pick.size) < 0.5)
    tap = ~redeem & (rng.random(pick.size) < 0.4)
    return Responses(pick, ts, redeem, tap)


# -- loading ----------------------------------------------------------------------------------


def bulk_connection(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -1000000")
    conn.execute("PRAGMA temp_store = MEMORY")
    return conn


def index_sql(conn: sqlite3.Connection) -> dict[str, str]:
    marks = ",".join("?" * len(BULK_TABLES))
    return dict(
        conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
            f"AND tbl_name IN ({marks})",
            BULK_TABLES,
        ).fetchall()
    )


def insert_chunks(conn, sql: str, n: int, rows_for, chunk: int = 1_000_000) -> None:
    for start in range(0, n, chunk):
        conn.execute("BEGIN")
        conn.executemany(sql, rows_for(start, min(n, start + chunk)))
        conn.execute("COMMIT")


def build(
    path: str, args, policies: list, sources: dict, rng: np.random.Generator
) -> tuple[int, int, dict]:
    """Everything the docstring's step 1 and 2 say; returns (tenant id, now_ms, counts)."""
    db = open_database(f"sqlite:///{path}")
    bind(db)
    created = int(day_start(END_DAY - DAYS - 400))
    migrate(db, created)
    tenant = Tenant.create(appid="wxbenchreport0001", name="Bench campus", created_ms=created)
    for name in POLICY_SHARES:
        Policy.create(
            tenant=tenant,
            name=name,
            source=sources[name],
            active=True,
            created_ms=created,
            updated_ms=created,
        )
    policy_ids = [Policy.get(Policy.name == n).id for n in POLICY_SHARES]
    CouponTemplate.create(
        tenant=tenant,
        name=COUPON,
        amount_off_fen=COUPON_FACE_FEN,
        min_spend_fen=COUPON_MIN_SPEND_FEN,
        validity_days=COUPON_VALIDITY_DAYS,
        budget=1,
        created_ms=created,
    )
    db.close_all()

    t0 = time.perf_counter()
    users = make_users(args.users, rng)
    window_ms = max(p.attribution_window_days for p in policies) * MS_PER_DAY
    n_resp = round(RESPONSE_SHARE * args.touches)
    ev = make_events(users, args.events - n_resp, rng)
    tc = make_touches(args.touches, policies, users, ev, rng)
    resp = make_responses(tc, n_resp, window_ms, rng)
    ev = Events(
        np.concatenate([ev.user, tc.user[resp.touch]]),
        np.concatenate([ev.ts, resp.ts]),
        np.concatenate(
            [
                ev.kind,
                np.select([resp.redeem, resp.tap], [ORDER_PAID, MESSAGE_OPEN], APP_OPEN).astype(
                    np.int8
                ),
            ]
        ),
    )
    order = np.argsort(ev.ts, kind="stable")  # events arrive in time order
    ev = Events(ev.user[order], ev.ts[order], ev.kind[order])
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    resp_event = inverse[args.events - n_resp :]  # where each response event went
    # Touch ids are 1.. in insertion order (checked after the insert).
    props = np.full(ev.user.size, "{}", dtype=object)
    props[resp_event[resp.tap]] = [
        json.dumps({"touch_id": int(i) + 1}, separators=(",", ":")) for i in resp.touch[resp.tap]
    ]
    gen_s = time.perf_counter() - t0

    # Coupons: one per sent coupon touch; seq counts a user's coupons of the template.
    issued = np.flatnonzero((tc.status == "sent") & tc.coupon.astype(bool))
    by_user = issued[np.argsort(tc.user[issued], kind="stable")]
    u_sorted = tc.user[by_user]
    first = np.r_[0, np.flatnonzero(np.diff(u_sorted)) + 1]
    seq = np.arange(by_user.size) - np.repeat(first, np.diff(np.r_[first, by_user.size])) + 1
    coupon_seq = np.empty(issued.size, dtype=np.int64)
    coupon_seq[np.searchsorted(issued, by_user)] = seq
    coupon_id = np.zeros(tc.user.size, dtype=np.int64)  # 0: none
    coupon_id[issued] = np.arange(1, issued.size + 1)
    redeemed_ms = np.full(tc.user.size, -1, dtype=np.int64)
    redeem_touch = resp.touch[resp.redeem]
    redeemed_ms[redeem_touch] = resp.ts[resp.redeem]

    # Orders: every order_paid event; a response order carries its coupon.
    is_order = ev.kind == ORDER_PAID
    order_ev = np.flatnonzero(is_order)
    order_coupon = np.zeros(ev.user.size, dtype=np.int64)
    order_coupon[resp_event[resp.redeem]] = coupon_id[redeem_touch]
    amount = np.round(rng.lognormal(np.log(1800), 0.5, order_ev.size)).astype(np.int64) + 300
    with_coupon = order_coupon[order_ev] > 0
    amount = np.where(with_coupon, np.maximum(amount, COUPON_MIN_SPEND_FEN), amount)
    refunded = (rng.random(order_ev.size) < 0.03) & ~with_coupon
    last_seen = np.full(args.users, -1, dtype=np.int64)
    np.maximum.at(last_seen, ev.user, ev.ts)

    conn = bulk_connection(path)
    before = index_sql(conn)
    for name in before:
        conn.execute(f'DROP INDEX "{name}"')
    tid = tenant.id
    t1 = time.perf_counter()

    conn.execute(
        "UPDATE coupon_template SET budget = ?, issued_count = ?, per_user_limit = ? "
        "WHERE tenant_id = ?",
        (issued.size + 10_000, issued.size, int(seq.max()) if seq.size else 1, tid),
    )
    (template_id,) = conn.execute("SELECT id FROM coupon_template").fetchone()

    opt_out = rng.random(args.users) < 0.01
    phone = rng.random(args.users) < 0.6
    follower = rng.random(args.users) < 0.45
    insert_chunks(
        conn,
        'INSERT INTO "user" (id, tenant_id, openid, unionid, created_ms, last_seen_ms, '
        "marketing_opt_out, phone, oa_openid, token_key) VALUES (?, ?, ?, NULL, ?, ?, ?, ?, ?, ?)",
        args.users,
        lambda a, b: (
            (
                i + 1,
                tid,
                f"o-bench-{i:07d}",
                int(users.created_ms[i]),
                int(last_seen[i]) if last_seen[i] >= 0 else None,
                bool(opt_out[i]),
                f"138{i:08d}" if phone[i] else None,
                f"oa-bench-{i:07d}" if follower[i] else None,
                f"{i:032x}",
            )
            for i in range(a, b)
        ),
    )

    def event_rows(a: int, b: int):
        ts = ev.ts[a:b]
        received = ts + 200 + (ts % 1500)
        return zip(
            repeat(tid),
            (ev.user[a:b] + 1).tolist(),
            map(format, range(a, b), repeat("x")),
            TYPES[ev.kind[a:b]].tolist(),
            ts.tolist(),
            received.tolist(),
            props[a:b].tolist(),
            strict=False,
        )

    insert_chunks(
        conn,
        "INSERT INTO event (tenant_id, user_id, client_id, type, ts_ms, received_ms, props) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        ev.user.size,
        event_rows,
    )

    def coupon_rows(a: int, b: int):
        for k in range(a, b):
            i = issued[k]
            r = redeemed_ms[i]
            yield (
                k + 1,
                tid,
                template_id,
                int(tc.user[i]) + 1,
                int(coupon_seq[k]),
                "redeemed" if r >= 0 else "issued",
                int(tc.sent[i]),
                int(tc.sent[i]) + COUPON_VALIDITY_DAYS * MS_PER_DAY,
                int(r) if r >= 0 else None,
                f"r{k:x}" if r >= 0 else None,
            )

    insert_chunks(
        conn,
        "INSERT INTO coupon (id, tenant_id, template_id, user_id, seq, status, source, "
        "issued_ms, expires_ms, redeemed_ms, order_ref) "
        "VALUES (?, ?, ?, ?, ?, ?, 'policy', ?, ?, ?, ?)",
        issued.size,
        coupon_rows,
    )

    def order_rows(a: int, b: int):
        for k in range(a, b):
            e = order_ev[k]
            c = int(order_coupon[e])
            yield (
                tid,
                int(ev.user[e]) + 1,
                f"r{c - 1:x}" if c else f"b{e:x}",
                int(amount[k]),
                c or None,
                int(ev.ts[e]),
                "refunded" if refunded[k] else "paid",
            )

    insert_chunks(
        conn,
        'INSERT INTO "order" (tenant_id, user_id, order_ref, merchant_id, amount_fen, '
        "coupon_id, paid_ms, status) VALUES (?, ?, ?, NULL, ?, ?, ?, ?)",
        order_ev.size,
        order_rows,
    )

    fail_pick = rng.integers(0, FAIL_REASONS.size, tc.user.size)
    attempts = np.select(
        [tc.status == "sent", tc.status == "failed"],
        [1 + (rng.random(tc.user.size) < 0.05), 1 + fail_pick % 2],
        0,
    )
    pids = np.array(policy_ids, dtype=np.int64)

    def touch_rows(a: int, b: int):
        for i in range(a, b):
            st = tc.status[i]
            sent = int(tc.sent[i])
            failed = st == "failed"
            yield (
                tid,
                int(pids[tc.policy[i]]),
                None,
                int(tc.user[i]) + 1,
                int(tc.day[i]),
                tc.arm[i],
                int(tc.step[i]),
                tc.channel[i],
                tc.message[i],
                tc.coupon[i],
                tc.tier[i],
                st == "held_out",
                st,
                FAIL_REASONS[fail_pick[i]]
                if failed
                else "not_sent_in_time"
                if st == "expired"
                else "",
                int(tc.send_after[i]),
                int(tc.send_after[i]) + 24 * HOUR_MS,
                int(attempts[i]),
                int(tc.send_after[i]),
                None,
                sent if sent >= 0 else None,
                int(FAIL_CODES[fail_pick[i]]) if failed else None,
                f"msg-{i:x}" if st == "sent" else None,
                int(coupon_id[i]) or None,
                int(tc.cost[i]),
                int(tc.value[i]),
                None,
                None,
                0,
                0,
                False,
                None,
                bool(tc.quiet[i]),
                None,
                None,
            )

    insert_chunks(
        conn,
        f"INSERT INTO touch ({TOUCH_COLUMNS}) VALUES ({', '.join('?' * 34)})",
        tc.user.size,
        touch_rows,
    )
    if conn.execute("SELECT MIN(id), MAX(id), COUNT(*) FROM touch").fetchone() != (
        1,
        tc.user.size,
        tc.user.size,
    ):
        raise SystemExit("touch ids are not 1..N in insertion order: message taps would miss")
    insert_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    for sql in before.values():
        conn.execute(sql)
    index_s = time.perf_counter() - t2
    after = index_sql(conn)
    if after != before:
        raise SystemExit(f"indexes differ after the bulk load: {sorted(before)} vs {sorted(after)}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    counts = {
        "users": args.users,
        "events": int(ev.user.size),
        "touches": int(tc.user.size),
        "orders": int(order_ev.size),
        "coupons": int(issued.size),
        "responses": int(n_resp),
        "taps": int(resp.tap.sum()),
        "indexes": len(before),
        "gen_s": gen_s,
        "insert_s": insert_s,
        "index_s": index_s,
        "status": {
            s: int((tc.status == s).sum()) for s in ("sent", "held_out", "failed", "expired")
        },
    }
    return tid, int(day_start(END_DAY)), counts


# -- measuring --------------------------------------------------------------------------------


def profile_top(fn, lines: int = 18) -> str:
    prof = cProfile.Profile()
    prof.runcall(fn)
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(lines)
    return out.getvalue()


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@dataclass
class AttributionRuns:
    python: list  # seconds of attribute(), one per round
    sql: list  # seconds of sql_attribute(), one per round
    agrees: bool  # every round wrote the same columns, bit for bit
    final: int  # touches attribute() made final (last round)


def measure_attribution(db, conn, tenant_id: int, now_ms: int, rounds: int) -> AttributionRuns:
    """Rounds of: reset (untimed), attribute() timed, its columns read; reset, the SQL timed,
    its columns read; the two compared. Both start from the same table, warm alike."""
    runs = AttributionRuns([], [], True, 0)
    for _ in range(rounds):
        reset_attribution(conn, tenant_id)
        t0 = time.perf_counter()
        runs.final = attribute(tenant_id, now_ms)
        runs.python.append(time.perf_counter() - t0)
        db.close_all()  # no read transaction left open across the other side's writes
        mine = attribution_columns(conn, tenant_id)
        reset_attribution(conn, tenant_id)
        runs.sql.append(timed(lambda: sql_attribute(conn, tenant_id, now_ms)))
        theirs = attribution_columns(conn, tenant_id)
        same = np.array_equal(mine, theirs)
        runs.agrees &= same
        if not same:
            for j, name in enumerate(("id", *ATTRIBUTED)):
                bad = np.flatnonzero(mine[:, j] != theirs[:, j])
                if bad.size:
                    print(
                        f"ATTRIBUTION DIFFERS in {name}: {bad.size:,} touches, e.g. id(s) "
                        f"{mine[bad[:3], 0].tolist()}: {mine[bad[:3], j].tolist()} vs SQL "
                        f"{theirs[bad[:3], j].tolist()}"
                    )
    return runs


def measure_report(conn, tenant_id: int, risk_days: int, repeats: int):
    """report() and the SQL report alternately (both see the same cache state); the last
    results and every run's seconds."""
    report_runs, sql_runs, out, sql = [], [], None, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = report(tenant_id)
        report_runs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sql = sql_report(conn, tenant_id, risk_days)
        sql_runs.append(time.perf_counter() - t0)
    return out, sql, report_runs, sql_runs


def describe_data(counts: dict, windows: dict, build_s: float, size_mb: float) -> None:
    st = counts["status"]
    print(
        f"data: {counts['users']:,} users, {counts['events']:,} events over {DAYS} days "
        f"({counts['responses']:,} of them responses to touches, {counts['taps']:,} "
        f"message taps), {counts['orders']:,} orders, {counts['touches']:,} touches over "
        f"{TOUCH_DAYS} days (sent {st['sent']:,}, "
        f"held out {st['held_out']:,}, failed {st['failed']:,}, expired {st['expired']:,}), "
        f"{counts['coupons']:,} coupons; attribution windows {windows} days"
    )
    print(
        f"build (untimed): {build_s:.1f} s = generate {counts['gen_s']:.1f} s + insert "
        f"{counts['insert_s']:.1f} s + recreate {counts['indexes']} indexes "
        f"{counts['index_s']:.1f} s + migrate/setup; database {size_mb:,.0f} MB"
    )


def runs_text(runs: list) -> str:
    return ", ".join(f"{t:.2f}" for t in runs)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=EVENTS)
    parser.add_argument("--touches", type=int, default=TOUCHES)
    parser.add_argument("--users", type=int, default=USERS)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument(
        "--repeats", type=int, default=REPEATS, help="timed report runs each, median kept"
    )
    parser.add_argument(
        "--attribution-repeats",
        type=int,
        default=ATTRIBUTION_REPEATS,
        help="timed attribution rounds, median kept",
    )
    parser.add_argument(
        "--profile", action="store_true", help="print a cProfile of one more run of each"
    )
    parser.add_argument("--keep", action="store_true", help="keep the database, print its path")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    sources = {n: seeds.preset_path(n).read_text(encoding="utf-8") for n in POLICY_SHARES}
    policies = [parse_policy(sources[n]) for n in POLICY_SHARES]
    windows = {p.name: p.attribution_window_days for p in policies}
    rng = np.random.default_rng(args.seed)
    tmp = tempfile.mkdtemp(prefix="huiliu-bench-report-")
    path = str(Path(tmp) / "bench.sqlite3")
    try:
        t0 = time.perf_counter()
        tenant_id, now_ms, counts = build(path, args, policies, sources, rng)
        build_s = time.perf_counter() - t0
        size_mb = sum(f.stat().st_size for f in Path(tmp).iterdir()) / 1e6
        describe_data(counts, windows, build_s, size_mb)
        result = run(path, tenant_id, now_ms, counts, args)
        result["build_s"] = round(build_s, 1)
        print(json.dumps(result))
        if args.keep:
            print(f"database kept: {path}", file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    if not (result["attribution_agrees"] and result["report_agrees"]):
        sys.exit(1)


def run(path: str, tenant_id: int, now_ms: int, counts: dict, args) -> dict:
    """Both comparisons on the built database; the JSON result (build_s added by main)."""
    db = open_database(f"sqlite:///{path}")
    bind(db)
    conn = connect(path)
    att = measure_attribution(db, conn, tenant_id, now_ms, max(1, args.attribution_repeats))
    attribute_s, sql_attribute_s = statistics.median(att.python), statistics.median(att.sql)
    measured = sum(v for k, v in counts["status"].items() if k in MEASURED)
    (opened,) = conn.execute("SELECT COUNT(*) FROM touch WHERE opened_ms IS NOT NULL").fetchone()
    print(
        f"attribute(): {attribute_s:.2f} s (runs {runs_text(att.python)}); SQL attribution: "
        f"{sql_attribute_s:.2f} s (runs {runs_text(att.sql)}); {att.final:,} touches final "
        f"(of {measured:,} measured), {opened:,} opened (of {counts['taps']:,} taps); columns "
        f"{'identical' if att.agrees else 'DIFFER'}"
    )
    risk_days = tier_config(Tenant.get_by_id(tenant_id)).risk_silent_days
    out, sql, report_runs, sql_runs = measure_report(
        conn, tenant_id, risk_days, max(1, args.repeats)
    )
    report_s, sql_report_s = statistics.median(report_runs), statistics.median(sql_runs)
    # Where report() spends it: its two largest queries, one more run each.
    load_s = timed(lambda: load(tenant_id))
    ledger_s = timed(lambda: ledger(tenant_id))
    diffs = compare_report(out, sql)
    for line in diffs[:20]:
        print(f"REPORT DIFFERS: {line}")
    for entry in out["policies"]:
        inc = entry["incremental_recall"]
        print(
            f"  {entry['policy']:13s}: lapsed users recalled {entry['recall_rate']['rate']:.1%}"
            f" of {entry['lapsed_users']:,} vs holdout "
            f"{entry['holdout_recall_rate']['rate']:.1%} of {entry['holdout_lapsed_users']:,}: "
            f"{inc['diff']:+.2%} [{inc['lo']:+.2%}, {inc['hi']:+.2%}]; revenue/cost "
            f"{entry['money']['roi']:.2f}; {len(entry['by_arm'])} arms, "
            f"{len(entry['cohorts'])} cohorts"
        )
    print(
        f"report(): {report_s:.2f} s (runs {runs_text(report_runs)}); SQL report: "
        f"{sql_report_s:.2f} s (runs {runs_text(sql_runs)}); figures "
        f"{'agree' if not diffs else f'DIFFER in {len(diffs)} places'}"
    )
    print(
        f"  of report() (one more run each): load() {load_s:.2f} s, ledger() {ledger_s:.2f} s, "
        f"the rest ~{max(0.0, report_s - load_s - ledger_s):.2f} s"
    )
    ratio_report = report_s / sql_report_s
    ratio_attribution = attribute_s / sql_attribute_s
    for name, ratio in (("report", ratio_report), ("attribution", ratio_attribution)):
        verdict = "meets" if ratio <= TARGET_RATIO else "MISSES"
        print(f"ratio {name}/SQL {ratio:.2f}: {verdict} the <= {TARGET_RATIO:g} target")
    if args.profile:
        print(profile_top(lambda: report(tenant_id)))
        reset_attribution(conn, tenant_id)
        print(profile_top(lambda: attribute(tenant_id, now_ms)))
    db.close_all()
    conn.close()
    return {
        "ratio_report_vs_sql": round(ratio_report, 3),
        "ratio_attribution_vs_sql": round(ratio_attribution, 3),
        "report_s": round(report_s, 3),
        "sql_report_s": round(sql_report_s, 3),
        "attribute_s": round(attribute_s, 3),
        "sql_attribute_s": round(sql_attribute_s, 3),
        "report_runs_s": [round(t, 3) for t in report_runs],
        "sql_report_runs_s": [round(t, 3) for t in sql_runs],
        "attribute_runs_s": [round(t, 3) for t in att.python],
        "sql_attribute_runs_s": [round(t, 3) for t in att.sql],
        "report_load_s": round(load_s, 3),
        "report_ledger_s": round(ledger_s, 3),
        "events": counts["events"],
        "touches": counts["touches"],
        "users": counts["users"],
        "orders": counts["orders"],
        "coupons": counts["coupons"],
        "target_ratio": TARGET_RATIO,
        "meets_target": bool(max(ratio_report, ratio_attribution) <= TARGET_RATIO),
        "attribution_agrees": bool(att.agrees),
        "report_agrees": not diffs,
        "report_differences": len(diffs),
        "repeats": max(1, args.repeats),
        "attribution_repeats": max(1, args.attribution_repeats),
        "seed": args.seed,
    }


if __name__ == "__main__":
    main()
