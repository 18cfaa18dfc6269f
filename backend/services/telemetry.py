"""What the service tells its operators about itself: the Prometheus metrics and the probes
behind `/readyz` and `/status` (backend/web/ops.py; docs/operations.md).

gunicorn's workers and the queue's workers are processes, so counts made in one must be summed
with the others' on a scrape. prometheus_client does that in its multiprocess mode: every
process writes its values to files in `PROMETHEUS_MULTIPROC_DIR` and a scrape sums the files.
It chooses how values are kept (`values.ValueClass`) when it is imported, from the environment,
and a metric keeps the kind it was made with. `serve` and `worker` choose the directory after
the library is imported (`use_directory`), so the metrics here are made lazily, on first use,
and made again if the value kind changed since: a metric can never be made before the mode.

No metric carries a tenant: a platform hosts hundreds of campuses, and one label per campus
would multiply every series by them.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from backend.core.clock import china_iso
from backend.services import nightly_schedule
from backend.store import db as store_db
from backend.store.models import Tenant

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SOURCES = ("mp", "import")
# Requests take milliseconds; a slow WeChat or an import takes seconds.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A delivery takes a second, a tenant's night minutes, a trial tens of minutes.
JOB_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 3600.0)
_PROCESS_FILE = re.compile(r"^.+_(\d+)\.db$")

# `_created` series (one per label set) say when a process first counted: noise in one process
# and absent in multiprocess mode, so absent in both.
disable_created_metrics()


@dataclass(frozen=True)
class Metrics:
    """The metrics every process writes (queue depth is read on scrape instead)."""

    events_ingested: Counter
    events_rejected: Counter
    events_duplicate: Counter
    request_seconds: Histogram
    sends: Counter
    job_seconds: Histogram


_lock = threading.Lock()
_made: tuple[type, Metrics, CollectorRegistry | None] | None = None


def _make(registry: CollectorRegistry | None) -> Metrics:
    kw = {"registry": registry}
    return Metrics(
        events_ingested=Counter(
            "huiliu_events_ingested",
            "Events stored (new; duplicates of stored events are not counted here)",
            ["source"],
            **kw,
        ),
        events_rejected=Counter(
            "huiliu_events_rejected",
            "Events of accepted batches refused one by one (invalid, unknown merchant)",
            ["source"],
            **kw,
        ),
        events_duplicate=Counter(
            "huiliu_events_duplicate",
            "Events received again (a client resending a batch) and not stored twice",
            ["source"],
            **kw,
        ),
        request_seconds=Histogram(
            "huiliu_http_request_duration_seconds",
            "HTTP requests by route template (the Flask rule, never the raw path), method and "
            "status class",
            ["route", "method", "status"],
            buckets=REQUEST_BUCKETS,
            **kw,
        ),
        sends=Counter(
            "huiliu_sends",
            "Touches through delivery by channel and outcome (sent, failed, retry, deferred, "
            "skipped, lost_claim)",
            ["channel", "status"],
            **kw,
        ),
        job_seconds=Histogram(
            "huiliu_job_duration_seconds",
            "Background tasks by task name and how they ended (complete, error, ...)",
            ["task", "outcome"],
            buckets=JOB_BUCKETS,
            **kw,
        ),
    )


def metrics() -> Metrics:
    """The process's metrics, made on first use in the value kind chosen by then."""
    global _made
    kind = values.ValueClass
    made = _made
    if made is not None and made[0] is kind:
        return made[1]
    with _lock:
        if _made is None or _made[0] is not kind:
            # Multiprocess values live in files and are summed by the scrape: no registry.
            registry = None if getattr(kind, "_multiprocess", False) else CollectorRegistry()
            _made = (kind, _make(registry), registry)
        return _made[1]


