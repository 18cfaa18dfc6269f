"""Attribution of touches: did the user come back, order, stay, and what did it earn and cost.

A visit is any event (as in scoring). Sent touches and holdout "would have sent" touches are
attributed by the same core functions, so their comparison is fair. A touch's outcome is final
(`attributed`) once its window has closed; retention after the return (D7, D30) is filled in
once those weeks have passed. docs/metrics.md defines each measure.
"""

from __future__ import annotations

import json

import numpy as np

from backend.core.attribution import first_after, sum_within
from backend.core.calendar import MS_PER_DAY
from backend.core.metrics import RETENTION_DAYS, RETENTION_WINDOW_DAYS
from backend.core.policy import PolicyError, parse_policy
from backend.store.db import database, execute_many, write_transaction
from backend.store.models import Event

# Intention to treat: a touch decided as a send counts whether or not it was delivered, so the
# treated group stays comparable with the holdout (whose would-have-sent touches also include
# users WeChat would have refused). Failed and expired touches are measured from their time.
MEASURED = ("sent", "held_out", "failed", "expired")


_STATUSES = ", ".join(f"'{s}'" for s in MEASURED)


def _query(sql: str, params: list) -> list[tuple]:
    """Rows through the driver's cursor: attribution reads millions of event rows, and a
    Python object per row would cost most of its time."""
    return database.execute_sql(sql.replace("?", database.param), params).fetchall()


def _events(tenant_id: int, since: int, until: int, users: np.ndarray) -> np.ndarray:
    """(user index into `users`, ts) of the tenant's events in (since, until]."""
    rows = _query(
        "SELECT user_id, ts_ms FROM event WHERE tenant_id = ? AND ts_ms > ? AND ts_ms <= ?",
        [tenant_id, since, until],
    )
    ev = np.array(rows, dtype=np.int64).reshape(-1, 2)
    # No SQL IN list (SQLite limits bound parameters); the time range bounds the scan.
    ev = ev[np.isin(ev[:, 0], users)]
    ev[:, 0] = np.searchsorted(users, ev[:, 0])
    return ev


def attribute(tenant_id: int, now_ms: int) -> int:
    """Update every open touch of the tenant; returns how many became final.

    The campaign job runs it before deciding, so the caps, the ignored streaks and the report
    read final outcomes (returns, orders, opens, retention) for sends and holdouts alike."""
    retention_from = _query(
        "SELECT MIN(returned_ms) FROM touch WHERE tenant_id = ? AND returned_ms IS NOT NULL "
        "AND (retained_d7 IS NULL OR retained_d30 IS NULL)",
        [tenant_id],
    )[0][0]
    _clicks(tenant_id, now_ms)  # first: it looks back to the touches still open
    final, events = _returns(tenant_id, now_ms, retention_from)
    _retention(tenant_id, now_ms, events)
    return final


class _EventCache:
    """The tenant's events since a time, loaded once for returns and retention alike."""

    def __init__(self, tenant_id: int, since: int | None, until: int) -> None:
        self.tenant_id, self.since, self.until = tenant_id, since, until
        self._all: np.ndarray | None = None

    def for_users(self, users: np.ndarray, since: int) -> np.ndarray:
        """(index into `users`, ts) of their events after `since`: from the cache when it
        reaches back that far, else from the database."""
        if self.since is None or since < self.since:
            return _events(self.tenant_id, since, self.until, users)
        if self._all is None:
            rows = _query(
                "SELECT user_id, ts_ms FROM event WHERE tenant_id = ? AND ts_ms > ? AND ts_ms <= ?",
                [self.tenant_id, self.since, self.until],
            )
            self._all = np.array(rows, dtype=np.int64).reshape(-1, 2)
        ev = self._all[(self._all[:, 1] > since) & np.isin(self._all[:, 0], users)]
        ev[:, 0] = np.searchsorted(users, ev[:, 0])
        return ev


def _windows(tenant_id: int) -> dict[int, int]:
    """Attribution window (ms) of each of the tenant's readable policies."""
    windows = {}
    for pid, src in _query("SELECT id, source FROM policy WHERE tenant_id = ?", [tenant_id]):
        try:
            windows[int(pid)] = parse_policy(src).attribution_window_days * MS_PER_DAY
        except PolicyError:
            continue
    return windows


