"""Background work on a task queue (Huey): each tenant's nightly run at its own China time,
delivery of due touches, event-triggered sends, dashboard trials.

The database is the record of what must be done (campaign runs, touches and their leases,
trial rows); a task only wakes the work up, and every task is safe to run twice. Huey drops a
task whose worker is killed mid-way (it has no acknowledgement), so the scheduler's sweeps
queue again whatever a lapsed lease shows was left unfinished (docs/deploy.md).

Modules: queue (the one queue definition and its storage), runtime (the app a task runs in),
nightly, delivery, trials (the tasks), failures (tasks that failed for good), catalog (every
task, for the worker).
"""
