"""When each tenant's nightly run (score, attribute, decide, deliver) is due, in China time.

A tenant sets `nightly_at` ("HH:MM", China time; default 02:00) in its settings. The queue's
scheduler asks every minute which tenants are due (`due`) and queues each once (`claim`);
"due" means: the tenant's time has passed today (China day), today's run is not done, and it
did not fail for good today. Asking every minute rather than firing at the minute means a
scheduler that was down at 02:00 still runs the night when it comes back, and a minute the
scheduler skips is not a night lost. The claim is a lock row with a lease, so two schedulers
(two worker machines) queue a tenant's night once, and a night whose worker died is queued
again when the lease lapses.
"""

from __future__ import annotations

import json
import re
from datetime import datetime

from peewee import fn

from backend.core.calendar import day_number
from backend.core.clock import CHINA_TZ
from backend.services import locks, task_failures
from backend.store.models import CampaignRun, Tenant

DEFAULT_NIGHTLY_AT = "02:00"
NIGHTLY_AT = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
# A queued night not done within this long is queued again (its worker died, or the queue
# lost it): longer than a night takes, shorter than waiting for the next day.
CLAIM_TTL_MS = 20 * 60 * 1000
TASK = "nightly"
CLAIM_PREFIX = "nightly-queued:"
CLAIM_KEEP_MS = 2 * 24 * 3600 * 1000  # claims are deleted two days after their lease ends


def nightly_at(tenant: Tenant) -> tuple[int, int]:
    """The tenant's (hour, minute), China time, of its nightly run."""
    try:
        stored = json.loads(tenant.settings or "{}")
    except ValueError:  # one tenant's broken row must not stop every tenant's schedule
        stored = {}
    text = (stored.get("nightly_at") if isinstance(stored, dict) else None) or DEFAULT_NIGHTLY_AT
    m = NIGHTLY_AT.match(str(text))
    if m is None:  # checked when set (tenants.update_settings); an old row falls back
        m = NIGHTLY_AT.match(DEFAULT_NIGHTLY_AT)
    return int(m.group(1)), int(m.group(2))


def check_nightly_at(value: object) -> None:
    """Raise ValueError unless `value` is an "HH:MM" time of day."""
    if not isinstance(value, str) or NIGHTLY_AT.match(value) is None:
        raise ValueError(f"nightly_at must be a China time of day as HH:MM, not {value!r}")


def due(now_ms: int) -> list[tuple[int, int]]:
    """The (tenant id, China day) pairs whose nightly run is due now and not yet done.

    Parameters
    ----------
    now_ms : the app's clock.

    Returns
    -------
    One pair per due tenant, by tenant id.
    """
    local = datetime.fromtimestamp(now_ms / 1000, CHINA_TZ)
    today = day_number(local.date())
    minute = local.hour * 60 + local.minute
    # Two queries for every tenant: the tick runs each minute over hundreds of them.
    done = _done_today(today) | task_failures.gave_up(TASK, str(today))
    out = []
    for tenant in Tenant.select().order_by(Tenant.id):
        hour, mins = nightly_at(tenant)
        if minute < hour * 60 + mins or tenant.id in done:
            continue
        out.append((tenant.id, today))
    return out


def _done_today(day: int) -> set[int]:
    rows = CampaignRun.select(CampaignRun.tenant).where(
        (CampaignRun.day == day) & (CampaignRun.status == "done")
    )
    return {r.tenant_id for r in rows}


def is_done(tenant_id: int, day: int) -> bool:
    """Whether the tenant's run for `day` is done (a queued duplicate then does nothing)."""
    return (
        CampaignRun.select()
        .where(
            (CampaignRun.tenant == tenant_id)
            & (CampaignRun.day == day)
            & (CampaignRun.status == "done")
        )
        .exists()
    )


def claim(tenant_id: int, day: int, now_ms: int, holder: str, ttl_ms: int = CLAIM_TTL_MS) -> bool:
    """Take the right to queue this tenant's night (False: queued already, lease running)."""
    return locks.acquire_lock(f"{CLAIM_PREFIX}{tenant_id}:{day}", holder, now_ms, ttl_ms)


def sweep_claims(now_ms: int) -> int:
    """Delete the claims of past nights (a row a tenant a day would pile up); a lapsed claim
    is free to take anyway, so deleting one changes nothing but the table's size."""
    return locks.delete_expired(CLAIM_PREFIX, now_ms - CLAIM_KEEP_MS)


def last_success(tenant_ids: list[int] | None = None) -> dict[int, int]:
    """Each tenant's last successful nightly run: tenant id -> its finish time (ms)."""
    q = (
        CampaignRun.select(CampaignRun.tenant, fn.MAX(CampaignRun.finished_ms).alias("last"))
        .where(CampaignRun.status == "done")
        .group_by(CampaignRun.tenant)
    )
    if tenant_ids is not None:
        q = q.where(CampaignRun.tenant.in_(tenant_ids))
    return {r.tenant_id: int(r.last) for r in q}
