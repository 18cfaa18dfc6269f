"""The task queue on a real SQLite file, driven by hand instead of by consumer threads.

`sqlite_queue(app, path)` points the one Huey instance (backend/tasks/queue.py) at a SQLite
file and binds the test's app as the worker's would be; on the way out it always puts the
queue back to `memory://` and unbinds, because the queue is process-global and nothing may
leak into the next test.

`tick(now)` is one pass of Huey's scheduler at `now`: the periodic tasks its crontabs fire in
that minute, each run at once as a worker would run it. `drain(now)` is a worker: it moves the
retries whose time has come onto the queue (`read_schedule`), then takes tasks one by one
(`dequeue`) and runs them (`execute`) with Huey's clock standing at `now`, so a retry's delay
is scheduled from `now` exactly. Real tasks on real storage, deterministically.

Times are aware datetimes; Huey works in naive UTC (utc=True).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from huey import api as huey_api
from huey import utils as huey_utils

from backend.tasks import catalog, queue, runtime  # noqa: F401 - catalog: every task, as in the worker

huey = queue.huey
MAX_RUNS = 1000  # a drain that runs more than this is looping (a task requeueing itself)


@contextmanager
def sqlite_queue(app, path: Path) -> Iterator:
    """The queue on the SQLite file `path`, its tasks running in `app`; restored after."""
    try:
        queue.configure(f"sqlite:///{path}")
        runtime.bind(app)
        yield huey
    finally:
        storage = huey.storage
        queue.configure(queue.IMMEDIATE_URL)
        runtime.bind(None)
        storage.close()


def huey_time(now: datetime) -> datetime:
    """`now` as Huey reads time: naive UTC."""
    if now.tzinfo is None:
        raise ValueError("give an aware datetime")
    return now.astimezone(UTC).replace(tzinfo=None)


@contextmanager
def huey_clock(now: datetime) -> Iterator[datetime]:
    """Huey's own clock standing at `now` for the block: the time it runs and retries a task
    at (`_get_timestamp`) and the time a task's own `RetryTask(delay=...)` counts from."""
    ts = huey_time(now)
    saved = huey_api.utcnow, huey_utils.utcnow
    huey_api.utcnow = huey_utils.utcnow = lambda: ts
    try:
        yield ts
    finally:
        huey_api.utcnow, huey_utils.utcnow = saved


def tick(now: datetime) -> list[str]:
    """One scheduler pass at `now`: run the periodic tasks due in that minute (the nightly
    tick every minute, the delivery sweep every 5); returns their names."""
    with huey_clock(now) as ts:
        due = huey.read_periodic(ts)
        for task in due:
            huey.execute(task, ts)
    return sorted(t.name for t in due)


def drain(now: datetime) -> list[str]:
    """Run what is queued, and the retries due by `now`, until nothing is left to run now;
    returns the names of the tasks run, in order (retries due later stay scheduled)."""
    ran: list[str] = []
    with huey_clock(now) as ts:
        while True:
            for task in huey.read_schedule(ts):
                huey.enqueue(task)
            task = huey.dequeue()
            if task is None:
                return ran
            ran.append(task.name)
            if len(ran) > MAX_RUNS:
                raise AssertionError(f"drain ran over {MAX_RUNS} tasks: {ran[-5:]} ...")
            huey.execute(task, ts)


def pending() -> list[tuple[str, tuple]]:
    """The queued tasks as (name, args), in queue order."""
    return [(t.name, tuple(t.args)) for t in huey.pending()]


def scheduled(now: datetime) -> list[tuple[str, tuple, float]]:
    """The tasks scheduled for later as (name, args, seconds after `now` they are due)."""
    ts = huey_time(now)
    return sorted((t.name, tuple(t.args), (t.eta - ts).total_seconds()) for t in huey.scheduled())
