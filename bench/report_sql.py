"""The SQL baselines of bench/report.py: the report's aggregates and attribution, in SQLite.

Each baseline does the work of the thing it is timed against, from the same rows and the same
columns, through sqlite3 on the same database file with the app's pragmas:

* `sql_report` is `services.reports.report(tenant)` as SQL. It reads the rows `load` reads
  (the tenant's finished touches decided as sends or holdouts, joined to their policy and to
  the day's score snapshot) with the columns attribution precomputed (returned_ms, ordered_ms,
  opened_ms, revenue, costs, retained_d7/d30), into a temporary table that also marks each
  touch's user as first in its group (ROW_NUMBER over policy, holdout, user; and over policy,
  arm / tier / channel, holdout, user; ordered by day, step), and aggregates it: per policy and
  per arm, tier and channel, treated and holdout, the touches, the money, and at each user's
  first touch the users, the lapsed, the recalled, the active who returned, the orders, the
  revenue (sum and sum of squares), retention D7/D30 known and kept (one GROUP BY per
  dimension, UNION ALL); the funnel per channel; recalled cohorts per ISO week; the Qini curve
  per policy (per user and group the highest value and any return, then running counts
  ordered by value, the area and the 11 points); the ledger's and the spend's GROUP BYs and
  the power block's volume query, as report() runs them. The intervals come from these
  counts through the same core.metrics functions the report calls (Wilson, Newcombe, ROI;
  Welch from the sums; where the report bootstraps, a group of at most 20,000 users, its
  per-user revenues are read and `metrics.mean_diff` runs on them as in the report).
* `sql_attribute` is `services.attribution.attribute(tenant, now)` as SQL with window
  functions, writing the same columns: message taps (`message_open` events naming a touch)
  set opened_ms; for every open touch with a known window, the first event strictly after
  its send within the window (a running MIN over the user's events and touches ordered by
  time, newest first), the first paid order and the revenue in the window (a running SUM at
  the send and at the window's end), the coupon's face if redeemed in the window, attributed
  once the window has closed; then retention D7/D30 of the returned touches (a visit in
  [return + d days, return + d + 7 days), the bound as attribution computes it) once the
  week has passed, again with a running MIN. The policies' windows are parsed from their
  stored source as attribution does.

`compare_report` and `attribution_columns` are the checks: the SQL report must give the
report's figures (counts exactly, floats to 1e-9 relative), and both attributions the same
touch columns, bit for bit.
"""

from __future__ import annotations

import json
import math
import sqlite3

import numpy as np

from backend.core import metrics
from backend.core.calendar import MS_PER_DAY, day_date
from backend.core.metrics import RETENTION_DAYS, RETENTION_WINDOW_DAYS
from backend.core.policy import PolicyError, parse_policy
from backend.core.policy.spec import MAX_TOUCHES_PER_ARM
from backend.core.recall import LAPSED_TIERS
from backend.services.attribution import MEASURED
from backend.store.db import SQLITE_PRAGMAS
from backend.store.models import SEND_STATUSES

DIMENSIONS = ("arm", "tier", "channel")
_IN_MEASURED = ", ".join(f"'{s}'" for s in MEASURED)
_IN_SENDS = ", ".join(f"'{s}'" for s in SEND_STATUSES)
_IN_LAPSED = ", ".join(f"'{s}'" for s in LAPSED_TIERS)


def connect(path: str) -> sqlite3.Connection:
    """A sqlite3 connection with the app's pragmas (autocommit; BEGIN where we write)."""
    conn = sqlite3.connect(path, isolation_level=None)
    for key, value in SQLITE_PRAGMAS.items():
        conn.execute(f"PRAGMA {key} = {value}")
    return conn


# -- the report -------------------------------------------------------------------------------

