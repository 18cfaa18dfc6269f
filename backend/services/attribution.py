"""Attribution of touches: did the user come back, order, stay, and what did it earn and cost.

A visit is any event (as in scoring). Sent touches and holdout "would have sent" touches are
attributed by the same core functions, so their comparison is fair. A touch's outcome is final
(`attributed`) once its window has closed; retention after the return (D7, D30) is filled in
once those weeks have passed. docs/metrics.md defines each measure.
"""

from __future__ import annotations

import numpy as np
from peewee import fn

from backend.core.attribution import first_after, sum_within
from backend.core.calendar import MS_PER_DAY
from backend.core.metrics import RETENTION_DAYS, RETENTION_WINDOW_DAYS
from backend.store.db import execute_many, write_transaction
from backend.store.models import Coupon, CouponTemplate, Event, Order, Policy, Touch

# Intention to treat: a touch decided as a send counts whether or not it was delivered, so the
# treated group stays comparable with the holdout (whose would-have-sent touches also include
# users WeChat would have refused). Failed and expired touches are measured from their time.
MEASURED = ("sent", "held_out", "failed", "expired")


_AT = fn.COALESCE(Touch.sent_ms, Touch.send_after_ms)  # when it went, or was due to go


def _events(tenant_id: int, since: int, until: int, users: np.ndarray) -> np.ndarray:
    """(user index, ts) of the tenant's events in (since, until], users as indices."""
    ev = np.array(
        list(
            Event.select(Event.user, Event.ts_ms)
            .where((Event.tenant == tenant_id) & (Event.ts_ms > since) & (Event.ts_ms <= until))
            .tuples()
        ),
        dtype=np.int64,
    ).reshape(-1, 2)
    # No SQL IN list (SQLite limits bound parameters); the time range bounds the scan.
    ev = ev[np.isin(ev[:, 0], users)]
    ev[:, 0] = np.searchsorted(users, ev[:, 0])
    return ev


def attribute(tenant_id: int, now_ms: int) -> int:
    """Update every open touch of the tenant; returns how many became final."""
    final = _returns(tenant_id, now_ms)
    _retention(tenant_id, now_ms)
    _clicks(tenant_id, now_ms)
    return final


