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
from backend.core.features import EventColumns, OrderColumns, active_days, window_activity

WEIGHTS = {"visit_days": 0.40, "session_min": 0.20, "orders": 0.25, "interactions": 0.15}
SATURATION = {"session_min": 60.0, "orders": 2.0, "interactions": 3.0}
WARNING_SHARE = 0.20
WARNING_DAYS = 3
MIN_BASELINE = 10.0
BASELINE_OFFSETS = (7, 14, 21, 28)


def activity_index(visit_days, session_min, orders, interactions) -> np.ndarray:
    """The index from 7-day counts (see module docstring), as float64 in [0, 100]."""
    v = np.clip(np.asarray(visit_days, dtype=np.float64) / 7.0, 0, 1)
    parts = WEIGHTS["visit_days"] * v
    for name, value in (
        ("session_min", session_min),
        ("orders", orders),
        ("interactions", interactions),
    ):
        x = np.maximum(np.asarray(value, dtype=np.float64), 0)
        parts = parts + WEIGHTS[name] * (1 - np.exp(-x / SATURATION[name]))
    return 100.0 * parts


@dataclass
class Activity:
    index: np.ndarray  # today
    recent: np.ndarray  # (WARNING_DAYS, n): today, yesterday, ...
    baseline: np.ndarray
    warning: np.ndarray  # bool


def early_warning(recent: np.ndarray, baseline: np.ndarray, in_break: bool) -> np.ndarray:
    """True where every recent day's index is below 20% of a meaningful baseline."""
    below = np.all(recent < WARNING_SHARE * baseline, axis=0)
    return below & (baseline >= MIN_BASELINE) & (not in_break)


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

    def index_on(day: int) -> np.ndarray:
        return activity_index(**window_activity(events, orders, vu, vd, n, day, 7))

    recent = np.stack([index_on(as_of - k) for k in range(WARNING_DAYS)])
    baseline = np.mean([index_on(as_of - k) for k in BASELINE_OFFSETS], axis=0)
    in_break = bool(calendar.is_break(np.arange(as_of - WARNING_DAYS + 1, as_of + 1)).any())
    return Activity(recent[0], recent, baseline, early_warning(recent, baseline, in_break))