BASE_SQL = f"""
CREATE TEMP TABLE f AS
SELECT p.name AS policy, t.arm AS arm, t.tier AS tier, t.channel AS channel,
       t.status = 'sent' AS delivered, t.holdout AS holdout, t.user_id AS user, t.day AS day,
       t.day * {MAX_TOUCHES_PER_ARM} + t.step AS seq, t.returned_ms IS NOT NULL AS ret,
       t.ordered_ms IS NOT NULL AS ord, t.opened_ms IS NOT NULL AS opened,
       t.attempts > 0 AS attempted, t.revenue_fen AS rev, t.coupon_cost_fen AS coupon_cost,
       t.message_cost_fen AS message_cost, t.value_fen AS value,
       CASE WHEN t.retained_d7 IS NULL THEN -1 WHEN t.retained_d7 THEN 1 ELSE 0 END AS d7,
       CASE WHEN t.retained_d30 IS NULL THEN -1 WHEN t.retained_d30 THEN 1 ELSE 0 END AS d30,
       CASE WHEN COALESCE(s.term_days_since_visit, -1) >= 0
            THEN s.term_days_since_visit >= :risk
            ELSE t.tier IN ({_IN_LAPSED}) END AS lapsed
FROM touch t JOIN policy p ON p.id = t.policy_id
LEFT JOIN score_snapshot s
  ON s.tenant_id = t.tenant_id AND s.day = t.day AND s.user_id = t.user_id
WHERE t.tenant_id = :tenant AND t.attributed AND t.status IN ({_IN_MEASURED})
"""
# Each user's first touch in a group: MIN(seq) with bare columns, which SQLite takes from the
# row holding the minimum (https://sqlite.org/lang_select.html#bareagg); the inner GROUP BY
# also sums every touch of the user, the outer one sums over the users.
_GROUP = """
SELECT policy, '{dim}' AS dim, value, holdout, SUM(n) AS touches, SUM(rev_all) AS revenue,
       SUM(coupon_cost) AS coupon_cost, SUM(message_cost) AS message_cost, COUNT(*) AS users,
       SUM(lapsed) AS lapsed_n, SUM(lapsed AND ret) AS lapsed_k,
       SUM(NOT lapsed AND ret) AS active_k, SUM(ord) AS ordered, TOTAL(rev) AS rev_sum,
       TOTAL(rev * rev) AS rev_sq,
       SUM(lapsed AND ret AND d7 >= 0) AS d7_n, SUM(lapsed AND ret AND d7 = 1) AS d7_k,
       SUM(lapsed AND ret AND d30 >= 0) AS d30_n, SUM(lapsed AND ret AND d30 = 1) AS d30_k
FROM (
  SELECT policy, {value} AS value, holdout, MIN(seq), ret, ord, rev, lapsed, d7, d30,
         COUNT(*) AS n, SUM(rev) AS rev_all, SUM(coupon_cost) AS coupon_cost,
         SUM(message_cost) AS message_cost
  FROM f GROUP BY policy, {group}holdout, user
) GROUP BY policy, value, holdout
"""
GROUPS_SQL = " UNION ALL ".join(
    [_GROUP.format(dim="all", value="NULL", group="")]
    + [_GROUP.format(dim=d, value=d, group=f"{d}, ") for d in DIMENSIONS]
)
# A group's per-user revenues at first touch, by user id: the order the report's arrays have.
REVENUES_SQL = """
SELECT rev FROM (SELECT user, MIN(seq), rev FROM f WHERE policy = ? AND holdout = ? {where}
                 GROUP BY user) ORDER BY user
"""
FUNNEL_SQL = """
SELECT policy, channel, SUM(attempted), SUM(delivered), SUM(opened), SUM(ret), SUM(ord)
FROM f WHERE NOT holdout GROUP BY policy, channel
"""
COHORTS_SQL = """
SELECT policy, (day + 3) / 7 AS week, COUNT(*), SUM(d7 = 1), SUM(d7 >= 0), SUM(d30 = 1),
       SUM(d30 >= 0)
FROM f WHERE NOT holdout AND ret GROUP BY policy, week
"""
# Per (user, group) the highest value and any return; ordered by value, highest first (ties:
# user, then treated before holdout, as the report's stable sort of np.unique's keys).
QINI_SQL = """
WITH q AS (SELECT policy, user, holdout, MAX(value) AS score, MAX(ret) AS y
           FROM f GROUP BY policy, user, holdout),
c AS (SELECT policy, ROW_NUMBER() OVER w AS i, SUM(NOT holdout) OVER w AS nt,
             SUM(holdout) OVER w AS nc, SUM(NOT holdout AND y) OVER w AS rt,
             SUM(holdout AND y) OVER w AS rc
      FROM q WINDOW w AS (PARTITION BY policy ORDER BY score DESC, user, holdout
                          ROWS UNBOUNDED PRECEDING)),
g AS MATERIALIZED (SELECT policy, i, rt - CASE WHEN nc > 0 THEN rc * nt * 1.0 / nc ELSE 0.0 END
                          AS gain FROM c),
p(policy, i) AS (SELECT value ->> 0, value ->> 1 FROM json_each(:points))
SELECT policy, -1, COUNT(*), SUM(gain), MAX(i) FROM g GROUP BY policy
UNION ALL SELECT g.policy, g.i, g.gain, NULL, NULL FROM g JOIN p USING (policy, i)
"""
LEDGER_SQL = """
SELECT p.name, t.day, t.status, t.reason, t.arm, COUNT(t.id),
       SUM(CASE WHEN t.quiet_deferred THEN 1 ELSE 0 END)
FROM touch t JOIN policy p ON p.id = t.policy_id WHERE t.tenant_id = :tenant
GROUP BY p.name, t.day, t.status, t.reason, t.arm
"""
SPEND_SQL = f"""
SELECT p.name, t.day, COUNT(t.id), SUM(t.message_cost_fen)
       + COUNT(t.id) * COALESCE((SELECT ct.amount_off_fen FROM coupon_template ct
                                 WHERE ct.tenant_id = :tenant AND ct.name = t.coupon_template),
                                0)
FROM touch t JOIN policy p ON p.id = t.policy_id
WHERE t.tenant_id = :tenant AND NOT t.holdout AND t.status IN ({_IN_SENDS})
GROUP BY p.id, t.day, t.coupon_template
"""
VOLUME_SQL = f"""
SELECT f.policy_id, f.first_day, COUNT(*) FROM (
  SELECT policy_id, user_id, MIN(day) AS first_day FROM touch
  WHERE tenant_id = :tenant AND status IN ({_IN_SENDS}, 'held_out')
    AND policy_id IN (SELECT id FROM policy WHERE tenant_id = :tenant AND active)
  GROUP BY policy_id, user_id
) f GROUP BY f.policy_id, f.first_day
"""


