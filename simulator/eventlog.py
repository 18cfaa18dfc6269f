"""The simulated campus's event log, in the columns the scoring layer reads.

Each day's visits and orders become rows exactly like those the backend loads from its event
table (an `app_open` and a `session_end` per visit, an `order_paid` and an order per order, a
`payment_failed` — kind 0, as the backend loads a type no scoring rule names — per failed
attempt),
kept for the scoring layer's lookback. The model scores from a fold of the same sums
(backend/core/rolling.py); this log is for inspection and for the tests that check the fold
against production's `score_users` on these columns.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from backend.core.columns import KIND_CODES, EventColumns, OrderColumns
from backend.core.features import LOOKBACK_DAYS
from simulator.campus import DayActivity

APP_OPEN, SESSION_END, ORDER_PAID = (
    KIND_CODES[k] for k in ("app_open", "session_end", "order_paid")
)
PAYMENT_FAILED = KIND_CODES.get("payment_failed", 0)


EMPTY = {"kind": np.int8, "duration_s": np.float64, "used_coupon": bool}


class EventLog:
    """The last `lookback` days of simulated events, and every order (all-time totals and
    the repeat-purchase model need them all, as production loads them all)."""

    def __init__(self, lookback: int = LOOKBACK_DAYS) -> None:
        self.lookback = lookback
        self._events: deque[EventColumns] = deque()
        self._orders: deque[OrderColumns] = deque()

    def add_day(
        self,
        day: int,
        today: DayActivity,
        usual_hour: np.ndarray,
        session_s: np.ndarray,
        used_coupon: np.ndarray | None = None,
        payment_failed: np.ndarray | None = None,
    ) -> None:
        """Append one day: `session_s` is each visitor's session length in seconds;
        `payment_failed` marks the users whose payment failed once that day."""
        users = np.flatnonzero(today.visited)
        buyers = np.flatnonzero(today.ordered)
        failed = np.zeros(0, np.int64) if payment_failed is None else np.flatnonzero(payment_failed)
        k = users.size
        hours = usual_hour[users].astype(np.int64)
        self._events.append(
            EventColumns(
                user=np.concatenate([users, users, buyers, failed]).astype(np.int64),
                day=np.full(2 * k + buyers.size + failed.size, day, dtype=np.int64),
                hour=np.concatenate(
                    [hours, hours, usual_hour[buyers].astype(np.int64)]
                    + [usual_hour[failed].astype(np.int64)]
                ),
                kind=np.concatenate(
                    [
                        np.full(k, APP_OPEN, np.int8),
                        np.full(k, SESSION_END, np.int8),
                        np.full(buyers.size, ORDER_PAID, np.int8),
                        np.full(failed.size, PAYMENT_FAILED, np.int8),
                    ]
                ),
                duration_s=np.concatenate(
                    [np.zeros(k), session_s[users], np.zeros(buyers.size + failed.size)]
                ),
            )
        )
        coupon = np.zeros(buyers.size, bool) if used_coupon is None else used_coupon[buyers]
        self._orders.append(
            OrderColumns(
                user=buyers.astype(np.int64),
                day=np.full(buyers.size, day, dtype=np.int64),
                amount_fen=today.amount_fen[buyers],
                used_coupon=coupon,
            )
        )
        while len(self._events) > self.lookback:
            self._events.popleft()

    def columns(self) -> tuple[EventColumns, OrderColumns]:
        def join(blocks, cls, names):
            if not blocks:  # typed like real columns: the scoring layer indexes with them
                return cls(*(np.zeros(0, dtype=EMPTY.get(n, np.int64)) for n in names))
            return cls(*(np.concatenate([getattr(b, n) for b in blocks]) for n in names))

        events = join(self._events, EventColumns, ("user", "day", "hour", "kind", "duration_s"))
        orders = join(self._orders, OrderColumns, ("user", "day", "amount_fen", "used_coupon"))
        return events, orders
