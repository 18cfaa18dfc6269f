"""What past touches mean for today's decision: caps used, journey progress, ignored streaks.

The campaign job reads touches from the database and the simulator from its own log; both
fold them here, so a cap or a journey step is counted one way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.core.policy.guards import ignored_streaks
from backend.core.policy.spec import CHANNELS, MAX_TOUCHES_PER_ARM


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
    active: np.ndarray  # queued, sending, sent or held out: counts against the caps
    journey: np.ndarray  # a step taken (also failed or expired ones): not repeated
    measured: np.ndarray  # sent or held out: its outcome is observed
    attributed: np.ndarray  # its window has closed
    returned: np.ndarray
    sent: np.ndarray  # when it went (orders a user's touches in time)


@dataclass
class HistoryState:
    touches_30d: np.ndarray
    channel_week: np.ndarray  # users × CHANNELS
    last_step: np.ndarray  # -1: no step of the current journey taken yet
    journey_arm: np.ndarray  # -1: no journey under way
    ignored_streak: np.ndarray


def history_state(h: TouchHistory, n: int, today: int, journey_start: np.ndarray) -> HistoryState:
    """Fold the history for a decision on `today`. `journey_start[u]` is the first day of
    user u's current journey (the day after their last visit, or their trigger's day)."""
    touches_30d = np.bincount(h.user[h.active & (h.day >= today - 29)], minlength=n)
    channel_week = np.zeros((n, len(CHANNELS)), dtype=np.int64)
    week = h.active & (h.day >= today - 6)
    # Counted at flat (user, channel) positions: the rows touched are few, the table large.
    flat = h.user[week].astype(np.intp) * len(CHANNELS) + h.channel[week].astype(np.intp)
    np.add.at(channel_week.reshape(-1), flat, 1)
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