def _measures(conn, treated: dict, held: dict, where: tuple, seed: int) -> dict:
    """What `reports.compare` gives for one group, from the two sides' sums."""
    rt = metrics.rate(treated["lapsed_k"], treated["lapsed_n"])
    rh = metrics.rate(held["lapsed_k"], held["lapsed_n"])
    at_n, ah_n = treated["users"] - rt.n, held["users"] - rh.n
    at, ah = metrics.rate(treated["active_k"], at_n), metrics.rate(held["active_k"], ah_n)
    n1, n0 = treated["users"], held["users"]
    return {
        "treated_users": n1,
        "holdout_users": n0,
        "lapsed_users": rt.n,
        "holdout_lapsed_users": rh.n,
        "recall_rate": rt.as_dict(),
        "holdout_recall_rate": rh.as_dict(),
        "incremental_recall": metrics.newcombe_diff(rt.k, rt.n, rh.k, rh.n).as_dict(),
        "active_users": at.n,
        "holdout_active_users": ah.n,
        "retention_active": at.as_dict(),
        "holdout_retention_active": ah.as_dict(),
        "incremental_retention_active": metrics.newcombe_diff(at.k, at.n, ah.k, ah.n).as_dict(),
        "order_rate": metrics.rate(treated["ordered"], n1).as_dict(),
        "holdout_order_rate": metrics.rate(held["ordered"], n0).as_dict(),
        "revenue_per_user_fen": treated["rev_sum"] / n1 if n1 else None,
        "holdout_revenue_per_user_fen": held["rev_sum"] / n0 if n0 else None,
        "incremental_revenue_per_user_fen": _revenue_diff(
            conn, treated, held, where, seed
        ).as_dict(),
        "money": metrics.roi(
            treated["revenue"], treated["coupon_cost"], treated["message_cost"]
        ).as_dict(),
        "retention_d7": metrics.rate(treated["d7_k"], treated["d7_n"]).as_dict(),
        "retention_d30": metrics.rate(treated["d30_k"], treated["d30_n"]).as_dict(),
        "touches": treated["touches"],
        "holdout_touches": held["touches"],
    }


