"""Policy trials started from the dashboard.

The web process records the request (`start`) and queues the trial on the task queue
(backend/tasks/trials.py): a trial takes seconds to minutes and must not tie up a web worker.
Its runs (a policy on a seed each) are tasks of their own, so several workers finish it
sooner; their state and answers are rows (services/trial_parts.py), and the task that gathers
them writes the comparison and its report into the run's row, so any web worker can show
them. States: queued, running, done, failed, cancelled (and "stalled" on the page, when no
worker has touched a run for STALLED_AFTER_MS).

The per-tenant limit (MAX_RUNNING_PER_TENANT) is enforced by the database transaction that
queues the trial, atomically: Huey has no per-key concurrency limit, so the count and the
insert are one write transaction holding the tenant's lock (`start`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

from backend.core import paired
from backend.core.clock import china_iso
from backend.errors import ApiError
from backend.store.db import is_sqlite, write_transaction
from backend.store.models import SimulationPart, SimulationRun, Tenant

MAX_USERS = 5000
MAX_DAYS = 180
MAX_REPLICATES = 10
MAX_RUNNING_PER_TENANT = 2
STALLED_AFTER_MS = 10 * 60 * 1000  # nobody has touched a queued or running trial this long
ACTIVE = ("queued", "running")


# The default trial's size ----------------------------------------------------------------------
#
# A trial is decisive when the smallest difference it can resolve (80% power, 5% two-sided;
# backend/core/paired.py: mdd = (z_0.975 + z_0.8) * se) is well below the true gap between the
# policies it compares. The paired standard error of a total over N students pooled over R
# seeds is sd * sqrt(N / R), so per student the resolvable difference is
# (z_0.975 + z_0.8) * sd / sqrt(N * R): what matters is N * R, the student-runs.
#
# The pilot that sets sd and the gap: the built-in campus, the three presets, 20,000 students,
# 28 days of warm-up then 60 trial days, seeds 0, 1 and 2 (simulator.run.simulate_paired and
# per_user_effects, profit at the 20% default margin). tiered is far ahead of the other two;
# the closest pair on profit is golden_window against coupon_blast, 15.0, 17.4 and 19.5 fen
# per student over the 60 days (mean 17.3), with a per-student sd of their difference of 232,
# 223 and 242 fen. The rule takes the cautious ends: gap 15 fen, sd 240 fen.
PILOT = {
    "days": 60,
    "pair": ("golden_window", "coupon_blast"),
    "gap_fen_per_student": 15.0,
    "sd_fen_per_student": 240.0,
}
# Resolve the closest pair with room to spare: mdd <= 0.7 x gap puts the gap at 4 standard
# errors, so the trial separates the pair with about 98% probability (80% at mdd = gap).
SAFETY = 0.7
# The time a merchant waits for the default trial, and the simulator's speed on a small
# 2-core machine shared with other work (measured 60-80 thousand student-days a second for
# the whole compare at 4,500 students, warm-up included; 2 million alone at 20,000).
TIME_BUDGET_S = 300
STUDENT_DAYS_PER_S = 50_000
USERS_STEP = 500
MIN_USERS = 100


@dataclass(frozen=True)
class TrialSize:
    """A trial's size and why: the smallest profit difference it resolves (a month, in fen)
    against the pilot's gap between the closest presets (a month), and its expected time."""

    users: int
    days: int
    replicates: int
    student_runs_needed: int
    min_detectable_month_fen: float
    gap_month_fen: float
    seconds: float
    decisive: bool

    def as_dict(self) -> dict:
        """The fields as plain JSON values, for the trial form's size explanation."""
        return asdict(self)


