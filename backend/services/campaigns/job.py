"""The nightly campaign run: attribute, decide every nightly policy, write the outbox, deliver.

One run per tenant at a time (run_lock); a run is recorded in `campaign_run` as running, then
done or failed with its summary, so `GET /admin/v1/campaign-runs` says what each night did.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable

import peewee as pw

from backend.core.calendar import MS_PER_DAY
from backend.core.policy import Decisions, Policy, decide
from backend.core.policy.spec import EVENT_TRIGGERS
from backend.services import delivery, nightly_schedule, policies, scoring
from backend.services.attribution import attribute
from backend.services.campaigns.learnt import policy_state
from backend.services.campaigns.outbox import touch_rows, write_touches
from backend.services.campaigns.population import Population, population
from backend.services.campaigns.run_lock import JobLocked, RunLock, holding
from backend.services.campaigns.summary import (
    DELIVERED,
    add_policy,
    new_summary,
    policy_summary,
    sample,
)
from backend.store.db import write_transaction
from backend.store.models import CampaignRun, Coupon, ScoreSnapshot, Tenant, Touch
from backend.store.models import Policy as PolicyRow

log = logging.getLogger(__name__)


def run(
    tenant: Tenant,
    day: int,
    now_ms: int,
    *,
    dry_run: bool = False,
    seed: int = 0,
    deliver=None,
    clock=None,
    after_decide: Callable[[], None] | None = None,
    unless_done: bool = False,
) -> dict | None:
    """Decide every active nightly policy for `day`, write the outbox, then deliver.

    `deliver(tenant, now_ms) -> Counter` is the delivery step (delivery.deliver_due bound to
    the app's channels and clock; `now_ms` is the time delivery starts); dry runs neither write
    nor deliver. `clock`, if given, is what the run's lock renewals read as "now" while the
    run goes on (otherwise `now_ms` throughout). Active policies whose stored source no longer
    parses are skipped and named in the summary's `policies_unreadable`. `after_decide`, if
    given, is called each time a policy's decisions are committed, before anything is
    delivered: where the crash tests inject their fault (the command passes the app's
    CAMPAIGN_AFTER_DECIDE). `unless_done`: do nothing (and return None) if a run for `day`
    is already done, checked under the lock, so two queued copies of a night (or a copy and a
    run by hand) never both run it.
    """
    if dry_run:
        return _run_locked(tenant, day, now_ms, dry_run=True, seed=seed, deliver=None, lock=None)
    with holding(tenant, now_ms, clock) as lock:
        if unless_done and nightly_schedule.is_done(tenant.id, day):
            return None
        return _run_locked(
            tenant,
            day,
            now_ms,
            dry_run=False,
            seed=seed,
            deliver=deliver,
            lock=lock,
            after_decide=after_decide,
        )


def _run_locked(
    tenant: Tenant,
    day: int,
    now_ms: int,
    *,
    dry_run: bool,
    seed: int,
    deliver,
    lock: RunLock | None,
    after_decide: Callable[[], None] | None = None,
) -> dict:
    """The run itself, under the tenant's lock (none for a dry run), recorded as it ends."""
    run_row = None if dry_run else _start_run(tenant.id, day, now_ms)
    summary = new_summary(tenant, day, now_ms, dry_run)

    def beat() -> None:
        if lock is not None:
            lock.beat()

    try:
        if not dry_run:
            attribute(tenant.id, now_ms)
            beat()
        _decide_all(tenant, day, now_ms, seed, summary, run_row, beat, after_decide)
        if not dry_run and deliver is not None:
            with delivery.heartbeat(lock.beat):
                delivered = deliver(tenant, lock.now())
            for key in DELIVERED:
                summary[key] = int(delivered.get(key, 0))
        if run_row is not None:
            beat()  # a run that lost its lock does not report itself done
            _end_run(run_row, "done", lock.now(), summary)
    except Exception as exc:
        if run_row is not None:
            summary["error"] = failure_reason(exc)
            try:
                _end_run(run_row, "failed", lock.now(), summary)
            except Exception:  # the original failure is the one to report
                log.exception("could not record run %s as failed", run_row.id)
        raise
    return summary


def _decide_all(
    tenant: Tenant,
    day: int,
    now_ms: int,
    seed: int,
    summary: dict,
    run_row: CampaignRun | None,
    beat: Callable[[], None],
    after_decide: Callable[[], None] | None,
) -> None:
    """Decide each active nightly policy and write its touches (a dry run: only count them),
    adding each to `summary`. `run_row` is None for a dry run."""
    reasons: Counter = Counter()
    unreadable: list[dict] = summary["policies_unreadable"]
    for row, policy in policies.active_rows(tenant.id, unreadable=unreadable):
        if policy.trigger in EVENT_TRIGGERS:
            continue  # decided when the event arrives
        pop, d = decide_policy(tenant, row, policy, day, now_ms, seed)
        beat()
        run_id = run_row.id if run_row is not None else None
        rows = touch_rows(tenant.id, row, policy, pop, d, day, now_ms, run_id)
        per = policy_summary(policy, pop, d)
        if run_row is None:
            per["sample"] = sample(rows, pop)
            written = Counter(r["status"] for r in rows)
            reasons.update(r["reason"] for r in rows if r["status"] == "skipped")
        else:
            written = write_touches(rows)
            if after_decide is not None:
                after_decide()
            reasons.update(_skip_reasons(row.id, day, run_row.id))
        add_policy(summary, policy, per, written, d)
    summary["skipped_by_reason"] = dict(reasons)


def decide_policy(
    tenant: Tenant, row: PolicyRow, policy: Policy, day: int, now_ms: int, seed: int
) -> tuple[Population, Decisions]:
    """One nightly policy's population and decisions for `day` (scored first if need be)."""
    snapshot_day = _snapshot_day(tenant.id, day)
    triggered = None
    if policy.trigger == "coupon_expiring":
        triggered = _expiring_coupon_users(tenant.id, now_ms)
    pop = population(tenant.id, row, policy, day, snapshot_day, triggered=triggered)
    state = policy_state(tenant.id, row, policy)
    d = decide(policy, pop.state, state, salt=tenant.appid, day=day, seed=seed)
    return pop, d


def failure_reason(exc: BaseException) -> str:
    """How a failed run's cause is stored and shown: the exception's class and message."""
    text = str(exc).strip()
    if isinstance(exc, JobLocked):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _start_run(tenant_id: int, day: int, now_ms: int) -> CampaignRun:
    """Record the run as running; holding the lock proves any run still marked running has
    died, so those are marked abandoned."""
    with write_transaction():
        CampaignRun.update(status="abandoned", finished_ms=now_ms).where(
            (CampaignRun.tenant == tenant_id) & (CampaignRun.status == "running")
        ).execute()
        return CampaignRun.create(tenant=tenant_id, day=day, started_ms=now_ms, status="running")


def _end_run(run_row: CampaignRun, status: str, at_ms: int, summary: dict) -> None:
    """Record how the run ended (done or failed) with its summary."""
    with write_transaction():
        CampaignRun.update(status=status, finished_ms=at_ms, summary=json.dumps(summary)).where(
            CampaignRun.id == run_row.id
        ).execute()


def _skip_reasons(policy_id: int, day: int, run_id: int) -> Counter:
    """Skips this run wrote for the policy, by reason."""
    rows = (
        Touch.select(Touch.reason, pw.fn.COUNT(Touch.id))
        .where((Touch.policy == policy_id) & (Touch.run == run_id) & (Touch.status == "skipped"))
        .group_by(Touch.reason)
        .tuples()
    )
    return Counter(dict(rows))


def _snapshot_day(tenant_id: int, day: int) -> int:
    """`day`, scored first if it has no snapshot yet."""
    if (
        not ScoreSnapshot.select()
        .where((ScoreSnapshot.tenant == tenant_id) & (ScoreSnapshot.day == day))
        .exists()
    ):
        scoring.score_tenant(Tenant.get_by_id(tenant_id), day)
    return day


def _expiring_coupon_users(tenant_id: int, now_ms: int) -> set[int]:
    """Users holding an unused coupon that expires within two days: triggered today."""
    rows = Coupon.select(Coupon.user).where(
        (Coupon.tenant == tenant_id)
        & (Coupon.status == "issued")
        & (Coupon.expires_ms > now_ms)
        & (Coupon.expires_ms <= now_ms + 2 * MS_PER_DAY)
    )
    return {c.user_id for c in rows}