def _revenue_diff(conn, treated: dict, held: dict, where: tuple, seed: int) -> metrics.Diff:
    """metrics.mean_diff's answer: Welch from the sums when the report uses Welch; otherwise
    the group's per-user revenues, read, and the same function (its bootstrap)."""
    n1, n0 = treated["users"], held["users"]
    if n1 >= 2 and n0 >= 2 and n1 + n0 > metrics.BOOTSTRAP_MAX_N:
        m1, m0 = treated["rev_sum"] / n1, held["rev_sum"] / n0
        v1 = (treated["rev_sq"] - n1 * m1 * m1) / (n1 - 1)
        v0 = (held["rev_sq"] - n0 * m0 * m0) / (n0 - 1)
        d, se = m1 - m0, math.sqrt(v1 / n1 + v0 / n0)
        note = metrics._small(n1, n0)  # the report's words for a small group
        return metrics.Diff(d, d - metrics.Z95 * se, d + metrics.Z95 * se, not note, "welch", note)
    policy, dim, value = where
    sql = REVENUES_SQL.format(where="" if value is None else f"AND {dim} = ?")
    extra = () if value is None else (value,)
    sides = [
        np.array([r for (r,) in conn.execute(sql, (policy, h, *extra))], dtype=np.float64)
        for h in (0, 1)
    ]
    return metrics.mean_diff(*sides, seed=seed)


def _groups(conn) -> dict:
    """{(policy, dim, value): {holdout: sums}} from GROUPS_SQL."""
    cur = conn.execute(GROUPS_SQL)
    names = [d[0] for d in cur.description]
    out: dict = {}
    for row in cur:
        r = dict(zip(names, row, strict=True))
        r["rev_sum"], r["rev_sq"] = float(r["rev_sum"]), float(r["rev_sq"])
        out.setdefault((r["policy"], r["dim"], r["value"]), {})[bool(r["holdout"])] = r
    return out


_EMPTY = dict.fromkeys(
    ("touches", "revenue", "coupon_cost", "message_cost", "users", "lapsed_n", "lapsed_k")
    + ("active_k", "ordered", "rev_sum", "rev_sq", "d7_n", "d7_k", "d30_n", "d30_k"),
    0,
)


def _qini(conn, users: dict) -> dict:
    """Per policy the Qini as `metrics.Qini.as_dict` gives it; `users`: (user, group) rows."""
    points = []
    for policy, n in users.items():
        points += [[policy, int(i)] for i in np.linspace(0, n, min(11, n + 1)).round()]
    got: dict = {}
    for policy, i, a, b, c in conn.execute(QINI_SQL, {"points": json.dumps(points)}):
        got.setdefault(policy, {})[i] = (a, b, c)
    out = {}
    for policy, rows in got.items():
        _, total, last = rows.pop(-1)
        n = users[policy]
        q_n = rows[last][0] if last in rows else None
        if q_n is None:  # the end point is always among the 11
            raise SystemExit(f"Qini end point missing for {policy}")
        idx = np.linspace(0, n, min(11, n + 1)).round().astype(int)
        gain = np.array([0.0 if i == 0 else rows[int(i)][0] / n for i in idx])
        out[policy] = {
            "fraction": (idx / n).round(4).tolist(),
            "gain": gain.round(6).tolist(),
            "coefficient": (total / n - q_n / (2 * n) - q_n / 2) / n,
        }
    return out


