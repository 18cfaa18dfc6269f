"""Background tasks that failed for good: recorded, so they are visible (the status route,
`/metrics`) and not tried again forever, and so one tenant's failure is one row, not a stop.
"""

from __future__ import annotations

from backend.store.models import TaskFailure


def record(
    task: str, tenant_id: int | None, key: str, error: str, attempts: int, now_ms: int
) -> TaskFailure:
    """Record a task whose retries are spent.

    Parameters
    ----------
    task : the task's name (backend/tasks).
    tenant_id : the tenant it ran for, if any.
    key : what it was for (a China day number, a trial id), "" if nothing more.
    error : the error, one line.
    attempts : how many times it ran.
    now_ms : the app's clock.
    """
    return TaskFailure.create(
        task=task,
        tenant=tenant_id,
        key=str(key),
        error=error[:2000],
        attempts=attempts,
        failed_ms=now_ms,
    )


def gave_up(task: str, key: str) -> set[int]:
    """The tenants for whom this task already failed for good for this key (not to be
    queued again by a scheduler sweep; a run by hand still may), in one query.

    Parameters
    ----------
    task : the task's name.
    key : what it was for (a China day number, as text).

    Returns
    -------
    The tenants' ids.
    """
    rows = TaskFailure.select(TaskFailure.tenant).where(
        (TaskFailure.task == task) & (TaskFailure.key == str(key))
    )
    return {r.tenant_id for r in rows if r.tenant_id is not None}


def recent(limit: int = 50) -> list[dict]:
    """The latest failures, newest first, as JSON-ready dicts."""
    rows = TaskFailure.select().order_by(TaskFailure.failed_ms.desc(), TaskFailure.id.desc())
    return [
        {
            "task": r.task,
            "tenant_id": r.tenant_id,
            "key": r.key,
            "error": r.error,
            "attempts": r.attempts,
            "failed_ms": r.failed_ms,
        }
        for r in rows.limit(limit)
    ]


def count() -> int:
    """How many failures are recorded in all."""
    return TaskFailure.select().count()