def _clicks(tenant_id: int, now_ms: int, lookback_days: int = 14) -> None:
    """A `message_open` event naming a touch (props.touch_id) means the user tapped that
    message: the funnel's "opened". WeChat does not report subscribe-message opens itself."""
    import json

    rows = (
        Event.select(Event.user, Event.ts_ms, Event.props)
        .where(
            (Event.tenant == tenant_id)
            & (Event.type == "message_open")
            & (Event.ts_ms > now_ms - lookback_days * MS_PER_DAY)
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


def _returns(tenant_id: int, now_ms: int) -> int:
    rows = list(
        Touch.select(Touch.id, Touch.user, _AT, Touch.coupon, Policy.source)
        .join(Policy)
        .where(
            (Touch.tenant == tenant_id)
            & Touch.status.in_(MEASURED)
            & ~Touch.attributed
            & (now_ms >= _AT)
        )
        .tuples()
    )
    if not rows:
        return 0
    from backend.services.policies import parse  # local: policies imports services

    windows: dict[str, int] = {}
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    user = np.array([r[1] for r in rows], dtype=np.int64)
    sent = np.array([r[2] for r in rows], dtype=np.int64)
    window = np.empty(len(rows), dtype=np.int64)
    for i, r in enumerate(rows):
        if r[4] not in windows:
            windows[r[4]] = parse(r[4]).attribution_window_days * MS_PER_DAY
        window[i] = windows[r[4]]
    since = int(sent.min())
    users = np.unique(user)
    ev = _events(tenant_id, since, now_ms, users)
    od = np.array(
        list(
            Order.select(Order.user, Order.paid_ms, Order.amount_fen)
            .where(
                (Order.tenant == tenant_id)
                & (Order.status == "paid")
                & (Order.paid_ms > since)
                & (Order.paid_ms <= now_ms)
                & Order.user.is_null(False)
            )
            .tuples()
        ),
        dtype=np.int64,
    ).reshape(-1, 3)
    od = od[np.isin(od[:, 0], users)]
    tu = np.searchsorted(users, user)
    ou = np.searchsorted(users, od[:, 0])

    returned = np.full(len(rows), -1, dtype=np.int64)
    ordered = np.full(len(rows), -1, dtype=np.int64)
    revenue = np.zeros(len(rows), dtype=np.int64)
    for w in np.unique(window):  # one pass per distinct window length
        m = window == w
        returned[m] = first_after(tu[m], sent[m], ev[:, 0], ev[:, 1], int(w))
        ordered[m] = first_after(tu[m], sent[m], ou, od[:, 1], int(w))
        revenue[m] = sum_within(tu[m], sent[m], ou, od[:, 1], od[:, 2], int(w))
    coupon_cost = _coupon_costs(rows, sent, window)
    done = now_ms >= sent + window

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
        for i in range(len(rows))
    ]
    with write_transaction():
        execute_many(
            "UPDATE touch SET returned_ms = ?, ordered_ms = ?, revenue_fen = ?, "
            "coupon_cost_fen = ?, attributed = ? WHERE id = ?",
            params,
        )
    return int(done.sum())


def _retention(tenant_id: int, now_ms: int) -> None:
    """Retained D7/D30: any visit in [r + N days, r + N + 7 days) after the return r, filled in
    once that week has passed."""
    rows = np.array(
        list(
            Touch.select(
                Touch.id,
                Touch.user,
                Touch.returned_ms,
                Touch.retained_d7.is_null(),
                Touch.retained_d30.is_null(),
            )
            .where(
                (Touch.tenant == tenant_id)
                & Touch.returned_ms.is_null(False)
                & (Touch.retained_d7.is_null() | Touch.retained_d30.is_null())
                & (
                    Touch.returned_ms
                    <= now_ms - (RETENTION_DAYS[0] + RETENTION_WINDOW_DAYS) * MS_PER_DAY
                )
            )
            .tuples()
        ),
        dtype=np.int64,
    ).reshape(-1, 5)
    if rows.size == 0:
        return
    users = np.unique(rows[:, 1])
    tu = np.searchsorted(users, rows[:, 1])
    ev = _events(tenant_id, int(rows[:, 2].min()), now_ms, users)
    length = RETENTION_WINDOW_DAYS * MS_PER_DAY
    result = {}
    for k, days in enumerate(RETENTION_DAYS):
        start = rows[:, 2] + days * MS_PER_DAY
        observable = (start + length <= now_ms) & (rows[:, 3 + k] == 1)
        # first event in [start, start + length): strictly after start − 1 ms, within length.
        hit = first_after(tu, start - 1, ev[:, 0], ev[:, 1], length - 1) >= 0
        result[k] = (observable, hit)
    params7 = [(bool(result[0][1][i]), int(rows[i, 0])) for i in np.flatnonzero(result[0][0])]
    params30 = [(bool(result[1][1][i]), int(rows[i, 0])) for i in np.flatnonzero(result[1][0])]
    with write_transaction():
        execute_many("UPDATE touch SET retained_d7 = ? WHERE id = ?", params7)
        execute_many("UPDATE touch SET retained_d30 = ? WHERE id = ?", params30)


def _coupon_costs(rows, sent: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Face value of each touch's coupon if it was redeemed within the touch's window."""
    out = np.zeros(len(rows), dtype=np.int64)
    coupon_ids = [r[3] for r in rows if r[3] is not None]
    if not coupon_ids:
        return out
    redeemed = {}
    for start in range(0, len(coupon_ids), 500):  # SQLite caps bound parameters per query
        chunk = coupon_ids[start : start + 500]
        query = (
            Coupon.select(Coupon.id, Coupon.redeemed_ms, CouponTemplate.amount_off_fen)
            .join(CouponTemplate)
            .where(Coupon.id.in_(chunk) & (Coupon.status == "redeemed"))
            .tuples()
        )
        redeemed.update({cid: (ms, face) for cid, ms, face in query})
    for i, r in enumerate(rows):
        hit = redeemed.get(r[3])
        if hit and hit[0] is not None and sent[i] < hit[0] <= sent[i] + window[i]:
            out[i] = hit[1]
    return out