def multiprocess() -> bool:
    """Whether this process writes its values to the shared directory."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


def metrics_dir(instance_path: str) -> str:
    """Where the processes of this machine keep their values: PROMETHEUS_MULTIPROC_DIR, else
    `instance/metrics`."""
    return os.environ.get(MULTIPROC_ENV) or str(Path(instance_path) / "metrics")


def use_directory(path: str, *, clear_dead: bool = False) -> str:
    """Switch this process (and the processes it forks) to multiprocess mode in `path`.

    `clear_dead` (serve at start) removes the files of processes no longer running: a former
    run's workers. Files of live processes (a `worker` beside it) are kept, or its counts would
    vanish from every scrape until it restarted. A pid reused by an unrelated process keeps
    its stale file until the next start; counters are reset then, as Prometheus expects.

    Parameters
    ----------
    path : the directory; made if missing.
    clear_dead : remove the files of dead processes first.

    Returns
    -------
    The directory.
    """
    Path(path).mkdir(parents=True, exist_ok=True)
    if clear_dead:
        for entry in Path(path).iterdir():
            m = _PROCESS_FILE.match(entry.name)
            if entry.is_dir() and m is None:
                continue
            if m is None or not _alive(int(m.group(1))):
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
    os.environ[MULTIPROC_ENV] = str(path)
    values.ValueClass = values.MultiProcessValue()
    return str(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's process: alive
        return True
    return True


def process_ended(pid: int) -> None:
    """A worker process ended (gunicorn's child_exit): drop what only a live process means.

    Counters and histograms of the dead process stay in the sum, which is what they mean.
    """
    if multiprocess():
        mark_process_dead(pid, os.environ.get(MULTIPROC_ENV))


def exposition(*collectors) -> bytes:
    """The scrape: every process's metrics (or this process's alone outside multiprocess
    mode) and `collectors` computed now, in Prometheus's text format."""
    return generate_latest(scrape_registry(*collectors))


def scrape_registry(*collectors) -> CollectorRegistry:
    """A registry that collects, at each scrape, what `exposition` shows (a worker's own
    metrics port serves it: `worker --metrics-port`)."""
    registry = CollectorRegistry()
    if multiprocess():
        MultiProcessCollector(registry, os.environ.get(MULTIPROC_ENV))
    else:
        metrics()
        own = _made[2] if _made is not None else None
        if own is not None:
            registry.register(_Forward(own))
    for collector in collectors:
        registry.register(collector)
    return registry


class _Forward:
    """Another registry's metrics, in a scrape's fresh registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self):
        """Everything the process's own registry holds."""
        return self._registry.collect()


def count_events(source: str, ingested: int, rejected: int, duplicates: int) -> None:
    """One batch's outcome (`source`: mp | import)."""
    m = metrics()
    if ingested:
        m.events_ingested.labels(source).inc(ingested)
    if rejected:
        m.events_rejected.labels(source).inc(rejected)
    if duplicates:
        m.events_duplicate.labels(source).inc(duplicates)


def count_send(channel: str, status: str) -> None:
    """One touch's outcome in delivery."""
    metrics().sends.labels(channel, status).inc()


@contextmanager
def job_timer(task: str) -> Iterator[None]:
    """Time a job run outside the queue (a command) in the tasks' histogram.

    prometheus_client's timer measures the duration (a monotonic clock, the library's); no
    decision reads it, so the injected clock rule (core/clock.py) is not concerned.
    """
    timer = metrics().job_seconds.time()
    timer.__enter__()
    outcome = "error"
    try:
        yield
        outcome = "complete"
    finally:
        timer.labels(task, outcome)
        timer.__exit__(None, None, None)


def database_answers() -> str | None:
    """None when the database answers a trivial query, else the error's class name (never
    its text, which may carry an address)."""
    try:
        store_db.database.execute_sql("SELECT 1").fetchone()
    except Exception as exc:  # any driver failure means "does not answer"
        return type(exc).__name__
    return None


def last_nights() -> list[dict]:
    """Each tenant with its last successful nightly run, China time (None: never).

    Returns
    -------
    One dict per tenant by id: tenant_id, appid, last_success (ISO, China time, or None).
    """
    done = nightly_schedule.last_success()
    rows = Tenant.select(Tenant.id, Tenant.appid).order_by(Tenant.id)
    return [
        {
            "tenant_id": t.id,
            "appid": t.appid,
            "last_success": china_iso(done[t.id]) if t.id in done else None,
        }
        for t in rows
    ]
