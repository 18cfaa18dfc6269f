"""Per-user features as of a day, from columns of events and orders (no database here).

The backend fills the columns from SQL, the simulator from its model state; both get the same
numbers. Everything is bincount/unique over whole columns: no Python loop over users.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from backend.core.calendar import TermCalendar

# Event kinds the scoring layer distinguishes; every other type is code 0 ("other").
KIND_CODES: dict[str, int] = {
    "app_open": 1,
    "session_end": 2,
    "order_paid": 3,
    "share": 4,
    "invite": 5,
    "review": 6,
    "like": 7,
    "comment": 8,
}
INTERACTIONS = (4, 5, 6, 7, 8)
CONTENT = (6, 8)  # reviews and comments: the user produced something
NIGHT_HOURS = (21, 22, 23, 0, 1)


def _lookup(members: tuple[int, ...], size: int) -> np.ndarray:
    """A boolean table indexed by code: `table[codes]` is a fast `isin`."""
    table = np.zeros(size, dtype=bool)
    table[list(members)] = True
    return table


IS_INTERACTION = _lookup(INTERACTIONS, 128)
IS_CONTENT = _lookup(CONTENT, 128)
IS_NIGHT = _lookup(NIGHT_HOURS, 24)
NEVER = 100_000  # "days since" for something that never happened
WINDOWS = (7, 14, 30, 90)
LOOKBACK_DAYS = 120  # events older than this change no feature (90-day windows + 28 for baselines)


@dataclass
class EventColumns:
    """One row per event. `day`/`hour` are China time (see core.calendar)."""

    user: np.ndarray  # int64 index 0..n_users-1
    day: np.ndarray  # int64 day number
    hour: np.ndarray  # int64 0..23
    kind: np.ndarray  # int8, KIND_CODES
    duration_s: np.ndarray  # float64; session_end only, else 0


@dataclass
class OrderColumns:
    user: np.ndarray
    day: np.ndarray
    amount_fen: np.ndarray  # int64
    used_coupon: np.ndarray  # bool


@dataclass
class Features:
    days_since_visit: np.ndarray
    term_days_since_visit: np.ndarray
    days_since_order: np.ndarray
    age_days: np.ndarray
    visit_days_7: np.ndarray
    visit_days_14: np.ndarray
    visit_days_30: np.ndarray
    visit_days_90: np.ndarray
    orders_7: np.ndarray
    orders_14: np.ndarray
    orders_30: np.ndarray
    orders_90: np.ndarray
    spend_fen_30: np.ndarray
    spend_fen_90: np.ndarray
    orders_total: np.ndarray
    spend_fen_total: np.ndarray
    session_min_7: np.ndarray
    session_min_30: np.ndarray
    interactions_7: np.ndarray
    interactions_30: np.ndarray
    invites_total: np.ndarray
    content_total: np.ndarray
    coupon_orders_total: np.ndarray
    coupon_order_share: np.ndarray
    night_share: np.ndarray
    weekend_share: np.ndarray
    usual_hour: np.ndarray  # circular mean of activity hours; -1 with no events
    frequency: np.ndarray  # BG/NBD: repeat order days
    recency: np.ndarray  # BG/NBD: term days from first to last order day
    T: np.ndarray  # BG/NBD: term days from first order (or first visit) to the day

    def names(self) -> list[str]:
        return [f.name for f in fields(self)]


def _count(user: np.ndarray, n: int, mask=None, weights=None) -> np.ndarray:
    if mask is not None:
        user = user[mask]
        weights = None if weights is None else weights[mask]
    return np.bincount(user, weights=weights, minlength=n)[:n]


def _in_window(day: np.ndarray, as_of: int, width: int) -> np.ndarray:
    return (day > as_of - width) & (day <= as_of)


def _last_and_first(user, day, n):
    last = np.full(n, -NEVER, dtype=np.int64)
    first = np.full(n, NEVER * 10, dtype=np.int64)
    np.maximum.at(last, user, day)
    np.minimum.at(first, user, day)
    return last, first


def distinct_user_days(user: np.ndarray, day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, day) pairs. A plain sort: numpy's hashing unique is slower here."""
    key = np.sort(user * 1_000_000 + day)
    if key.size:
        key = key[np.concatenate(([True], key[1:] != key[:-1]))]
    return key // 1_000_000, key % 1_000_000


def active_days(events: EventColumns) -> tuple[np.ndarray, np.ndarray]:
    """One "visit" per user per day with any event."""
    return distinct_user_days(events.user, events.day)


def window_activity(
    events: EventColumns,
    orders: OrderColumns,
    visit_user: np.ndarray,
    visit_day: np.ndarray,
    n: int,
    as_of: int,
    width: int,
) -> dict[str, np.ndarray]:
    """What each user did in the `width` days ending `as_of`: the activity index's inputs."""
    ev = _in_window(events.day, as_of, width)
    inter = ev & IS_INTERACTION[events.kind]
    return {
        "visit_days": _count(visit_user, n, _in_window(visit_day, as_of, width)),
        "session_min": _count(events.user, n, ev, events.duration_s) / 60.0,
        "orders": _count(orders.user, n, _in_window(orders.day, as_of, width)),
        "interactions": _count(events.user, n, inter),
    }


def until(events: EventColumns, orders: OrderColumns, as_of: int):
    """The columns without rows after day `as_of` (no copy when there are none)."""
    keep = events.day <= as_of
    if not keep.all():
        events = EventColumns(*(getattr(events, f.name)[keep] for f in fields(EventColumns)))
    okeep = orders.day <= as_of
    if not okeep.all():
        orders = OrderColumns(*(getattr(orders, f.name)[okeep] for f in fields(OrderColumns)))
    return events, orders


