"""The campaign job: state from the database, core.policy.decide, touches into the outbox.

Deciding and delivering are separate steps joined by the `touch` table (the outbox): all of a
policy's decisions for a day are written in one transaction, and delivery only ever works
from rows. A crash after deciding leaves queued rows that the next run delivers; deciding
again the same day inserts nothing new (unique (policy, user, day, step)); and a lock row
keeps two runs for one tenant from overlapping.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np
import peewee as pw

from backend.core.calendar import MS_PER_DAY, china_day, day_date
from backend.core.clock import china_iso
from backend.core.policy import (
    CHANNELS,
    HOLDOUT,
    REASONS,
    SEND,
    SKIPPED,
    Decisions,
    Policy,
    PolicyError,
    PolicyState,
    UserState,
    decide,
)
from backend.core.policy.caps import CAP_STATUSES
from backend.core.policy.guards import (
    HOUR_MS,
    next_allowed_ms,
    next_send_ms,
    planned_send_ms,
)
from backend.core.policy.history import (
    HISTORY_DAYS,
    JOURNEY_STATUSES,
    MEASURED_STATUSES,
    TouchHistory,
)
from backend.core.policy.learning import learnt_state
from backend.core.policy.user_state import journey_start, reach, user_state
from backend.core.rfm import SEGMENT_NAMES
from backend.core.tiers import TIERS
from backend.core.uplift import (
    UpliftModel,
    predict_uplift,
    risk_instead_of_uplift,
    uplift_features,
)
from backend.errors import ApiError
from backend.services import delivery, policies
from backend.services.attribution import attribute
from backend.services.locks import LockLost, acquire_lock, release_lock, renew_lock
from backend.store.db import database, write_transaction
from backend.store.models import (
    CampaignRun,
    JobLock,
    ScoreSnapshot,
    SubscriptionAllowance,
    Tenant,
    Touch,
    User,
)
from backend.store.models import Policy as PolicyRow

log = logging.getLogger(__name__)

# A run renews its lock while it goes on, so a crashed run's lock lapses within minutes.
LOCK_TTL_MS = 3 * 60 * 1000
LOCK_RENEW_MS = 60 * 1000  # renewed at least this often (between phases, before sends)
LOCK_HEARTBEAT_S = 60.0  # and by a heartbeat thread every this many seconds of real time
EXPIRY_MS = 24 * HOUR_MS  # a touch not sent within a day of its time is not sent at all


class JobLocked(RuntimeError):
    pass


class JobLockLost(LockLost):
    """This run's lock lapsed (the run stalled past LOCK_TTL_MS) and another run took it."""


# -- user state from the database -----------------------------------------------------------


@dataclass
class Population:
    """The users a policy decides over, as columns aligned with `user_ids`."""

    user_ids: np.ndarray
    openids: list[str]
    state: UserState
    tier: np.ndarray
    days_since_visit: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)


def _unscored(tenant_id: int, user_ids: set[int]) -> list[tuple]:
    """Snapshot-shaped rows for users who joined after the last scoring (an event trigger
    can fire on a first visit): a new user, seen today, with nothing known yet."""
    if not user_ids:
        return []
    rows = User.select(User.id).where((User.tenant == tenant_id) & User.id.in_(sorted(user_ids)))
    return [(u.id, "new", "promising", False, 0, None, 0, 0, -1, 1, 0, 0, 0.0) for u in rows]


def _snapshot(tenant_id: int, day: int, only: list[int] | None):
    fields = (
        ScoreSnapshot.user,
        ScoreSnapshot.tier,
        ScoreSnapshot.segment,
        ScoreSnapshot.worth_recalling,
        ScoreSnapshot.value_fen,
        ScoreSnapshot.p_alive,
        ScoreSnapshot.term_days_since_visit,
        ScoreSnapshot.days_since_visit,
        ScoreSnapshot.usual_hour,
        ScoreSnapshot.visit_days_30,
        ScoreSnapshot.orders_total,
        ScoreSnapshot.spend_fen_total,
        ScoreSnapshot.activity_index,
    )
    q = ScoreSnapshot.select(*fields).where(
        (ScoreSnapshot.tenant == tenant_id) & (ScoreSnapshot.day == day)
    )
    if only is not None:
        q = q.where(ScoreSnapshot.user.in_(only))
    return list(q.order_by(ScoreSnapshot.user).tuples())


