"""Attribution of touches: did the user come back, order, and what did it earn and cost.

A visit is any event (as in scoring). Sent touches and holdout "would have sent" touches are
attributed by the same core functions, so their comparison is fair. A touch's outcome is final
(`attributed`) once its window has closed; until then it may still gain a return.
"""

from __future__ import annotations

import numpy as np

from backend.core.attribution import first_after, sum_within
from backend.core.calendar import MS_PER_DAY
from backend.store.db import write_transaction
from backend.store.models import Coupon, CouponTemplate, Event, Order, Policy, Touch

MEASURED = ("sent", "held_out")


def attribute(tenant_id: int, now_ms: int) -> int:
    """Update every open touch of the tenant; returns how many became final."""
    rows = list(
        Touch.select(
            Touch.id,
            Touch.user,
            Touch.sent_ms,
            Touch.coupon,
            Policy.source,
        )
        .join(Policy)
        .where(
            (Touch.tenant == tenant_id)
            & Touch.status.in_(MEASURED)
            & ~Touch.attributed
            & Touch.sent_ms.is_null(False)
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
        src = r[4]
        if src not in windows:
            windows[src] = parse(src).attribution_window_days * MS_PER_DAY
        window[i] = windows[src]
    since = int(sent.min())
    users = np.unique(user)

    ev = np.array(
        list(
            Event.select(Event.user, Event.ts_ms)
            .where((Event.tenant == tenant_id) & (Event.ts_ms > since) & (Event.ts_ms <= now_ms))
            .tuples()
        ),
        dtype=np.int64,
    ).reshape(-1, 2)
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
    # Users as small indices; events of other users are dropped (no SQL IN list: SQLite
    # limits bound parameters, and the time range already bounds the scan).
    ev = ev[np.isin(ev[:, 0], users)]
    od = od[np.isin(od[:, 0], users)]
    tu = np.searchsorted(users, user)
    eu = np.searchsorted(users, ev[:, 0])
    ou = np.searchsorted(users, od[:, 0])

    returned = np.full(len(rows), -1, dtype=np.int64)
    ordered = np.full(len(rows), -1, dtype=np.int64)
    revenue = np.zeros(len(rows), dtype=np.int64)
    for w in np.unique(window):  # one pass per distinct window length
        m = window == w
        returned[m] = first_after(tu[m], sent[m], eu, ev[:, 1], int(w))
        ordered[m] = first_after(tu[m], sent[m], ou, od[:, 1], int(w))
        revenue[m] = sum_within(tu[m], sent[m], ou, od[:, 1], od[:, 2], int(w))
    coupon_cost = _coupon_costs(rows, sent, window)
    final = now_ms >= sent + window

    with write_transaction():
        for i in range(len(rows)):
            Touch.update(
                returned_ms=int(returned[i]) if returned[i] >= 0 else None,
                ordered_ms=int(ordered[i]) if ordered[i] >= 0 else None,
                revenue_fen=int(revenue[i]),
                coupon_cost_fen=int(coupon_cost[i]),
                attributed=bool(final[i]),
            ).where(Touch.id == int(ids[i])).execute()
    return int(final.sum())


def _coupon_costs(rows, sent: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Face value of each touch's coupon if it was redeemed within the touch's window."""
    out = np.zeros(len(rows), dtype=np.int64)
    coupon_ids = [r[3] for r in rows if r[3] is not None]
    if not coupon_ids:
        return out
    redeemed = {
        cid: (ms, face)
        for cid, ms, face in Coupon.select(
            Coupon.id, Coupon.redeemed_ms, CouponTemplate.amount_off_fen
        )
        .join(CouponTemplate)
        .where(Coupon.id.in_(coupon_ids) & (Coupon.status == "redeemed"))
        .tuples()
    }
    for i, r in enumerate(rows):
        hit = redeemed.get(r[3])
        if hit and hit[0] is not None and sent[i] < hit[0] <= sent[i] + window[i]:
            out[i] = hit[1]
    return out
