"""What past touches mean for today's decision: caps used, journey progress, ignored streaks.

The campaign job reads touches from the database and the simulator from its own log; both
fold them here, so a cap or a journey step is counted one way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.core.policy.caps import CAP_DAYS, CAP_STATUSES, cap_counts
from backend.core.policy.guards import ignored_streaks
from backend.core.policy.spec import MAX_TOUCHES_PER_ARM

# The touch history a decision reads: journeys and ignored streaks look back this far (and
# the caps' CAP_DAYS lie within it). The job's query and the simulator's books both stop here.
HISTORY_DAYS = 60
assert HISTORY_DAYS >= CAP_DAYS
# Touch statuses (the outbox's `touch.status`) by what they mean for the next decision: a step
# of a journey once taken is not repeated, even if it failed or expired; a sent or held-out
# touch has an outcome to observe. What counts against the caps is caps.CAP_STATUSES.
JOURNEY_STATUSES = (*CAP_STATUSES, "failed", "expired")
MEASURED_STATUSES = ("sent", "held_out")


def touch_order(day: np.ndarray, step: np.ndarray) -> np.ndarray:
    """A key that orders touches in time: by day, then by journey step within the day.

    Parameters
    ----------
    day : int array, the day (China day number or simulated day) each touch was decided.
    step : int array, the touch's step in its arm's journey, 0 .. MAX_TOUCHES_PER_ARM - 1.

    Returns
    -------
    int64 array; sorting by it (e.g. metrics.first_per_user) puts each user's touches in the
    order they were decided. Every "first touch" and "latest step" reads it from here.
    """
    return np.asarray(day, dtype=np.int64) * MAX_TOUCHES_PER_ARM + np.asarray(step, dtype=np.int64)


@dataclass
class TouchHistory:
    """Past touches (of every policy) as columns; users are indices into the population."""

    user: np.ndarray
    day: np.ndarray
    step: np.ndarray
    channel: np.ndarray  # index into CHANNELS
    arm: np.ndarray  # index into the deciding policy's arms; -1 for other policies' touches
    active: np.ndarray  # status in CAP_STATUSES: counts against the caps
    journey: np.ndarray  # status in JOURNEY_STATUSES: a step taken, not repeated
    measured: np.ndarray  # status in MEASURED_STATUSES: its outcome is observed
    attributed: np.ndarray  # its window has closed
    returned: np.ndarray
    sent: np.ndarray  # when it went (orders a user's touches in time)


@dataclass
class HistoryState:
    """Per user, what the past touches mean for today's decision (UserState's columns)."""

    touches_30d: np.ndarray
    channel_week: np.ndarray  # users × CHANNELS
    last_step: np.ndarray  # -1: no step of the current journey taken yet
    journey_arm: np.ndarray  # -1: no journey under way
    ignored_streak: np.ndarray


def history_state(h: TouchHistory, n: int, today: int, journey_start: np.ndarray) -> HistoryState:
    """Fold the history for a decision on `today`. `journey_start[u]` is the first day of
    user u's current journey (the day after their last visit, or their trigger's day)."""
    a = h.active
    touches_30d, channel_week = cap_counts(h.user[a], h.day[a], h.channel[a], n, today)
    done = h.measured & h.attributed
    ignored = ignored_streaks(h.user[done], h.sent[done], ~h.returned[done], n)
    ours = (h.arm >= 0) & h.journey & (h.day >= journey_start[h.user])
    last_step = np.full(n, -1, dtype=np.int64)
    np.maximum.at(last_step, h.user[ours], h.step[ours])
    journey_arm = np.full(n, -1, dtype=np.int64)
    if ours.any():
        # The arm of each user's latest touch in the journey (by day, then step).
        u, key, arm = h.user[ours], touch_order(h.day[ours], h.step[ours]), h.arm[ours]
        order = np.lexsort((key, u))
        last = np.flatnonzero(np.diff(u[order], append=-1))
        journey_arm[u[order][last]] = arm[order][last]
    return HistoryState(touches_30d, channel_week, last_step, journey_arm, ignored)
