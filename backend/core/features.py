"""Per-user features as of a day, from columns of events and orders (no database here).

Two steps: per-user *sums* (`UserSums`: visit days, orders, spend, sessions ... per window,
over the look-back and all time), then `features_from`, the one place every feature's formula
lives. The batch path (`compute_features`: production, from database columns) builds the sums
with bincounts; the simulator's nightly fold (core.rolling) keeps the same sums day by day by
adding each day's totals and taking off the day that leaves each window. Every sum is an
integer (session time in whole milliseconds, hour directions in fixed point), so the two paths
agree exactly, whatever order the additions came in. No Python loop over users.

The columns and their codes are core.columns; the repeat-purchase summary BG/NBD reads is
core.repeat_purchases.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from backend.core.calendar import TermCalendar, is_weekend
from backend.core.columns import (
    HOUR_COS,
    HOUR_SIN,
    IS_CONTENT,
    IS_INTERACTION,
    IS_NIGHT,
    KIND_CODES,
    LAST_NONE,
    NEVER,
    EventColumns,
    OrderColumns,
    active_days,
    distinct_user_days,
    last_and_first,
    on_days,
    session_minutes,
    session_ms,
    until,
)
from backend.core.repeat_purchases import PurchaseSpan, purchase_span, repeat_from_span

WINDOWS = (7, 14, 30, 90)
LOOKBACK_DAYS = 120  # events older than this change no feature (90-day windows + 28 for baselines)
LOOKBACK_WIDTH = LOOKBACK_DAYS + 1  # production loads days as_of − LOOKBACK_DAYS .. as_of


@dataclass
class Features:
    """Every user's features as of a day: one column per feature, in the users' order.

    Counts are int64 over the window in the name (days ending the day, China time); money is
    int64 fen; `days_since_*` calendar days and `term_days_since_visit` term days (NEVER when
    it never happened); `age_days` calendar days since first seen; `session_min_*` float64
    minutes; `*_share` float64 in [0, 1]. What the tiers, RFM, BG/NBD, targeting and the
    stored score snapshot read.
    """

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
        """The feature names in field order (the columns the snapshot stores)."""
        return [f.name for f in fields(self)]


def _count(user: np.ndarray, n: int, mask=None, weights=None) -> np.ndarray:
    if mask is not None:
        user = user[mask]
        weights = None if weights is None else weights[mask]
    return np.bincount(user, weights=weights, minlength=n)[:n]


def _int_sum(user: np.ndarray, n: int, mask, weights: np.ndarray) -> np.ndarray:
    """Per-user sum of whole-number float weights, as int64 (exact below 2^53)."""
    return np.rint(_count(user, n, mask, weights)).astype(np.int64)


def _in_window(day: np.ndarray, as_of: int, width: int) -> np.ndarray:
    return (day > as_of - width) & (day <= as_of)


@dataclass
class UserSums:
    """Per-user sums as of a day: every feature is a function of these and the day.

    Windows are the `w` days ending the day. Look-back sums cover the events given (production
    loads LOOKBACK_WIDTH days; the rolling fold keeps exactly those); order sums are all-time.
    All int64. First/last days are FIRST_NONE/LAST_NONE when there was none.
    """

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
    session_ms_7: np.ndarray  # whole milliseconds of session_end durations
    session_ms_30: np.ndarray
    interactions_7: np.ndarray
    interactions_30: np.ndarray
    events: np.ndarray  # look-back: every event
    night_events: np.ndarray  # look-back: at NIGHT_HOURS
    weekend_events: np.ndarray  # look-back: on Saturdays and Sundays
    hour_sin: np.ndarray  # look-back: Σ HOUR_SIN[hour]
    hour_cos: np.ndarray  # look-back: Σ HOUR_COS[hour]
    invites: np.ndarray  # look-back
    content: np.ndarray  # look-back: reviews and comments
    orders_total: np.ndarray
    spend_fen_total: np.ndarray
    coupon_orders_total: np.ndarray
    order_days: np.ndarray  # distinct days with an order
    first_visit: np.ndarray  # first/last day with an event (in the look-back for the batch path)
    last_visit: np.ndarray
    first_order: np.ndarray
    last_order: np.ndarray


def _window_events(events: EventColumns, ms: np.ndarray, n: int, as_of: int, width: int):
    """(session ms, interactions) per user in the `width` days ending `as_of`."""
    ev = _in_window(events.day, as_of, width)
    return (
        _int_sum(events.user, n, ev, ms),
        _count(events.user, n, ev & IS_INTERACTION[events.kind]),
    )


def window_sums(
    events: EventColumns,
    orders: OrderColumns,
    visit_user: np.ndarray,
    visit_day: np.ndarray,
    n: int,
    as_of: int,
    width: int,
    ms: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The activity index's inputs over the `width` days ending `as_of`, as integer sums.
    `ms` may pass in `session_ms(events.duration_s)` already computed."""
    ms = session_ms(events.duration_s) if ms is None else ms
    session, interactions = _window_events(events, ms, n, as_of, width)
    return {
        "visit_days": _count(visit_user, n, _in_window(visit_day, as_of, width)),
        "session_ms": session,
        "orders": _count(orders.user, n, _in_window(orders.day, as_of, width)),
        "interactions": interactions,
    }


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
    s = window_sums(events, orders, visit_user, visit_day, n, as_of, width)
    s["session_min"] = session_minutes(s.pop("session_ms"))
    return s


