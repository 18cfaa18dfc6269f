"""The contact caps: at most N touches in 30 days, at most M a week on each channel.

One meaning, used by the decision (`decide`, through `history_state`) and by delivery's
re-check at the moment of sending. A touch counts against a user's caps from the moment it is
decided until it is skipped, failed or expired: while it waits in the outbox (`queued`), while
it is being sent, once sent, and when it was held out (a holdout user's "would have sent"
touch counts too, so both groups are capped alike). It counts on the China day it was decided
for, and a window of D days on day T holds the days T - D + 1 onwards. docs/policies.md says
why this meaning and not a rolling window of sent messages.
"""

from __future__ import annotations

import numpy as np

from backend.core.policy.spec import CHANNELS, Policy

CAP_DAYS = 30  # touches_per_30d counts this many China days, today included
CHANNEL_CAP_DAYS = 7  # per_channel_week likewise
# Touch statuses that count against the caps (the outbox's `touch.status`).
CAP_STATUSES = ("queued", "sending", "sent", "held_out")


def window_start(today: int, days: int) -> int:
    """The first decision day a cap window of `days` ending on `today` holds."""
    return today - (days - 1)


def cap_counts(
    user: np.ndarray, day: np.ndarray, channel: np.ndarray, n: int, today: int
) -> tuple[np.ndarray, np.ndarray]:
    """Touches counted against each user's caps on `today`.

    Parameters
    ----------
    user : int array, each counted touch's user as an index 0 .. n - 1.
    day : int array, the China day each touch was decided for.
    channel : int array, each touch's channel (index into CHANNELS).
    n : the number of users.
    today : the decision day the caps are checked for.

    Only touches in CAP_STATUSES may be passed (the caller filters them).

    Returns
    -------
    (touches_30d, channel_week): per user the touches of the last CAP_DAYS, and
    (users × CHANNELS) the touches of the last CHANNEL_CAP_DAYS on each channel.
    """
    touches_30d = np.bincount(user[day >= window_start(today, CAP_DAYS)], minlength=n)
    channel_week = np.zeros((n, len(CHANNELS)), dtype=np.int64)
    week = day >= window_start(today, CHANNEL_CAP_DAYS)
    # Counted at flat (user, channel) positions: the rows touched are few, the table large.
    flat = user[week].astype(np.intp) * len(CHANNELS) + channel[week].astype(np.intp)
    np.add.at(channel_week.reshape(-1), flat, 1)
    return touches_30d, channel_week


def caps_reached(
    policy: Policy, touches_30d: np.ndarray, on_channel: np.ndarray, channel: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Which touches the policy's caps forbid: (30-day cap reached, weekly channel cap reached).

    Parameters
    ----------
    touches_30d : int array, per touch its user's count from `cap_counts`.
    on_channel : int array, per touch its user's `channel_week` on the touch's channel.
    channel : int array, the touch's channel (index into CHANNELS).
    """
    over_30d = np.asarray(touches_30d) >= policy.touches_per_30d
    over_week = np.asarray(on_channel) >= np.asarray(policy.per_channel_week)[channel]
    return over_30d, over_week
