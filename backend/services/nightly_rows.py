"""The rows a night of scoring reads from the database, as the core's columns, and the
per-user ledger that says which of them a kept scoring state already holds.

`services/scoring.load_columns` (the oracle's loader) and the kept-state night
(`services/nightly_state.py`) read events through the same parser, so an event means the
same thing to both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields

import numpy as np
import peewee as pw

from backend.core.calendar import china_day, china_hour
from backend.core.columns import KIND_CODES, EventColumns, OrderColumns
from backend.store.models import Event, Order, User

NO_FIRST = 10**9  # a first-event day for users without events (later than any day)
NO_LAST = -(10**6)  # a last-event day for users without events (as load_columns has it)


def event_query(tenant_id: int, lo_ms: int | None, hi_ms: int) -> pw.Query:
    """The tenant's events with lo_ms <= ts_ms < hi_ms (lo_ms None: all before hi_ms), as
    (user id, ts_ms, type, props of session_end events or None) tuples."""
    where = (Event.tenant == tenant_id) & (Event.ts_ms < hi_ms)
    if lo_ms is not None:
        where &= Event.ts_ms >= lo_ms
    return (
        Event.select(
            Event.user,
            Event.ts_ms,
            Event.type,
            pw.Case(None, [(Event.type == "session_end", Event.props)], None),
        )
        .where(where)
        .tuples()
    )


def event_columns(rows, user_ids: np.ndarray) -> EventColumns:
    """Event rows as the core's columns, users numbered by their place in `user_ids`.

    Parameters
    ----------
    rows : (user id, ts_ms, type, props or None) tuples (`event_query`).
    user_ids : sorted int64 database ids; rows of other users are left out.

    Returns
    -------
    EventColumns: user (index into user_ids), China day and hour, kind code (unknown types
    0), session duration in seconds (from session_end's `duration_s`, else 0).
    """
    uid, ts, kind, duration = [], [], [], []
    for user, ts_ms, type_, props in rows:
        uid.append(user)
        ts.append(ts_ms)
        kind.append(KIND_CODES.get(type_, 0))
        duration.append(float(json.loads(props).get("duration_s", 0)) if props else 0.0)
    ts_arr = np.array(ts, dtype=np.int64)
    uid_arr = np.array(uid, dtype=np.int64)
    known = np.isin(uid_arr, user_ids)
    return EventColumns(
        user=np.searchsorted(user_ids, uid_arr[known]),
        day=china_day(ts_arr[known]),
        hour=china_hour(ts_arr[known]),
        kind=np.array(kind, dtype=np.int8)[known],
        duration_s=np.array(duration, dtype=np.float64)[known],
    )


def users_until(tenant_id: int, cutoff_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """The tenant's users created before `cutoff_ms`, in id order.

    Returns
    -------
    (ids, created_day) : int64 database ids (sorted) and each one's China day of creation.
    """
    rows = list(
        User.select(User.id, User.created_ms)
        .where((User.tenant == tenant_id) & (User.created_ms < cutoff_ms))
        .order_by(User.id)
        .tuples()
    )
    ids = np.array([u for u, _ in rows], dtype=np.int64)
    return ids, china_day(np.array([c for _, c in rows], dtype=np.int64))


def paid_orders(
    tenant_id: int, lo_ms: int | None, hi_ms: int, user_ids: np.ndarray
) -> tuple[OrderColumns, np.ndarray]:
    """The users' paid orders with lo_ms <= paid_ms < hi_ms (lo_ms None: all time).

    Parameters
    ----------
    tenant_id, lo_ms, hi_ms : whose orders, and when paid (UTC epoch ms).
    user_ids : sorted int64 database ids; orders of other users (or none) are left out.

    Returns
    -------
    (orders, order_ids) : OrderColumns (user index, China day, fen, coupon used) and each
    row's database id (int64).
    """
    where = (
        (Order.tenant == tenant_id)
        & (Order.status == "paid")
        & Order.user.is_null(False)
        & (Order.paid_ms < hi_ms)
    )
    if lo_ms is not None:
        where &= Order.paid_ms >= lo_ms
    rows = list(
        Order.select(
            Order.id, Order.user, Order.paid_ms, Order.amount_fen, Order.coupon.is_null(False)
        )
        .where(where)
        .tuples()
    )
    user = np.array([r[1] for r in rows], dtype=np.int64)
    keep = np.isin(user, user_ids)
    orders = OrderColumns(
        user=np.searchsorted(user_ids, user[keep]),
        day=china_day(np.array([r[2] for r in rows], dtype=np.int64))[keep],
        amount_fen=np.array([r[3] for r in rows], dtype=np.int64)[keep],
        used_coupon=np.array([bool(r[4]) for r in rows], dtype=bool)[keep],
    )
    return orders, np.array([r[0] for r in rows], dtype=np.int64)[keep]


def closed_totals(tenant_id: int, cutoff_ms: int) -> dict[str, int]:
    """What the database holds before `cutoff_ms`, summed over the tenant: the events, and
    the paid orders of users not erased (count, fen, ids, with a coupon). Compared with a
    ledger's totals, any row added, refunded, re-linked or deleted since shows.

    Returns
    -------
    {"events", "orders", "spend", "order_ids", "coupons"} -> int.
    """
    events = Event.select(pw.fn.COUNT(Event.id)).where(
        (Event.tenant == tenant_id) & (Event.ts_ms < cutoff_ms)
    )
    orders = Order.select(
        pw.fn.COUNT(Order.id),
        pw.fn.SUM(Order.amount_fen),
        pw.fn.SUM(Order.id),
        pw.fn.COUNT(Order.coupon),
    ).where(
        (Order.tenant == tenant_id)
        & (Order.status == "paid")
        & Order.user.is_null(False)
        & (Order.paid_ms < cutoff_ms)
    )
    count, spend, ids, coupons = orders.tuples().get()
    return {
        "events": int(events.scalar() or 0),
        "orders": int(count or 0),
        "spend": int(spend or 0),
        "order_ids": int(ids or 0),
        "coupons": int(coupons or 0),
    }


def event_spans(
    tenant_id: int, cutoff_ms: int, user_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each user's events before `cutoff_ms`, all time, in one grouped query.

    Returns
    -------
    (rows, first_day, last_day, count): positions into `user_ids` (sorted int64 ids) of the
    users with events there, and their first and last China day and event count.
    """
    agg = list(
        Event.select(
            Event.user, pw.fn.MIN(Event.ts_ms), pw.fn.MAX(Event.ts_ms), pw.fn.COUNT(Event.id)
        )
        .where((Event.tenant == tenant_id) & (Event.ts_ms < cutoff_ms))
        .group_by(Event.user)
        .tuples()
    )
    cols = np.array(agg, dtype=np.int64).reshape(-1, 4)
    at = np.searchsorted(user_ids, cols[:, 0])
    known = at < user_ids.size
    known[known] = user_ids[at[known]] == cols[known, 0]
    cols = cols[known]
    return at[known], china_day(cols[:, 1]), china_day(cols[:, 2]), cols[:, 3]


def seen_until(tenant_id: int, cutoff_ms: int, user_ids: np.ndarray) -> Ledger:
    """A ledger of the users' events before `cutoff_ms` (first and last day, count; all
    time), orders not yet added."""
    ledger = Ledger.fresh(user_ids.size)
    rows, first, last, count = event_spans(tenant_id, cutoff_ms, user_ids)
    ledger.first_event[rows] = first
    ledger.last_event[rows] = last
    ledger.events[rows] = count
    return ledger


@dataclass
class Ledger:
    """Per user (int64, in the state's order), what a kept state holds up to its day: first
    and last event day (NO_FIRST / NO_LAST without events) and event count, all time; paid
    orders, their fen, ids and coupon orders. Its totals are compared with the database's
    (`closed_totals`) before the state is used again."""

    first_event: np.ndarray
    last_event: np.ndarray
    events: np.ndarray
    orders: np.ndarray
    spend: np.ndarray
    order_ids: np.ndarray
    coupons: np.ndarray

    @classmethod
    def fresh(cls, n: int) -> Ledger:
        """n users with nothing yet."""
        zeros = {f.name: np.zeros(n, dtype=np.int64) for f in fields(cls)}
        zeros["first_event"] = np.full(n, NO_FIRST, dtype=np.int64)
        zeros["last_event"] = np.full(n, NO_LAST, dtype=np.int64)
        return cls(**zeros)

    def resized(self, keep: np.ndarray, add: int) -> Ledger:
        """Erased users (keep false) dropped, `add` new ones appended (as ScoreState.resize)."""
        fresh = Ledger.fresh(add)
        return Ledger(
            **{
                f.name: np.concatenate([getattr(self, f.name)[keep], getattr(fresh, f.name)])
                for f in fields(self)
            }
        )

    def add(self, events: EventColumns, orders: OrderColumns, order_ids: np.ndarray) -> None:
        """Count rows into the ledger (the rows of the days a state has just taken in)."""
        user = events.user.astype(np.intp)
        np.minimum.at(self.first_event, user, events.day.astype(np.int64))
        np.maximum.at(self.last_event, user, events.day.astype(np.int64))
        np.add.at(self.events, user, 1)
        buyer = orders.user.astype(np.intp)
        np.add.at(self.orders, buyer, 1)
        np.add.at(self.spend, buyer, orders.amount_fen.astype(np.int64))
        np.add.at(self.order_ids, buyer, order_ids.astype(np.int64))
        np.add.at(self.coupons, buyer, orders.used_coupon.astype(np.int64))

    def totals(self) -> dict[str, int]:
        """The sums `closed_totals` gives when the database still holds what the state does."""
        names = ("events", "orders", "spend", "order_ids", "coupons")
        return {name: int(getattr(self, name).sum()) for name in names}

    def seen(self, created_day: np.ndarray, recent: EventColumns) -> tuple[np.ndarray, np.ndarray]:
        """first_seen and last_seen as load_columns gives them: the first of sign-up and
        first event, and the last event (the sign-up without any), over the ledger's events
        and the `recent` ones after them.

        Returns
        -------
        (first_seen, last_seen) : int64 China days per user.
        """
        first = np.minimum(created_day, self.first_event)
        last = self.last_event.copy()
        user = recent.user.astype(np.intp)
        np.minimum.at(first, user, recent.day.astype(np.int64))
        np.maximum.at(last, user, recent.day.astype(np.int64))
        return first, np.where(last == NO_LAST, created_day, last)

    def arrays(self) -> dict[str, np.ndarray]:
        """The ledger as named arrays ("ledger.<field>")."""
        return {f"ledger.{f.name}": getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], n: int) -> Ledger:
        """The ledger `arrays` gave; a ValueError unless each field is n int64 values."""
        out = {}
        for f in fields(cls):
            values = np.asarray(arrays[f"ledger.{f.name}"])
            if values.shape != (n,) or values.dtype != np.int64:
                raise ValueError(f"ledger.{f.name} is not {n} int64 values")
            out[f.name] = values
        return cls(**out)
