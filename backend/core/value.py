"""Is a user worth recalling, and what might they bring back?"""

from __future__ import annotations

import numpy as np


def worth_recalling(spend_fen_total, invites_total, content_total, ltv_threshold_fen: int):
    """The playbook rule: paid before (LTV above the threshold), invited friends, produced
    content (reviews, comments) — at least 2 of the 3."""
    paid = np.asarray(spend_fen_total) > ltv_threshold_fen
    invited = np.asarray(invites_total) > 0
    wrote = np.asarray(content_total) > 0
    return (paid & (invited | wrote)) | (invited & wrote)  # at least 2 of the 3


def tenant_aov(spend_fen_total, orders_total) -> float:
    """The tenant's average order value in fen (0 before any order): what a user who never
    ordered is valued at. Over every user's columns, however few rows are valued."""
    total_orders = _total(np.asarray(orders_total))
    total_spend = _total(np.asarray(spend_fen_total))
    return total_spend / total_orders if total_orders > 0 else 0.0


def expected_value_fen(
    expected_orders, spend_fen_total, orders_total, average_fen: float | None = None
) -> np.ndarray:
    """Expected orders × average order value, in integer fen.

    A user's own average order value when they have ordered, else the tenant's average, so a
    newcomer is valued like a typical customer rather than at zero. `average_fen` passes in
    `tenant_aov` of the whole population when only some users' columns are given.
    """
    orders, spend = np.asarray(orders_total), np.asarray(spend_fen_total)
    if average_fen is None:
        average_fen = tenant_aov(spend, orders)
    aov = np.full(np.broadcast_shapes(orders.shape, spend.shape), average_fen)
    # spend / max(orders, 1) where orders > 0 (as float64), in the buffer holding the rest;
    # whole-number orders above 0 are at least 1 already.
    divisor = orders if orders.dtype.kind in "iub" else np.maximum(orders, 1)
    if aov.ndim == 1 and orders.shape == spend.shape == aov.shape:
        buyers = np.flatnonzero(orders > 0)  # a row list: numpy's masked writes are slow
        aov[buyers] = np.divide(spend[buyers], divisor[buyers], dtype=np.float64)
    else:
        np.divide(spend, divisor, out=aov, where=orders > 0, dtype=np.float64)
    expected = np.asarray(expected_orders, dtype=np.float64)
    if not np.isfinite(expected).all():
        expected = np.nan_to_num(expected)
    value = np.multiply(expected, aov, out=aov) if aov.shape == expected.shape else expected * aov
    return np.rint(value, out=value).astype(np.int64)


def _total(values: np.ndarray) -> float:
    """values.astype(float64).sum(): for whole numbers through an exact integer sum (a float
    sum of integers is exact, in any order, while every partial sum stays below 2^53)."""
    if values.dtype.kind in "iub":
        top = max(abs(int(values.max(initial=0))), abs(int(values.min(initial=0))))
        if top * values.size < 2**53:  # every partial sum exact: the order does not matter
            total = int(values.sum(dtype=np.int64))
            return float(total)
    return float(np.asarray(values, dtype=np.float64).sum())
