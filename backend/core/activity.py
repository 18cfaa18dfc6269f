"""Activity index 0–100 per user per day, each user's own baseline, and the early warning.

    index = 100 · (0.40 · v/7 + 0.20 · (1 − e^(−m/60))
                   + 0.25 · (1 − e^(−o/2)) + 0.15 · (1 − e^(−i/3)))

over the 7 days ending that day, where v = days with a visit (0–7), m = session minutes,
o = orders and i = interactions (shares, invites, reviews, likes, comments). Visits are linear
(a daily user scores full marks); the others saturate, so one binge cannot outweigh habit: an
hour a week of use, two orders or three interactions already give ~63% of their share.

Baseline = the mean of the index on the 4 weekly windows before the current one (days −7,
−14, −21, −28), i.e. the user's trailing 4-week average. Early warning = the index stayed below
20% of that baseline on each of the last 3 days, for users whose baseline was meaningful
(≥ 10) and not during a break.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.core.calendar import TermCalendar
from backend.core.columns import (
    EventColumns,
    OrderColumns,
    active_days,
    session_minutes,
    session_ms,
)
from backend.core.features import window_sums

WEIGHTS = {"visit_days": 0.40, "session_min": 0.20, "orders": 0.25, "interactions": 0.15}
SATURATION = {"session_min": 60.0, "orders": 2.0, "interactions": 3.0}
WARNING_SHARE = 0.20
WARNING_DAYS = 3
MIN_BASELINE = 10.0
BASELINE_OFFSETS = (7, 14, 21, 28)
HISTORY_DAYS = max(BASELINE_OFFSETS) + 1  # daily indices the activity of one day reads
_TABLE_SPAN = 1 << 12  # whole-number inputs spanning at most this go through a table


def _visit_part(x: np.ndarray, inplace: bool = False) -> np.ndarray:
    return WEIGHTS["visit_days"] * np.clip(x / 7.0, 0, 1)


def _saturating(name: str):
    weight, scale = WEIGHTS[name], SATURATION[name]

    def part(x: np.ndarray, inplace: bool = False) -> np.ndarray:
        """weight · (1 − e^(−max(x, 0)/scale)), step by step in one buffer."""
        y = x if inplace else np.array(x, dtype=np.float64)
        if y.size and y.min() < 0:  # max(x, 0) changes nothing on x ≥ 0
            np.maximum(y, 0, out=y)
        np.negative(y, out=y)
        np.divide(y, scale, out=y)
        np.exp(y, out=y)
        np.subtract(1, y, out=y)
        np.multiply(weight, y, out=y)
        return y

    return part


_PARTS = {
    "visit_days": _visit_part,
    **{name: _saturating(name) for name in ("session_min", "orders", "interactions")},
}


def _part(name: str, value, inplace: bool = False) -> np.ndarray:
    """One weighted part of the index. Whole-number columns (visit days, orders,
    interactions) go through a table of the part over their range: the same numbers, one
    exp per distinct value instead of one per user (a column of one value gives that value
    as a scalar). `inplace`: `value` is a float64 buffer the caller gives up."""
    v = np.asarray(value)
    fn = _PARTS[name]
    if v.dtype.kind in "iu" and v.size > 64:
        lo, hi = int(v.min()), int(v.max())
        if hi - lo <= _TABLE_SPAN:
            table = fn(np.arange(lo, hi + 1, dtype=np.float64))
            if hi == lo:
                return table[0]
            return table[v - lo] if lo else table[v]
    if inplace and v.dtype == np.float64:
        return fn(v, inplace=True)
    return fn(np.asarray(v, dtype=np.float64))


def _index(visit_days, session_min, orders, interactions, own_minutes: bool) -> np.ndarray:
    parts = [
        _part("visit_days", visit_days),
        _part("session_min", session_min, inplace=own_minutes),
        _part("orders", orders),
        _part("interactions", interactions),
    ]
    total = parts[0]
    for part in parts[1:]:
        if np.ndim(part) or part != 0:  # adding 0.0 to parts ≥ 0 changes no bit
            total = total + part
    shape = np.broadcast_shapes(
        *(np.shape(v) for v in (visit_days, session_min, orders, interactions))
    )
    if np.shape(total) != shape:  # every part was one value for everyone
        total = np.full(shape, total)
    return 100.0 * total


def activity_index(visit_days, session_min, orders, interactions) -> np.ndarray:
    """The index from 7-day counts (see module docstring), as float64 in [0, 100]."""
    return _index(visit_days, session_min, orders, interactions, own_minutes=False)


def index_from_sums(visit_days, session_ms, orders, interactions) -> np.ndarray:
    """The index from 7-day integer sums (core.features.window_sums; the rolling fold)."""
    return _index(visit_days, session_minutes(session_ms), orders, interactions, own_minutes=True)


@dataclass
class Activity:
    """A night's activity index and early warning, per user (users in the columns' order).

    `index`: today's index, float64 in [0, 100]; `recent`: (WARNING_DAYS, n_users), today
    first; `baseline`: the user's trailing 4-week mean index, float64 (the warning needs it
    at least MIN_BASELINE); `warning`: bool, the early warning fired.
    """

    index: np.ndarray  # today
    recent: np.ndarray  # (WARNING_DAYS, n): today, yesterday, ...
    baseline: np.ndarray
    warning: np.ndarray  # bool


def early_warning(recent: np.ndarray, baseline: np.ndarray, in_break: bool) -> np.ndarray:
    """True where every recent day's index is below 20% of a meaningful baseline."""
    if in_break:
        return np.zeros(np.shape(baseline), dtype=bool)
    baseline = np.asarray(baseline)
    if baseline.ndim != 1:
        highest = recent[0]
        for day in recent[1:]:
            highest = np.maximum(highest, day)  # below on every day = the highest is below
        return (highest < WARNING_SHARE * baseline) & (baseline >= MIN_BASELINE)
    # Only users with a meaningful baseline can be warned: the rule on their rows alone.
    rows = np.flatnonzero(baseline >= MIN_BASELINE)
    highest = recent[0][rows]
    for day in recent[1:]:
        np.maximum(highest, day[rows], out=highest)
    warning = np.zeros(baseline.shape, dtype=bool)
    warning[rows] = highest < WARNING_SHARE * baseline[rows]
    return warning