def column_sums(
    events: EventColumns,
    orders: OrderColumns,
    n_users: int,
    as_of: int,
    visits: tuple[np.ndarray, np.ndarray] | None = None,
) -> UserSums:
    """The sums from columns (the batch path). Look-back sums cover whatever events are given;
    rows after `as_of` are ignored. `visits` may pass in `active_days(events)`."""
    n = n_users
    events, orders = until(events, orders, as_of)
    vu, vd = visits if visits is not None else active_days(events)
    last_visit, first_visit = last_and_first(vu, vd, n)
    ou, od = distinct_user_days(orders.user, orders.day)
    last_order, first_order = last_and_first(ou, od, n)
    out: dict[str, np.ndarray] = {}
    for w in WINDOWS:
        out[f"visit_days_{w}"] = _count(vu, n, _in_window(vd, as_of, w))
        out[f"orders_{w}"] = _count(orders.user, n, _in_window(orders.day, as_of, w))
    amount = orders.amount_fen.astype(np.float64)
    for w in (30, 90):
        out[f"spend_fen_{w}"] = _int_sum(orders.user, n, _in_window(orders.day, as_of, w), amount)
    ms = session_ms(events.duration_s)
    for w in (7, 30):
        out[f"session_ms_{w}"], out[f"interactions_{w}"] = _window_events(events, ms, n, as_of, w)
    u = events.user
    return UserSums(
        events=_count(u, n),
        night_events=_count(u, n, IS_NIGHT[events.hour]),
        weekend_events=_count(u, n, is_weekend(events.day)),
        hour_sin=_int_sum(u, n, None, HOUR_SIN[events.hour].astype(np.float64)),
        hour_cos=_int_sum(u, n, None, HOUR_COS[events.hour].astype(np.float64)),
        invites=_count(u, n, events.kind == KIND_CODES["invite"]),
        content=_count(u, n, IS_CONTENT[events.kind]),
        orders_total=_count(orders.user, n),
        spend_fen_total=_int_sum(orders.user, n, None, amount),
        coupon_orders_total=_count(orders.user, n, orders.used_coupon),
        order_days=np.bincount(ou, minlength=n)[:n],
        first_visit=first_visit,
        last_visit=last_visit,
        first_order=first_order,
        last_order=last_order,
        **out,
    )


def _calendar_days_since(as_of: int):
    def since(d: np.ndarray) -> np.ndarray:
        return np.where(d > LAST_NONE, as_of - d, NEVER)

    return since


def _term_days_since(as_of: int, calendar: TermCalendar):
    now = calendar.term_day_count(as_of)

    def since(d: np.ndarray) -> np.ndarray:
        seen = d > LAST_NONE
        return np.where(seen, now - calendar.term_day_count(np.where(seen, d, as_of)), NEVER)

    return since