def population(
    tenant_id: int,
    row: PolicyRow,
    policy: Policy,
    day: int,
    snapshot_day: int,
    *,
    only: list[int] | None = None,
    triggered: Collection[int] | None = None,
) -> Population:
    """Every scored user's state for `policy` on `day` (or just the users in `only`).
    `triggered`: for a trigger policy, the users whose event fired today."""
    snap = _snapshot(tenant_id, snapshot_day, only)
    if only is not None:
        snap = sorted(snap + _unscored(tenant_id, set(only) - {r[0] for r in snap}))
    n = len(snap)
    ids = np.array([s[0] for s in snap], dtype=np.int64)
    col = {
        name: [s[i] for s in snap]
        for i, name in enumerate(
            [
                "user",
                "tier",
                "segment",
                "worth",
                "value",
                "p_alive",
                "term_silent",
                "silent",
                "hour",
                "visit_days_30",
                "orders",
                "spend",
                "activity",
            ]
        )
    }
    tier = np.array([TIERS.index(t) for t in col["tier"]], dtype=np.int8)
    segment = np.array([SEGMENT_NAMES.index(s) for s in col["segment"]], dtype=np.int8)
    lag = day - snapshot_day  # a trigger between nightly runs uses yesterday's scores
    silent = np.array(col["silent"], dtype=np.int64) + lag
    term_silent = np.array(col["term_silent"], dtype=np.int64) + lag

    uid, openid, opted_all, has_phone, has_oa = _users(tenant_id)
    at, known = _positions(uid, ids)
    opted = ~known | opted_all[at]  # a user gone since scoring is never messaged
    reachable = reach(known & has_oa[at], known & has_phone[at])
    openids = [openid[j] if k else "" for j, k in zip(at.tolist(), known.tolist(), strict=True)]

    rows = None if triggered is None else np.isin(ids, list(triggered))
    start = journey_start(day, silent, rows)
    pos = {int(u): i for i, u in enumerate(ids)}
    allowance = _allowances(tenant_id, policy, pos, n, row.id, day)
    uplift = None
    if policy.rank_by == "uplift":
        uplift = _uplift(row, col, term_silent)
    state = user_state(
        day,
        user_key=ids,
        tier=tier,
        segment=segment,
        worth_recalling=np.array(col["worth"], dtype=bool),
        value_fen=np.array(col["value"], dtype=np.int64),
        p_alive=np.array([np.nan if p is None else p for p in col["p_alive"]], dtype=float),
        term_days_silent=term_silent,
        usual_hour=np.array(col["hour"], dtype=np.int64),
        opted_out=opted,
        reachable=reachable,
        allowance=allowance,
        history=_history(tenant_id, ids, day, row.id, policy),
        start=start,
        triggered=triggered is not None,
        uplift=uplift,
    )
    return Population(
        ids,
        openids,
        state,
        tier,
        silent,
        {"value_fen": np.array(col["value"], dtype=np.int64)},
    )


def _uplift(row: PolicyRow, col: dict, term_silent: np.ndarray) -> np.ndarray:
    """Estimated uplift per user from the policy's fitted model.

    Until a model is fitted (POST /admin/v1/policies/NAME/uplift-model) the policy ranks by
    risk, 1 − P(alive), so it still runs; the preview says which ranking was used.
    """
    p_alive = np.array([np.nan if p is None else p for p in col["p_alive"]], dtype=float)
    if not row.uplift_model:
        return risk_instead_of_uplift(p_alive)
    model = UpliftModel.from_dict(json.loads(row.uplift_model))
    x = uplift_features(
        term_silent,
        col["visit_days_30"],
        col["orders"],
        col["spend"],
        p_alive,
        col["activity"],
        col["worth"],
        col["hour"],
    )
    return predict_uplift(model, x)