def sql_report(conn: sqlite3.Connection, tenant_id: int, risk_days: int, seed: int = 0) -> dict:
    """The report's figures from SQL aggregates (module docstring); timed whole."""
    conn.execute("DROP TABLE IF EXISTS temp.f")
    conn.execute(BASE_SQL, {"tenant": tenant_id, "risk": risk_days})
    sums = _groups(conn)
    policies: dict = {}
    for (policy, dim, value), sides in sorted(sums.items(), key=lambda kv: str(kv[0])):
        treated, held = sides.get(False, _EMPTY), sides.get(True, _EMPTY)
        entry = _measures(conn, treated, held, (policy, dim, value), seed)
        p = policies.setdefault(policy, {f"by_{d}": [] for d in DIMENSIONS})
        if dim == "all":
            p.update(entry)
        else:
            p[f"by_{dim}"].append({dim: value, **entry})
    for name, channel, *counts in conn.execute(FUNNEL_SQL):
        keys = ("sent", "delivered", "opened", "returned", "ordered")
        policies[name].setdefault("funnel", []).append(
            {"channel": channel, **dict(zip(keys, counts, strict=True))}
        )
    for name, week, recalled, d7_k, d7_n, d30_k, d30_n in conn.execute(COHORTS_SQL):
        policies[name].setdefault("cohorts", []).append(
            {
                "week_of": day_date(int(week) * 7 - 3).isoformat(),
                "recalled": recalled,
                "d7": metrics.rate(d7_k, d7_n).as_dict(),
                "d30": metrics.rate(d30_k, d30_n).as_dict(),
            }
        )
    users = {k: v["treated_users"] + v["holdout_users"] for k, v in policies.items()}
    for name, qini in _qini(conn, users).items():
        has_treated = policies[name]["touches"] > 0
        policies[name]["qini_by_value"] = qini if has_treated else None
    conn.execute("DROP TABLE temp.f")
    ledger = conn.execute(LEDGER_SQL, {"tenant": tenant_id}).fetchall()
    spend = conn.execute(SPEND_SQL, {"tenant": tenant_id}).fetchall()
    volume = conn.execute(VOLUME_SQL, {"tenant": tenant_id}).fetchall()
    return {"policies": policies, "ledger": ledger, "spend": spend, "volume": volume}


# -- attribution ------------------------------------------------------------------------------

