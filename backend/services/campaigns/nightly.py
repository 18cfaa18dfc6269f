"""One tenant's nightly run as the app is set up: its channels, delivery retries and clock.

`run-campaigns` (by hand or from cron) and the queue's nightly task (backend/tasks) both run a
tenant's night through here, so they share the run lock and cannot do it twice at once.
"""

from __future__ import annotations

from backend.services import channels, delivery
from backend.services.campaigns import job
from backend.store.models import Tenant


def run_for_app(
    app,
    tenant: Tenant,
    day: int,
    *,
    dry_run: bool = False,
    seed: int = 0,
    unless_done: bool = False,
) -> dict | None:
    """Score if needed, attribute, decide and deliver for `tenant` on China day `day`.

    Parameters
    ----------
    app : the Flask app (its config: CLOCK, channels, HUILIU_RETRY_*, CAMPAIGN_AFTER_DECIDE).
    tenant : the tenant.
    day : the China day number.
    dry_run : decide and show; write and send nothing.
    seed : the bandit's seed.
    unless_done : skip (None) if the day's run is done, checked under the tenant's lock: the
        queue's night uses it, a run by hand does not (it reruns on purpose).

    Returns
    -------
    The run's summary (services/campaigns/summary.py), or None if skipped. Raises
    run_lock.JobLocked when another run holds the tenant's lock, and whatever the run raised
    (recorded as a failed run).
    """
    senders = channels.channels_for(app)
    retry = delivery.retry_policy(app)
    clock = app.config["CLOCK"]

    def deliver(t: Tenant, _now_ms: int):  # delivery reads the time from `clock` itself
        return delivery.deliver_due(t, senders, retry, clock=clock)

    return job.run(
        tenant,
        day,
        clock.now_ms(),
        dry_run=dry_run,
        seed=seed,
        deliver=deliver,
        clock=clock,
        after_decide=app.config.get("CAMPAIGN_AFTER_DECIDE"),
        unless_done=unless_done,
    )