def trial_size(
    users: int, days: int, replicates: int, policies: int, warmup: int, pilot: dict = PILOT
) -> TrialSize:
    """What a trial of this size can resolve between the closest presets (the pilot's pair,
    its per-student figures scaled to `days` in proportion) and how long it should take."""
    k = days / pilot["days"]
    gap = pilot["gap_fen_per_student"] * k
    sd = pilot["sd_fen_per_student"] * math.sqrt(k)  # a sum over days: variance in proportion
    z = paired.min_detectable(1.0)  # z_0.975 + z_0.8
    needed = math.ceil((z * sd / (SAFETY * gap)) ** 2)
    mdd_per_student = z * sd / math.sqrt(users * replicates)
    month = 30 / days
    return TrialSize(
        users=users,
        days=days,
        replicates=replicates,
        student_runs_needed=needed,
        min_detectable_month_fen=round(mdd_per_student * users * month, 1),
        gap_month_fen=round(gap * users * month, 1),
        seconds=round((warmup + days) * users * replicates * policies / STUDENT_DAYS_PER_S, 1),
        decisive=users * replicates >= needed,
    )


def default_size(policies: int, warmup: int, days: int = 60, pilot: dict = PILOT) -> TrialSize:
    """The dashboard's default trial: the fewest replicates, then the smallest campus (in
    steps of 500, at most MAX_USERS), whose student-runs N * R reach what the pilot says the
    closest presets need (mdd <= SAFETY x gap) within TIME_BUDGET_S. If even the budget's
    largest trial falls short, that trial, marked not decisive (the page says so)."""
    best = None
    need = trial_size(MIN_USERS, days, 1, policies, warmup, pilot).student_runs_needed
    for replicates in range(1, MAX_REPLICATES + 1):
        users = max(MIN_USERS, USERS_STEP * math.ceil(need / replicates / USERS_STEP))
        size = trial_size(min(users, MAX_USERS), days, replicates, policies, warmup, pilot)
        if size.seconds > TIME_BUDGET_S:
            break
        best = size
        if size.decisive:
            return size
    return best or trial_size(MIN_USERS, days, 1, policies, warmup, pilot)


def start(tenant_id: int, request: dict, now_ms: int) -> SimulationRun:
    """Record a trial; refuses a tenant that already has too many running.

    Count and insert are one write transaction holding the tenant's lock, so parallel starts
    queue and exactly MAX_RUNNING_PER_TENANT of them get a row. (They used to be two
    autocommit statements: every parallel start counted before any inserted, and 12 parallel
    starts launched 5 against a limit of 2, on SQLite as on PostgreSQL.)
    """
    with write_transaction():
        _lock_tenant(tenant_id)
        busy = (
            SimulationRun.select()
            .where(
                (SimulationRun.tenant == tenant_id)
                & SimulationRun.status.in_(ACTIVE)
                & (SimulationRun.updated_ms > now_ms - STALLED_AFTER_MS)
            )
            .count()
        )
        if busy >= MAX_RUNNING_PER_TENANT:
            raise ApiError(
                429, "too_many_simulations", f"{busy} trials are still running; wait for one to end"
            )
        return SimulationRun.create(
            tenant=tenant_id,
            created_ms=now_ms,
            updated_ms=now_ms,
            status="queued",
            request=json.dumps(request, ensure_ascii=False),
        )


def _lock_tenant(tenant_id: int) -> None:
    """Serialise this tenant's starts until the transaction ends. SQLite's write transaction
    already is one writer at a time (BEGIN IMMEDIATE); PostgreSQL locks the tenant's row."""
    if not is_sqlite():
        list(Tenant.select(Tenant.id).where(Tenant.id == tenant_id).for_update())


def get(tenant_id: int, run_id: int) -> SimulationRun:
    """A trial of this tenant; another tenant's id is simply not found."""
    row = SimulationRun.get_or_none(
        (SimulationRun.id == run_id) & (SimulationRun.tenant == tenant_id)
    )
    if row is None:
        raise ApiError(404, "simulation_not_found", f"no simulation {run_id}")
    return row


def recent(tenant_id: int, limit: int = 20) -> list[SimulationRun]:
    """The tenant's latest simulation runs, newest first, for the trials page."""
    return list(
        SimulationRun.select()
        .where(SimulationRun.tenant == tenant_id)
        .order_by(SimulationRun.id.desc())
        .limit(limit)
    )