def _returns(tenant_id: int, now_ms: int, retention_from: int | None):
    rows = _query(
        "SELECT id, user_id, COALESCE(sent_ms, send_after_ms), coupon_id, policy_id "
        f"FROM touch WHERE tenant_id = ? AND status IN ({_STATUSES}) AND NOT attributed "
        "AND COALESCE(sent_ms, send_after_ms) <= ?",
        [tenant_id, now_ms],
    )
    t = np.array([r[:3] + (r[4],) for r in rows], dtype=np.int64).reshape(-1, 4)
    since = int(t[:, 2].min()) if len(t) else None
    if retention_from is not None:
        start = retention_from + RETENTION_DAYS[0] * MS_PER_DAY - 1
        since = start if since is None else min(since, start)
    events = _EventCache(tenant_id, since, now_ms)
    if not len(t):
        return 0, events
    windows = _windows(tenant_id)
    # A policy whose stored source cannot be read has no known window: its touches stay open
    # (attributed once it is fixed) instead of stopping the tenant's whole run.
    # In numpy, not a Python loop over every open touch: sorted policy ids and their windows.
    known = np.fromiter(windows.keys(), dtype=np.int64, count=len(windows))
    order = np.argsort(known)
    known = known[order]
    lengths = np.fromiter(windows.values(), dtype=np.int64, count=len(windows))[order]
    t = t[np.isin(t[:, 3], known)]
    if not len(t):
        return 0, events
    ids, user, sent = t[:, 0], t[:, 1], t[:, 2]
    window = lengths[np.searchsorted(known, t[:, 3])]
    users = np.unique(user)
    ev = events.for_users(users, int(sent.min()))
    od = np.array(
        _query(
            'SELECT user_id, paid_ms, amount_fen FROM "order" WHERE tenant_id = ? '
            "AND status = 'paid' AND paid_ms > ? AND paid_ms <= ? AND user_id IS NOT NULL",
            [tenant_id, int(sent.min()), now_ms],
        ),
        dtype=np.int64,
    ).reshape(-1, 3)
    od = od[np.isin(od[:, 0], users)]
    tu = np.searchsorted(users, user)
    ou = np.searchsorted(users, od[:, 0])

    returned = np.full(len(t), -1, dtype=np.int64)
    ordered = np.full(len(t), -1, dtype=np.int64)
    revenue = np.zeros(len(t), dtype=np.int64)
    for w in np.unique(window):  # one pass per distinct window length
        m = window == w
        returned[m] = first_after(tu[m], sent[m], ev[:, 0], ev[:, 1], int(w))
        ordered[m] = first_after(tu[m], sent[m], ou, od[:, 1], int(w))
        revenue[m] = sum_within(tu[m], sent[m], ou, od[:, 1], od[:, 2], int(w))
    coupon_cost = _coupon_costs(tenant_id, ids, sent, window)
    done = now_ms >= sent + window
    # Only rows that change: a touch with no outcome yet and an open window stays as it is.
    changed = np.flatnonzero(
        (returned >= 0) | (ordered >= 0) | (revenue > 0) | (coupon_cost > 0) | done
    )

    def opt(v: np.ndarray, i: int):
        return int(v[i]) if v[i] >= 0 else None

    params = [
        (
            opt(returned, i),
            opt(ordered, i),
            int(revenue[i]),
            int(coupon_cost[i]),
            bool(done[i]),
            int(ids[i]),
        )
        for i in changed
    ]
    with write_transaction():
        execute_many(
            "UPDATE touch SET returned_ms = ?, ordered_ms = ?, revenue_fen = ?, "
            "coupon_cost_fen = ?, attributed = ? WHERE id = ?",
            params,
        )
    return int(done.sum()), events


