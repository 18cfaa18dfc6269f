"""What every benchmark here times the same way (imported by the scripts beside it)."""

from __future__ import annotations

import statistics
import time


def timed(fn, repeats: int):
    """(median seconds, all seconds, last result) of `repeats` calls."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, result
