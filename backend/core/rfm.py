"""RFM: recency, frequency and monetary quintile scores 1–5, and named segments.

Scores come from each user's percentile among the tenant's users: score = ceil(5 · (rank −
0.5) / n) with ties taking their lowest rank, so a block of tied users (say, everyone who
never ordered) all get the score of the block's bottom, never a middling one by averaging.
Tiny tenants need no special case: a lone user scores 3 (the middle), two users 2 and 4.
Users who never ordered score 1 on F and M whatever the ranks say. Recency is scored on days
since the last visit, fewer days scoring higher.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

# (name, rule on R and FM = floor((F + M) / 2 + 0.5), i.e. halves round up), first match wins.
SEGMENTS: list[tuple[str, str]] = [
    ("champions", "R >= 4 and FM >= 4"),
    ("loyal", "R >= 3 and FM >= 3"),
    ("promising", "R >= 4 and FM <= 2"),
    ("need_attention", "R == 3 and FM <= 2"),
    ("cant_lose", "R <= 2 and FM >= 4"),
    ("at_risk", "R <= 2 and FM == 3"),
    ("hibernating", "R == 2 and FM <= 2"),
    ("lost", "R == 1 and FM <= 2"),
]
SEGMENT_NAMES = [name for name, _ in SEGMENTS]


def quintile_scores(values, higher_is_better: bool = True) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return np.zeros(0, dtype=np.int8)
    ranks = rankdata(v if higher_is_better else -v, method="min")
    return np.clip(np.ceil(5 * (ranks - 0.5) / v.size), 1, 5).astype(np.int8)


def rfm_scores(days_since_visit, orders, spend_fen) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r = quintile_scores(days_since_visit, higher_is_better=False)
    f = quintile_scores(orders)
    m = quintile_scores(spend_fen)
    # Nobody who never ordered is scored above 1 on F or M, however many others are tied.
    none = np.asarray(orders) == 0
    f = np.where(none, 1, f).astype(np.int8)
    m = np.where(np.asarray(spend_fen) == 0, 1, m).astype(np.int8)
    return r, f, m


def segments(r: np.ndarray, f: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Segment index into SEGMENT_NAMES per user, by the SEGMENTS table."""
    fm = np.floor((f.astype(np.float64) + m) / 2 + 0.5)
    conditions = [
        (r >= 4) & (fm >= 4),
        (r >= 3) & (fm >= 3),
        (r >= 4) & (fm <= 2),
        (r == 3) & (fm <= 2),
        (r <= 2) & (fm >= 4),
        (r <= 2) & (fm == 3),
        (r == 2) & (fm <= 2),
        (r == 1) & (fm <= 2),
    ]
    return np.select(conditions, np.arange(len(SEGMENTS)), default=len(SEGMENTS) - 1).astype(
        np.int8
    )