def _clicks(tenant_id: int, now_ms: int, lookback_days: int = 14) -> None:
    """A `message_open` event naming a touch (props.touch_id) means the user tapped that
    message: the funnel's "opened". WeChat does not report subscribe-message opens itself.

    Looks back over the last two weeks, or further when a sent touch is still being
    attributed (a first run or a backfill), so no tap on an open touch is missed."""
    oldest = _query(
        "SELECT MIN(sent_ms) FROM touch WHERE tenant_id = ? AND status = 'sent' "
        "AND NOT attributed AND opened_ms IS NULL",
        [tenant_id],
    )[0][0]
    since = now_ms - lookback_days * MS_PER_DAY
    if oldest is not None:
        since = min(since, int(oldest))
    rows = (
        Event.select(Event.user, Event.ts_ms, Event.props)
        .where(
            (Event.tenant == tenant_id)
            & (Event.type == "message_open")
            & (Event.ts_ms >= since)
            & (Event.ts_ms <= now_ms)
        )
        .tuples()
    )
    params = []
    for user, ts, props in rows:
        touch_id = json.loads(props or "{}").get("touch_id")
        if isinstance(touch_id, int) or (isinstance(touch_id, str) and touch_id.isdigit()):
            params.append((int(ts), int(touch_id), int(user), tenant_id, int(ts)))
    with write_transaction():
        execute_many(
            "UPDATE touch SET opened_ms = ? WHERE id = ? AND user_id = ? AND tenant_id = ? "
            "AND opened_ms IS NULL AND (sent_ms IS NULL OR sent_ms <= ?)",
            params,
        )


def _retention(tenant_id: int, now_ms: int, events: _EventCache) -> None:
    """Retained D7/D30: any visit in [r + N days, r + N + 7 days) after the return r, filled in
    once that week has passed."""
    first_due = (RETENTION_DAYS[0] + RETENTION_WINDOW_DAYS) * MS_PER_DAY
    rows = np.array(
        _query(
            "SELECT id, user_id, returned_ms, retained_d7 IS NULL, retained_d30 IS NULL "
            "FROM touch WHERE tenant_id = ? AND returned_ms IS NOT NULL "
            "AND (retained_d7 IS NULL OR retained_d30 IS NULL) AND returned_ms <= ?",
            [tenant_id, now_ms - first_due],
        ),
        dtype=np.int64,
    ).reshape(-1, 5)
    if rows.size == 0:
        return
    users = np.unique(rows[:, 1])
    tu = np.searchsorted(users, rows[:, 1])
    ev = events.for_users(users, int(rows[:, 2].min()) + RETENTION_DAYS[0] * MS_PER_DAY - 1)
    length = RETENTION_WINDOW_DAYS * MS_PER_DAY
    updates = []
    for k, days in enumerate(RETENTION_DAYS):
        start = rows[:, 2] + days * MS_PER_DAY
        observable = (start + length <= now_ms) & (rows[:, 3 + k] == 1)
        # first event in [start, start + length): strictly after start − 1 ms, within length.
        hit = first_after(tu, start - 1, ev[:, 0], ev[:, 1], length - 1) >= 0
        column = f"retained_d{days}"
        params = [(bool(hit[i]), int(rows[i, 0])) for i in np.flatnonzero(observable)]
        updates.append((f"UPDATE touch SET {column} = ? WHERE id = ?", params))
    with write_transaction():
        for sql, params in updates:
            execute_many(sql, params)


def _coupon_costs(tenant_id: int, ids: np.ndarray, sent: np.ndarray, window: np.ndarray):
    """Face value of each touch's coupon if it was redeemed within the touch's window."""
    redeemed = {
        tid: (ms, face)
        for tid, ms, face in _query(
            "SELECT t.id, c.redeemed_ms, ct.amount_off_fen FROM touch t "
            "JOIN coupon c ON c.id = t.coupon_id "
            "JOIN coupon_template ct ON ct.id = c.template_id "
            "WHERE t.tenant_id = ? AND NOT t.attributed AND c.status = 'redeemed'",
            [tenant_id],
        )
    }
    out = np.zeros(len(ids), dtype=np.int64)
    if not redeemed:
        return out
    for i, tid in enumerate(ids.tolist()):
        hit = redeemed.get(tid)
        if hit and hit[0] is not None and sent[i] < hit[0] <= sent[i] + window[i]:
            out[i] = hit[1]
    return out
