"""Fast mode = end-to-end mode: the same decisions for the same users on the same days.

The end-to-end model's users act through the mini-program API, the backend's own scoring and
campaign jobs decide from the database, delivery goes through the channel layer: if the fast
mode (production's functions on the model's arrays) decided anything differently, a merchant
could not trust a trial run.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from backend.core.calendar import MS_PER_DAY
from backend.core.metrics import first_per_user
from backend.core.policy import HOLDOUT, SEND, SKIPPED, parse_policy
from backend.core.recall import lapsed_at_decision
from backend.core.seeds import POLICIES_DIR as PRESETS
from simulator.e2e import EndToEndModel, coupon_terms
from simulator.model import CampusModel
from simulator.touch_log import HELD_OUT, SENT, DayTouches, job_ms


def decisions_by_user(d) -> dict[int, tuple]:
    acting = np.flatnonzero((d.status == SEND) | (d.status == HOLDOUT) | (d.status == SKIPPED))
    out = {}
    for i in acting.tolist():
        skipped = d.status[i] == SKIPPED
        when = (-1, 0) if skipped else (int(d.send_hour[i]), int(d.defer_days[i]))
        what = (int(d.status[i]), int(d.arm[i]), int(d.step[i]), int(d.channel[i]))
        out[i] = what + when + ((int(d.reason[i]),) if skipped else ())
    return out


@pytest.fixture
def ram_dir():
    """A folder on the RAM disk (SQLite commits per request: it keeps the test quick), removed
    afterwards so runs do not leave databases behind in /dev/shm."""
    shm = Path("/dev/shm")
    folder = Path(tempfile.mkdtemp(prefix="huiliu-test-", dir=shm if shm.is_dir() else None))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def both_modes(
    folder: Path,
    name: str,
    users: int,
    warmup: int,
    days: int,
    seed: int,
    edits: dict[str, str] | None = None,
    fail_share: float | None = None,
    each_day=None,
):
    """Both modes side by side, day by day. `edits`: text replacements in the preset's file
    (a test variant); `fail_share`: the campus's share of failed payments in both."""
    source = (PRESETS / f"{name}.yaml").read_text(encoding="utf-8")
    for old, new in (edits or {}).items():
        assert old in source, old
        source = source.replace(old, new)
    policy = parse_policy(source)
    fast = CampusModel(
        users=users, seed=seed, policy=policy, warmup_days=warmup, coupon_face_fen=coupon_terms()
    )
    e2e = EndToEndModel(
        policy, source, folder / "campus.db", users=users, seed=seed, warmup_days=warmup
    )
    if fail_share is not None:
        fast.payment_fail_share = e2e.payment_fail_share = fail_share
    per_day = []
    for _ in range(warmup + days):
        fast.step()
        e2e.step()
        if fast.decisions is not None:
            per_day.append(
                (fast.day - 1, decisions_by_user(fast.decisions), decisions_by_user(e2e.decisions))
            )
            if each_day is not None:
                each_day(fast)
    return fast, e2e, per_day