DAY = MS_PER_DAY
CLICKS_SQL = """
UPDATE touch SET opened_ms = c.ts FROM (
  SELECT t.id AS id, MIN(e.ts_ms) AS ts
  FROM event e JOIN touch t
    ON t.id = CAST(e.props ->> '$.touch_id' AS INTEGER) AND t.user_id = e.user_id
   AND t.tenant_id = :tenant
  WHERE e.tenant_id = :tenant AND e.type = 'message_open'
    AND e.ts_ms >= :since AND e.ts_ms <= :now
    AND (json_type(e.props, '$.touch_id') = 'integer'
         OR (json_type(e.props, '$.touch_id') = 'text'
             AND e.props ->> '$.touch_id' <> ''
             AND e.props ->> '$.touch_id' NOT GLOB '*[^0-9]*'))
    AND t.opened_ms IS NULL AND (t.sent_ms IS NULL OR t.sent_ms <= e.ts_ms)
  GROUP BY t.id
) c WHERE touch.id = c.id
"""
CLICKS_SINCE_SQL = """
SELECT MIN(sent_ms) FROM touch WHERE tenant_id = :tenant AND status = 'sent'
  AND NOT attributed AND opened_ms IS NULL
"""
OPEN_SQL = f"""
INSERT INTO temp.o
SELECT t.id AS id, t.user_id AS user, COALESCE(t.sent_ms, t.send_after_ms) AS at, w.ms AS win,
       t.coupon_id AS coupon_id
FROM touch t JOIN temp.win w ON w.policy_id = t.policy_id
WHERE t.tenant_id = :tenant AND t.status IN ({_IN_MEASURED}) AND NOT t.attributed
  AND COALESCE(t.sent_ms, t.send_after_ms) <= :now
"""
# The first event strictly after each touch: newest first, a running MIN over the user's
# events (a touch at the same ms as an event sorts before it, so that event is not "after").
RETURNS_SQL = """
INSERT INTO temp.r
WITH s AS (
  SELECT user_id AS user, ts_ms AS ts, 0 AS k, ts_ms AS ev, NULL AS id FROM event
  WHERE tenant_id = :tenant AND ts_ms > (SELECT MIN(at) FROM o) AND ts_ms <= :now
    AND user_id IN (SELECT user FROM o)
  UNION ALL SELECT user, at, 1, NULL, id FROM o
)
SELECT id, nxt FROM (
  SELECT id, MIN(ev) OVER (PARTITION BY user ORDER BY ts DESC, k DESC
                           ROWS UNBOUNDED PRECEDING) AS nxt
  FROM s
) WHERE id IS NOT NULL
"""
# Paid orders: the first after the send (as above) and the revenue in (send, send + window]:
# a running SUM, oldest first, read at the send (k = 1) and at the window's end (k = 2).
ORDERS_SQL = """
INSERT INTO temp.m
WITH s AS (
  SELECT user_id AS user, paid_ms AS ts, 0 AS k, paid_ms AS ev, amount_fen AS amt, NULL AS id
  FROM "order"
  WHERE tenant_id = :tenant AND status = 'paid' AND paid_ms > (SELECT MIN(at) FROM o)
    AND paid_ms <= :now AND user_id IN (SELECT user FROM o)
  UNION ALL SELECT user, at, 1, NULL, 0, id FROM o
  UNION ALL SELECT user, at + win, 2, NULL, 0, id FROM o
), w AS (
  SELECT id, k,
         MIN(ev) OVER (PARTITION BY user ORDER BY ts DESC, k DESC ROWS UNBOUNDED PRECEDING)
           AS nxt,
         SUM(amt) OVER (PARTITION BY user ORDER BY ts, k ROWS UNBOUNDED PRECEDING) AS cum
  FROM s
)
SELECT id, MAX(CASE WHEN k = 1 THEN nxt END) AS nxt,
       MAX(CASE WHEN k = 2 THEN cum END) - MAX(CASE WHEN k = 1 THEN cum END) AS revenue
FROM w WHERE id IS NOT NULL GROUP BY id
"""
OUTCOMES_SQL = """
UPDATE touch SET returned_ms = x.returned, ordered_ms = x.ordered, revenue_fen = x.revenue,
                 coupon_cost_fen = x.coupon_cost, attributed = x.done
FROM (
  SELECT o.id AS id,
         CASE WHEN r.nxt <= o.at + o.win THEN r.nxt END AS returned,
         CASE WHEN m.nxt <= o.at + o.win THEN m.nxt END AS ordered,
         COALESCE(m.revenue, 0) AS revenue,
         COALESCE((SELECT ct.amount_off_fen FROM coupon c
                   JOIN coupon_template ct ON ct.id = c.template_id
                   WHERE c.id = o.coupon_id AND c.status = 'redeemed'
                     AND c.redeemed_ms > o.at AND c.redeemed_ms <= o.at + o.win), 0)
           AS coupon_cost,
         :now >= o.at + o.win AS done
  FROM o LEFT JOIN r ON r.id = o.id LEFT JOIN m ON m.id = o.id
) x
WHERE touch.id = x.id
  AND (x.returned IS NOT NULL OR x.ordered IS NOT NULL OR x.revenue > 0 OR x.coupon_cost > 0
       OR x.done)
"""
# Retention: a visit in [start, start + week - 1 ms) with start = return + d days, as
# attribution's first_after(start - 1, window = week - 1) counts it; newest first, a running
# MIN where an event at the same ms as the start sorts before it (it counts).
RETENTION_SQL = f"""
INSERT INTO temp.k
WITH rr AS (
  SELECT id, user_id AS user, returned_ms AS r, retained_d7 IS NULL AS n7,
         retained_d30 IS NULL AS n30
  FROM touch WHERE tenant_id = :tenant AND returned_ms IS NOT NULL
    AND (retained_d7 IS NULL OR retained_d30 IS NULL) AND returned_ms <= :now - :first_due
), mk AS (
  SELECT id, user, 7 AS d, r + {RETENTION_DAYS[0]} * {DAY} AS start FROM rr
  WHERE n7 AND r + {RETENTION_DAYS[0]} * {DAY} + :week <= :now
  UNION ALL
  SELECT id, user, 30, r + {RETENTION_DAYS[1]} * {DAY} FROM rr
  WHERE n30 AND r + {RETENTION_DAYS[1]} * {DAY} + :week <= :now
), s AS (
  SELECT user_id AS user, ts_ms AS ts, 0 AS k, ts_ms AS ev, NULL AS id, NULL AS d FROM event
  WHERE tenant_id = :tenant AND ts_ms >= (SELECT MIN(start) FROM mk) AND ts_ms <= :now
    AND user_id IN (SELECT user FROM mk)
  UNION ALL SELECT user, start, 1, NULL, id, d FROM mk
)
SELECT id, d, nxt IS NOT NULL AND nxt <= ts + :week - 2 AS hit FROM (
  SELECT id, d, ts, MIN(ev) OVER (PARTITION BY user ORDER BY ts DESC, k
                                  ROWS UNBOUNDED PRECEDING) AS nxt
  FROM s
) WHERE id IS NOT NULL
"""
KEEP_SQL = """
UPDATE touch SET retained_d{d} = k.hit FROM (SELECT id, hit FROM temp.k WHERE d = {d}) k
WHERE touch.id = k.id
"""
# Keyed by touch id, so the final joins look rows up instead of scanning.
TEMP_TABLES = {
    "win": "policy_id INTEGER PRIMARY KEY, ms INTEGER",
    "o": "id INTEGER PRIMARY KEY, user INTEGER, at INTEGER, win INTEGER, coupon_id INTEGER",
    "r": "id INTEGER PRIMARY KEY, nxt INTEGER",
    "m": "id INTEGER PRIMARY KEY, nxt INTEGER, revenue INTEGER",
    "k": "id INTEGER, d INTEGER, hit INTEGER, PRIMARY KEY (d, id)",
}


