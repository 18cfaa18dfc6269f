"""A year of a million-user campus under the tiered policy, against idiomatic Mesa agents.

    .venv/bin/python bench/simulate.py                  # the full size: several minutes
    .venv/bin/python bench/simulate.py --users 100000   # a quicker look

What is timed (perf_counter, same process, after building each model, untimed):

* The full run: `CampusModel(users=USERS, policy=tiered)` for DAYS days (the first WARMUP
  without messages), exactly as `python app.py simulate` runs it minus the event log kept
  for inspection (`keep_log=False`): every morning production's scoring tail over the
  day-by-day fold of a million users and production's `decide`; every day the vectorised
  campus, its untreated twin, the books and the DataCollector. `user_days_per_s` =
  users × days / seconds. The model draws each day's dice and lives the untreated twin's
  day on a second thread while the morning job runs (simulator/model.py), so the run uses
  up to two cores: `full_run_cpu_s` is the process's CPU time over the same run.
* The baseline, in the same run: the same organic dynamics written the idiomatic Mesa way —
  one `mesa.Agent` per user whose `step` draws its visit, order, engagement decay and churn
  with the model's `random`, the model stepping them with `AgentSet.shuffle_do("step")` —
  on MESA_USERS users for MESA_DAYS days (organic only: no scoring, no policy, no twin,
  so the baseline does less work per user-day than the full run).

* The dashboard's trial (`trial_s`): three presets (TRIAL_POLICIES) × TRIAL_USERS students ×
  TRIAL_DAYS days × TRIAL_REPLICATES seeds, run as the dashboard's worker runs them
  (`simulator.run.compare` with replicates, the built-in campus, the presets' coupon), whole:
  building the models, stepping them, the paired verdict. Its fifteen runs share nothing,
  so `compare` spreads them over the cores (simulator/fanout.py; `trial_processes`); the
  same trial in one process is timed too (`trial_one_process_s`), with the same digest.

Bit-identical results are checked, not assumed: a SHA-256 of each run's results (the daily
series, the arms and uplift, both worlds' per-user books, both campuses' final state; for the
trial, `compare`'s whole output) is compared with the digest recorded in
bench/simulate_fingerprints.json from the code before the speed work, for the full run (when
its size was recorded), the trial, and small runs of every preset over several seeds (CASES).
`--record` writes the digests of this run into that file (do it only from code whose results
are the reference). The digests hold on this machine: the weekly BG/NBD fit's dot products
are split over its cores by OpenBLAS, so another core count may move a fitted parameter's last
bit (docs/simulator.md, Speed).

The last line of output is one JSON object. Targets (issues 6 and 17): full_run_s under 60 for
a million users × 365 days on this 2-core machine, ratio_vs_mesa_agents at least 50, trial_s
under 10, and `bit_identical` true.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import mesa
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend.core.calendar import day_number  # noqa: E402
from simulator import fanout  # noqa: E402
from simulator.calendar import CampusCalendar  # noqa: E402
from simulator.campus import NEVER  # noqa: E402
from simulator.model import DEFAULT_START, CampusModel  # noqa: E402
from simulator.params import SimParams  # noqa: E402
from simulator.run import DEFAULT_COUPONS, compare, load_policy, simulate_paired  # noqa: E402

WARMUP = 28
TRIAL_POLICIES = ("coupon_blast", "tiered", "golden_window")
TRIAL_USERS, TRIAL_DAYS, TRIAL_REPLICATES, TRIAL_SEED = 20_000, 90, 5, 1
# Small runs fingerprinted on every bench run: every preset, each on its own seed.
CASES = (("tiered", 1), ("uplift", 2), ("golden_window", 3), ("coupon_blast", 4))
CASES += (("payment_failed", 5), ("tiered", 6))
CASE_USERS, CASE_DAYS = 3000, 60
FINGERPRINTS = ROOT / "bench" / "simulate_fingerprints.json"


class Student(mesa.Agent):
    """One user, stepped on their own: the organic rules of simulator/campus.py, per agent."""

    def __init__(self, model: OrganicAgentsModel, persona) -> None:
        super().__init__(model)
        self.p = persona
        self.decay = 2.0 ** (-1.0 / persona.half_life_days)
        lo, hi = model.params.start_engagement
        self.engagement = model.random.uniform(lo, hi)
        self.churned = False
        self.last_visit = NEVER
        self.orders = 0
        self.spend_fen = 0
        self.friends: list[Student] = []

    def step(self) -> None:
        m, p, rnd = self.model, self.p, self.model.random
        factor, in_break = m.factor, m.in_break
        prob = p.revive_p * factor if self.churned else p.visit_p * self.engagement * factor
        friend_hazard = 0.0
        if p.follows_friends and self.friends:
            k = len(self.friends)
            out = sum(f.last_visit >= m.day - 1 for f in self.friends) / k
            gone = sum(f.churned for f in self.friends) / k
            prob = min(1.0, prob * (1 + p.follows_friends * m.params.friend_pull * out))
            if gone > m.params.friend_leave_threshold:
                friend_hazard = p.follows_friends * m.params.friend_leave_hazard
        visited = rnd.random() < prob
        if visited and self.churned:
            self.churned = False
            self.engagement = m.params.revive_engagement
        ordered = visited and rnd.random() < p.order_p
        if ordered:
            self.orders += 1
            self.spend_fen += round(math.exp(math.log(p.aov_fen) + p.aov_sigma * rnd.gauss()))
        if visited:
            self.last_visit = m.day
        self.engagement = min(1.0, self.engagement * self.decay + (p.boost if ordered else 0.0))
        if not in_break and not self.churned and not visited:
            hazard = p.churn_base + p.churn_slope * (1.0 - self.engagement) ** 2
            hazard += friend_hazard
            self.churned = rnd.random() < hazard


class OrganicAgentsModel(mesa.Model):
    def __init__(self, users: int, seed: int = 0) -> None:
        super().__init__(rng=seed)
        self.params = SimParams()
        self.calendar = CampusCalendar.load(self.params.calendar)
        shares = [p.share for p in self.params.personas]
        for persona in self.random.choices(self.params.personas, weights=shares, k=users):
            Student(self, persona)
        students = list(self.agents)
        for s in students:
            s.friends = [
                f
                for f in self.random.sample(students, self.params.friends_per_user + 1)
                if f is not s
            ][: self.params.friends_per_user]
        self.day = day_number(DEFAULT_START)
        self.factor, self.in_break = 1.0, False

    def step(self) -> None:
        self.factor, self.in_break = self.calendar.factor(self.day, self.params)
        self.agents.shuffle_do("step")
        self.day += 1


def full_run(users: int, days: int, seed: int) -> tuple[float, float, CampusModel]:
    model = CampusModel(
        users=users,
        seed=seed,
        policy=load_policy("tiered"),
        coupon_face_fen=DEFAULT_COUPONS,
        warmup_days=WARMUP,
        keep_log=False,
    )
    t0, c0 = time.perf_counter(), time.process_time()
    for d in range(days):
        model.step()
        if d % 30 == 29:
            print(f"  day {d + 1}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return time.perf_counter() - t0, time.process_time() - c0, model


def agents_run(users: int, days: int, seed: int) -> float:
    model = OrganicAgentsModel(users, seed)
    t0 = time.perf_counter()
    for _ in range(days):
        model.step()
    return time.perf_counter() - t0


def _feed(h, obj) -> None:
    """Feed `obj` to the hash `h` in one canonical encoding: dict keys sorted, arrays by dtype,
    shape and bytes, floats by repr (exact), a DataFrame by its columns in order."""
    if isinstance(obj, pd.DataFrame):
        obj = {"columns": list(obj.columns), "rows": obj.to_dict(orient="list")}
    if isinstance(obj, dict):
        h.update(b"{")
        for k in sorted(obj, key=str):
            _feed(h, str(k))
            _feed(h, obj[k])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[")
        for v in obj:
            _feed(h, v)
        h.update(b"]")
    elif isinstance(obj, np.ndarray):
        h.update(f"a{obj.dtype.str}{obj.shape}".encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, np.generic):
        _feed(h, obj.item())
    elif dataclasses.is_dataclass(obj):
        _feed(h, {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    else:
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def digest(obj) -> str:
    """SHA-256 of `obj`'s canonical encoding (`_feed`)."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def model_results(model: CampusModel) -> dict:
    """What a run produced: the collected series, the arms and uplift, both worlds' per-user
    books, and both campuses as the run left them."""
    daily = model.datacollector.get_model_vars_dataframe().drop(columns=["result"])
    return {
        "daily": daily,
        "result": model.result(),
        "per_user": model.per_user(),
        "state": model.state,
        "twin": model.twin,
    }


