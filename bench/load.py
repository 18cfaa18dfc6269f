"""Load: many students on a real `serve --workers 2` for a fixed time, then an audit.

    .venv/bin/python bench/load.py                        # SQLite in a temporary folder, ~30 s
    .venv/bin/python bench/load.py --database-url postgresql://...   # that database, emptied

What it does:

1. A fresh database (a temporary SQLite file, or the given one with every table dropped);
   `app.py init-db`, `app.py seed-demo --json`; the real server, `app.py serve --workers 2`,
   on a free loopback port; a claimable coupon template with a small budget (--budget).
2. THREADS client threads share STUDENTS students (dev-mode login, a keep-alive session per
   thread) for --seconds. Each turn a student does one of: post a fresh batch of 5-40 events
   (one in twenty invalid: an unknown type or a time in the future, to be rejected alone);
   resend one of its earlier batches whole, with the same ids, as a phone retries a batch it
   never got an answer for; post a body that is not JSON; claim the coupon; redeem a held
   coupon against a new order, sometimes from two connections at once.
3. Every answer is recorded: which events the server said it holds, what it said was newly
   accepted, duplicates, coupons issued and redeemed; the latency of every request.
4. The server is stopped and the database audited: the events the clients were told were
   accepted = rows stored (distinct per student and event id), no row stored twice, no
   acknowledged event missing, coupons issued <= budget and = the 201s the clients got,
   each coupon redeemed at most once (= the 200s), one coupon per order.

Baseline, in the same run on the same server: first one client thread with BASELINE_STUDENTS
students does the same mix for BASELINE_SECONDS (the latency of an otherwise idle server), then
the load. The audit covers both phases; latency and throughput are given for each. The client
threads share this machine's CPUs with the server. The last line of output is
one JSON object of the figures; the exit status is 1 if the audit finds anything wrong.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadlib  # noqa: E402

SEED = 20260314
STUDENTS = 200
THREADS = 12
SECONDS = 20.0
BUDGET = 100
BASELINE_STUDENTS = 10
BASELINE_SECONDS = 4.0
PAGES = ("index", "menu", "item", "cart", "orders", "coupons", "profile")


@dataclass
class Student:
    code: str
    openid: str = ""
    token: str = ""
    batches: list[loadlib.Batch] = field(default_factory=list)
    seq: int = 0
    coupons: list[int] = field(default_factory=list)  # issued to this student, not yet spent
    claimed: bool = False


@dataclass
class Tally:
    """One client thread's record (merged at the end; no locks needed)."""

    latencies: list[float] = field(default_factory=list)
    by_status: dict[str, int] = field(default_factory=dict)
    transport_errors: list[str] = field(default_factory=list)
    anomalies: list[str] = field(default_factory=list)
    claims_ok: int = 0
    redeems_ok: dict[int, int] = field(default_factory=dict)  # coupon id -> 200s
    fresh_batches: int = 0
    resends: int = 0

    def count(self, kind: str, status: int | None, seconds: float) -> None:
        self.latencies.append(seconds)
        key = f"{kind} {status if status is not None else 'no answer'}"
        self.by_status[key] = self.by_status.get(key, 0) + 1


def fresh_events(rng: random.Random, student: Student, now_ms: int) -> tuple[list[dict], int]:
    """A batch of a visit's events; one in twenty invalid. (events, how many are valid)."""
    events, valid = [], 0
    for _ in range(rng.randint(5, 40)):
        student.seq += 1
        event = {
            "id": f"{student.code}-{student.seq}",
            "type": "page_view",
            "ts": now_ms - rng.randint(1_000, 3_000_000),
            "props": {"page": rng.choice(PAGES)},
        }
        roll = rng.random()
        if roll < 0.025:
            event["type"] = "teleport"  # not in the vocabulary
        elif roll < 0.05:
            event["ts"] = now_ms + 2 * 86_400_000  # from the future
        else:
            valid += 1
            if roll > 0.95:
                event["type"] = "app_open"
                event.pop("props")
        events.append(event)
    return events, valid


