"""One day's scores for every user: the single entry point the backend and simulator call."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.core import bgnbd
from backend.core.activity import Activity, compute_activity
from backend.core.calendar import TermCalendar
from backend.core.columns import EventColumns, OrderColumns, active_days, until
from backend.core.features import Features, compute_features
from backend.core.rfm import rfm_scores, segments
from backend.core.tiers import TierConfig, assign_tiers
from backend.core.value import expected_value_fen, worth_recalling

MIN_BUYERS_TO_FIT = 30  # below this the four BG/NBD parameters are not identifiable
REFIT_EVERY_DAYS = 7  # BG/NBD's four parameters move slowly: a fit serves a week of nights


def refit_due(last_fit_day: int | None, day: int) -> bool:
    """Whether tonight's scoring fits BG/NBD afresh or reuses the fit of `last_fit_day`.

    One rule for the nightly job and the simulator, so both score a day with the same
    parameters (a failed fit is retried the next night)."""
    return last_fit_day is None or not 0 <= day - last_fit_day < REFIT_EVERY_DAYS


@dataclass
class Scores:
    """Every score of every user on one day, in the columns' user order: what the nightly job
    stores as the score snapshot and the simulator decides on.

    `r`/`f`/`m`: int8 quintile scores 1..5 (core.rfm); `segment`: index into
    rfm.SEGMENT_NAMES; `p_alive`: BG/NBD P(alive), float64, NaN without a fit;
    `expected_orders`: orders expected over `TierConfig.value_horizon_days`; `value_fen`:
    expected value in int64 fen; `worth_recalling`: bool, the playbook rule (core.value);
    `tier`/`reason`: int8 indices into tiers.TIERS / tiers.REASONS; `params`: the BG/NBD fit
    used, None without one.
    """

    features: Features
    activity: Activity
    r: np.ndarray
    f: np.ndarray
    m: np.ndarray
    segment: np.ndarray
    p_alive: np.ndarray  # NaN when no model could be fitted
    expected_orders: np.ndarray
    value_fen: np.ndarray
    worth_recalling: np.ndarray
    tier: np.ndarray
    reason: np.ndarray
    params: bgnbd.BgNbdParams | None


def fit_for(features: Features) -> bgnbd.BgNbdParams | None:
    """BG/NBD on the users who have bought (time 0 is a first purchase), when there are enough."""
    buyers = np.flatnonzero(features.frequency + (features.spend_fen_total > 0) > 0)
    if buyers.size < MIN_BUYERS_TO_FIT or not np.any(features.frequency[buyers] > 0):
        return None
    params = bgnbd.fit_bgnbd(
        features.frequency[buyers], features.recency[buyers], features.T[buyers]
    )
    return params if params.converged else None


def scores_from(
    feats: Features,
    act: Activity,
    config: TierConfig,
    *,
    params: bgnbd.BgNbdParams | None = None,
    fit: bool = True,
) -> Scores:
    """RFM, churn probability, value and tier from features and activity: the tail that the
    batch (`score_users`) and rolling (`core.score_state.ScoreState.scores`) paths share."""
    n_users = feats.days_since_visit.size
    r, f, m = rfm_scores(feats.days_since_visit, feats.orders_total, feats.spend_fen_total)
    if params is None and fit:
        params = fit_for(feats)
    if params is not None:
        alive, expected = bgnbd.alive_and_expected(
            params, config.value_horizon_days, feats.frequency, feats.recency, feats.T
        )
    else:
        alive = np.full(n_users, np.nan)
        # Without a model: the user's own order rate over the last 90 days, scaled.
        expected = feats.orders_90 * (config.value_horizon_days / 90.0)
    tier, reason = assign_tiers(
        feats.term_days_since_visit,
        feats.age_days,
        feats.visit_days_30,
        1.0 - alive,
        act.warning,
        config,
    )
    return Scores(
        features=feats,
        activity=act,
        r=r,
        f=f,
        m=m,
        segment=segments(r, f, m),
        p_alive=alive,
        expected_orders=expected,
        value_fen=expected_value_fen(expected, feats.spend_fen_total, feats.orders_total),
        worth_recalling=worth_recalling(
            feats.spend_fen_total, feats.invites_total, feats.content_total, config.worth_ltv_fen
        ),
        tier=tier,
        reason=reason,
        params=params,
    )


def score_users(
    events: EventColumns,
    orders: OrderColumns,
    n_users: int,
    as_of: int,
    calendar: TermCalendar,
    config: TierConfig,
    *,
    first_seen: np.ndarray | None = None,
    last_seen: np.ndarray | None = None,
    params: bgnbd.BgNbdParams | None = None,
    fit: bool = True,
) -> Scores:
    """Features, activity, RFM, churn probability, value and tier of every user on `as_of`.

    Parameters
    ----------
    events, orders : the event and order columns (core.columns), users as indices
        0..n_users-1, days China-time day numbers; rows after `as_of` are ignored.
    n_users, as_of : how many users, and the day scored (its end).
    calendar, config : the tenant's breaks and tier thresholds.
    first_seen, last_seen : int64 day numbers per user, all time, for what lies before the
        events given.

    Returns
    -------
    Scores, one row per user.

    `params` reuses an earlier BG/NBD fit (job and simulator refit weekly: `refit_due`); with
    `fit` false and no params, P(alive) is left out (NaN) and tiers rest on silence alone.
    """
    events, orders = until(events, orders, as_of)
    visits = active_days(events)
    feats = compute_features(
        events, orders, n_users, as_of, calendar, first_seen, last_seen, visits=visits
    )
    act = compute_activity(events, orders, n_users, as_of, calendar, visits=visits)
    return scores_from(feats, act, config, params=params, fit=fit)