# Per preset: users, warm-up, trial days, seed, edits to the file, share of failed payments.
# Sized so each preset really acts (sends and holdouts; the bandit past its warm-up; the
# uplift learner fitted) in a few seconds; a preset not named here gets DEFAULT_RUN.
RUNS = {
    "tiered": (200, 14, 14, 5, {}, None),
    # The bandit must allocate: its minimum sample lowered so that it learns within the run.
    "golden_window": (160, 14, 16, 7, {"min_samples: 30": "min_samples: 3"}, None),
    # Enough holdout outcomes for the learner within the run (it needs 10 a side).
    "uplift": (240, 14, 21, 3, {"holdout_share: 0.2": "holdout_share: 0.5"}, None),
    # More failed payments than a real campus has, so that a small one triggers daily.
    "payment_failed": (240, 7, 14, 3, {}, 0.4),
    "coupon_blast": (150, 14, 12, 2, {}, None),
}
DEFAULT_RUN = (150, 14, 14, 1, {}, None)
PRESET_NAMES = sorted(f.stem for f in PRESETS.glob("*.yaml"))


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_fast_and_end_to_end_modes_make_the_same_decisions(ram_dir, name):
    users, warmup, days, seed, edits, fail_share = RUNS.get(name, DEFAULT_RUN)
    learnt_days = []

    def bandit_learnt(fast) -> None:
        """Whether the bandit drew from its posteriors today for some tier it serves."""
        p = fast.campaign.policy
        if p.allocation != "thompson" or not fast.decisions.count(SEND):
            return
        state = fast.campaign.learning.state(p, fast.campaign.faces)
        seen = (state.successes + state.failures).min(axis=0)  # per tier, the least-seen arm
        if (seen[list(p.tiers)] >= p.bandit_min_samples).any():
            learnt_days.append(fast.day - 1)

    fast, e2e, per_day = both_modes(
        ram_dir, name, users, warmup, days, seed, edits, fail_share, bandit_learnt
    )
    try:
        differing = {
            day: {u: (a.get(u), b.get(u)) for u in a.keys() | b.keys() if a.get(u) != b.get(u)}
            for day, a, b in per_day
        }
        assert all(not diff for diff in differing.values()), {
            d: list(v.items())[:5] for d, v in differing.items() if v
        }
        statuses = [s[0] for _, a, _ in per_day for s in a.values()]
        assert statuses.count(SEND) > 20 and statuses.count(HOLDOUT) >= 2  # not a vacuous match
        policy = fast.campaign.policy
        if policy.allocation == "thompson":
            assert len(learnt_days) >= 3, learnt_days  # the bandit really allocated
        if policy.rank_by == "uplift":
            # Fitted through the API on the days the fast mode fitted, then ranking by it.
            assert fast.campaign.fits == e2e.campaign.fits
            assert fast.campaign.ranking == e2e.campaign.ranking
            assert "model" in fast.campaign.ranking.values(), fast.campaign.fits
        assert_same_outcomes(fast, e2e)

        # Every message the job queued went out through the channel layer to its user by the
        # time it was due (sends due on the last evening included).
        due_by_end = job_ms(e2e.day) + 0
        log = fast.campaign.log
        sent = log.column("status") == SENT
        due = sent & (log.column("sent_ms") < due_by_end)
        delivered = sorted((u - 1) for _, u, _, _ in e2e.sink.delivered)
        assert delivered == sorted(log.column("user")[due].tolist())

        # The production report, read from the database, counts what the fast mode's books
        # count: users on their first decision, for touches final by the last job; recall
        # among those lapsed at that decision and the active users' returns as retention,
        # both by core.recall's one definition (the books' silence at decision and the
        # simulation's tier thresholds; the report's from the day's score snapshot).
        report = e2e.report()["policies"][0]
        window = fast.campaign.policy.attribution_window_days * MS_PER_DAY
        final = log.column("sent_ms") + window <= job_ms(e2e.day - 1)
        order = log.column("day") * 10 + log.column("step")
        returned, user, status = log.returned, log.column("user"), log.column("status")
        lapsed = lapsed_at_decision(
            log.column("tier"), log.column("term_days_silent"), fast.tier_config
        )
        counted = {"lapsed": 0, "active": 0}
        for prefix, wanted in (("", SENT), ("holdout_", HELD_OUT)):
            rows = np.flatnonzero(final & (status == wanted))
            first = rows[first_per_user(user[rows], order[rows])]
            for label, who, kind in (
                ("recall_rate", first[lapsed[first]], "lapsed"),
                ("retention_active", first[~lapsed[first]], "active"),
            ):
                got = report[prefix + label]
                assert (got["k"], got["n"]) == (int(returned[who].sum()), who.size), prefix + label
                counted[kind] += who.size
        assert report["treated_users"] > 10
        assert counted["lapsed"] > 0, counted  # the recall comparison is not vacuous
    finally:
        e2e.close()


