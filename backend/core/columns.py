"""The event and order columns scoring reads: their codes, and the day arithmetic over them.

Production builds these columns from the database (services/scoring.py), the simulator from
its event log (simulator/eventlog.py); everything after them (core.features, core.activity,
core.rolling) is a function of these columns alone. Days are China-time day numbers
(core.calendar), users indices 0..n_users-1, money fen. Session time is summed in whole
milliseconds and hour directions in fixed point, so sums are integers and come out the same
in any order.
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
FIRST_NONE = NEVER * 10  # "first day" of something that never happened
LAST_NONE = -NEVER  # "last day" of something that never happened
MS_PER_MINUTE = 60_000.0
# The usual hour is the direction of Σ (sin, cos) of event hours. In fixed point (2^26 units
# per unit vector) those sums are integers: exact in any order, so a running sum equals the
# batch sum bit for bit (floats would differ in the last bits, and the rounding to an hour
# would then differ on exact ties). 2^26 keeps sums of 2^27 events per user exact in float64.
HOUR_SCALE = 1 << 26
_HOUR_ANGLE = np.arange(24, dtype=np.float64) * (2 * np.pi / 24)
HOUR_SIN = np.rint(np.sin(_HOUR_ANGLE) * HOUR_SCALE).astype(np.int64)
HOUR_COS = np.rint(np.cos(_HOUR_ANGLE) * HOUR_SCALE).astype(np.int64)


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
    """One row per paid order. `day` is the China-time day number it was paid on."""

    user: np.ndarray  # int64 index 0..n_users-1
    day: np.ndarray  # int64 day number
    amount_fen: np.ndarray  # int64
    used_coupon: np.ndarray  # bool


def session_ms(duration_s: np.ndarray) -> np.ndarray:
    """Session lengths in whole milliseconds (float64): integer sums, exact in any order."""
    return np.rint(np.asarray(duration_s, dtype=np.float64) * 1000.0)


def session_minutes(ms: np.ndarray) -> np.ndarray:
    """Whole-millisecond session sums as float64 minutes, the unit the activity index uses."""
    return ms / MS_PER_MINUTE


_DAY_TABLE_SPAN = 1 << 18  # day ranges up to this (or the column's length) go through a table


def on_days(days: np.ndarray, *fns) -> list[np.ndarray]:
    """[fn(days) for fn in fns] for elementwise integer functions of a day column, through a
    table of each fn over the column's range when that range is short next to the column:
    a few passes of day arithmetic per user become one gather. The same integers."""
    d = np.asarray(days, dtype=np.int64)
    if d.size >= 4096:
        lo, hi = int(d.min()), int(d.max())
        if hi - lo <= max(d.size, _DAY_TABLE_SPAN):
            span = np.arange(lo, hi + 1, dtype=np.int64)
            index = d - lo if lo else d
            return [fn(span)[index] for fn in fns]
    return [fn(d) for fn in fns]


def term_day_count(calendar: TermCalendar, days: np.ndarray | int) -> np.ndarray:
    """`calendar.term_day_count`, through a table when there are breaks (see `on_days`)."""
    if not calendar.breaks:
        return calendar.term_day_count(days)
    return on_days(days, calendar.term_day_count)[0]


def distinct_user_days(user: np.ndarray, day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, day) pairs. A plain sort: numpy's hashing unique is slower here."""
    key = np.sort(user * 1_000_000 + day)
    if key.size:
        key = key[np.concatenate(([True], key[1:] != key[:-1]))]
    return key // 1_000_000, key % 1_000_000


def active_days(events: EventColumns) -> tuple[np.ndarray, np.ndarray]:
    """One "visit" per user per day with any event."""
    return distinct_user_days(events.user, events.day)


def until(events: EventColumns, orders: OrderColumns, as_of: int):
    """The columns without rows after day `as_of` (no copy when there are none)."""
    keep = events.day <= as_of
    if not keep.all():
        events = EventColumns(*(getattr(events, f.name)[keep] for f in fields(EventColumns)))
    okeep = orders.day <= as_of
    if not okeep.all():
        orders = OrderColumns(*(getattr(orders, f.name)[okeep] for f in fields(OrderColumns)))
    return events, orders


def last_and_first(user: np.ndarray, day: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per user 0..n-1, the last and the first `day` of their rows (LAST_NONE / FIRST_NONE
    for a user without rows): visits and orders both start and end a user's history."""
    last = np.full(n, LAST_NONE, dtype=np.int64)
    first = np.full(n, FIRST_NONE, dtype=np.int64)
    np.maximum.at(last, user, day)
    np.minimum.at(first, user, day)
    return last, first
