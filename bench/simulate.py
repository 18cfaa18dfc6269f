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

The last line of output is one JSON object. Targets (issue 6): full_run_s under 60 for a
million users × 365 days on this 2-core machine, and ratio_vs_mesa_agents at least 50.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import mesa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend.core.calendar import day_number  # noqa: E402
from simulator.calendar import CampusCalendar  # noqa: E402
from simulator.campus import NEVER  # noqa: E402
from simulator.model import DEFAULT_START, CampusModel  # noqa: E402
from simulator.params import SimParams  # noqa: E402
from simulator.run import DEFAULT_COUPONS, load_policy  # noqa: E402

WARMUP = 28


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--mesa-users", type=int, default=10_000)
    ap.add_argument("--mesa-days", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    agents_s = agents_run(args.mesa_users, args.mesa_days, args.seed)
    agent_rate = args.mesa_users * args.mesa_days / agents_s
    print(f"idiomatic Mesa agents: {agent_rate:,.0f} user-days/s", file=sys.stderr)
    full_s, cpu_s, model = full_run(args.users, args.days, args.seed)
    rate = args.users * args.days / full_s
    daily = model.datacollector.get_model_vars_dataframe()
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
        "meets_full_run_target": bool(args.users >= 1_000_000 and full_s < 60),
        "meets_ratio_target": bool(rate / agent_rate >= 50),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