def _windows(conn, tenant_id: int) -> list[tuple[int, int]]:
    """(policy id, window ms) of each readable policy, parsed as attribution parses them."""
    out = []
    for pid, src in conn.execute("SELECT id, source FROM policy WHERE tenant_id = ?", [tenant_id]):
        try:
            out.append((pid, parse_policy(src).attribution_window_days * MS_PER_DAY))
        except PolicyError:
            continue
    return out


def _write(conn, statements) -> None:
    """Run statements in one write transaction, as attribution writes each of its steps."""
    conn.execute("BEGIN IMMEDIATE")
    for sql, params in statements:
        conn.execute(sql, params)
    conn.execute("COMMIT")


def sql_attribute(conn: sqlite3.Connection, tenant_id: int, now_ms: int) -> None:
    """`attribute(tenant_id, now_ms)` in SQL (module docstring); timed whole."""
    for name, columns in TEMP_TABLES.items():
        conn.execute(f"DROP TABLE IF EXISTS temp.{name}")
        conn.execute(f"CREATE TEMP TABLE {name} ({columns})")
    p = {"tenant": tenant_id, "now": now_ms}
    (oldest,) = conn.execute(CLICKS_SINCE_SQL, p).fetchone()
    since = now_ms - 14 * MS_PER_DAY
    since = since if oldest is None else min(since, oldest)
    _write(conn, [(CLICKS_SQL, {**p, "since": since})])
    conn.executemany("INSERT INTO temp.win VALUES (?, ?)", _windows(conn, tenant_id))
    for sql in (OPEN_SQL, RETURNS_SQL, ORDERS_SQL):
        conn.execute(sql, p)
    _write(conn, [(OUTCOMES_SQL, p)])
    week = RETENTION_WINDOW_DAYS * MS_PER_DAY
    first_due = (RETENTION_DAYS[0] + RETENTION_WINDOW_DAYS) * MS_PER_DAY
    conn.execute(RETENTION_SQL, {**p, "week": week, "first_due": first_due})
    _write(conn, [(KEEP_SQL.format(d=d), {}) for d in RETENTION_DAYS])
    for name in TEMP_TABLES:
        conn.execute(f"DROP TABLE temp.{name}")


# -- checks -----------------------------------------------------------------------------------

ATTRIBUTED = (
    "returned_ms",
    "ordered_ms",
    "revenue_fen",
    "coupon_cost_fen",
    "attributed",
    "opened_ms",
    "retained_d7",
    "retained_d30",
)


def attribution_columns(conn, tenant_id: int) -> np.ndarray:
    """The columns attribution writes, every touch of the tenant by id (NULL as -1)."""
    cols = ", ".join(f"COALESCE({c}, -1)" for c in ("id", *ATTRIBUTED))
    rows = conn.execute(f"SELECT {cols} FROM touch WHERE tenant_id = ? ORDER BY id", [tenant_id])
    return np.array(rows.fetchall(), dtype=np.int64).reshape(-1, len(ATTRIBUTED) + 1)


