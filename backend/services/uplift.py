"""Fitting the uplift learner from a tenant's own finished touches (treated vs holdout)."""

from __future__ import annotations

import numpy as np

from backend.core.uplift import UpliftModel, fit_two_model, uplift_features
from backend.errors import ApiError
from backend.store.models import ScoreSnapshot, Touch


def fit_for_tenant(tenant_id: int) -> UpliftModel:
    """Features from each touch's day's snapshot; outcome: returned within the window."""
    rows = list(
        Touch.select(
            Touch.status,
            Touch.returned_ms.is_null(False),
            ScoreSnapshot.term_days_since_visit,
            ScoreSnapshot.visit_days_30,
            ScoreSnapshot.orders_total,
            ScoreSnapshot.spend_fen_total,
            ScoreSnapshot.p_alive,
            ScoreSnapshot.activity_index,
            ScoreSnapshot.worth_recalling,
            ScoreSnapshot.usual_hour,
        )
        .join(
            ScoreSnapshot,
            on=(
                (ScoreSnapshot.user == Touch.user)
                & (ScoreSnapshot.day == Touch.day)
                & (ScoreSnapshot.tenant == Touch.tenant)
            ),
        )
        .where(
            (Touch.tenant == tenant_id) & Touch.attributed & Touch.status.in_(("sent", "held_out"))
        )
        # A fixed order: the fit's sums then round the same way every time (and as the
        # simulator's, which fits the same touches in this order: simulator/campaign.py).
        .order_by(Touch.day, Touch.user, Touch.id)
        .tuples()
    )
    if not rows:
        raise ApiError(409, "not_enough_outcomes", "no finished touches to learn uplift from")
    cols = list(zip(*rows, strict=True))
    x = uplift_features(
        cols[2],
        cols[3],
        cols[4],
        cols[5],
        np.array([np.nan if p is None else p for p in cols[6]], dtype=float),
        cols[7],
        cols[8],
        cols[9],
    )
    treated = np.array([s == "sent" for s in cols[0]])
    returned = np.array(cols[1], dtype=bool)
    try:
        return fit_two_model(x, treated, returned)
    except ValueError as exc:
        raise ApiError(409, "not_enough_outcomes", str(exc)) from None
