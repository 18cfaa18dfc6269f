"""One BLAS thread for the optimiser scipy bundles, while a campus model refits BG/NBD.

The weekly BG/NBD fit (core.bgnbd.fit_bgnbd, production's) runs scipy's L-BFGS-B, which calls
the OpenBLAS bundled with scipy at every iteration on vectors of four parameters and matrices
of twenty rows. That library keeps a pool of worker threads, one per core; on this 2-core
machine, with the model's own worker thread living the twin's day beside the morning job, each
of those tiny calls waited for the pool to be scheduled: about 2 ms a call, 17 s of a 30 s
`compare` of three presets × 2 seeds at 20,000 students (cProfile: `setulb`). Those sizes are
far below any that OpenBLAS splits over threads, so with one thread it computes the same bits
(bench/simulate.py's fingerprints say so), only without the waiting. numpy's own OpenBLAS (the
objective's dot products) is left as it is.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import scipy

# (get, set) names of the thread count in the OpenBLAS builds scipy's wheels bundle.
_NAMES = (
    ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
    ("openblas_get_num_threads", "openblas_set_num_threads"),
)


@cache
def _scipy_openblas() -> tuple | None:
    """The (get, set) thread-count functions of scipy's bundled OpenBLAS; None where scipy
    bundles none (a build against the system's BLAS: nothing to do then)."""
    libs = Path(scipy.__file__).resolve().parent.parent / "scipy.libs"
    for path in sorted(libs.glob("libscipy_openblas*")) if libs.is_dir() else ():
        lib = ctypes.CDLL(str(path))
        for get, set_ in _NAMES:
            if hasattr(lib, get) and hasattr(lib, set_):
                return getattr(lib, get), getattr(lib, set_)
    return None


@contextmanager
def one_scipy_blas_thread() -> Iterator[None]:
    """Within the block, scipy's bundled OpenBLAS runs on one thread; its count is restored
    after (calibration and anything else in the process keep theirs)."""
    found = _scipy_openblas()
    if found is None:
        yield
        return
    get, set_ = found
    before = int(get())
    set_(1)
    try:
        yield
    finally:
        set_(before)