def status(row: SimulationRun, now_ms: int) -> dict:
    """What the page polls: state, progress and, when done, the ranking."""
    state = row.status
    if state in ACTIVE and now_ms - row.updated_ms > STALLED_AFTER_MS:
        state = "stalled"
    request = json.loads(row.request)
    out = {
        "id": row.id,
        "status": state,
        "progress": round(float(row.progress), 4),
        "created_at": china_iso(row.created_ms),
        "policies": [p["name"] for p in request["policies"]],
        "users": request["users"],
        "days": request["days"],
        "seed": request["seed"],
        "replicates": request.get("replicates", 1),
        "twin": json.loads(row.twin or "{}"),
        "error": row.error,
        "cancellable": row.status in ACTIVE,
    }
    if row.status == "done" and row.result:
        result = json.loads(row.result)
        out["ranking"] = result.get("ranking", [])
        out["verdict"] = result.get("verdict", [])
        out["summary"] = result.get("summary_zh") or result.get("summary", "")
        out["config"] = result.get("config", {})
        # Written by the worker in the merchant's words (absent on trials run before them).
        out["warnings_zh"] = result.get("warnings_zh", {})
        out["power_zh"] = result.get("power_zh", {})
    return out


def cancel(tenant_id: int, run_id: int, now_ms: int) -> SimulationRun:
    """Stop a queued or running trial: its parts not started are skipped, a running part
    stops at its next progress report (services/trial_parts.py). 409 once it has ended."""
    get(tenant_id, run_id)
    with write_transaction():
        stopped = (
            SimulationRun.update(status="cancelled", updated_ms=now_ms)
            .where((SimulationRun.id == run_id) & SimulationRun.status.in_(ACTIVE))
            .execute()
        )
        SimulationPart.update(status="cancelled", updated_ms=now_ms).where(
            (SimulationPart.run == run_id) & (SimulationPart.status == "queued")
        ).execute()
    if not stopped:
        raise ApiError(409, "simulation_not_running", f"simulation {run_id} has already ended")
    return SimulationRun.get_by_id(run_id)


# The worker's side ------------------------------------------------------------------------


def claim(run_id: int, now_ms: int) -> SimulationRun:
    """The worker takes its run; a run already taken (started twice) is refused."""
    taken = (
        SimulationRun.update(status="running", updated_ms=now_ms)
        .where((SimulationRun.id == run_id) & (SimulationRun.status == "queued"))
        .execute()
    )
    if not taken:
        raise ApiError(409, "simulation_not_queued", f"simulation {run_id} is not waiting to run")
    return SimulationRun.get_by_id(run_id)


def heartbeat(run_id: int, progress: float, now_ms: int, twin: dict | None = None) -> bool:
    """The worker's sign of life: progress in [0, 1] (clipped), and the calibrated twin once
    known. False when the run is no longer running (cancelled, failed): the worker stops."""
    fields = {"progress": min(max(progress, 0.0), 1.0), "updated_ms": now_ms}
    if twin is not None:
        fields["twin"] = json.dumps(twin, ensure_ascii=False)
    return bool(
        SimulationRun.update(**fields)
        .where((SimulationRun.id == run_id) & (SimulationRun.status == "running"))
        .execute()
    )


def finish(run_id: int, result: dict, report_html: str, now_ms: int) -> bool:
    """Store a finished run's result (what `status` shows) and its HTML report, once: False
    if the run is no longer running (cancelled meanwhile, or finished by another gather).
    The parts' answers are dropped with it: the result holds what they were for."""
    with write_transaction():
        done = (
            SimulationRun.update(
                status="done",
                progress=1.0,
                updated_ms=now_ms,
                result=json.dumps(result, ensure_ascii=False),
                report_html=report_html,
            )
            .where((SimulationRun.id == run_id) & (SimulationRun.status == "running"))
            .execute()
        )
        if done:
            SimulationPart.update(answer=None).where(SimulationPart.run == run_id).execute()
    return bool(done)


def fail(run_id: int, message: str, now_ms: int) -> None:
    """Mark a queued or running run failed with its error (first 2,000 characters) for the
    page to show; its other parts stop at their next report."""
    SimulationRun.update(status="failed", updated_ms=now_ms, error=message[:2000]).where(
        (SimulationRun.id == run_id) & SimulationRun.status.in_(ACTIVE)
    ).execute()
