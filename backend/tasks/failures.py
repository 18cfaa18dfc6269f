"""A task whose retries are spent is recorded (services/task_failures.py): visible on the
status route and in /metrics, and not queued again by the scheduler for the same key.

Huey signals an error on every failed attempt; `task.retries` is what is left, so 0 means
this was the last. Our tasks take (tenant id, key) as their first two arguments where they
have them, which is what the record names.
"""

from __future__ import annotations

import logging

from huey.signals import SIGNAL_ERROR

from backend.services import task_failures
from backend.tasks.queue import huey
from backend.tasks.runtime import in_app

log = logging.getLogger(__name__)


@huey.signal(SIGNAL_ERROR)
def record_final_failure(signal, task, exc=None) -> None:
    """Record the task if this failure was its last attempt."""
    if task.retries:
        return
    args = list(task.args or ())
    tenant_id = args[0] if args and isinstance(args[0], int) else None
    key = str(args[1]) if len(args) > 1 else ""
    error = f"{type(exc).__name__}: {exc}" if exc is not None else "failed"
    attempts = 1 + int(getattr(task, "default_retries", 0) or 0)
    try:
        with in_app() as app:
            task_failures.record(
                task.name, tenant_id, key, error, attempts, app.config["CLOCK"].now_ms()
            )
    except Exception:  # a failure to record must not hide the failure itself
        log.exception("could not record the failure of %s", task.name)
    log.error("task %s failed for good (tenant %s, %s): %s", task.name, tenant_id, key, error)
