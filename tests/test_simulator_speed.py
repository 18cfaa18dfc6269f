"""Guards for the simulator's speed work (issue 17): what was made cheaper still says the same."""

from __future__ import annotations

import numpy as np

from backend.core.tiers import TIERS
from simulator.blas_threads import _scipy_openblas, one_scipy_blas_thread
from simulator.model import CampusModel


def test_scipy_blas_runs_on_one_thread_inside_the_block_and_is_restored_after():
    found = _scipy_openblas()
    if found is None:  # scipy built against the system's BLAS: nothing is changed
        with one_scipy_blas_thread():
            pass
        return
    get, set_ = found
    before = int(get())
    set_(2)
    try:
        with one_scipy_blas_thread():
            assert int(get()) == 1
        assert int(get()) == 2
    finally:
        set_(before)


def test_the_daily_tier_counts_are_the_morning_scores_tiers():
    model = CampusModel(users=800, seed=4)
    for _ in range(12):
        model.step()
        row = model.datacollector.get_model_vars_dataframe().iloc[-1]
        for i, name in enumerate(TIERS):
            assert row[f"tier_{name}"] == np.count_nonzero(model.scores.tier == i)
