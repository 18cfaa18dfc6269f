"""One day's per-user activity totals: what the nightly fold (core.rolling) adds each day.

The simulator builds them straight from its day's activity (`at_hours`); a test or a caller
holding event and order columns takes them from those (`from_columns`). Every total is an
integer (session time in whole ms, hour directions in core.columns' fixed point), so the fold's
running sums equal the batch sums exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.core.calendar import is_weekend
from backend.core.columns import (
    HOUR_COS,
    HOUR_SIN,
    IS_CONTENT,
    IS_INTERACTION,
    IS_NIGHT,
    KIND_CODES,
    EventColumns,
    OrderColumns,
    session_ms,
)


@dataclass
class DayTotals:
    """One day's per-user totals: one row per user with any event or order that day.

    `user` must be unique and sorted. Columns left None are zero for everyone. `hour_sin` /
    `hour_cos` are Σ HOUR_SIN[hour] / Σ HOUR_COS[hour] over the user's events (fixed point,
    see core.columns); `session_ms` the session_end durations in whole milliseconds.
    """

    day: int
    user: np.ndarray
    events: np.ndarray | None = None
    night_events: np.ndarray | None = None
    weekend_events: np.ndarray | None = None
    hour_sin: np.ndarray | None = None
    hour_cos: np.ndarray | None = None
    session_ms: np.ndarray | None = None
    interactions: np.ndarray | None = None
    invites: np.ndarray | None = None
    content: np.ndarray | None = None
    orders: np.ndarray | None = None
    spend_fen: np.ndarray | None = None
    coupon_orders: np.ndarray | None = None

    @classmethod
    def empty(cls, day: int) -> DayTotals:
        """A day nobody was active: the fold still needs it, to move its windows on."""
        return cls(day, np.zeros(0, dtype=np.int64))

    @classmethod
    def at_hours(
        cls,
        day: int,
        user: np.ndarray,
        hour: np.ndarray,
        events: np.ndarray,
        **totals: np.ndarray | None,
    ) -> DayTotals:
        """Users whose events that day all came at one hour each (`hour`, 0–23): the night,
        weekend and hour-direction columns follow from the hour and the event count. The
        other columns (session_ms, orders, spend_fen, ...) are passed as keywords."""
        user = np.asarray(user, dtype=np.int64)
        hour = np.asarray(hour, dtype=np.int64)
        events = np.asarray(events, dtype=np.int64)
        return cls(
            day,
            user,
            events=events,
            night_events=events * IS_NIGHT[hour],
            weekend_events=events if bool(is_weekend(day)) else None,
            hour_sin=events * HOUR_SIN[hour],
            hour_cos=events * HOUR_COS[hour],
            **totals,
        )

    @classmethod
    def from_columns(cls, day: int, events: EventColumns, orders: OrderColumns) -> DayTotals:
        """The totals of the rows of `day` in event and order columns (other days ignored)."""
        e = events.day == day
        o = orders.day == day
        eu, ou = events.user[e].astype(np.intp), orders.user[o].astype(np.intp)
        # The day's users, sorted, and each row's position among them: through a flag per
        # user number (no sort; the same as np.unique and np.searchsorted).
        top = max(int(eu.max(initial=-1)), int(ou.max(initial=-1))) + 1
        flags = np.zeros(top, dtype=bool)
        flags[eu] = True
        flags[ou] = True
        user = np.flatnonzero(flags).astype(np.int64)
        position = np.cumsum(flags, dtype=np.intp) - 1
        ei, oi = position[eu], position[ou]
        hour, kind = events.hour[e], events.kind[e]

        def total(index: np.ndarray, values) -> np.ndarray:
            """Per-user sums of integer values: a float64 bincount, exact while every sum
            stays below 2^53 (hour directions are 2^26 per event), then back to int64."""
            weights = np.broadcast_to(np.asarray(values, dtype=np.float64), index.shape)
            sums = np.bincount(index, weights=weights, minlength=user.size)
            return np.rint(sums).astype(np.int64)

        count = total(ei, 1)
        return cls(
            day,
            user,
            events=count,
            night_events=total(ei, IS_NIGHT[hour]),
            weekend_events=count if bool(is_weekend(day)) else None,
            hour_sin=total(ei, HOUR_SIN[hour]),
            hour_cos=total(ei, HOUR_COS[hour]),
            session_ms=total(ei, session_ms(events.duration_s[e])),
            interactions=total(ei, IS_INTERACTION[kind]),
            invites=total(ei, kind == KIND_CODES["invite"]),
            content=total(ei, IS_CONTENT[kind]),
            orders=total(oi, 1),
            spend_fen=total(oi, orders.amount_fen[o]),
            coupon_orders=total(oi, orders.used_coupon[o]),
        )