def reset_attribution(conn, tenant_id: int) -> None:
    """Every touch back to how delivery left it: nothing attributed yet (untimed)."""
    _write(
        conn,
        [
            (
                "UPDATE touch SET returned_ms = NULL, ordered_ms = NULL, revenue_fen = 0, "
                "coupon_cost_fen = 0, attributed = 0, opened_ms = NULL, retained_d7 = NULL, "
                "retained_d30 = NULL WHERE tenant_id = ?",
                [tenant_id],
            )
        ],
    )
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


_MEASURE_KEYS = (
    "treated_users",
    "holdout_users",
    "lapsed_users",
    "holdout_lapsed_users",
    "recall_rate",
    "holdout_recall_rate",
    "incremental_recall",
    "active_users",
    "holdout_active_users",
    "retention_active",
    "holdout_retention_active",
    "incremental_retention_active",
    "order_rate",
    "holdout_order_rate",
    "revenue_per_user_fen",
    "holdout_revenue_per_user_fen",
    "incremental_revenue_per_user_fen",
    "money",
    "retention_d7",
    "retention_d30",
    "touches",
    "holdout_touches",
)


def _differences(a, b, path: str, out: list[str], rel: float = 1e-9) -> None:
    """Where two JSON-like values differ: ints and strings exactly, floats to `rel`."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                out.append(f"{path}.{key}: only in {'SQL' if key in b else 'report'}")
            else:
                _differences(a[key], b[key], f"{path}.{key}", out, rel)
    elif isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            out.append(f"{path}: {len(a)} vs {len(b)} items")
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            _differences(x, y, f"{path}[{i}]", out, rel)
    elif isinstance(a, float) or isinstance(b, float):
        if a is None or b is None or not math.isclose(a, b, rel_tol=rel, abs_tol=1e-12):
            out.append(f"{path}: report {a!r}, SQL {b!r}")
    elif a != b:
        out.append(f"{path}: report {a!r}, SQL {b!r}")


def _policy_view(entry: dict) -> dict:
    """A report's policy entry narrowed to what the SQL computes (not the power block)."""
    view = {k: entry[k] for k in _MEASURE_KEYS}
    for dim in DIMENSIONS:
        view[f"by_{dim}"] = [
            {dim: g[dim], **{k: g[k] for k in _MEASURE_KEYS}} for g in entry[f"by_{dim}"]
        ]
    view["funnel"] = entry["funnel"]
    view["cohorts"] = entry["cohorts"]
    view["qini_by_value"] = entry["qini_by_value"]
    return view


def compare_report(out: dict, sql: dict) -> list[str]:
    """Every figure of the report the SQL also gives, compared; [] when all agree."""
    diffs: list[str] = []
    mine = {e["policy"]: _policy_view(e) for e in out["policies"]}
    theirs = {}
    for name, p in sql["policies"].items():
        p = dict(p)
        for dim in DIMENSIONS:
            p[f"by_{dim}"] = sorted(p[f"by_{dim}"], key=lambda g, d=dim: g[d])
        p["funnel"] = sorted(p.get("funnel", []), key=lambda r: r["channel"])
        p["cohorts"] = sorted(p.get("cohorts", []), key=lambda r: r["week_of"])
        p.setdefault("qini_by_value", None)
        theirs[name] = p
    _differences(mine, theirs, "policies", diffs)
    decided: dict = {}
    for name, _day, _status, _reason, _arm, count, _quiet in sql["ledger"]:
        decided[name] = decided.get(name, 0) + count
    report_decided: dict = {}
    for row in out["ledger"]:
        report_decided[row["policy"]] = report_decided.get(row["policy"], 0) + row["decided"]
    _differences(report_decided, decided, "ledger.decided", diffs)
    committed: dict = {}
    for name, _day, _count, fen in sql["spend"]:
        committed[name] = committed.get(name, 0) + fen
    _differences({s["policy"]: s["committed_fen"] for s in out["spend"]}, committed, "spend", diffs)
    return diffs
