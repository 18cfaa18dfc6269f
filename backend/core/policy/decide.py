"""The decision: columns of user state in, one decision per user out.

The nightly job, the event trigger and the simulator all call `decide` with the same policy;
nothing else decides who is messaged. Holdout users travel the whole path (eligibility,
arm choice, every guard rail, the budget) and come out as HOLDOUT instead of SEND, so a
"would have sent" touch exists for each of them and the comparison is unbiased.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from backend.core.policy.allocation import pick_by_weight, salt_of, stable_unit, thompson
from backend.core.policy.caps import caps_reached
from backend.core.policy.guards import QUIET_EXEMPT_CHANNELS, out_of_quiet_hours
from backend.core.policy.spec import CHANNELS, IN_APP, SUBSCRIBE, Policy
from backend.core.tiers import CHURNED, RISK, TIERS

NOT_ELIGIBLE, NOT_DUE, SEND, HOLDOUT, SKIPPED = range(5)
STATUSES = ["not_eligible", "not_due", "send", "holdout", "skipped"]
REASONS = [
    "",  # SEND and HOLDOUT need none
    "opted_out",
    "tier",
    "segment",
    "silence",
    "not_worth",
    "low_value",
    "no_trigger",
    "no_arm_for_tier",
    "waiting",  # the journey's next touch is not due yet
    "missed",  # the next touch's day passed by more than the grace days
    "journey_done",
    "not_targeted",  # below the policy's top share
    "suppressed",  # ignored the last N touches
    "stop_loss",
    "capped_30d",
    "capped_channel",
    "no_permission",  # no allowance, not a follower, no phone
    "budget",
]
R = {name: i for i, name in enumerate(REASONS)}


@dataclass
class UserState:
    """One row per user. Counts of past touches include holdout "would have sent" touches,
    so caps treat both groups alike."""

    user_key: np.ndarray  # int64, stable per user (the database id)
    tier: np.ndarray  # index into TIERS
    segment: np.ndarray  # index into rfm.SEGMENT_NAMES
    worth_recalling: np.ndarray  # bool
    value_fen: np.ndarray  # int64: the scoring layer's estimated future value
    p_alive: np.ndarray  # float, NaN when unknown
    term_days_silent: np.ndarray  # term days since the last visit
    usual_hour: np.ndarray  # the user's most active China hour
    opted_out: np.ndarray  # bool
    last_step: np.ndarray  # highest step of this policy's current journey already done; -1
    journey_arm: np.ndarray  # arm of the current journey, -1 for none yet
    touches_30d: np.ndarray  # recall touches of any policy in the last 30 days
    channel_week: np.ndarray  # (users × CHANNELS) touches per channel in the last 7 days
    # (users × CHANNELS) bool: an address is known, OA follower or phone (user_state.reach).
    # Subscribe goes by `allowance`, in-app needs no address: _permitted decides those two.
    reachable: np.ndarray
    allowance: Mapping[str, np.ndarray]  # subscribe template id -> allowances left
    ignored_streak: np.ndarray  # most recent touches in a row the user did not answer
    days_since_trigger: np.ndarray | None = None  # trigger policies: -1 when none
    uplift: np.ndarray | None = None  # rank_by: uplift

    def __len__(self) -> int:
        return int(np.asarray(self.user_key).size)


@dataclass
class PolicyState:
    """What the policy has learnt so far: paused arms and bandit posteriors per (arm, tier)."""

    paused: np.ndarray  # bool per arm
    successes: np.ndarray  # (arms × tiers) recalled
    failures: np.ndarray  # (arms × tiers) not recalled
    coupon_face_fen: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def fresh(cls, policy: Policy, coupon_face_fen: Mapping[str, int] | None = None):
        """A policy that has learnt nothing yet: no arm paused, flat posteriors."""
        k = len(policy.arms)
        return cls(
            np.zeros(k, bool),
            np.zeros((k, len(TIERS))),
            np.zeros((k, len(TIERS))),
            dict(coupon_face_fen or {}),
        )


@dataclass
class Decisions:
    """One decision per user, as columns: what `decide` returns and the job writes as touches."""

    status: np.ndarray  # int8, index into STATUSES
    reason: np.ndarray  # int8, index into REASONS
    arm: np.ndarray  # int16, -1 when none
    step: np.ndarray  # int8: which touch of the arm's sequence
    channel: np.ndarray  # int8, index into CHANNELS, -1 when none
    send_hour: np.ndarray  # int8, China hour the touch may go out
    defer_days: np.ndarray  # int8: 1 when quiet hours pushed it to tomorrow morning
    quiet_deferred: np.ndarray  # bool: the planned hour fell in quiet hours
    cost_fen: np.ndarray  # int64: message cost plus coupon face value if sent

    def count(self, status: int) -> int:
        """How many users got `status` (an index into STATUSES)."""
        return int(np.count_nonzero(self.status == status))

    def reason_counts(self) -> dict[str, int]:
        """Users per reason (only reasons that occurred): what summaries and previews show."""
        counts = np.bincount(self.reason, minlength=len(REASONS))
        return {REASONS[i]: int(c) for i, c in enumerate(counts) if i and c}


def touch_table(policy: Policy, coupon_face_fen: Mapping[str, int]):
    """(arms × steps) arrays: touch day (padded with a huge day), channel, cost in fen."""
    k, s = len(policy.arms), policy.max_steps
    days = np.full((k, s), 1 << 30, dtype=np.int64)
    channel = np.full((k, s), -1, dtype=np.int8)
    cost = np.zeros((k, s), dtype=np.int64)
    for i, arm in enumerate(policy.arms):
        for j, t in enumerate(arm.touches):
            days[i, j] = t.day
            channel[i, j] = t.channel
            face = coupon_face_fen.get(t.coupon, 0) if t.coupon else 0
            cost[i, j] = policy.costs_fen[t.channel] + face
    return days, channel, cost


def _eligibility(policy: Policy, u: UserState) -> np.ndarray:
    """Reason code per user; 0 means eligible. The first failed rule is the reason.

    Each rule is checked only on the users every earlier rule let through (the rules are
    per user, so this gives the same codes): most users fail on the first ones, and the
    later rules read a few columns of the few left, not a million rows each."""
    n = len(u)
    reason = np.zeros(n, dtype=np.int8)
    left = np.arange(n)

    def fail(failed: np.ndarray, name: str) -> None:
        nonlocal left
        reason[left[np.flatnonzero(failed)]] = R[name]
        left = left[np.flatnonzero(~failed)]

    # The first two rules over everyone in small-integer arithmetic (no masked writes).
    opted_out = np.asarray(u.opted_out, bool)
    tier = np.asarray(u.tier)
    in_tiers = np.zeros(n, dtype=bool)
    for t in np.unique(np.asarray(policy.tiers)).tolist():  # as np.isin: any of the tiers
        in_tiers |= tier == t
    np.multiply(opted_out, np.int8(R["opted_out"]), out=reason)
    reason += np.multiply(~(opted_out | in_tiers), np.int8(R["tier"]), dtype=np.int8)
    left = np.flatnonzero(reason == 0)
    if policy.segments:
        fail(~np.isin(np.asarray(u.segment)[left], policy.segments), "segment")
    if policy.trigger is None:
        silent = np.asarray(u.term_days_silent)[left]
        fail((silent < policy.min_days_silent) | (silent > policy.max_days_silent), "silence")
    else:
        if u.days_since_trigger is None:
            raise ValueError("a trigger policy needs days_since_trigger")
        fail(np.asarray(u.days_since_trigger)[left] < 0, "no_trigger")
    worth = np.asarray(u.worth_recalling, bool)[left]
    if policy.worth_recalling == "yes":
        fail(~worth, "not_worth")
    elif policy.worth_recalling == "no":
        fail(worth, "not_worth")
    fail(np.asarray(u.value_fen)[left] < policy.min_value_fen, "low_value")
    return reason


def _priority(policy: Policy, u: UserState, idx: np.ndarray) -> np.ndarray:
    """Higher first, for the users `idx`. Risk: 1 − P(alive), the churn-risk tiers first when
    the model is absent."""
    if policy.rank_by == "uplift":
        if u.uplift is None:
            raise ValueError(f"policy {policy.name} ranks by uplift but no uplift was given")
        return np.nan_to_num(np.asarray(u.uplift)[idx].astype(np.float64), nan=-np.inf)
    if policy.rank_by == "value":
        return np.asarray(u.value_fen)[idx].astype(np.float64)
    risk = 1.0 - np.asarray(u.p_alive)[idx].astype(np.float64)
    fallback = np.isin(np.asarray(u.tier)[idx], (RISK, CHURNED)).astype(np.float64) * 0.5
    return np.where(np.isnan(risk), fallback, risk)


def _assign(policy, state, u, idx, tier, salt, rng) -> np.ndarray:
    """Arm per user in `idx` (-1: no arm serves the tier). Fixed shares hash stably; the
    bandit draws from posteriors once every allowed arm has its minimum sample."""
    k = len(policy.arms)
    serves = np.ones((len(TIERS), k), dtype=bool)
    for i, arm in enumerate(policy.arms):
        if arm.tiers:
            serves[:, i] = np.isin(np.arange(len(TIERS)), arm.tiers)
    allowed = serves[tier]
    shares = np.array([a.share for a in policy.arms])
    weights = allowed * shares
    arm = pick_by_weight(weights, stable_unit(u.user_key[idx], salt_of(salt, "arm")))
    if policy.allocation == "thompson" and idx.size:
        s = state.successes.T[tier]  # users × arms
        f = state.failures.T[tier]
        seen = np.where(allowed, s + f, np.inf).min(axis=1)
        learnt = seen >= policy.bandit_min_samples
        if learnt.any():
            drawn = thompson(allowed[learnt], s[learnt], f[learnt], policy.bandit_floor, rng)
            arm[learnt] = drawn
    arm[~allowed.any(axis=1)] = -1
    return arm.astype(np.int16)


def decide(
    policy: Policy,
    users: UserState,
    state: PolicyState,
    *,
    salt: str,
    day: int,
    seed: int = 0,
) -> Decisions:
    """One decision per user for `day`. `salt` names the tenant; with the policy name it keys
    the stable holdout hash. `seed` (with the day) drives the bandit's draws only.

    The steps of docs/policies.md in order, each narrowing the users the next one looks at:
    eligibility, journeys (arm and due touch), targeting, guard rails, holdout, budget, hour.
    """
    n = len(users)
    u = users
    rng = np.random.default_rng(
        [seed & 0xFFFFFFFF, day & 0xFFFFFFFF, int(salt_of(salt, policy.name)) & 0xFFFFFFFF]
    )
    if policy.rank_by == "uplift" and u.uplift is None:
        raise ValueError(f"policy {policy.name} ranks by uplift but no uplift was given")
    status = np.full(n, NOT_ELIGIBLE, dtype=np.int8)
    reason = _eligibility(policy, u)
    live, live_arm = _journeys(policy, state, u, reason, salt, rng)
    status[live] = NOT_DUE
    due = _due_touches(policy, state, u, reason, live, live_arm)
    _target(policy, u, reason, due)

    # Guard rails, the same for holdout and treated users; the first failure is the reason.
    reason_due = reason[due.idx]
    _guard_rails(policy, state, u, due, reason_due)
    # Holdout by a stable hash of (tenant, policy, user): the same users every day.
    held = stable_unit(np.asarray(u.user_key)[due.idx], salt_of(salt, policy.name, "holdout"))
    held = held < policy.holdout_share
    _budget(policy, u, due, held, reason_due)

    final = reason_due != 0
    status_due = np.where(final, SKIPPED, np.where(held, HOLDOUT, SEND)).astype(np.int8)
    status[due.idx] = status_due
    reason[due.idx] = reason_due
    acting = due.idx[~final]
    reason[acting] = 0
    step = np.full(n, -1, dtype=np.int8)
    step[due.idx] = due.step
    channel = np.full(n, -1, dtype=np.int8)
    channel[due.idx] = due.channel
    arm_out = np.full(n, -1, dtype=np.int16)  # for the due, not due and skipped
    arm_out[live] = live_arm
    cost = np.zeros(n, dtype=np.int64)
    cost[due.idx[status_due == SEND]] = due.cost[status_due == SEND]
    send_hour, defer_days, quiet = _send_hours(policy, u, channel, acting)
    return Decisions(
        status=status,
        reason=reason,
        arm=arm_out,
        step=step,
        channel=channel,
        send_hour=send_hour,
        defer_days=defer_days,
        quiet_deferred=quiet,
        cost_fen=cost,
    )


def _journeys(
    policy: Policy, state: PolicyState, u: UserState, reason: np.ndarray, salt: str, rng
) -> tuple[np.ndarray, np.ndarray]:
    """(users with an arm, their arm) among the eligible: continuing journeys keep theirs,
    new ones get one (`_assign`); a tier no arm serves is marked no_arm_for_tier."""
    eligible = np.flatnonzero(reason == 0)
    arm_e = np.asarray(u.journey_arm)[eligible].astype(np.int16)
    fresh = arm_e < 0
    new = eligible[fresh]
    tier_new = np.asarray(u.tier)[new].astype(np.int64)
    arm_e[fresh] = _assign(policy, state, u, new, tier_new, f"{salt}:{policy.name}", rng)
    has_arm = arm_e >= 0
    reason[eligible[~has_arm]] = R["no_arm_for_tier"]
    return eligible[has_arm], arm_e[has_arm]


@dataclass
class _Due:
    """The due touches, one row per user who has one: positions in the population (`idx`)
    and the touch's arm, step, channel, cost, and the user's last step taken (-1: new)."""

    idx: np.ndarray
    arm: np.ndarray
    step: np.ndarray
    channel: np.ndarray
    cost: np.ndarray
    last: np.ndarray


def _due_touches(
    policy: Policy,
    state: PolicyState,
    u: UserState,
    reason: np.ndarray,
    live: np.ndarray,
    live_arm: np.ndarray,
) -> _Due:
    """Which touch is due: the latest one whose day has come, if not yet sent and not stale.
    Users with none get their reason (journey_done, missed, waiting)."""
    days, channel_of, cost_of = touch_table(policy, state.coupon_face_fen)
    if policy.trigger is None:
        jd = np.asarray(u.term_days_silent)[live].astype(np.int64)
        jd -= policy.lapse_after_days
    else:
        jd = np.asarray(u.days_since_trigger)[live].astype(np.int64)
    a = live_arm.astype(np.int64)
    reached = (days[a] <= jd[:, None]).sum(axis=1) - 1
    last = np.asarray(u.last_step)[live].astype(np.int64)
    n_touches = (days[a] < (1 << 30)).sum(axis=1)
    # A journey already under way does not send a touch long after its day (a "day 1"
    # message on day 9 says the wrong thing); a new one starts at whatever step is reached.
    late = jd - days[a, np.maximum(reached, 0)] > policy.grace_days
    stale = late & (last >= 0) & (reached > last)
    finished = last >= n_touches - 1
    due = (reached > last) & ~stale & ~finished
    reason[live[finished]] = R["journey_done"]
    reason[live[stale & ~finished]] = R["missed"]
    reason[live[~finished & ~due & ~stale]] = R["waiting"]
    k = reached[due]
    arm_due = live_arm[due]
    return _Due(
        idx=live[due],
        arm=arm_due,
        step=k,
        channel=channel_of[arm_due, k],
        cost=cost_of[arm_due, k],
        last=last[due],
    )


def _target(policy: Policy, u: UserState, reason: np.ndarray, due: _Due) -> None:
    """Targeting: new journeys below the top share are left alone; ongoing ones continue."""
    starting = due.idx[due.last < 0]
    if policy.top_share < 1 and starting.size:
        keep = int(np.floor(policy.top_share * starting.size + 1e-9))
        ranked = starting[np.argsort(-_priority(policy, u, starting), kind="stable")]
        reason[ranked[keep:]] = R["not_targeted"]


def _guard_rails(
    policy: Policy, state: PolicyState, u: UserState, due: _Due, reason_due: np.ndarray
) -> None:
    """Mark, in `reason_due`, the first guard rail each due touch fails (0: none)."""

    def guard(mask: np.ndarray, name: str) -> None:
        reason_due[(reason_due == 0) & mask] = R[name]

    idx = due.idx
    ch = due.channel.astype(np.int64)
    over_30d, over_week = caps_reached(
        policy, np.asarray(u.touches_30d)[idx], np.asarray(u.channel_week)[idx, ch], ch
    )
    guard(np.asarray(u.ignored_streak)[idx] >= policy.suppress_after_ignored, "suppressed")
    guard(np.asarray(state.paused, bool)[due.arm], "stop_loss")
    guard(over_30d, "capped_30d")
    guard(over_week, "capped_channel")
    guard(~_permitted(policy, u, idx, due.arm, due.step, ch), "no_permission")


def _budget(
    policy: Policy, u: UserState, due: _Due, held: np.ndarray, reason_due: np.ndarray
) -> None:
    """Walk the survivors by priority; once the treated spend would pass the budget,
    everyone after (treated or holdout alike) is skipped."""
    ok = np.flatnonzero(reason_due == 0)  # positions in due.idx
    if policy.run_budget_fen is not None and ok.size:
        ranked = ok[np.argsort(-_priority(policy, u, due.idx[ok]), kind="stable")]
        spend = np.cumsum(np.where(held[ranked], 0, due.cost[ranked]))
        over = spend > policy.run_budget_fen
        reason_due[ranked[over]] = R["budget"]


def _send_hours(
    policy: Policy, u: UserState, channel: np.ndarray, acting: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """When: a fixed hour or the user's own usual hour, moved out of quiet hours (in-app
    cards excepted). Returns per user (send hour, days deferred, whether quiet hours moved it)."""
    n = len(u)
    planned = (
        np.full(acting.size, policy.send_hour, dtype=np.int16)
        if policy.send_hour is not None
        else np.asarray(u.usual_hour)[acting].astype(np.int16)
    )
    hour, defer = out_of_quiet_hours(planned)
    card = np.isin(channel[acting], [CHANNELS.index(c) for c in QUIET_EXEMPT_CHANNELS])
    hour = np.where(card, planned, hour)
    defer = np.where(card, 0, defer)
    send_hour = np.full(n, -1, dtype=np.int8)
    send_hour[acting] = hour
    defer_days = np.zeros(n, dtype=np.int8)
    defer_days[acting] = defer
    quiet = np.zeros(n, dtype=bool)
    quiet[acting] = hour != planned
    return send_hour, defer_days, quiet


def _permitted(policy, u, idx, arm, step, ch) -> np.ndarray:
    """Whether each due user can be reached on the touch's channel right now: the one place
    that says how, per channel (a subscribe send spends an allowance of its template; an in-app
    card waits in the app for the user's next open, so it needs no address at all)."""
    ok = np.asarray(u.reachable, bool)[idx, ch]
    for a, arm_spec in enumerate(policy.arms):
        for s, touch in enumerate(arm_spec.touches):
            if touch.channel != SUBSCRIBE:
                continue
            sel = (arm == a) & (step == s)
            left = u.allowance.get(policy.messages[touch.message].template_id)
            ok[sel] = False if left is None else np.asarray(left)[idx[sel]] > 0
    ok[ch == IN_APP] = True
    return ok


__all__ = ["CHANNELS", "Decisions", "PolicyState", "UserState", "decide"]
