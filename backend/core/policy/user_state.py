"""Building the `UserState` a decision reads, the one way the job and the simulator both use.

The campaign job (services/campaigns/population.py) reads its columns from the score snapshot,
the user table and the touch table; the simulator (simulator/campaign.py) from its campus and
its books. Both hand them here, so when a lapse starts, who can be reached where, and how the
touch history becomes caps, journeys and streaks is written once.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from backend.core.policy.decide import UserState
from backend.core.policy.guards import contact_hour
from backend.core.policy.history import TouchHistory, history_state
from backend.core.policy.spec import CHANNELS, OA_TEMPLATE, SMS


def journey_start(
    today: int, days_since_visit: np.ndarray, triggered: np.ndarray | None = None
) -> np.ndarray:
    """The first day of each user's current journey.

    Parameters
    ----------
    today : the decision day.
    days_since_visit : int array, calendar days since each user's last visit as of `today`.
    triggered : for a trigger policy, which users' event fired today (a bool mask or row
        indices); None for a nightly policy.

    Returns
    -------
    int64 array. Nightly: the current lapse began the day after the last visit. Trigger: the
    journey starts today for the triggered users, and tomorrow (none under way) for the rest.
    """
    if triggered is None:
        return np.subtract(today + 1, np.asarray(days_since_visit, dtype=np.int64))
    start = np.full(np.asarray(days_since_visit).size, today + 1, dtype=np.int64)
    start[triggered] = today
    return start


def reach(follows_oa: np.ndarray, has_phone: np.ndarray) -> np.ndarray:
    """UserState.reachable: (users × CHANNELS), where an address is known (an Official
    Account follower, a phone number). Subscribe and in-app columns stay False: decide reads
    allowances for the one and needs no address for the other."""
    out = np.zeros((np.asarray(follows_oa).size, len(CHANNELS)), dtype=bool)
    out[:, OA_TEMPLATE] = follows_oa
    out[:, SMS] = has_phone
    return out


def user_state(
    today: int,
    *,
    user_key: np.ndarray,
    tier: np.ndarray,
    segment: np.ndarray,
    worth_recalling: np.ndarray,
    value_fen: np.ndarray,
    p_alive: np.ndarray,
    term_days_silent: np.ndarray,
    usual_hour: np.ndarray,
    opted_out: np.ndarray,
    reachable: np.ndarray,
    allowance: Mapping[str, np.ndarray],
    history: TouchHistory,
    start: np.ndarray,
    triggered: bool,
    uplift: np.ndarray | None,
) -> UserState:
    """The state `decide` reads on `today`, one row per user (columns as in UserState).

    Parameters
    ----------
    usual_hour : int array, each user's most active China hour, -1 when none is known (they
        are written to at noon: guards.contact_hour).
    history : the touches of the last HISTORY_DAYS, users as row indices.
    start : int array, each user's journey start (`journey_start`).
    triggered : whether this is a trigger policy's state (days_since_trigger is then set:
        -1 for users without a trigger today).
    """
    past = history_state(history, np.asarray(user_key).size, today, start)
    return UserState(
        user_key=user_key,
        tier=tier,
        segment=segment,
        worth_recalling=worth_recalling,
        value_fen=value_fen,
        p_alive=p_alive,
        term_days_silent=term_days_silent,
        usual_hour=contact_hour(usual_hour),
        opted_out=opted_out,
        last_step=past.last_step,
        journey_arm=past.journey_arm,
        touches_30d=past.touches_30d,
        channel_week=past.channel_week,
        reachable=reachable,
        allowance=allowance,
        ignored_streak=past.ignored_streak,
        days_since_trigger=today - start if triggered else None,
        uplift=uplift,
    )