def compute_features(
    events: EventColumns,
    orders: OrderColumns,
    n_users: int,
    as_of: int,
    calendar: TermCalendar,
    first_seen: np.ndarray | None = None,
    last_seen: np.ndarray | None = None,
    visits: tuple[np.ndarray, np.ndarray] | None = None,
) -> Features:
    """Features of every user as of the end of day `as_of` (China time).

    `events` may cover only a recent window (90 days is enough for every windowed count);
    `first_seen`/`last_seen` (day numbers, all time) then supply what lies before it.
    `orders` must be the whole order history: the repeat-purchase summary needs it.
    Rows after `as_of` are ignored. `visits` may pass in `active_days(events)` already computed.
    """
    n = n_users
    events, orders = until(events, orders, as_of)
    vu, vd = visits if visits is not None else active_days(events)
    last_visit, first_visit = _last_and_first(vu, vd, n)
    if last_seen is not None:
        last_visit = np.maximum(last_visit, np.minimum(last_seen, as_of))
    if first_seen is not None:
        first_visit = np.minimum(first_visit, first_seen)
    seen = last_visit > -NEVER
    days_since_visit = np.where(seen, as_of - last_visit, NEVER)
    term_since = np.where(
        seen, calendar.term_days_between(np.where(seen, last_visit, as_of), as_of), NEVER
    )
    age = np.where(seen, as_of - np.minimum(first_visit, as_of), 0)

    last_order, first_order = _last_and_first(orders.user, orders.day, n)
    bought = last_order > -NEVER
    days_since_order = np.where(bought, as_of - last_order, NEVER)

    out: dict[str, np.ndarray] = {}
    for w in WINDOWS:
        out[f"visit_days_{w}"] = _count(vu, n, _in_window(vd, as_of, w))
        out[f"orders_{w}"] = _count(orders.user, n, _in_window(orders.day, as_of, w))
    amount = orders.amount_fen.astype(np.float64)
    for w in (30, 90):
        out[f"spend_fen_{w}"] = np.rint(
            _count(orders.user, n, _in_window(orders.day, as_of, w), amount)
        ).astype(np.int64)
    orders_total = _count(orders.user, n)
    coupon_orders = _count(orders.user, n, orders.used_coupon)

    inter = IS_INTERACTION[events.kind]
    for w in (7, 30):
        ev = _in_window(events.day, as_of, w)
        out[f"session_min_{w}"] = _count(events.user, n, ev, events.duration_s) / 60.0
        out[f"interactions_{w}"] = _count(events.user, n, ev & inter)

    total = _count(events.user, n).astype(np.float64)
    safe = np.maximum(total, 1)
    night = _count(events.user, n, IS_NIGHT[events.hour]) / safe
    weekday = (events.day + 3) % 7  # day 0 (1970-01-01) was a Thursday: 0 = Monday
    weekend = _count(events.user, n, weekday >= 5) / safe
    angle = events.hour.astype(np.float64) * (2 * np.pi / 24)
    sin = _count(events.user, n, None, np.sin(angle))
    cos = _count(events.user, n, None, np.cos(angle))
    usual = np.rint(np.mod(np.arctan2(sin, cos) * 24 / (2 * np.pi), 24)).astype(np.int64) % 24
    usual = np.where(total > 0, usual, -1)

    frequency, recency, big_t = repeat_purchase_summary(orders, n, as_of, calendar, first_visit)
    return Features(
        days_since_visit=days_since_visit,
        term_days_since_visit=term_since,
        days_since_order=days_since_order,
        age_days=age,
        orders_total=orders_total,
        spend_fen_total=np.rint(_count(orders.user, n, None, amount)).astype(np.int64),
        invites_total=_count(events.user, n, events.kind == KIND_CODES["invite"]),
        content_total=_count(events.user, n, IS_CONTENT[events.kind]),
        coupon_orders_total=coupon_orders,
        coupon_order_share=coupon_orders / np.maximum(orders_total, 1),
        night_share=np.where(total > 0, night, 0.0),
        weekend_share=np.where(total > 0, weekend, 0.0),
        usual_hour=usual,
        frequency=frequency,
        recency=recency,
        T=big_t,
        **out,
    )


def repeat_purchase_summary(
    orders: OrderColumns, n: int, as_of: int, calendar: TermCalendar, first_visit: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frequency, recency, T) for BG/NBD on a daily grid, in term days.

    frequency = distinct order days after the first; recency = term days from the first to
    the last order day; T = term days from the first order day to `as_of`. A user who never
    ordered is counted from their first visit with frequency 0 (the model then reads them as
    a customer who has not yet repeated). Breaks are cut out of time, so a vacation is not
    read as silence.
    """
    ou, od = distinct_user_days(orders.user, orders.day)
    last, first = _last_and_first(ou, od, n)
    bought = last > -1
    frequency = np.maximum(np.bincount(ou, minlength=n)[:n] - 1, 0)
    start = np.where(bought, first, np.minimum(first_visit, as_of))
    start = np.where(start > as_of, as_of, start)
    recency = np.where(bought, calendar.term_days_between(start, np.where(bought, last, start)), 0)
    big_t = calendar.term_days_between(start, as_of)
    return frequency, np.minimum(recency, big_t), big_t