def assert_same_outcomes(fast, e2e) -> None:
    """Each touch's outcome in the backend's table (its own attribution, from the events the
    users posted) equals the fast mode's books: return time, revenue in the window, coupon
    redeemed, and D7/D30 retention wherever the backend has settled it. And each touch's
    silence at decision in the books is the silence in the backend's score snapshot of the
    touch's day (what the report reads to tell the lapsed from the active)."""
    from backend.store.models import ScoreSnapshot, Touch

    log = fast.campaign.log
    key = zip(
        log.column("user", skipped=False).tolist(),
        log.column("day", skipped=False).tolist(),
        log.column("step", skipped=False).tolist(),
        strict=True,
    )
    books = {
        k: i for i, k in enumerate(key)
    }  # (user row, day, step) -> row of the fast mode's measured touches
    col = {name: log.column(name, skipped=False) for name in DayTouches.OUTCOMES}
    silent = log.column("term_days_silent", skipped=False)
    compared = {"final": 0, "returned": 0, "revenue": 0, "d7": 0, "d30": 0}
    with e2e.app.app_context():
        snapshot = dict(
            ((s.user_id, s.day), s.term_days_since_visit)
            for s in ScoreSnapshot.select(
                ScoreSnapshot.user, ScoreSnapshot.day, ScoreSnapshot.term_days_since_visit
            ).where(ScoreSnapshot.tenant == e2e.tenant_id)
        )
        rows = Touch.select().where(
            (Touch.tenant == e2e.tenant_id) & Touch.status.in_(("sent", "held_out"))
        )
        for t in rows:
            i = books[(t.user_id - 1, t.day, t.step)]
            assert snapshot[(t.user_id, t.day)] == int(silent[i]), (t.id, i)
            if not t.attributed:
                continue
            compared["final"] += 1
            back = int(col["return_ms"][i])
            assert (t.returned_ms if t.returned_ms is not None else -1) == back, (t.id, i)
            assert t.revenue_fen == int(col["revenue_fen"][i]), (t.id, i)
            assert (t.coupon_cost_fen > 0) == bool(col["redeemed"][i]), (t.id, i)
            compared["returned"] += back >= 0
            compared["revenue"] += t.revenue_fen > 0
            for days in (7, 30):
                settled = getattr(t, f"retained_d{days}")
                if settled is not None:
                    assert settled == bool(col[f"retained_d{days}"][i]), (t.id, i, days)
                    compared[f"d{days}"] += 1
    assert compared["final"] > 10 and compared["returned"] > 0, compared


def test_the_end_to_end_users_really_went_through_the_api(ram_dir):
    """The database holds what the simulated users did: one login each, their visits as
    events, their orders, their subscribe grants."""
    from backend.store.models import Event, Order, SubscriptionAllowance, User

    fast, e2e, _ = both_modes(ram_dir, "tiered", 60, 7, 3, 2)
    try:
        with e2e.app.app_context():
            assert User.select().count() == 60
            assert sorted(u.id for u in User.select()) == list(range(1, 61))
            opens = Event.select().where(Event.type == "app_open").count()
            assert opens == int(e2e.state.visits.sum())
            assert Order.select().count() == int(e2e.state.orders.sum())
            assert SubscriptionAllowance.select().count() > 0
    finally:
        e2e.close()


def test_simulate_e2e_command_reports_from_the_backend_database(tmp_path):
    import json

    from backend.app import create_app

    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "TESTING": True})
    out = tmp_path / "e2e.json"
    args = ["simulate", "--policy", "tiered", "--users", "80", "--days", "10", "--warmup", "14"]
    e2e = ["--seed", "3", "--e2e", "--e2e-dir", str(tmp_path / "e2e"), "--json", str(out)]
    result = app.test_cli_runner().invoke(args=[*args, *e2e])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["config"]["mode"] == "end-to-end"
    assert Path(data["config"]["database"]).exists()
    assert {"holdout", "coupon_for_low_frequency"} <= set(data["arms"])
    assert data["backend_report"]["policies"][0]["policy"] == "tiered"
    sent = sum(g["messages"] for name, g in data["arms"].items() if name != "holdout")
    # Everything sent went through the channels, but for sends deferred past the last day.
    assert 0 < sum(data["delivered"].values()) <= sent
    refused = app.test_cli_runner().invoke(args=[*args[:4], "5000", "--e2e"])
    assert refused.exit_code != 0 and "at most 2000 users" in refused.output
