"""Each tenant's nightly run (score, attribute, decide, deliver) as its own task, queued at
the tenant's China time by a tick that runs every minute (services/nightly_schedule.py).

The weekly BG/NBD refit is part of the night's scoring on the day it falls due
(core.scoring.refit_due), so it runs inside the tenant's own task, before that night's
scores, and fails or succeeds with its tenant alone.
"""

from __future__ import annotations

import os
import socket

from huey import crontab
from huey.exceptions import RetryTask

from backend.services import nightly_schedule
from backend.services.campaigns import nightly as nightly_run
from backend.services.campaigns.run_lock import LOCK_TTL_MS, JobLocked
from backend.store.models import Tenant
from backend.tasks.queue import huey
from backend.tasks.runtime import in_app

# A failing night is tried again after 1, 2 and 4 minutes, then recorded (failures.py).
RETRIES = 3
RETRY_DELAY_S = 60
RETRY_BACKOFF = 2


def holder() -> str:
    """Who queued or holds something: this machine and process (for the lock rows)."""
    return f"{socket.gethostname()}:{os.getpid()}"


@huey.periodic_task(crontab(), name="nightly_tick")
def nightly_tick() -> None:
    """Every minute: queue each tenant whose nightly time has passed today and whose night
    is neither done nor queued (the claim's lease), once, whichever scheduler asks."""
    with in_app() as app:
        queue_due_nights(app.config["CLOCK"].now_ms())


def queue_due_nights(now_ms: int) -> list[tuple[int, int]]:
    """Queue the nights due at `now_ms` that nobody has queued; returns those queued."""
    nightly_schedule.sweep_claims(now_ms)
    queued = []
    for tenant_id, day in nightly_schedule.due(now_ms):
        if nightly_schedule.claim(tenant_id, day, now_ms, holder()):
            nightly(tenant_id, day)
            queued.append((tenant_id, day))
    return queued


@huey.task(retries=RETRIES, retry_delay=RETRY_DELAY_S, retry_backoff=RETRY_BACKOFF, name="nightly")
def nightly(tenant_id: int, day: int) -> None:
    """One tenant's night. Done already (a duplicate, or `run-campaigns` by hand): nothing;
    checked before and again under the tenant's lock, so two copies never both run it.
    Another run holds the tenant's lock: asked again once that lock could have lapsed."""
    with in_app() as app:
        tenant = Tenant.get_or_none(Tenant.id == tenant_id)
        if tenant is None or nightly_schedule.is_done(tenant_id, day):
            return
        try:
            nightly_run.run_for_app(app, tenant, day, unless_done=True)
        except JobLocked:
            raise RetryTask(delay=LOCK_TTL_MS // 1000) from None
