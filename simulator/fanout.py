"""A comparison's runs (one policy on one seed each) spread over the machine's cores.

`compare` lives every policy on every seed; each run builds its own model from its own seed
and shares nothing with the others, so they can run side by side and be gathered in their
order: the same runs, the same bits, in the same order as one after another (bench/simulate.py's
`trial` fingerprint checks it). The dashboard's trial (3 presets × 5 seeds) is fifteen such
runs; on 2 cores two at a time took it from about 14 s to about 8 s.

Processes, not threads: a run is numpy calls on small arrays held by the GIL between them.
They are forked where the platform can and the caller runs one thread (so nothing is forked
mid-lock); otherwise spawned, which costs each process its imports. A child's days of progress
come back through a queue, so a progress bar moves as it did.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

# The environment variable that caps the processes (1: every run in the calling process).
PROCESSES_ENV = "HUILIU_SIM_PROCESSES"

_progress_queue: Any = None  # the child's end of the parent's progress queue


def available_cores() -> int:
    """The cores this process may run on (a container's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def process_count(runs: int, processes: int | None = None) -> int:
    """How many processes to use for `runs` runs.

    Parameters
    ----------
    runs : the number of independent runs.
    processes : the caller's cap; None reads HUILIU_SIM_PROCESSES, else the available cores.

    Returns
    -------
    Between 1 and `runs`; 1 means run them in this process.
    """
    if multiprocessing.current_process().daemon:
        return 1  # a task queue's worker process may not have children (Huey's are daemons)
    if processes is None:
        env = os.environ.get(PROCESSES_ENV, "").strip()
        processes = int(env) if env else available_cores()
    return max(1, min(processes, runs))


def run_all(
    job: Callable[..., Any],
    args: Sequence[tuple],
    progress: Callable[[int], None] | None = None,
    processes: int | None = None,
) -> list[Any]:
    """`job(*a, progress)` for each `a` in `args`, their answers in the order of `args`.

    `job` must be a module-level function (a child imports it by name) whose last argument is
    a per-day progress callback (or None). In one process it is called with `progress`
    itself; in several, the children's steps come back to `progress` in this process.
    """
    count = process_count(len(args), processes)
    if count == 1:
        return [job(*a, progress) for a in args]
    context = _context()
    steps = context.SimpleQueue() if progress is not None else None
    with ProcessPoolExecutor(count, context, initializer=_child_init, initargs=(steps,)) as pool:
        futures = [pool.submit(job, *a, _child_progress if steps else None) for a in args]
        try:
            _await(futures, steps, progress)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        return [f.result() for f in futures]


def _context() -> multiprocessing.context.BaseContext:
    """Fork where it is safe and offered (fast: the children start with our imports)."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _child_init(steps: Any) -> None:
    global _progress_queue
    _progress_queue = steps


def _child_progress(n: int) -> None:
    """A child's progress callback: its steps go to the parent's queue."""
    _progress_queue.put(n)


def _await(futures: list[Future], steps: Any, progress: Callable[[int], None] | None) -> None:
    """Wait for every run, passing the children's steps on to `progress` as they come; the
    first run to fail raises here (and the runs not yet started are cancelled)."""
    pending = set(futures)
    while pending:
        done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
        _drain(steps, progress)
        for f in done:
            f.result()
    _drain(steps, progress)


def _drain(steps: Any, progress: Callable[[int], None] | None) -> None:
    if steps is None or progress is None:
        return
    while True:
        try:
            if steps.empty():
                return
            progress(steps.get())
        except (queue.Empty, EOFError, OSError):
            return