def warning_held_back(calendar: TermCalendar, as_of: int) -> bool:
    """Whether any of the warning's last days is a break."""
    return bool(calendar.is_break(np.arange(as_of - WARNING_DAYS + 1, as_of + 1)).any())


def activity_from(
    recent: list[np.ndarray] | np.ndarray,
    past: list[np.ndarray],
    calendar: TermCalendar,
    as_of: int,
) -> Activity:
    """Activity from the daily indices: `recent` on as_of, as_of − 1, ... (WARNING_DAYS of
    them, or those rows stacked already), `past` on as_of − BASELINE_OFFSETS. Shared by the
    batch and rolling paths."""
    stacked = recent if isinstance(recent, np.ndarray) and recent.ndim == 2 else np.stack(recent)
    baseline = (
        np.add(past[0], past[1], dtype=np.float64)
        if len(past) > 1
        else np.array(past[0], dtype=np.float64)
    )
    for index in past[2:]:
        baseline += index  # in order, as np.mean over the stacked days would add
    baseline /= len(past)
    warning = early_warning(stacked, baseline, warning_held_back(calendar, as_of))
    return Activity(stacked[0], stacked, baseline, warning)


def compute_activity(
    events: EventColumns,
    orders: OrderColumns,
    n: int,
    as_of: int,
    calendar: TermCalendar,
    visits: tuple[np.ndarray, np.ndarray] | None = None,
) -> Activity:
    """Index, baseline and warning on `as_of`; rows after it must already be cut (`until`)."""
    vu, vd = visits if visits is not None else active_days(events)
    ms = session_ms(events.duration_s)

    def index_on(day: int) -> np.ndarray:
        return index_from_sums(**window_sums(events, orders, vu, vd, n, day, 7, ms))

    recent = [index_on(as_of - k) for k in range(WARNING_DAYS)]
    past = [index_on(as_of - k) for k in BASELINE_OFFSETS]
    return activity_from(recent, past, calendar, as_of)