class Client:
    def __init__(self, index: int, base: str, appid: str, template_id: int, tally: Tally):
        self.rng = random.Random(SEED * 100 + index)
        self.base, self.appid, self.template_id, self.tally = base, appid, template_id, tally
        self.session = requests.Session()
        self.pool = ThreadPoolExecutor(max_workers=2)  # a second connection for redeem races
        self.spare = requests.Session()

    def close(self) -> None:
        self.pool.shutdown()
        self.session.close()
        self.spare.close()

    def _timed(self, kind: str, session: requests.Session, method: str, path: str, **kw):
        t0 = time.perf_counter()
        try:
            resp = session.request(method, f"{self.base}{path}", timeout=60, **kw)
        except requests.RequestException as exc:
            self.tally.count(kind, None, time.perf_counter() - t0)
            self.tally.transport_errors.append(f"{kind}: {type(exc).__name__}: {exc}"[:300])
            return None
        self.tally.count(kind, resp.status_code, time.perf_counter() - t0)
        return resp

    def turn(self, student: Student) -> None:
        rng, tally = self.rng, self.tally
        auth = {"Authorization": f"Bearer {student.token}"}
        roll = rng.random()
        if roll < 0.12 and student.batches:
            batch = rng.choice(student.batches)
            tally.resends += 1
            status, seconds = loadlib.post_batch(self.session, self.base, batch, timeout=60)
            tally.count("events", status, seconds)
            answer = batch.answers[-1]
            held = len(batch.acknowledged())
            if answer is not None and (answer["accepted"], answer["duplicates"]) != (0, held):
                tally.anomalies.append(f"resend answered {answer}, {held} held before")
        elif roll < 0.15:
            resp = self._timed(
                "events", self.session, "POST", "/mp/v1/events", data=b'{"events": [', headers=auth
            )
            if resp is not None and resp.status_code != 400:
                tally.anomalies.append(f"malformed batch answered {resp.status_code}")
        elif roll < 0.22 and not student.claimed:
            resp = self._timed(
                "claim",
                self.session,
                "POST",
                "/mp/v1/coupons/claim",
                json={"template_id": self.template_id},
                headers=auth,
            )
            if resp is not None and resp.status_code == 201:
                tally.claims_ok += 1
                student.coupons.append(resp.json()["id"])
            if resp is not None and resp.status_code in (201, 409):
                student.claimed = True
        elif roll < 0.27 and student.coupons:
            self.redeem(student, auth, race=rng.random() < 0.4)
        else:
            events, valid = fresh_events(rng, student, time.time_ns() // 1_000_000)
            batch = loadlib.Batch(student.openid, student.token, events)
            student.batches.append(batch)
            tally.fresh_batches += 1
            status, seconds = loadlib.post_batch(self.session, self.base, batch, timeout=60)
            tally.count("events", status, seconds)
            answer = batch.answers[-1]
            if answer is not None and (answer["accepted"], len(answer["rejected"])) != (
                valid,
                len(events) - valid,
            ):
                tally.anomalies.append(f"fresh batch of {valid} valid answered {answer}")

    def redeem(self, student: Student, auth: dict, race: bool) -> None:
        coupon = student.coupons.pop()
        order = {"order_id": f"o-{student.code}-{coupon}", "order_amount_fen": 2000}

        def attempt(session: requests.Session, order_id: str):
            body = {**order, "order_id": order_id}
            path = f"/mp/v1/coupons/{coupon}/redeem"
            return self._timed("redeem", session, "POST", path, json=body, headers=auth)

        if race:  # the same coupon from two connections at once, for two orders
            first = self.pool.submit(attempt, self.session, order["order_id"])
            second = self.pool.submit(attempt, self.spare, order["order_id"] + "-b")
            answers = [first.result(), second.result()]
        else:
            answers = [attempt(self.session, order["order_id"])]
        wins = sum(1 for r in answers if r is not None and r.status_code == 200)
        self.tally.redeems_ok[coupon] = self.tally.redeems_ok.get(coupon, 0) + wins


def client_loop(client: Client, students: list[Student], stop_at: float) -> None:
    try:
        for s in students:
            t0 = time.perf_counter()
            try:
                s.openid, s.token = loadlib.login(client.session, client.base, client.appid, s.code)
                client.tally.count("login", 200, time.perf_counter() - t0)
            except requests.RequestException as exc:
                client.tally.count("login", None, time.perf_counter() - t0)
                client.tally.transport_errors.append(f"login: {exc}"[:300])
        ready = [s for s in students if s.token]
        while ready and time.monotonic() < stop_at:
            client.turn(client.rng.choice(ready))
    finally:
        client.close()


def create_template(base: str, api_key: str, budget: int) -> int:
    body = {
        "name": "压测领券满10减3",
        "amount_off_fen": 300,
        "min_spend_fen": 1000,
        "validity_days": 7,
        "budget": budget,
        "per_user_limit": 1,
        "claimable": True,
    }
    resp = requests.post(
        f"{base}/admin/v1/coupon-templates", json=body, headers={"X-Api-Key": api_key}, timeout=30
    )
    resp.raise_for_status()
    return resp.json()["id"]


def drive(
    base: str, appid: str, template_id: int, tallies: list[Tally], students: list, seconds: float
) -> float:
    """One client thread per tally, sharing the students, for `seconds`; the time it took."""
    clients = [Client(i, base, appid, template_id, t) for i, t in enumerate(tallies)]
    started = time.monotonic()
    step = len(clients)
    threads = [
        threading.Thread(
            target=client_loop, args=(c, students[i::step], started + seconds), daemon=True
        )
        for i, c in enumerate(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 300)
    return time.monotonic() - started


def run(database_url: str, folder: Path, args) -> dict:
    env = loadlib.environment(database_url)
    appid, api_key = loadlib.seed(env)
    baseline = [Student(f"base-s{i}") for i in range(BASELINE_STUDENTS)]
    students = [Student(f"load-s{i}") for i in range(args.students)]
    quiet = Tally()
    tallies = [Tally() for _ in range(args.threads)]
    with loadlib.Server(env, folder / "server.log", workers=args.workers) as server:
        server.start()
        template_id = create_template(server.base, api_key, args.budget)
        # Baseline: the same mix from one client thread, the server otherwise idle.
        drive(server.base, appid, template_id, [quiet], baseline, BASELINE_SECONDS)
        elapsed = drive(server.base, appid, template_id, tallies, students, args.seconds)
    students += baseline
    tallies.append(quiet)
    batches = [b for s in students for b in s.batches]
    events = loadlib.audit_events(database_url, appid, batches)
    coupons = loadlib.audit_coupons(database_url, template_id)

    latencies = [x for t in tallies[:-1] for x in t.latencies]  # the load phase
    by_status: dict[str, int] = {}
    for t in tallies:
        for key, n in t.by_status.items():
            by_status[key] = by_status.get(key, 0) + n
    redeems = {}
    for t in tallies:
        for coupon, wins in t.redeems_ok.items():
            redeems[coupon] = redeems.get(coupon, 0) + wins
    claims_ok = sum(t.claims_ok for t in tallies)
    errors_5xx = sum(n for key, n in by_status.items() if key.split()[-1].startswith("5"))
    transport = [e for t in tallies for e in t.transport_errors]
    anomalies = [a for t in tallies for a in t.anomalies]
    problems = list(anomalies[:10])
    if events["events_accepted"] != events["events_stored"]:
        problems.append("events accepted != events stored")
    if events["events_stored"] != events["events_distinct"] or events["duplicates_stored"]:
        problems.append("an event stored twice")
    if events["events_lost"] or events["stored_not_acknowledged"]:
        problems.append("acknowledged events missing, or stored events never acknowledged")
    if coupons["coupons_issued"] > coupons["coupon_budget"]:
        problems.append("more coupons issued than the budget")
    if coupons["coupons_issued"] != claims_ok or coupons["issued_count"] != claims_ok:
        problems.append("coupons issued != claims answered 201")
    if any(w > 1 for w in redeems.values()) or coupons["orders_with_two_coupons"]:
        problems.append("a coupon redeemed twice, or an order with two coupons")
    if coupons["coupons_redeemed"] != sum(redeems.values()):
        problems.append("coupons redeemed != redeems answered 200")
    if errors_5xx or transport:
        problems.append(f"{errors_5xx} 5xx answers, {len(transport)} requests unanswered")
    for line in sorted(by_status.items()):
        print(f"{line[0]:>24}: {line[1]}")
    for p in problems:
        print("PROBLEM:", p, file=sys.stderr)
    for e in transport[:5]:
        print("unanswered:", e, file=sys.stderr)
    return {
        "database": "postgresql" if database_url.startswith("postgres") else "sqlite",
        "students": args.students,
        "client_threads": args.threads,
        "workers": args.workers,
        "seconds": round(elapsed, 1),
        "requests": len(latencies),
        "throughput_rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(1000 * loadlib.percentile(latencies, 0.50), 1),
        "p99_ms": round(1000 * loadlib.percentile(latencies, 0.99), 1),
        "baseline_p50_ms": round(1000 * loadlib.percentile(quiet.latencies, 0.50), 1),
        "baseline_p99_ms": round(1000 * loadlib.percentile(quiet.latencies, 0.99), 1),
        "baseline_rps": round(len(quiet.latencies) / BASELINE_SECONDS, 1),
        "event_batches": sum(t.fresh_batches for t in tallies),
        "batch_resends": sum(t.resends for t in tallies),
        **events,
        "coupons_claimed_201": claims_ok,
        **coupons,
        "redeems_200": sum(redeems.values()),
        "errors_5xx": errors_5xx,
        "unanswered": len(transport),
        "ok": not problems,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=SECONDS, help="how long students act")
    parser.add_argument("--students", type=int, default=STUDENTS)
    parser.add_argument("--threads", type=int, default=THREADS, help="client threads")
    parser.add_argument("--workers", type=int, default=2, help="server processes")
    parser.add_argument("--budget", type=int, default=BUDGET, help="the coupon's budget")
    parser.add_argument(
        "--database-url", default=None, help="e.g. postgresql://... (emptied first!)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="huiliu-load-") as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'load.sqlite3'}"
        figures = run(url, Path(tmp), args)
    print(json.dumps(figures))
    sys.exit(0 if figures["ok"] else 1)


if __name__ == "__main__":
    main()
