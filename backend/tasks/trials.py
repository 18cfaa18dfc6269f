"""Dashboard trials as tasks: a set-up, one task per run, a gather, and a sweep.

`trial` calibrates the twin once and makes the trial's parts (services/trial_parts.py); each
part, a policy on a seed, is a `trial_part` task of its own, so a platform with several
workers finishes a trial sooner; the part that completes the set queues `trial_gather`,
which builds the comparison and its page and marks the run done. A part reports its days as
it goes (the run's progress) and stops at a report once its run is cancelled or failed.
`trial_sweep` queues again, every minute, whatever a lapsed lease shows was left behind (Huey
drops a task whose worker is killed); the rows make every task safe to run twice.

The per-tenant limit is not the queue's (Huey has no per-key concurrency limit): the database
transaction that records the trial enforces it, atomically (services/simulations.py `start`).

The simulation itself is the simulator's (simulator/trial.py), which this room may not import
(pyproject.toml: tasks know no simulator, so the web app never loads Mesa): the command layer
hands it over as a loader (`use_engine`, backend/commands/simulation.py), imported on a task's
first use. Process workers are daemons and may not fork: a part is one run, in the worker.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from huey import crontab

from backend.errors import ApiError
from backend.services import locks, simulations, trial_parts
from backend.tasks.nightly import holder
from backend.tasks.queue import huey
from backend.tasks.runtime import in_app, serving

REPORTS_PER_PART = 50  # progress writes (and cancel checks) a part makes at most

_engine_loader: Callable[[], Any] | None = None


class Stopped(Exception):
    """Raised from a part's progress report when its run is no longer running."""


def use_engine(loader: Callable[[], Any]) -> None:
    """How to load the simulator's side of a trial (`simulator.trial`): called once by the
    command layer, which may import the simulator; loaded on a task's first use."""
    global _engine_loader
    _engine_loader = loader


def engine() -> Any:
    """The simulator's side of a trial: prepare, part_count, part_days, run_part,
    gather_parts (simulator/trial.py)."""
    if _engine_loader is None:
        raise RuntimeError("no trial engine: backend.commands.simulation registers it")
    return _engine_loader()


def queue_trial(app, tenant_id: int, run_id: int) -> None:
    """The dashboard's start: queue the trial recorded by `simulations.start` (with
    `memory://` it runs here and now). Raises when the queue cannot be reached."""
    with serving(app):
        trial(tenant_id, run_id)


@huey.task(name="trial")
def trial(tenant_id: int, run_id: int) -> None:
    """Set a queued trial up and queue its parts; a run already taken is left alone."""
    with in_app() as app:
        set_up(app, tenant_id, run_id)


def set_up(app, tenant_id: int, run_id: int) -> None:
    """Claim the run, fix what its parts run on (the twin, the coupons' prices), make the
    parts and queue those waiting."""
    now_ms = app.config["CLOCK"].now_ms
    try:
        row = simulations.claim(run_id, now_ms())
    except ApiError:
        return  # taken, cancelled or ended: a duplicate task
    try:
        sim = engine()
        work, twin = sim.prepare(row, now_ms)
        simulations.heartbeat(run_id, 0.0, now_ms(), twin)
        count = sim.part_count(json.loads(row.request))
        waiting = trial_parts.plan(run_id, work, count, now_ms())
    except Exception as exc:
        simulations.fail(run_id, f"{type(exc).__name__}: {exc}", now_ms())
        raise
    for index in waiting:
        trial_part(tenant_id, run_id, index)


@huey.task(name="trial_part")
def trial_part(tenant_id: int, run_id: int, index: int) -> None:
    """One run of a trial (a policy on a seed); the last to finish queues the gather."""
    with in_app() as app:
        compute_part(app, tenant_id, run_id, index)


def compute_part(app, tenant_id: int, run_id: int, index: int) -> None:
    """Take the part (skipped if not waiting or its run stopped), run it reporting its days,
    keep its answer; queue the gather if this answer completed the set."""
    clock = app.config["CLOCK"]
    taken = trial_parts.claim(run_id, index, clock.now_ms())
    if taken is None:
        return
    request, work = taken
    sim = engine()
    days = sim.part_days(request)
    try:
        answer = sim.run_part(request, work, index, _reporter(run_id, index, days, clock))
    except Stopped:
        trial_parts.stopped(run_id, index, clock.now_ms())
        return
    except Exception as exc:
        simulations.fail(run_id, f"{type(exc).__name__}: {exc}", clock.now_ms())
        raise
    if trial_parts.store_answer(run_id, index, answer, days, clock.now_ms()):
        trial_gather(tenant_id, run_id)


def _reporter(run_id: int, index: int, days: int, clock) -> Callable[[int], None]:
    """A part's per-day progress as at most REPORTS_PER_PART writes: each renews its lease,
    moves the run's bar and raises Stopped once the run no longer runs."""
    every = max(1, days // REPORTS_PER_PART)
    done = last = 0

    def progress(steps: int) -> None:
        nonlocal done, last
        done += steps
        if done - last >= every:
            last = done
            if not trial_parts.report(run_id, index, done, days, clock.now_ms()):
                raise Stopped(f"simulation {run_id} is no longer running")

    return progress


@huey.task(name="trial_gather")
def trial_gather(tenant_id: int, run_id: int) -> None:
    """Gather a trial's answers into its comparison and page; the run is done."""
    with in_app() as app:
        gather(app, tenant_id, run_id)


def gather(app, tenant_id: int, run_id: int) -> None:
    """Once at a time per run (a lock row with a lease, so a gather killed mid-way is taken
    over), and only while the run runs with every answer in: a duplicate does nothing."""
    now_ms = app.config["CLOCK"].now_ms
    name, me = f"trial-gather:{run_id}", holder()
    if not locks.acquire_lock(name, me, now_ms(), trial_parts.LEASE_MS):
        return
    try:
        row = simulations.get(tenant_id, run_id)
        answers = trial_parts.answers(run_id)
        if row.status != "running" or answers is None:
            return
        request, twin = json.loads(row.request), json.loads(row.twin or "{}")
        out, page = engine().gather_parts(request, trial_parts.work(run_id), twin, answers)
        simulations.finish(run_id, out, page, now_ms())
    except Exception as exc:
        simulations.fail(run_id, f"{type(exc).__name__}: {exc}", now_ms())
        raise
    finally:
        locks.release_lock(name, me)


@huey.periodic_task(crontab(), name="trial_sweep")
def trial_sweep() -> None:
    """Every minute: queue again what a lapsed lease shows was left behind."""
    with in_app() as app:
        queue_stale_trials(app.config["CLOCK"].now_ms())


def queue_stale_trials(now_ms: int) -> trial_parts.Stale:
    """Queue the set-ups, parts and gathers the rows show were left behind (each re-armed
    once, whichever scheduler asks); returns what was queued."""
    found = trial_parts.stale(now_ms)
    for tenant_id, run_id in found.setups:
        trial(tenant_id, run_id)
    for tenant_id, run_id, index in found.parts:
        trial_part(tenant_id, run_id, index)
    for tenant_id, run_id in found.gathers:
        trial_gather(tenant_id, run_id)
    return found