def _positions(table: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each value in the sorted `table` (0 when absent), and whether it is there."""
    if len(table) == 0:
        return np.zeros(len(values), dtype=np.int64), np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(table, values), len(table) - 1)
    return at, table[at] == values


def _history(
    tenant_id: int, ids: np.ndarray, day: int, policy_id: int, policy: Policy
) -> TouchHistory:
    """The touches of the last HISTORY_DAYS for the users decided, for history_state."""
    ph = database.param
    rows = database.execute_sql(
        "SELECT user_id, policy_id, day, step, arm, channel, status, attributed, "
        "returned_ms IS NOT NULL, COALESCE(sent_ms, 0) FROM touch "
        f"WHERE tenant_id = {ph} AND day >= {ph}",
        [tenant_id, day - HISTORY_DAYS],
    ).fetchall()
    cols = list(zip(*rows, strict=True)) if rows else [()] * 10
    at, keep = _positions(ids, np.array(cols[0], dtype=np.int64))
    status = np.array(cols[6], dtype=object)[keep]
    channel = np.array(cols[5], dtype=object)[keep]
    channel_code = np.zeros(len(channel), dtype=np.int64)
    for k, name in enumerate(CHANNELS):
        channel_code[channel == name] = k
    arm_name = np.array(cols[4], dtype=object)[keep]
    mine = np.array(cols[1], dtype=np.int64)[keep] == policy_id
    arm = np.full(len(arm_name), -1, dtype=np.int64)
    for k, a in enumerate(policy.arms):
        arm[mine & (arm_name == a.name)] = k
    return TouchHistory(
        user=at[keep],
        day=np.array(cols[2], dtype=np.int64)[keep],
        step=np.array(cols[3], dtype=np.int64)[keep],
        channel=channel_code,
        arm=arm,
        active=np.isin(status, CAP_STATUSES),
        journey=np.isin(status, JOURNEY_STATUSES),
        measured=np.isin(status, MEASURED_STATUSES),
        attributed=np.array(cols[7], dtype=bool)[keep],
        returned=np.array(cols[8], dtype=bool)[keep],
        sent=np.array(cols[9], dtype=np.int64)[keep],
    )


def _users(tenant_id: int):
    """(ids sorted, openids, opted out, has phone, follows the OA) of the tenant's users."""
    rows = database.execute_sql(
        "SELECT id, openid, marketing_opt_out, phone IS NOT NULL, oa_openid IS NOT NULL "
        f'FROM "user" WHERE tenant_id = {database.param} ORDER BY id',
        [tenant_id],
    ).fetchall()
    cols = list(zip(*rows, strict=True)) if rows else [()] * 5
    return (
        np.array(cols[0], dtype=np.int64),
        list(cols[1]),
        np.array(cols[2], dtype=bool),
        np.array(cols[3], dtype=bool),
        np.array(cols[4], dtype=bool),
    )


def _allowances(
    tenant_id: int, policy: Policy, pos: dict[int, int], n: int, policy_id: int, day: int
):
    """Subscribe-message allowances left per template, less those already promised to
    queued sends that have not gone out yet (a quiet-hours deferral, a retry): WeChat takes
    one allowance per message, so counting them twice plans a send that must fail."""
    templates = sorted(
        {
            policy.messages[t.message].template_id
            for a in policy.arms
            for t in a.touches
            if CHANNELS[t.channel] == "subscribe"
        }
    )
    out = {t: np.zeros(n, dtype=np.int64) for t in templates}
    if not templates:
        return out
    rows = (
        SubscriptionAllowance.select(
            SubscriptionAllowance.user,
            SubscriptionAllowance.template_id,
            SubscriptionAllowance.remaining,
        )
        .where(
            (SubscriptionAllowance.tenant == tenant_id)
            & SubscriptionAllowance.template_id.in_(templates)
        )
        .tuples()
    )
    for user, template, remaining in rows:
        i = pos.get(user)
        if i is not None:
            out[template][i] = remaining
    for user, template, count in _reserved(tenant_id, policy_id, day):
        i = pos.get(user)
        if i is not None and template in out:
            out[template][i] = max(out[template][i] - count, 0)
    return out


def _reserved(tenant_id: int, policy_id: int, day: int) -> list[tuple[int, str, int]]:
    """(user, template, count) of subscribe sends queued and not yet sent. This policy's own
    touches of `day` are left out: a rerun of the day must decide as the first run did."""
    rows = list(
        Touch.select(Touch.user, Touch.policy, Touch.message, pw.fn.COUNT(Touch.id))
        .where(
            (Touch.tenant == tenant_id)
            & (Touch.channel == "subscribe")
            & Touch.status.in_(("queued", "sending"))
            & ~((Touch.policy == policy_id) & (Touch.day == day))
        )
        .group_by(Touch.user, Touch.policy, Touch.message)
        .tuples()
    )
    specs = {}
    for r in PolicyRow.select().where(PolicyRow.id.in_({p for _, p, _, _ in rows})):
        try:
            specs[r.id] = policies.loaded(r)
        except PolicyError:
            continue  # its queued touches fail at delivery (policy_unreadable): nothing reserved
    out = []
    for user, pid, message, count in rows:
        spec = specs.get(pid)
        if spec is not None and message in spec.messages:
            out.append((user, spec.messages[message].template_id, int(count)))
    return out


def policy_state(tenant_id: int, row: PolicyRow, policy: Policy) -> PolicyState:
    """Bandit posteriors per (arm, tier) and stop-loss, from the policy's finished touches."""
    rows = (
        Touch.select(
            Touch.arm,
            Touch.tier,
            Touch.returned_ms.is_null(False),
            Touch.message_cost_fen + Touch.coupon_cost_fen,
            Touch.value_fen,
        )
        .where((Touch.policy == row.id) & (Touch.status == "sent") & Touch.attributed)
        .tuples()
    )
    rows = list(rows)
    cols = list(zip(*rows, strict=True)) if rows else [()] * 5
    return learnt_state(
        policy,
        policies.coupon_faces(tenant_id, policy),
        _codes(cols[0], [a.name for a in policy.arms]),
        _codes(cols[1], TIERS),
        np.array(cols[2], dtype=bool),
        np.array(cols[3], dtype=np.int64),
        np.array(cols[4], dtype=np.int64),
    )


def _codes(values, names) -> np.ndarray:
    """Index of each value in `names` (-1 for others), one lookup per distinct value: a
    policy's finished touches grow without end."""
    distinct, inverse = np.unique(np.array(values, dtype=object).astype(str), return_inverse=True)
    table = np.array([names.index(v) if v in names else -1 for v in distinct], dtype=np.int64)
    return table[inverse] if len(values) else np.zeros(0, dtype=np.int64)


# -- writing decisions ------------------------------------------------------------------------


def touch_rows(
    tenant_id: int,
    row: PolicyRow,
    policy: Policy,
    pop: Population,
    d: Decisions,
    day: int,
    now_ms: int,
    run_id: int | None,
) -> list[dict]:
    acting = np.flatnonzero((d.status == SEND) | (d.status == HOLDOUT) | (d.status == SKIPPED))
    planned = planned_send_ms(day, d.defer_days, d.send_hour)
    out = []
    for i in acting:
        arm = policy.arms[d.arm[i]]
        touch = arm.touches[d.step[i]]
        status = {SEND: "queued", HOLDOUT: "held_out", SKIPPED: "skipped"}[int(d.status[i])]
        if policy.send_now:
            at = next_send_ms(now_ms, CHANNELS[touch.channel])
        elif d.status[i] == SKIPPED:
            at = now_ms
        else:
            at = int(planned[i])
        out.append(
            {
                "tenant": tenant_id,
                "policy": row.id,
                "run": run_id,
                "user": int(pop.user_ids[i]),
                "day": day,
                "arm": arm.name,
                "step": int(d.step[i]),
                "channel": CHANNELS[touch.channel],
                "message": touch.message,
                "coupon_template": touch.coupon,
                "tier": TIERS[int(pop.tier[i])],
                "holdout": bool(d.status[i] == HOLDOUT),
                "status": status,
                "reason": REASONS[int(d.reason[i])],
                "send_after_ms": at,
                "expires_ms": at + EXPIRY_MS,
                "sent_ms": at if status == "held_out" else None,
                "message_cost_fen": policy.costs_fen[touch.channel] if status == "queued" else 0,
                "value_fen": int(pop.extra["value_fen"][i]),
                "quiet_deferred": bool(d.quiet_deferred[i]),
            }
        )
    return out


_KEY = ("tenant", "policy", "user", "day", "step")


def write_touches(rows: list[dict]) -> Counter:
    """Insert in one transaction; rows already decided (same policy, user, day, step) are
    left as they are, except a skip that has become a send or holdout. Returns what was
    newly written, by status."""
    written: Counter = Counter()
    if not rows:
        return written
    with write_transaction():
        for start in range(0, len(rows), 500):
            chunk = rows[start : start + 500]
            for r in chunk:
                query = Touch.insert(**r)
                if r["status"] == "skipped":
                    query = query.on_conflict_ignore()
                else:
                    # A user skipped earlier today (no allowance yet, say) whom an hourly
                    # rerun can now reach: the skipped row becomes the real decision.
                    changes = {k: v for k, v in r.items() if k not in _KEY}
                    query = query.on_conflict(
                        conflict_target=[Touch.policy, Touch.user, Touch.day, Touch.step],
                        update=changes,
                        where=(Touch.status == "skipped"),
                    )
                if query.as_rowcount().execute():
                    written[r["status"]] += 1
    return written


# -- the job ----------------------------------------------------------------------------------


@dataclass
class PolicyOutcome:
    name: str
    decisions: Decisions
    population: Population
    rows: list[dict]


def decide_policy(tenant: Tenant, row: PolicyRow, policy: Policy, day: int, now_ms: int, seed: int):
    snapshot_day = _snapshot_day(tenant.id, day)
    triggered = None
    if policy.trigger == "coupon_expiring":
        triggered = _expiring_coupon_users(tenant.id, now_ms)
    pop = population(tenant.id, row, policy, day, snapshot_day, triggered=triggered)
    state = policy_state(tenant.id, row, policy)
    d = decide(policy, pop.state, state, salt=tenant.appid, day=day, seed=seed)
    return pop, d


def _snapshot_day(tenant_id: int, day: int) -> int:
    from backend.services.scoring import score_tenant

    if (
        not ScoreSnapshot.select()
        .where((ScoreSnapshot.tenant == tenant_id) & (ScoreSnapshot.day == day))
        .exists()
    ):
        score_tenant(Tenant.get_by_id(tenant_id), day)
    return day


def _expiring_coupon_users(tenant_id: int, now_ms: int) -> set[int]:
    """Users holding an unused coupon that expires within two days: triggered today."""
    from backend.store.models import Coupon

    rows = Coupon.select(Coupon.user).where(
        (Coupon.tenant == tenant_id)
        & (Coupon.status == "issued")
        & (Coupon.expires_ms > now_ms)
        & (Coupon.expires_ms <= now_ms + 2 * MS_PER_DAY)
    )
    return {c.user_id for c in rows}


def failure_reason(exc: BaseException) -> str:
    """How a failed run's cause is stored and shown: the exception's class and message."""
    text = str(exc).strip()
    if isinstance(exc, JobLocked):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class RunLock:
    """A run's tenant lock, short-lived and renewed by the holder as the run goes on.

    Two kinds of renewal. `beat(now_ms)` is called on the run's own thread between the job's
    phases and before each send; it renews the lock once LOCK_RENEW_MS have passed since the
    last renewal, and raises JobLockLost if the lock has been taken meanwhile (this run stalled
    past LOCK_TTL_MS), which stops the run. And while the lock is held a heartbeat thread
    renews it every LOCK_HEARTBEAT_S seconds of real time, on the run's clock, so one long
    phase (attribution, scoring, deciding a big policy) does not outlive the TTL. The heartbeat
    never raises: if its renewal finds the lock taken it stops renewing for good and the run's
    next `beat` raises. It is stopped before the lock is released, so nothing renews a lock
    after its run ended; a process that dies takes the thread with it, so its lock lapses.
    """

    def __init__(self, name: str, holder: str, now_ms: int, clock=None) -> None:
        self.name = name
        self.holder = holder
        self.renewed_ms = now_ms
        self.clock = clock
        self.fixed_ms = now_ms
        self.lost = False
        self._guard = threading.Lock()  # one renewal at a time: beat and heartbeat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def now(self) -> int:
        return self.clock.now_ms() if self.clock is not None else self.fixed_ms

    def _renew(self, at: int) -> bool:
        """Renew at `at`; False (and lost for good) if the lock is no longer ours."""
        with self._guard:
            if self.lost:
                return False
            if not renew_lock(self.name, self.holder, at, LOCK_TTL_MS):
                self.lost = True
                return False
            self.renewed_ms = max(self.renewed_ms, at)
            return True

    def beat(self, now_ms: int | None = None) -> None:
        at = self.now() if now_ms is None else now_ms
        if not self.lost and at - self.renewed_ms < LOCK_RENEW_MS:
            return
        if not self._renew(at):
            raise JobLockLost(
                f"the run lock {self.name} lapsed and was taken over; this run stopped"
            )

    # -- the heartbeat thread --------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._heartbeat, name=f"lock-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _heartbeat(self) -> None:
        try:  # renewals connect on demand: this thread's own pooled connection
            while not self._stop.wait(LOCK_HEARTBEAT_S):
                try:
                    if not self._renew(self.now()):
                        log.error("run lock %s was taken over; heartbeat stopped", self.name)
                        return
                except Exception:  # a failed renewal is retried at the next tick
                    log.exception("run lock %s: heartbeat renewal failed", self.name)
        finally:
            if not database.is_closed():
                database.close()


def run(
    tenant: Tenant,
    day: int,
    now_ms: int,
    *,
    dry_run: bool = False,
    seed: int = 0,
    deliver=None,
    clock=None,
) -> dict:
    """Decide every active nightly policy for `day`, write the outbox, then deliver.

    `deliver(tenant, now_ms) -> Counter` is the delivery step (delivery.deliver_due bound to
    the app's channels and clock; `now_ms` is the time delivery starts); dry runs neither write
    nor deliver. `clock`, if given, is what the run's lock renewals read as "now" while the
    run goes on (otherwise `now_ms` throughout). Active policies whose stored source no longer
    parses are skipped and named in the summary's `policies_unreadable`.
    """
    if dry_run:
        return _run_locked(tenant, day, now_ms, dry_run=True, seed=seed, deliver=None, lock=None)
    holder = uuid.uuid4().hex
    name = f"campaigns:{tenant.id}"
    if not acquire_lock(name, holder, now_ms, LOCK_TTL_MS):
        row = JobLock.get_or_none(JobLock.name == name)
        until = china_iso(row.expires_ms) if row else "soon"
        raise JobLocked(
            f"another run-campaigns holds the lock for tenant {tenant.appid}; if that run "
            f"crashed, the lock lapses at {until}"
        )
    lock = RunLock(name, holder, now_ms, clock)
    lock.start()
    try:
        return _run_locked(
            tenant, day, now_ms, dry_run=False, seed=seed, deliver=deliver, lock=lock
        )
    finally:
        lock.stop()  # before the release: nothing renews the lock after its run ended
        release_lock(name, holder)


def _run_locked(tenant, day, now_ms, *, dry_run, seed, deliver, lock: RunLock | None) -> dict:
    started = now_ms
    run_row = None
    if not dry_run:
        with write_transaction():
            # Holding the lock proves any run still marked running has died.
            CampaignRun.update(status="abandoned", finished_ms=now_ms).where(
                (CampaignRun.tenant == tenant.id) & (CampaignRun.status == "running")
            ).execute()
            run_row = CampaignRun.create(
                tenant=tenant.id, day=day, started_ms=started, status="running"
            )
    summary: dict = {
        "tenant": tenant.appid,
        "date": day_date(day).isoformat(),
        "dry_run": dry_run,
        "decided": 0,
        "held_out": 0,
        "queued": 0,
        "sent": 0,
        "deferred": 0,
        "skipped": 0,
        "failed": 0,
        "expired": 0,
        "quiet_hours_deferred": 0,
        "quiet_hours_now": next_allowed_ms(now_ms) != now_ms,
        "skipped_by_reason": {},
        "policies": {},
        "policies_unreadable": [],
    }

    def beat() -> None:
        if lock is not None:
            lock.beat()

    reasons: Counter = Counter()
    try:
        if not dry_run:
            attribute(tenant.id, now_ms)
            beat()
        unreadable: list[dict] = summary["policies_unreadable"]
        for row, policy in policies.active_rows(tenant.id, unreadable=unreadable):
            if policy.trigger in ("payment_failed", "cart_abandoned"):
                continue  # decided when the event arrives
            pop, d = decide_policy(tenant, row, policy, day, now_ms, seed)
            beat()
            rows = touch_rows(
                tenant.id, row, policy, pop, d, day, now_ms, run_row.id if run_row else None
            )
            per = _policy_summary(policy, pop, d)
            if dry_run:
                per["sample"] = _sample(rows, pop)
                written = Counter(r["status"] for r in rows)
            else:
                written = write_touches(rows)
                _maybe_crash("decide")
            per["written"] = dict(written)
            summary["policies"][policy.name] = per
            summary["held_out"] += written["held_out"]
            summary["queued"] += written["queued"]
            summary["skipped"] += written["skipped"]
            summary["decided"] += sum(written.values())
            new_rows = rows if dry_run else None
            for r in new_rows or []:
                if r["status"] == "skipped":
                    reasons[r["reason"]] += 1
            if not dry_run:
                reasons.update(_skip_reasons(row.id, day, run_row.id))
            summary["quiet_hours_deferred"] += int(d.quiet_deferred.sum())
        summary["skipped_by_reason"] = dict(reasons)
        if not dry_run and deliver is not None:
            with delivery.heartbeat(lock.beat):
                delivered = deliver(tenant, lock.now())
            for key in ("sent", "deferred", "failed", "expired"):
                summary[key] = int(delivered.get(key, 0))
        if run_row is not None:
            beat()  # a run that lost its lock does not report itself done
            with write_transaction():
                CampaignRun.update(
                    status="done", finished_ms=lock.now(), summary=json.dumps(summary)
                ).where(CampaignRun.id == run_row.id).execute()
    except Exception as exc:
        if run_row is not None:
            summary["error"] = failure_reason(exc)
            try:
                with write_transaction():
                    CampaignRun.update(
                        status="failed", finished_ms=lock.now(), summary=json.dumps(summary)
                    ).where(CampaignRun.id == run_row.id).execute()
            except Exception:  # the original failure is the one to report
                log.exception("could not record run %s as failed", run_row.id)
        raise
    return summary


def _skip_reasons(policy_id: int, day: int, run_id: int) -> Counter:
    rows = (
        Touch.select(Touch.reason, pw.fn.COUNT(Touch.id))
        .where((Touch.policy == policy_id) & (Touch.run == run_id) & (Touch.status == "skipped"))
        .group_by(Touch.reason)
        .tuples()
    )
    return Counter(dict(rows))


def _policy_summary(policy: Policy, pop: Population, d: Decisions) -> dict:
    """Counts by tier × arm of sends and holdouts (what --dry-run shows first)."""
    table: dict[str, dict[str, dict[str, int]]] = {}
    for status, label in ((SEND, "send"), (HOLDOUT, "holdout")):
        for i in np.flatnonzero(d.status == status):
            tier = TIERS[int(pop.tier[i])]
            arm = policy.arms[int(d.arm[i])].name
            cell = table.setdefault(tier, {}).setdefault(arm, {"send": 0, "holdout": 0})
            cell[label] += 1
    return {
        "users": len(pop.user_ids),
        "send": d.count(SEND),
        "holdout": d.count(HOLDOUT),
        "skipped": d.count(SKIPPED),
        "by_tier_arm": table,
        "reasons": d.reason_counts(),
    }


def _sample(rows: list[dict], pop: Population, k: int = 10) -> list[dict]:
    openid = dict(zip(pop.user_ids.tolist(), pop.openids, strict=True))
    from backend.core.clock import china_iso

    picked = [r for r in rows if r["status"] != "skipped"][:k]
    return [
        {
            "user": openid[r["user"]],
            "tier": r["tier"],
            "arm": r["arm"],
            "holdout": r["holdout"],
            "channel": r["channel"],
            "step": r["step"],
            "message": r["message"],
            "coupon": r["coupon_template"],
            "send_at": china_iso(r["send_after_ms"]),
        }
        for r in picked
    ]


def _maybe_crash(point: str) -> None:
    """Fault injection for the crash-safety test: HUILIU_CRASH_AFTER=decide kills the process
    right after the decisions are committed, before anything is delivered."""
    if os.environ.get("HUILIU_CRASH_AFTER") == point:
        log.error("HUILIU_CRASH_AFTER=%s: exiting without delivering", point)
        os._exit(70)


# -- event triggers -----------------------------------------------------------------------------


def on_events(tenant: Tenant, triggers: dict[str, set[int]], now_ms: int, seed: int = 0) -> int:
    """Decide trigger policies for users whose events just arrived; returns touches queued.

    `triggers` maps an event type to the users who sent it. Decided within the request that
    stored the event; delivery happens right after (see delivery.kick). One policy's failure
    is logged and does not stop the others (the caller must not fail the request either).
    """
    queued = 0
    day = int(china_day(now_ms))
    for row, policy in policies.active_rows(tenant.id, trigger=True):
        users = sorted(triggers.get(policy.trigger or "", set()))
        if not users:
            continue
        try:
            queued += _trigger_policy(tenant, row, policy, users, day, now_ms, seed)
        except Exception:
            log.exception("trigger policy %s of tenant %s failed", row.name, tenant.appid)
    return queued


def _trigger_policy(
    tenant: Tenant, row: PolicyRow, policy: Policy, users: list[int], day: int, now_ms: int, seed
) -> int:
    snapshot_day = _latest_snapshot_day(tenant.id, day)
    if snapshot_day is None:
        return 0
    pop = population(
        tenant.id,
        row,
        policy,
        day,
        snapshot_day,
        only=users,
        triggered=users,
    )
    if not len(pop.user_ids):
        return 0
    state = policy_state(tenant.id, row, policy)
    d = decide(policy, pop.state, state, salt=tenant.appid, day=day, seed=seed)
    rows = touch_rows(tenant.id, row, policy, pop, d, day, now_ms, None)
    return write_touches(rows)["queued"]


def _latest_snapshot_day(tenant_id: int, day: int) -> int | None:
    return (
        ScoreSnapshot.select(pw.fn.MAX(ScoreSnapshot.day))
        .where((ScoreSnapshot.tenant == tenant_id) & (ScoreSnapshot.day <= day))
        .scalar()
    )


def preview(row: PolicyRow, policy: Policy, day: int, now_ms: int) -> dict:
    """Dry run of `policy` (saved, or an edit of the saved `row`) on the latest scored day up
    to `day`: what the job would decide, written and sent nowhere."""
    tenant_id = row.tenant_id
    snap = _latest_snapshot_day(tenant_id, day)
    if snap is None:
        raise ApiError(404, "not_scored", "no scores yet: run `python app.py score`")
    pop = population(tenant_id, row, policy, day, snap)
    state = policy_state(tenant_id, row, policy)
    d = decide(policy, pop.state, state, salt=row.tenant.appid, day=day)
    rows = touch_rows(tenant_id, row, policy, pop, d, day, now_ms, None)
    out = _policy_summary(policy, pop, d)
    out["sample"] = _sample(rows, pop)
    out["date"] = day_date(day).isoformat()
    out["scores_from"] = day_date(snap).isoformat()
    out["paused_arms"] = [a.name for a, p in zip(policy.arms, state.paused, strict=True) if p]
    return out


def touch_dict(t: Touch) -> dict:
    def at(ms):
        return china_iso(ms) if ms is not None else None

    return {
        "id": t.id,
        "policy": t.policy.name,
        "date": day_date(t.day).isoformat(),
        "arm": t.arm,
        "step": t.step,
        "channel": t.channel,
        "message": t.message,
        "tier": t.tier,
        "holdout": t.holdout,
        "status": t.status,
        "reason": t.reason or None,
        "send_after": at(t.send_after_ms),
        "sent_at": at(t.sent_ms),
        "attempts": t.attempts,
        "wechat_errcode": t.wechat_errcode,
        "coupon_id": t.coupon_id,
        "returned_at": at(t.returned_ms),
        "ordered_at": at(t.ordered_ms),
        "revenue_fen": t.revenue_fen,
        "coupon_cost_fen": t.coupon_cost_fen,
        "message_cost_fen": t.message_cost_fen,
        "final": t.attributed,
    }
