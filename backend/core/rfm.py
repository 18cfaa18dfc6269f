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


_TABLE_SPAN = 1 << 22  # integer columns spanning at most this (or 2n) are counted directly


def _counts(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, int] | None:
    """For whole numbers on a short range: users per value over the range, each user's
    offset into it and the lowest value (a bincount, no sort). None for a wide range."""
    if v.dtype.kind not in "iu":
        return None
    lo, hi = int(v.min()), int(v.max())
    if hi - lo > max(_TABLE_SPAN, 2 * v.size):
        return None
    shifted = v - lo if lo else v
    return np.bincount(shifted, minlength=hi - lo + 1), shifted, lo


def quintile_scores(values, higher_is_better: bool = True) -> np.ndarray:
    """ceil(5 · (rank − 0.5) / n) clipped to 1..5, ranks ascending with ties at their lowest.

    With L = how many users rank strictly below a user (rank = L + 1), score ≥ k exactly when
    10·L > 2(k − 1)·n − 5, i.e. L ≥ c_k = ⌊(2(k − 1)n − 5) / 10⌋ + 1 (integer arithmetic: the
    float ceil of the definition is exact here). So no ranking is needed: integer columns
    count L per distinct value with a bincount; others compare against the c_k-th smallest
    values (np.partition, linear time). NaNs go through the ranking of the definition.
    """
    v = np.asarray(values)
    if v.dtype.kind not in "iuf":
        v = v.astype(np.float64)
    n = v.size
    if n == 0:
        return np.zeros(0, dtype=np.int8)
    if v.dtype.kind == "f" and np.isnan(v).any():
        ranks = rankdata(v if higher_is_better else -v, method="min")
        return np.clip(np.ceil(5 * (ranks - 0.5) / n), 1, 5).astype(np.int8)
    table = _score_table(v, higher_is_better)
    if table is not None:
        return table[0][table[1]]
    # score ≥ k ⟺ L ≥ c ⟺ the value is beyond the c-th worst value (for 1 ≤ c ≤ n − 1).
    cuts = _cuts(n)
    inside = sorted({c for c in cuts if 1 <= c <= n - 1})
    kth = [c - 1 for c in inside] if higher_is_better else [n - c for c in inside]
    order_stats = dict(zip(inside, np.partition(v, kth)[kth], strict=True)) if kth else {}
    score = np.ones(n, dtype=np.int8)
    for c in cuts:
        if c <= 0:
            score += 1
        elif c <= n - 1:
            score += v > order_stats[c] if higher_is_better else v < order_stats[c]
    return score


def _cuts(n: int) -> list[int]:
    """c_2 .. c_5: score ≥ k exactly when at least c_k users rank strictly below."""
    return [(2 * (k - 1) * n - 5) // 10 + 1 for k in range(2, 6)]


def _score_table(v: np.ndarray, higher_is_better: bool):
    """For whole numbers on a short range: (score per value over the range, each user's
    offset into it, the range's lowest value); None otherwise."""
    counted = _counts(v)
    if counted is None:
        return None
    counts, shifted, lo = counted
    at_or_below = np.cumsum(counts)
    ranked_below = at_or_below - counts if higher_is_better else v.size - at_or_below
    table = np.ones(counts.size, dtype=np.int8)
    for c in _cuts(v.size):
        table += ranked_below >= c
    return table, shifted, lo


def _floor_at_zero(values, higher_is_better: bool = True) -> np.ndarray:
    """Quintile scores, with 1 wherever the value is 0 (never ordered, never spent)."""
    v = np.asarray(values)
    table = _score_table(v, higher_is_better) if v.size else None
    if table is not None:
        scores, shifted, lo = table
        if lo <= 0 < lo + scores.size:
            scores[-lo] = 1  # the table entry for value 0
        return scores[shifted]
    return np.where(v == 0, 1, quintile_scores(v, higher_is_better)).astype(np.int8)


def rfm_scores(days_since_visit, orders, spend_fen) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Recency, frequency and monetary quintile scores 1..5 of every user, against the others.

    Parameters
    ----------
    days_since_visit : int64 days since the last visit (columns.NEVER if never seen); fewer
        is better.
    orders : int64 orders, all time.
    spend_fen : int64 money spent, all time, in fen.

    Returns
    -------
    (r, f, m) : int8 scores 1..5 per user; a user who never ordered scores 1 on F and M.
    """
    r = quintile_scores(days_since_visit, higher_is_better=False)
    # Nobody who never ordered is scored above 1 on F or M, however many others are tied.
    f = _floor_at_zero(orders)
    m = _floor_at_zero(spend_fen)
    return r, f, m


def _segment_rules(r: np.ndarray, f: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Segment index per user by the SEGMENTS table, evaluated rule by rule."""
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


# The rules depend on R and F + M only: their value for every R in 0..5 and F + M in 0..10,
# so scoring a million users is one small-integer key and one gather, not eight passes.
_R, _FM = np.divmod(np.arange(6 * 11), 11)
_SEGMENT_TABLE = _segment_rules(_R, _FM, np.zeros_like(_FM))


def segments(r: np.ndarray, f: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Segment index into SEGMENT_NAMES per user, by the SEGMENTS table."""
    r, f, m = np.asarray(r), np.asarray(f), np.asarray(m)
    scores = (r, f, m)
    if r.size > 64 and all(s.dtype.kind in "iu" and s.min() >= 0 and s.max() <= 5 for s in scores):
        r8, f8, m8 = (s.astype(np.int8, copy=False) for s in scores)
        key = r8 * np.int8(11) + f8 + m8
        return _SEGMENT_TABLE[key]
    return _segment_rules(r, f, m)
