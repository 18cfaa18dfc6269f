"""The past touches a decision reads, from the touch table (the simulator reads its books)."""

from __future__ import annotations

import numpy as np

from backend.core.policy import CHANNELS, Policy
from backend.core.policy.caps import CAP_STATUSES
from backend.core.policy.history import (
    HISTORY_DAYS,
    JOURNEY_STATUSES,
    MEASURED_STATUSES,
    TouchHistory,
)
from backend.services.campaigns.columns import named, positions
from backend.store.db import database

# The touch columns read, by name -> SQL expression.
_COLUMNS = {
    "user": "user_id",
    "policy": "policy_id",
    "day": "day",
    "step": "step",
    "arm": "arm",
    "channel": "channel",
    "status": "status",
    "attributed": "attributed",
    "returned": "returned_ms IS NOT NULL",
    "sent": "COALESCE(sent_ms, 0)",
}


def touch_history(
    tenant_id: int, ids: np.ndarray, day: int, policy_id: int, policy: Policy
) -> TouchHistory:
    """The tenant's touches of the last HISTORY_DAYS for the users decided on `day`.

    Parameters
    ----------
    ids : int array, the users decided (database ids, sorted); the history's users are
        indices into it, and other users' touches are left out.
    policy_id, policy : the deciding policy: its own touches carry their arm's index, every
        other policy's touches arm -1 (they count against the caps, not the journey).
    """
    ph = database.param
    rows = database.execute_sql(
        f"SELECT {', '.join(_COLUMNS.values())} FROM touch WHERE tenant_id = {ph} AND day >= {ph}",
        [tenant_id, day - HISTORY_DAYS],
    ).fetchall()
    col = named(tuple(_COLUMNS), rows)
    at, keep = positions(ids, np.array(col["user"], dtype=np.int64))
    status = np.array(col["status"], dtype=object)[keep]
    channel = np.array(col["channel"], dtype=object)[keep]
    channel_code = np.zeros(len(channel), dtype=np.int64)
    for k, name in enumerate(CHANNELS):
        channel_code[channel == name] = k
    arm_name = np.array(col["arm"], dtype=object)[keep]
    mine = np.array(col["policy"], dtype=np.int64)[keep] == policy_id
    arm = np.full(len(arm_name), -1, dtype=np.int64)
    for k, a in enumerate(policy.arms):
        arm[mine & (arm_name == a.name)] = k
    return TouchHistory(
        user=at[keep],
        day=np.array(col["day"], dtype=np.int64)[keep],
        step=np.array(col["step"], dtype=np.int64)[keep],
        channel=channel_code,
        arm=arm,
        active=np.isin(status, CAP_STATUSES),
        journey=np.isin(status, JOURNEY_STATUSES),
        measured=np.isin(status, MEASURED_STATUSES),
        attributed=np.array(col["attributed"], dtype=bool)[keep],
        returned=np.array(col["returned"], dtype=bool)[keep],
        sent=np.array(col["sent"], dtype=np.int64)[keep],
    )
