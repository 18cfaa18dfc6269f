"""Which touches brought their user back: first visit and orders after each touch, in a window.

Columns in, columns out, so the backend's attribution and the simulator's count returns the
same way. A holdout "would have sent" touch is attributed exactly like a real one.
"""

from __future__ import annotations

import numpy as np


def _keys(user: np.ndarray, ms: np.ndarray, origin: int, span: int) -> np.ndarray:
    return np.asarray(user, dtype=np.int64) * span + (np.asarray(ms, dtype=np.int64) - origin)


def in_window(touch_ms, event_ms, window_ms: int) -> np.ndarray:
    """The attribution window itself: an event counts for a touch when it comes strictly
    after the touch and at most `window_ms` later. (`first_after` and `sum_within` search
    with it; a caller with one event per user and day can apply it directly.)"""
    gap = np.asarray(event_ms, dtype=np.int64) - np.asarray(touch_ms, dtype=np.int64)
    return (gap > 0) & (gap <= window_ms)


def first_after(
    touch_user: np.ndarray,
    touch_ms: np.ndarray,
    event_user: np.ndarray,
    event_ms: np.ndarray,
    window_ms: int,
) -> np.ndarray:
    """Per touch, the time of its user's first event strictly after the touch and within
    `window_ms`, or -1: when a touched user came back, if they did in time.

    Parameters
    ----------
    touch_user, event_user : int64 user indices 0..n-1 (small non-negative integers, not
        database ids).
    touch_ms, event_ms : int64 UTC epoch ms of each touch (its send) and each event.
    window_ms : how long after the touch an event still counts, in ms.

    Returns
    -------
    int64 per touch: the epoch ms of that first event, -1 when there was none.
    """
    touch_ms = np.asarray(touch_ms, dtype=np.int64)
    out = np.full(touch_ms.size, -1, dtype=np.int64)
    if touch_ms.size == 0 or np.asarray(event_ms).size == 0:
        return out
    e_ms = np.asarray(event_ms, dtype=np.int64)
    origin = int(min(e_ms.min(), touch_ms.min()))
    span = int(max(e_ms.max(), touch_ms.max() + window_ms) - origin + 2)
    ekey = np.sort(_keys(event_user, e_ms, origin, span))
    tkey = _keys(touch_user, touch_ms, origin, span)
    pos = np.searchsorted(ekey, tkey, side="right")
    has = pos < ekey.size
    nxt = np.where(has, ekey[np.minimum(pos, ekey.size - 1)], -1)
    hit = has & in_window(tkey, nxt, window_ms) & (nxt // span == tkey // span)
    out[hit] = nxt[hit] % span + origin
    return out


def sum_within(
    touch_user: np.ndarray,
    touch_ms: np.ndarray,
    event_user: np.ndarray,
    event_ms: np.ndarray,
    amount: np.ndarray,
    window_ms: int,
) -> np.ndarray:
    """Per touch, the sum of its user's event amounts in (touch, touch + window]: the revenue
    a touch is credited with.

    Parameters
    ----------
    touch_user, event_user : int64 user indices 0..n-1.
    touch_ms, event_ms : int64 UTC epoch ms.
    amount : int64 per event (order amounts in fen).
    window_ms : the attribution window in ms.

    Returns
    -------
    int64 per touch: the summed amounts (0 when none fell in the window).
    """
    touch_ms = np.asarray(touch_ms, dtype=np.int64)
    if touch_ms.size == 0 or np.asarray(event_ms).size == 0:
        return np.zeros(touch_ms.size, dtype=np.int64)
    e_ms = np.asarray(event_ms, dtype=np.int64)
    origin = int(min(e_ms.min(), touch_ms.min()))
    span = int(max(e_ms.max(), touch_ms.max() + window_ms) - origin + 2)
    ekey = _keys(event_user, e_ms, origin, span)
    order = np.argsort(ekey, kind="stable")
    ekey = ekey[order]
    csum = np.concatenate([[0], np.cumsum(np.asarray(amount, dtype=np.int64)[order])])
    tkey = _keys(touch_user, touch_ms, origin, span)
    lo = np.searchsorted(ekey, tkey, side="right")
    hi = np.searchsorted(ekey, tkey + window_ms, side="right")
    return csum[hi] - csum[lo]
