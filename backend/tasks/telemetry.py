"""The queue in /metrics: how long each task ran (from Huey's signals, in the process that ran
it) and how deep the queue is (read from the queue's storage when Prometheus scrapes).

A task's duration is measured from SIGNAL_EXECUTING to whichever signal ends that execution:
complete, error, or one of Huey's other ends (a retry asked for, a lock held, a timeout, an
interrupted worker). A worker killed mid-task (SIGKILL) ends nothing, and is not counted.
"""

from __future__ import annotations

import threading

from huey import signals as S
from prometheus_client.core import GaugeMetricFamily

from backend.services import task_failures, telemetry
from backend.tasks import queue
from backend.tasks.queue import huey

# Huey signals that end an execution, as the histogram's `outcome` label.
ENDS = {
    S.SIGNAL_COMPLETE: "complete",
    S.SIGNAL_ERROR: "error",
    S.SIGNAL_RETRYING: "retry",
    S.SIGNAL_TIMEOUT: "timeout",
    S.SIGNAL_LOCKED: "locked",
    S.SIGNAL_CANCELED: "canceled",
    S.SIGNAL_INTERRUPTED: "interrupted",
    S.SIGNAL_RATE_LIMITED: "rate_limited",
}

_running: dict[str, object] = {}
_lock = threading.Lock()


@huey.signal(S.SIGNAL_EXECUTING)
def task_started(signal, task, *args) -> None:
    """Start the task's stopwatch (prometheus_client's timer: durations, not the time of day)."""
    timer = telemetry.metrics().job_seconds.time()
    timer.__enter__()
    with _lock:
        _running[task.id] = timer


@huey.signal(*ENDS)
def task_ended(signal, task, *args) -> None:
    """Observe the task's duration under its name and how it ended (once per execution: an
    error followed by its retrying signal is counted as the error)."""
    with _lock:
        timer = _running.pop(task.id, None)
    if timer is None:
        return
    timer.labels(task.name, ENDS[signal])
    timer.__exit__(None, None, None)


class QueueCollector:
    """Queue depth and failed tasks, computed on each scrape (the queue's storage and the
    database are the truth; no process has to keep a gauge of them)."""

    def describe(self) -> list:
        """Nothing to check up front: the families are made on each scrape."""
        return []

    def collect(self):
        """The queue's pending and scheduled tasks, whether it answered, and the failures."""
        stats = queue.stats()
        up = GaugeMetricFamily(
            "huiliu_queue_up", "1 when the task queue's storage answered this scrape"
        )
        up.add_metric([], 1.0 if stats["reachable"] else 0.0)
        yield up
        if stats["reachable"]:
            pending = GaugeMetricFamily("huiliu_queue_pending", "Tasks waiting for a worker")
            pending.add_metric([], float(stats["pending"]))
            yield pending
            scheduled = GaugeMetricFamily(
                "huiliu_queue_scheduled", "Tasks scheduled for later (retries, delayed tasks)"
            )
            scheduled.add_metric([], float(stats["scheduled"]))
            yield scheduled
        try:
            failed = task_failures.count()
        except Exception:  # the database is down: /readyz says so, the scrape still answers
            return
        family = GaugeMetricFamily(
            "huiliu_task_failures", "Tasks recorded as failed for good (retries spent)"
        )
        family.add_metric([], float(failed))
        yield family
