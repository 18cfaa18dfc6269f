"""history_state on a hand-made history: caps, journeys and ignored streaks."""

from __future__ import annotations

import numpy as np

from backend.core.policy.history import TouchHistory, history_state
from backend.core.policy.spec import CHANNELS

SUB, SMS = CHANNELS.index("subscribe"), CHANNELS.index("sms")
TODAY = 100


def history(rows):
    """rows: (user, day, step, channel, arm, status, attributed, returned)."""
    cols = list(zip(*rows, strict=True))
    status = np.array(cols[5], dtype=object)
    return TouchHistory(
        user=np.array(cols[0]),
        day=np.array(cols[1]),
        step=np.array(cols[2]),
        channel=np.array(cols[3]),
        arm=np.array(cols[4]),
        active=np.isin(status, ("queued", "sending", "sent", "held_out")),
        journey=np.isin(status, ("queued", "sending", "sent", "held_out", "failed", "expired")),
        measured=np.isin(status, ("sent", "held_out")),
        attributed=np.array(cols[6], dtype=bool),
        returned=np.array(cols[7], dtype=bool),
        sent=np.array(cols[1]) * 86_400_000,
    )


def test_caps_journeys_and_streaks_by_hand():
    h = history(
        [
            # user 0: three touches this month, the last two this week (one SMS), one failed
            (0, 75, 0, SUB, -1, "sent", True, False),  # another policy's, 25 days ago
            (0, 95, 0, SUB, 1, "sent", True, False),  # ours, journey step 0 on arm 1
            (0, 98, 1, SMS, 1, "sent", False, False),  # ours, step 1, window still open
            (0, 99, 2, SMS, 1, "failed", False, False),  # tried: a step taken, not a send
            # user 1: an old journey before the last visit, and a skip today
            (1, 60, 0, SUB, 0, "sent", True, True),  # answered: ends any streak
            (1, 99, 0, SUB, 0, "skipped", False, False),
            # user 2: held out twice, ignored both
            (2, 80, 0, SUB, 0, "held_out", True, False),
            (2, 90, 0, SUB, 0, "held_out", True, False),
        ]
    )
    start = np.array([94, 70, 85])  # each user's journey began the day after their last visit
    s = history_state(h, 3, TODAY, start)
    # 30 days back from day 100 is day 71 onward; failed and skipped do not count.
    assert s.touches_30d.tolist() == [3, 0, 2]
    assert s.channel_week[0, SUB] == 1 and s.channel_week[0, SMS] == 1  # days 94..100
    assert s.channel_week[2].sum() == 0
    assert s.last_step.tolist() == [2, -1, 0]  # user 1's step was before the journey began
    assert s.journey_arm.tolist() == [1, -1, 0]
    # ignored in a row among finished measured touches, newest first
    assert s.ignored_streak.tolist() == [2, 0, 2]


def test_no_history():
    empty = history([(0, 0, 0, 0, -1, "skipped", False, False)])
    s = history_state(empty, 2, TODAY, np.array([1, 1]))
    assert s.touches_30d.tolist() == [0, 0] and s.last_step.tolist() == [-1, -1]
    assert s.journey_arm.tolist() == [-1, -1] and s.ignored_streak.tolist() == [0, 0]
