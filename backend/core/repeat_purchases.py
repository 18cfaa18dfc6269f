"""The repeat-purchase summary BG/NBD reads: (frequency, recency, T) per user, in term days.

Fitted and scored on a daily grid (core.bgnbd). The batch path computes it from the day's
sums (core.features.features_from); the rolling fold keeps each user's `PurchaseSpan` and
refreshes only those whose first visit or orders moved (core.rolling).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.core.calendar import TermCalendar
from backend.core.columns import (
    LAST_NONE,
    OrderColumns,
    distinct_user_days,
    last_and_first,
    term_day_count,
)


@dataclass
class PurchaseSpan:
    """Where each user's repeat-purchase clock starts and ends, in term-day counts: what
    (frequency, recency, T) need besides the day. It moves only when a user first visits or
    orders (or first_seen changes, or the start is capped at the day), so the rolling fold
    keeps it and refreshes those users only."""

    frequency: np.ndarray
    start: np.ndarray  # day number: the first order, else the first visit; at most as_of
    at_start: np.ndarray  # term_day_count of the start
    at_end: np.ndarray  # ... of the last order (the start for non-buyers)


def purchase_span(
    order_days: np.ndarray,
    first_order: np.ndarray,
    last_order: np.ndarray,
    first_visit: np.ndarray,
    as_of: int,
    calendar: TermCalendar,
) -> PurchaseSpan:
    """Where each user's repeat-purchase clock starts and ends (see `PurchaseSpan`).

    Parameters
    ----------
    order_days : int64 distinct days with an order, all time.
    first_order, last_order : int64 day numbers (FIRST_NONE / LAST_NONE for non-buyers).
    first_visit : int64 day number of the first visit (FIRST_NONE if never seen).
    as_of, calendar : the day scored, and the breaks cut out of time.
    """
    bought = last_order > LAST_NONE
    start = np.minimum(np.where(bought, first_order, first_visit), as_of)
    return PurchaseSpan(
        frequency=np.maximum(order_days - 1, 0),
        start=start,
        at_start=term_day_count(calendar, start),
        at_end=term_day_count(calendar, np.where(bought, last_order, start)),
    )


def repeat_from_span(
    span: PurchaseSpan, as_of: int, calendar: TermCalendar
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frequency, recency, T) on `as_of` (see `repeat_purchases`)."""
    big_t = calendar.term_day_count(as_of) - span.at_start
    # Recency runs from the start to the last order; 0 for a non-buyer (start to start).
    recency = np.subtract(span.at_end, span.at_start)
    np.minimum(recency, big_t, out=recency)
    return span.frequency, recency, big_t


def repeat_purchases(
    order_days: np.ndarray,
    first_order: np.ndarray,
    last_order: np.ndarray,
    first_visit: np.ndarray,
    as_of: int,
    calendar: TermCalendar,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frequency, recency, T) for BG/NBD on a daily grid, in term days.

    frequency = distinct order days after the first; recency = term days from the first to
    the last order day; T = term days from the first order day to `as_of`. A user who never
    ordered is counted from their first visit with frequency 0 (the model then reads them as
    a customer who has not yet repeated). Breaks are cut out of time, so a vacation is not
    read as silence.
    """
    span = purchase_span(order_days, first_order, last_order, first_visit, as_of, calendar)
    return repeat_from_span(span, as_of, calendar)


def repeat_purchase_summary(
    orders: OrderColumns, n: int, as_of: int, calendar: TermCalendar, first_visit: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frequency, recency, T) from order columns (see `repeat_purchases`)."""
    ou, od = distinct_user_days(orders.user, orders.day)
    last, first = last_and_first(ou, od, n)
    days = np.bincount(ou, minlength=n)[:n]
    return repeat_purchases(days, first, last, first_visit, as_of, calendar)