def case_digests() -> dict[str, str]:
    """The digests of the small runs (CASES): results and per-user books of each."""
    out = {}
    for name, seed in CASES:
        result, books = simulate_paired(load_policy(name), CASE_USERS, CASE_DAYS, seed, WARMUP)
        out[f"case:{name}:{CASE_USERS}x{CASE_DAYS}:seed{seed}"] = digest([result, books])
    return out


def trial_run(processes: int | None = None) -> tuple[float, str]:
    """The dashboard-sized trial, timed whole; (seconds, digest of compare's output).
    `processes`: compare's (None: one per core, as the dashboard's worker runs it)."""
    policies = [load_policy(name) for name in TRIAL_POLICIES]
    t0 = time.perf_counter()
    out = compare(
        policies,
        TRIAL_USERS,
        TRIAL_DAYS,
        TRIAL_SEED,
        WARMUP,
        coupons=dict(DEFAULT_COUPONS),
        replicates=TRIAL_REPLICATES,
        processes=processes,
    )
    return time.perf_counter() - t0, digest(out)


def check_fingerprints(found: dict[str, str], record: bool) -> dict:
    """Compare this run's digests with the recorded ones (or record them: `record`)."""
    known = json.loads(FINGERPRINTS.read_text()) if FINGERPRINTS.exists() else {}
    if record:
        FINGERPRINTS.write_text(json.dumps(known | found, indent=1, sort_keys=True) + "\n")
        return {"recorded": sorted(found)}
    differ = sorted(k for k in found if k in known and known[k] != found[k])
    for k in differ:
        print(f"FINGERPRINT DIFFERS: {k}", file=sys.stderr)
    return {
        "checked": sum(k in known for k in found),
        "differ": differ,
        "unrecorded": sorted(k for k in found if k not in known),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--mesa-users", type=int, default=10_000)
    ap.add_argument("--mesa-days", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-trial", action="store_true", help="skip the trial and the cases")
    ap.add_argument("--record", action="store_true", help="record this run's fingerprints")
    args = ap.parse_args()

    agents_s = agents_run(args.mesa_users, args.mesa_days, args.seed)
    agent_rate = args.mesa_users * args.mesa_days / agents_s
    print(f"idiomatic Mesa agents: {agent_rate:,.0f} user-days/s", file=sys.stderr)
    full_s, cpu_s, model = full_run(args.users, args.days, args.seed)
    rate = args.users * args.days / full_s
    daily = model.datacollector.get_model_vars_dataframe()
    found = {f"full:{args.users}x{args.days}:seed{args.seed}": digest(model_results(model))}
    model.close()
    del model
    trial_s = trial_one_s = None
    if not args.no_trial:
        trial_s, found["trial"] = trial_run()
        trial_one_s, found["trial:one-process"] = trial_run(processes=1)
        print(f"trial: {trial_s:.1f} s ({trial_one_s:.1f} s in one process)", file=sys.stderr)
        found |= case_digests()
    fingerprints = check_fingerprints(found, args.record)
    out = {
        "users": args.users,
        "days": args.days,
        "policy": "tiered",
        "full_run_s": round(full_s, 2),
        "full_run_cpu_s": round(cpu_s, 2),
        "user_days_per_s": round(rate),
        "mesa_agent_users": args.mesa_users,
        "mesa_agent_days": args.mesa_days,
        "mesa_agent_user_days_per_s": round(agent_rate),
        "ratio_vs_mesa_agents": round(rate / agent_rate, 1),
        "messages_sent": int(daily["sent"].sum()),
        "trial_s": None if trial_s is None else round(trial_s, 2),
        "trial_processes": fanout.process_count(len(TRIAL_POLICIES) * TRIAL_REPLICATES),
        "trial_one_process_s": None if trial_one_s is None else round(trial_one_s, 2),
        "trial": f"{len(TRIAL_POLICIES)} presets x {TRIAL_USERS} x {TRIAL_DAYS} days x "
        f"{TRIAL_REPLICATES} replicates",
        "fingerprints": fingerprints,
        "bit_identical": (
            None if args.record else bool(fingerprints["checked"] and not fingerprints["differ"])
        ),
        "meets_full_run_target": bool(args.users >= 1_000_000 and full_s <= 60),
        "meets_ratio_target": bool(rate / agent_rate >= 50),
        "meets_trial_target": None if trial_s is None else bool(trial_s <= 10),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
