"""Is a user worth recalling, and what might they bring back?"""

from __future__ import annotations

import numpy as np


def worth_recalling(spend_fen_total, invites_total, content_total, ltv_threshold_fen: int):
    """The playbook rule: paid before (LTV above the threshold), invited friends, produced
    content (reviews, comments) — at least 2 of the 3."""
    hits = (
        (np.asarray(spend_fen_total) > ltv_threshold_fen).astype(np.int8)
        + (np.asarray(invites_total) > 0)
        + (np.asarray(content_total) > 0)
    )
    return hits >= 2


def expected_value_fen(expected_orders, spend_fen_total, orders_total) -> np.ndarray:
    """Expected orders × average order value, in integer fen.

    A user's own average order value when they have ordered, else the tenant's average, so a
    newcomer is valued like a typical customer rather than at zero.
    """
    orders = np.asarray(orders_total, dtype=np.float64)
    spend = np.asarray(spend_fen_total, dtype=np.float64)
    tenant_aov = spend.sum() / orders.sum() if orders.sum() > 0 else 0.0
    aov = np.where(orders > 0, spend / np.maximum(orders, 1), tenant_aov)
    return np.rint(np.nan_to_num(np.asarray(expected_orders, dtype=np.float64)) * aov).astype(
        np.int64
    )
