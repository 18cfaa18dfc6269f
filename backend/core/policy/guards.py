"""Guard rails that are not a simple comparison: quiet hours, stop-loss and ignored streaks.

Shared by the decision function (which plans around them) and the delivery code (which checks
quiet hours again at the moment of sending).
"""

from __future__ import annotations

import numpy as np

from backend.core.calendar import CHINA_OFFSET_MS, MS_PER_DAY, day_start_ms

QUIET_START_HOUR = 22  # China time; nothing is sent from 22:00 ...
QUIET_END_HOUR = 8  # ... until 08:00
HOUR_MS = 3_600_000
# One-time subscribe sends held per user and template: each accept adds one, up to this many.
# The client's word is all there is (a grant cannot be checked with WeChat), so it is bounded;
# production's grants and the simulator's draws both stop here.
MAX_SUBSCRIBE_ALLOWANCE = 3


def in_quiet_hours(china_hour: np.ndarray | int) -> np.ndarray:
    """Whether each China hour is in quiet hours (22:00 to 08:00): no push goes out then."""
    h = np.asarray(china_hour)
    return (h >= QUIET_START_HOUR) | (h < QUIET_END_HOUR)


def out_of_quiet_hours(hour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hour, day offset) moved to the next 08:00 when `hour` is quiet: deferred, never dropped."""
    hour = np.asarray(hour, dtype=np.int16)
    late = hour >= QUIET_START_HOUR
    early = hour < QUIET_END_HOUR
    moved = np.where(late | early, QUIET_END_HOUR, hour).astype(np.int8)
    return moved, late.astype(np.int8)


UNKNOWN_HOUR_SENDS_AT = 12  # a user with no activity hour yet is written to at noon


def contact_hour(usual_hour: np.ndarray) -> np.ndarray:
    """The hour to write to each user: their usual hour, or noon when none is known (-1)."""
    hour = np.array(usual_hour, dtype=np.int64)  # a copy, the unknown ones then set
    hour[np.flatnonzero(hour < 0)] = UNKNOWN_HOUR_SENDS_AT
    return hour


def planned_send_ms(day: int, defer_days: np.ndarray, send_hour: np.ndarray) -> np.ndarray:
    """When each touch decided for `day` is due: its hour that day, or the next morning."""
    start = day_start_ms(day) + np.asarray(defer_days, dtype=np.int64) * MS_PER_DAY
    return start + np.asarray(send_hour, dtype=np.int64) * HOUR_MS


# An in-app card waits silently for the user's next open: quiet hours are for pushes.
QUIET_EXEMPT_CHANNELS = ("in_app",)


def next_send_ms(now_ms: int, channel: str) -> int:
    """When a touch on `channel` may go out, asked at `now_ms`."""
    return now_ms if channel in QUIET_EXEMPT_CHANNELS else next_allowed_ms(now_ms)


def next_allowed_ms(now_ms: int) -> int:
    """`now_ms` if it is outside quiet hours, else the next 08:00 China time."""
    local = now_ms + CHINA_OFFSET_MS
    hour = (local % MS_PER_DAY) // HOUR_MS
    if not in_quiet_hours(hour):
        return now_ms
    day_start = local - local % MS_PER_DAY
    if hour >= QUIET_START_HOUR:
        day_start += MS_PER_DAY
    return int(day_start + QUIET_END_HOUR * HOUR_MS - CHINA_OFFSET_MS)


def stop_loss(
    cost_fen: np.ndarray,
    value_fen: np.ndarray,
    touches: np.ndarray,
    ratio: float,
    min_touches: int,
) -> np.ndarray:
    """Which arms to pause: recall cost above `ratio` of the value the arm brought back.

    `value_fen` is the scoring layer's estimated future value of the users each arm recalled.
    An arm with fewer than `min_touches` finished touches is never judged: a handful of sends
    says nothing about its economics.
    """
    cost = np.asarray(cost_fen, dtype=np.float64)
    value = np.asarray(value_fen, dtype=np.float64)
    return (np.asarray(touches) >= min_touches) & (cost > ratio * value)


def ignored_streaks(
    user_index: np.ndarray, order_key: np.ndarray, ignored: np.ndarray, n_users: int
) -> np.ndarray:
    """Per user, how many of their most recent finished touches in a row were ignored.

    `order_key` orders each user's touches in time; a touch the user answered (returned
    within its window) ends the streak.
    """
    user_index = np.asarray(user_index, dtype=np.int64)
    out = np.zeros(n_users, dtype=np.int64)
    if user_index.size == 0:
        return out
    order = np.lexsort((-np.asarray(order_key), user_index))  # per user, newest first
    u = user_index[order]
    ig = np.asarray(ignored, dtype=bool)[order]
    starts = np.flatnonzero(np.diff(u, prepend=-1))
    counts = np.diff(starts, append=u.size)  # touches per user (users with any, in order)
    # position of each touch within its user's newest-first list
    pos = np.arange(u.size) - np.repeat(starts, counts)
    # the first answered touch per user bounds the streak; none answered: all ignored.
    # Touches are newest first within each user, so a user's first answered one is the
    # first of theirs among the answered (no ufunc.at: it is slow on many rows).
    first_answered = np.full(starts.size, np.iinfo(np.int64).max)
    group = np.repeat(np.arange(starts.size), counts)
    answered = np.flatnonzero(~ig)
    firsts = answered[np.diff(group[answered], prepend=-1) != 0]
    first_answered[group[firsts]] = pos[firsts]
    out[u[starts]] = np.minimum(first_answered, counts)  # only users with touches: not n
    return out