def visit_recency(
    last_visit: np.ndarray, first_visit: np.ndarray, as_of: int, calendar: TermCalendar
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(days since the last visit, the same in term days, age in days since the first)."""
    since, term_since = on_days(
        last_visit, _calendar_days_since(as_of), _term_days_since(as_of, calendar)
    )
    # age = as_of − min(first visit, as_of), 0 for those never seen: in one buffer, the zeros
    # by multiplying (the same integers as np.where, without its masked pass).
    age = np.minimum(first_visit, as_of)
    np.subtract(as_of, age, out=age)
    age *= last_visit > LAST_NONE
    return since, term_since, age


def shares(events: np.ndarray, *parts: np.ndarray) -> list[np.ndarray]:
    """Each part / events (0 for users without events: parts are subsets of the events)."""
    per = np.maximum(events, 1.0)  # float64; exact: counts are far below 2^53
    return [part / per for part in parts]


# The mean direction in hours, 12·angle/π in [−12, 12], rounded: k = ⌊12·angle/π + 12.5⌋ in
# 0..24 is the hour (k − 12) mod 24; k = 25 marks users without events (-1).
_CLOCK = np.append((np.arange(25) - 12) % 24, -1)


def usual_hour(hour_sin: np.ndarray, hour_cos: np.ndarray, events: np.ndarray) -> np.ndarray:
    """The circular mean of event hours, rounded (23:00 and 01:00 average to midnight); -1
    without events. An exact tie between two hours goes whichever way the fixed-point
    rounding of the hour directions tips it."""
    angle = np.arctan2(hour_sin, hour_cos)
    angle *= 12 / np.pi
    angle += 12.5
    bucket = angle.astype(np.int64)
    bucket[np.flatnonzero(events <= 0)] = 25
    return _CLOCK[bucket]


def _share_of(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """part / max(whole, 1) in float64, in one buffer."""
    out = np.maximum(whole, 1.0)
    return np.divide(part, out, out=out)


def features_from(
    sums: UserSums,
    as_of: int,
    calendar: TermCalendar,
    first_seen: np.ndarray | None = None,
    last_seen: np.ndarray | None = None,
    *,
    copy: bool = False,
    span: PurchaseSpan | None = None,
    lazy: bool = False,
    hour: np.ndarray | None = None,
) -> Features:
    """Every feature from the sums: the one implementation, for the batch and rolling paths.

    `first_seen`/`last_seen` (day numbers, all time) supply what lies before the events the
    sums saw (the batch path sees only the look-back); `last_seen` after `as_of` counts as
    `as_of`. Sums that are features as they stand (visit days, orders, ...) go into the
    Features uncopied unless `copy` (for a caller that goes on updating them). `span` may
    pass in `purchase_span` of these sums, already computed, and `hour` their `usual_hour`
    (used as it is). With `lazy` the features no scoring rule reads (ON_READ) are worked out
    when first read, from the sums as they are then: for a caller that reads them, if at
    all, before changing the sums.
    """
    own = np.copy if copy else np.asarray
    last_visit, first_visit = sums.last_visit, sums.first_visit
    if last_seen is not None:
        seen = np.minimum(last_seen, as_of)
        last_visit = np.maximum(
            last_visit, seen, out=seen if seen.dtype == last_visit.dtype else None
        )
    if first_seen is not None:
        first_visit = np.minimum(first_visit, first_seen)
    since, term_since, age = visit_recency(last_visit, first_visit, as_of, calendar)
    if span is None:
        span = purchase_span(
            sums.order_days, sums.first_order, sums.last_order, first_visit, as_of, calendar
        )
    frequency, recency, big_t = repeat_from_span(span, as_of, calendar)
    on_read = _on_read(sums, as_of)
    eager = dict(
        days_since_visit=since,
        term_days_since_visit=term_since,
        age_days=age,
        visit_days_7=own(sums.visit_days_7),
        visit_days_14=own(sums.visit_days_14),
        visit_days_30=own(sums.visit_days_30),
        visit_days_90=own(sums.visit_days_90),
        orders_7=own(sums.orders_7),
        orders_14=own(sums.orders_14),
        orders_30=own(sums.orders_30),
        orders_90=own(sums.orders_90),
        spend_fen_30=own(sums.spend_fen_30),
        spend_fen_90=own(sums.spend_fen_90),
        orders_total=own(sums.orders_total),
        spend_fen_total=own(sums.spend_fen_total),
        interactions_7=own(sums.interactions_7),
        interactions_30=own(sums.interactions_30),
        invites_total=own(sums.invites),
        content_total=own(sums.content),
        coupon_orders_total=own(sums.coupon_orders_total),
        usual_hour=usual_hour(sums.hour_sin, sums.hour_cos, sums.events) if hour is None else hour,
        frequency=own(frequency),
        recency=recency,
        T=big_t,
    )
    if lazy:
        return _OnRead.of(eager, on_read)
    return Features(**eager, **{name: on_read[name]() for name in ON_READ})


# Features no scoring, tiering or targeting rule reads (shown to people and stored with the
# scores): `features_from(lazy=True)` leaves them to be worked out when first read.
ON_READ = (
    "days_since_order",
    "session_min_7",
    "session_min_30",
    "coupon_order_share",
    "night_share",
    "weekend_share",
)


def _on_read(sums: UserSums, as_of: int) -> dict:
    """The ON_READ features of `sums` on `as_of`, each as a function of no arguments."""
    both: list[np.ndarray] = []

    def share(i: int):
        def get() -> np.ndarray:
            if not both:  # night and weekend shares share their divisor
                both.extend(shares(sums.events, sums.night_events, sums.weekend_events))
            return both[i]

        return get

    return {
        "days_since_order": lambda: on_days(sums.last_order, _calendar_days_since(as_of))[0],
        "session_min_7": lambda: session_minutes(sums.session_ms_7),
        "session_min_30": lambda: session_minutes(sums.session_ms_30),
        "coupon_order_share": lambda: _share_of(sums.coupon_orders_total, sums.orders_total),
        "night_share": share(0),
        "weekend_share": share(1),
    }


class _OnRead(Features):
    """Features whose ON_READ columns are worked out when first read (then kept)."""

    @classmethod
    def of(cls, eager: dict, pending: dict) -> _OnRead:
        out = object.__new__(cls)
        out.__dict__.update(eager)
        out.__dict__["_pending"] = pending
        return out

    def __getattr__(self, name: str):  # only called for what is not set yet
        pending = self.__dict__.get("_pending", {})
        if name not in pending:
            raise AttributeError(name)
        value = pending.pop(name)()
        setattr(self, name, value)
        return value


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
    sums = column_sums(events, orders, n_users, as_of, visits)
    return features_from(sums, as_of, calendar, first_seen, last_seen)
