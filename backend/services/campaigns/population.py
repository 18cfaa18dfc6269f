"""The users a policy decides over, from the score snapshot and the user table.

Each user's columns (tier, silence, value, usual hour ...) come from the day's score snapshot;
where they can be reached from the user table; their past touches and allowances from the
touch and allowance tables. core.policy.user_state turns them into the `UserState` decide
reads, as it does for the simulator.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import peewee as pw

from backend.core.policy import Policy, UserState
from backend.core.policy.user_state import journey_start, reach, user_state
from backend.core.rfm import SEGMENT_NAMES
from backend.core.tiers import TIERS
from backend.core.uplift import (
    UpliftModel,
    predict_uplift,
    risk_instead_of_uplift,
    uplift_features,
)
from backend.services.campaigns.allowances import allowances
from backend.services.campaigns.columns import named, positions
from backend.services.campaigns.history import touch_history
from backend.store.db import database
from backend.store.models import Policy as PolicyRow
from backend.store.models import ScoreSnapshot, User

# The score snapshot's columns a decision reads, by the name used here.
_SNAPSHOT = {
    "user": ScoreSnapshot.user,
    "tier": ScoreSnapshot.tier,
    "segment": ScoreSnapshot.segment,
    "worth": ScoreSnapshot.worth_recalling,
    "value": ScoreSnapshot.value_fen,
    "p_alive": ScoreSnapshot.p_alive,
    "term_silent": ScoreSnapshot.term_days_since_visit,
    "silent": ScoreSnapshot.days_since_visit,
    "hour": ScoreSnapshot.usual_hour,
    "visit_days_30": ScoreSnapshot.visit_days_30,
    "orders": ScoreSnapshot.orders_total,
    "spend": ScoreSnapshot.spend_fen_total,
    "activity": ScoreSnapshot.activity_index,
}
# What a user who joined after the last scoring looks like (an event trigger can fire on a
# first visit): a new user, seen today, with nothing known yet.
_UNSCORED = {
    "tier": "new",
    "segment": "promising",
    "worth": False,
    "value": 0,
    "p_alive": None,
    "term_silent": 0,
    "silent": 0,
    "hour": -1,
    "visit_days_30": 1,
    "orders": 0,
    "spend": 0,
    "activity": 0.0,
}
# The user table's columns: where each user can be reached.
_USERS = {
    "id": "id",
    "openid": "openid",
    "opted_out": "marketing_opt_out",
    "has_phone": "phone IS NOT NULL",
    "follows_oa": "oa_openid IS NOT NULL",
}


@dataclass
class Population:
    """The users a policy decides over, as columns aligned with `user_ids`."""

    user_ids: np.ndarray  # database ids, sorted
    openids: list[str]  # "" for a user gone since scoring
    state: UserState
    tier: np.ndarray  # index into TIERS
    days_since_visit: np.ndarray  # calendar days, on the decision day
    value_fen: np.ndarray  # the scoring layer's value estimate, stored with each touch


def population(
    tenant_id: int,
    row: PolicyRow,
    policy: Policy,
    day: int,
    snapshot_day: int,
    *,
    only: list[int] | None = None,
    triggered: Collection[int] | None = None,
) -> Population:
    """Every scored user's state for `policy` on `day` (or just the users in `only`).

    `snapshot_day` is the score snapshot read: `day` for the nightly job, the latest one for
    a trigger between nightly runs (its silences are moved on to `day`). `triggered`: for a
    trigger policy, the users whose event fired today (their journey starts today).
    """
    col = _snapshot(tenant_id, snapshot_day, only)
    ids = np.array(col["user"], dtype=np.int64)
    n = ids.size
    lag = day - snapshot_day  # a trigger between nightly runs uses yesterday's scores
    silent = np.array(col["silent"], dtype=np.int64) + lag
    term_silent = np.array(col["term_silent"], dtype=np.int64) + lag
    value = np.array(col["value"], dtype=np.int64)
    tier = np.array([TIERS.index(t) for t in col["tier"]], dtype=np.int8)
    openids, opted_out, reachable = _addresses(tenant_id, ids)
    rows = None if triggered is None else np.isin(ids, list(triggered))
    pos = {int(u): i for i, u in enumerate(ids)}
    state = user_state(
        day,
        user_key=ids,
        tier=tier,
        segment=np.array([SEGMENT_NAMES.index(s) for s in col["segment"]], dtype=np.int8),
        worth_recalling=np.array(col["worth"], dtype=bool),
        value_fen=value,
        p_alive=_p_alive(col),
        term_days_silent=term_silent,
        usual_hour=np.array(col["hour"], dtype=np.int64),
        opted_out=opted_out,
        reachable=reachable,
        allowance=allowances(tenant_id, policy, pos, n, row.id, day),
        history=touch_history(tenant_id, ids, day, row.id, policy),
        start=journey_start(day, silent, rows),
        triggered=triggered is not None,
        uplift=_uplift(row, col, term_silent) if policy.rank_by == "uplift" else None,
    )
    return Population(ids, openids, state, tier, silent, value)


def _snapshot(tenant_id: int, day: int, only: list[int] | None) -> dict[str, tuple]:
    """The snapshot's columns (_SNAPSHOT) of `day`, by user; with `only`, just those users,
    and the ones not scored yet as _UNSCORED."""
    q = ScoreSnapshot.select(*_SNAPSHOT.values()).where(
        (ScoreSnapshot.tenant == tenant_id) & (ScoreSnapshot.day == day)
    )
    if only is not None:
        q = q.where(ScoreSnapshot.user.in_(only))
    rows = list(q.order_by(ScoreSnapshot.user).tuples())
    if only is not None:
        scored = {r[0] for r in rows}  # the first column is the user
        rows = sorted(rows + _unscored(tenant_id, set(only) - scored))
    return named(tuple(_SNAPSHOT), rows)


def _unscored(tenant_id: int, user_ids: set[int]) -> list[tuple]:
    """Snapshot-shaped rows (_SNAPSHOT's columns) for those of `user_ids` who exist."""
    if not user_ids:
        return []
    rows = User.select(User.id).where((User.tenant == tenant_id) & User.id.in_(sorted(user_ids)))
    return [(u.id, *(_UNSCORED[name] for name in list(_SNAPSHOT)[1:])) for u in rows]


def _p_alive(col: dict[str, tuple]) -> np.ndarray:
    """P(alive) per user, NaN where the model gave none."""
    return np.array([np.nan if p is None else p for p in col["p_alive"]], dtype=float)


def _addresses(tenant_id: int, ids: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(openids, opted out, UserState.reachable) of the users `ids`. A user gone since
    scoring has no openid, is reachable nowhere and counts as opted out: never messaged."""
    rows = database.execute_sql(
        f"SELECT {', '.join(_USERS.values())} "
        f'FROM "user" WHERE tenant_id = {database.param} ORDER BY id',
        [tenant_id],
    ).fetchall()
    col = named(tuple(_USERS), rows)
    at, known = positions(np.array(col["id"], dtype=np.int64), ids)
    opted_out = ~known | np.array(col["opted_out"], dtype=bool)[at]
    follows_oa = np.array(col["follows_oa"], dtype=bool)[at]
    has_phone = np.array(col["has_phone"], dtype=bool)[at]
    openid = col["openid"]
    openids = [openid[j] if k else "" for j, k in zip(at.tolist(), known.tolist(), strict=True)]
    return openids, opted_out, reach(known & follows_oa, known & has_phone)


def _uplift(row: PolicyRow, col: dict[str, tuple], term_silent: np.ndarray) -> np.ndarray:
    """Estimated uplift per user from the policy's fitted model.

    Until a model is fitted (POST /admin/v1/policies/NAME/uplift-model) the policy ranks by
    risk, 1 − P(alive), so it still runs; the preview says which ranking was used.
    """
    p_alive = _p_alive(col)
    if not row.uplift_model:
        return risk_instead_of_uplift(p_alive)
    model = UpliftModel.from_dict(json.loads(row.uplift_model))
    x = uplift_features(
        term_silent,
        col["visit_days_30"],
        col["orders"],
        col["spend"],
        p_alive,
        col["activity"],
        col["worth"],
        col["hour"],
    )
    return predict_uplift(model, x)


def latest_snapshot_day(tenant_id: int, day: int) -> int | None:
    """The latest scored day up to `day` (None: never scored): what a trigger or a preview
    decides on when today has not been scored yet."""
    return (
        ScoreSnapshot.select(pw.fn.MAX(ScoreSnapshot.day))
        .where((ScoreSnapshot.tenant == tenant_id) & (ScoreSnapshot.day <= day))
        .scalar()
    )
