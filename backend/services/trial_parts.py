"""A dashboard trial's runs as parts: one row per run (a policy on a seed), each computed by
a task of its own (backend/tasks/trials.py) and gathered when the last is done.

The rows are the record; the queue only wakes the work up. Huey loses a task whose worker is
killed, so each part's `updated_ms` is its lease: a part that stopped reporting for LEASE_MS
is queued again by the sweep (`stale`). Nothing is done twice: a part is taken by one
conditional UPDATE (`claim`), its answer is kept once per (run, index) and a late duplicate
is ignored (`store_answer`), and the part that completes the set learns it inside the same
transaction, holding the run's lock, so exactly one queues the gather.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import peewee as pw

from backend.store.db import is_sqlite, write_transaction
from backend.store.models import SimulationPart, SimulationRun

LEASE_MS = 5 * 60 * 1000  # a part, a set-up or a gather untouched this long is queued again
LIVE = ("queued", "running")


@dataclass
class Stale:
    """What a sweep found left behind and re-armed: each item to queue once more, as
    (tenant id, run id) for set-ups and gathers, (tenant id, run id, index) for parts."""

    setups: list[tuple[int, int]] = field(default_factory=list)
    parts: list[tuple[int, int, int]] = field(default_factory=list)
    gathers: list[tuple[int, int]] = field(default_factory=list)


def plan(run_id: int, work: dict, count: int, now_ms: int) -> list[int]:
    """Create the run's `count` parts (once: a set-up run again finds them) and return the
    indices waiting to run; none when the run is no longer running (cancelled meanwhile).

    Parameters
    ----------
    run_id : the claimed run.
    work : what every part runs on (JSON: the twin's parameters, coupon prices).
    count : how many runs the trial has (each policy on each seed).
    now_ms : the app's clock.

    Returns
    -------
    The indices of the parts to queue, in order.
    """
    with write_transaction():
        run = _locked_run(run_id)
        if run is None or run.status != "running":
            return []
        text = json.dumps(work, ensure_ascii=False)
        rows = [
            {
                "tenant": run.tenant_id,
                "run": run_id,
                "index": i,
                "status": "queued",
                "work": text,
                "updated_ms": now_ms,
            }
            for i in range(count)
        ]
        SimulationPart.insert_many(rows).on_conflict_ignore().execute()
        SimulationRun.update(updated_ms=now_ms).where(SimulationRun.id == run_id).execute()
        waiting = SimulationPart.select(SimulationPart.index).where(
            (SimulationPart.run == run_id) & (SimulationPart.status == "queued")
        )
        return sorted(p.index for p in waiting)


def claim(run_id: int, index: int, now_ms: int) -> tuple[dict, dict] | None:
    """Take a queued part: (the run's request, the part's work), or None when it is not
    waiting (taken, done, a duplicate task) or its run has stopped (then it is skipped)."""
    with write_transaction():
        run = SimulationRun.get_or_none(SimulationRun.id == run_id)
        mine = (SimulationPart.run == run_id) & (SimulationPart.index == index)
        if run is None or run.status != "running":
            SimulationPart.update(status="cancelled", updated_ms=now_ms).where(
                mine & (SimulationPart.status == "queued")
            ).execute()
            return None
        taken = (
            SimulationPart.update(status="running", updated_ms=now_ms)
            .where(mine & (SimulationPart.status == "queued"))
            .execute()
        )
        if not taken:
            return None
        part = SimulationPart.get(mine)
        return json.loads(run.request), json.loads(part.work)


def report(run_id: int, index: int, days_done: int, part_days: int, now_ms: int) -> bool:
    """A running part's progress (simulated days of its `part_days`) and its lease renewed;
    the run's progress is every part's days over all of theirs. False when the run is no
    longer running: the part stops (this is where a cancel is noticed)."""
    with write_transaction():
        run = SimulationRun.get_or_none(SimulationRun.id == run_id)
        if run is None or run.status != "running":
            return False
        SimulationPart.update(days_done=days_done, updated_ms=now_ms).where(
            (SimulationPart.run == run_id)
            & (SimulationPart.index == index)
            & (SimulationPart.status == "running")
        ).execute()
        _touch_run(run_id, part_days, now_ms)
    return True


def stopped(run_id: int, index: int, now_ms: int) -> None:
    """A part that stopped because its run did: marked cancelled, so no sweep queues it."""
    SimulationPart.update(status="cancelled", updated_ms=now_ms).where(
        (SimulationPart.run == run_id)
        & (SimulationPart.index == index)
        & SimulationPart.status.in_(LIVE)
    ).execute()


def store_answer(run_id: int, index: int, answer: bytes, part_days: int, now_ms: int) -> bool:
    """Keep a part's answer, once. True for exactly one caller: the one whose answer
    completed the set of a running run (it queues the gather). A late duplicate (the part
    was queued again and finished twice) is ignored and answers False.

    The run's row is locked first, so two parts finishing at once count one after the other.
    """
    with write_transaction():
        run = _locked_run(run_id)
        kept = (
            SimulationPart.update(
                status="done",
                answer=answer,
                days_done=part_days,
                updated_ms=now_ms,
            )
            .where(
                (SimulationPart.run == run_id)
                & (SimulationPart.index == index)
                & SimulationPart.status.in_(LIVE)
            )
            .execute()
        )
        if not kept or run is None or run.status != "running":
            return False
        _touch_run(run_id, part_days, now_ms)
        left = (
            SimulationPart.select()
            .where((SimulationPart.run == run_id) & (SimulationPart.status != "done"))
            .count()
        )
        return left == 0


def answers(run_id: int) -> list[bytes] | None:
    """Every part's answer in order, or None unless every part is done and kept its answer."""
    parts = list(
        SimulationPart.select(SimulationPart.status, SimulationPart.answer)
        .where(SimulationPart.run == run_id)
        .order_by(SimulationPart.index)
    )
    if not parts or any(p.status != "done" or p.answer is None for p in parts):
        return None
    return [bytes(p.answer) for p in parts]


def work(run_id: int) -> dict | None:
    """What the run's parts ran on (the first part's copy), for the gather."""
    part = SimulationPart.get_or_none(SimulationPart.run == run_id)
    return json.loads(part.work) if part is not None else None


def stale(now_ms: int) -> Stale:
    """Re-arm what was left behind and return it, to queue once more: running parts whose
    lease lapsed (their worker died) or queued parts whose task was lost, set-ups that
    never made their parts, and finished sets nobody gathered. Each is re-armed by one
    conditional UPDATE on the `updated_ms` it was seen with, so two sweeps at once queue
    each at most once."""
    cutoff = now_ms - LEASE_MS
    found = Stale()
    lapsed = (
        SimulationPart.select(
            SimulationPart.id,
            SimulationPart.tenant,
            SimulationPart.run,
            SimulationPart.index,
            SimulationPart.updated_ms,
        )
        .join(SimulationRun)
        .where(
            SimulationPart.status.in_(LIVE)
            & (SimulationPart.updated_ms < cutoff)
            & (SimulationRun.status == "running")
        )
    )
    for part in lapsed:
        rearmed = (
            SimulationPart.update(status="queued", updated_ms=now_ms)
            .where(
                (SimulationPart.id == part.id)
                & (SimulationPart.updated_ms == part.updated_ms)
                & SimulationPart.status.in_(LIVE)
            )
            .execute()
        )
        if rearmed:
            found.parts.append((part.tenant_id, part.run_id, part.index))
    runs = SimulationRun.select(
        SimulationRun.id, SimulationRun.tenant, SimulationRun.status, SimulationRun.updated_ms
    ).where(SimulationRun.status.in_(LIVE) & (SimulationRun.updated_ms < cutoff))
    for run in runs:
        _stale_run(run, now_ms, found)
    return found


def _stale_run(run: SimulationRun, now_ms: int, found: Stale) -> None:
    """One run nobody touched for a lease: queued (its task lost) or set up without parts
    (its set-up died) is set up again; all parts done is gathered; else its parts are the
    sweep's business and the run is only marked looked after."""
    counts = dict(
        SimulationPart.select(SimulationPart.status, pw.fn.COUNT(SimulationPart.id))
        .where(SimulationPart.run == run.id)
        .group_by(SimulationPart.status)
        .tuples()
    )
    status = "queued" if not counts else run.status
    rearmed = (
        SimulationRun.update(status=status, updated_ms=now_ms)
        .where(
            (SimulationRun.id == run.id)
            & (SimulationRun.updated_ms == run.updated_ms)
            & (SimulationRun.status == run.status)
        )
        .execute()
    )
    if not rearmed:
        return
    if not counts:
        found.setups.append((run.tenant_id, run.id))
    elif run.status == "running" and set(counts) == {"done"}:
        found.gathers.append((run.tenant_id, run.id))


def _touch_run(run_id: int, part_days: int, now_ms: int) -> None:
    """The run's progress, its parts' days over all of theirs (below 1 until gathered), and
    its sign of life."""
    days, parts = (
        SimulationPart.select(
            pw.fn.COALESCE(pw.fn.SUM(SimulationPart.days_done), 0), pw.fn.COUNT(SimulationPart.id)
        )
        .where(SimulationPart.run == run_id)
        .tuples()
        .first()
    )
    progress = min(float(days) / max(part_days * parts, 1), 0.99)
    SimulationRun.update(progress=progress, updated_ms=now_ms).where(
        (SimulationRun.id == run_id) & (SimulationRun.status == "running")
    ).execute()


def _locked_run(run_id: int) -> SimulationRun | None:
    """The run's row, locked until the transaction ends. SQLite's write transaction already
    is one writer at a time (BEGIN IMMEDIATE); PostgreSQL locks the row."""
    query = SimulationRun.select().where(SimulationRun.id == run_id)
    if not is_sqlite():
        query = query.for_update()
    return query.first()
