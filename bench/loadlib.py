"""What bench/load.py and tests/test_load_fault.py share.

A real `python app.py serve` on loopback in a process group of its own, so the gunicorn master
and its workers can be killed together with one SIGKILL, as a crash or an OOM kill would take
them; likewise `python app.py worker` (the task queue's consumer, its scheduler and its worker
processes; `Worker`, used by tests/test_scale_out.py and bench/nightly.py), on a clock the
caller can move; seeding through the command line; event batches whose every answer is
recorded; and the audit of the database against what the clients were told.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from backend.store.db import open_database  # noqa: E402  (after the path above)
from backend.store.models import (  # noqa: E402
    ALL_MODELS,
    Coupon,
    CouponTemplate,
    Event,
    SchemaVersion,
    Tenant,
    User,
)

# The same key across restarts: tokens issued before a kill must still work after it.
SECRET_KEY = "load-bench-secret-key-not-for-production"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(database_url: str) -> dict:
    """The server's and the command line's environment: dev-mode login, a fixed secret."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "WECHAT_MODE": "dev",
        "SECRET_KEY": SECRET_KEY,
    }
    env.pop("WECHAT_APPID", None)
    return env


def run_cli(env: dict, *args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        [sys.executable, "app.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"app.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def reset_postgres(url: str) -> None:
    """Drop every table of the schema (a run starts from an empty database)."""
    db = open_database(url)
    with db.bind_ctx(ALL_MODELS + [SchemaVersion]):
        db.drop_tables(ALL_MODELS + [SchemaVersion], safe=True, cascade=True)
    db.close_all()


def seed(env: dict) -> tuple[str, str]:
    """`init-db` and `seed-demo --json`: the demo tenant's appid and admin API key."""
    if env["DATABASE_URL"].startswith("postgres"):
        reset_postgres(env["DATABASE_URL"])
    run_cli(env, "init-db")
    out = json.loads(run_cli(env, "seed-demo", "--json").strip().splitlines()[-1])
    return out["appid"], out["api_key"]


class ProcessGroup:
    """A command run in a process group of its own (a new session): the process and all it
    forks are signalled together, so one SIGKILL takes them all as a crash would."""

    log_path: Path
    proc: subprocess.Popen | None = None
    stop_signal = signal.SIGTERM

    def log_tail(self, chars: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)  # the group id is the leader's pid (new session)

    def kill(self) -> None:
        """SIGKILL to the leader and every child at once: nothing gets to clean up."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._wait_group_gone()

    def stop(self) -> None:
        """A graceful stop (`stop_signal`), SIGKILL if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            self._wait_group_gone()
            return
        self._signal_group(self.stop_signal)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._wait_group_gone()

    def _wait_group_gone(self, timeout_s: float = 10.0) -> None:
        """Children orphaned by a killed leader are reaped by init; wait until none is left."""
        if self.proc is None:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        self._signal_group(signal.SIGKILL)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class Server(ProcessGroup):
    """`app.py serve --workers N` as a subprocess; start() waits for /healthz. Its graceful
    stop is SIGTERM: gunicorn finishes its requests."""

    def __init__(self, env: dict, log_path: Path, workers: int = 2, port: int | None = None):
        self.env, self.log_path, self.workers = env, log_path, workers
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60.0) -> Server:
        command = ["app.py", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, *command, "--workers", str(self.workers)],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: master and workers
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                if requests.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"server not healthy after {timeout_s:.0f} s: {self.log_tail()}")


# `python app.py worker ...` with hooks for tests and benches, each switched on by its
# environment variable (none is production code; the worker command itself is unchanged):
#   TEST_CLOCK_FILE  the app's clock is real time plus the offset in ms this file holds
#                    (re-read every 0.2 s; written with Worker.set_clock), so a caller can
#                    move a whole worker's "now" forward, as test_campaign_safety's CLI_AT
#                    fixes a command's;
#   TEST_TICK_S      the scheduler looks at its periodic tasks every this many seconds, not
#                    60 (the minute tick is idempotent: asking more often only comes sooner);
#   TEST_READY_FILE  each worker process appends its pid once it has started;
#   TEST_RUN_LOG     each nightly run that finished appends "pid tenant_id day";
#   TEST_SEND_LOG    each channel send appends "pid touch_id outcome" (an O_APPEND write:
#                    it is in the file even if the process is killed right after);
#   TEST_PAUSE_FILE  once this file exists, the TEST_PAUSE_AFTER-th time (default 1st) the
#                    process reaches the point TEST_PAUSE_AT names, it appends "pid tenant_id
#                    day touch_id" to FILE.paused and sleeps there, waiting for the caller's
#                    SIGKILL. The points: `decided` (a night's decisions committed, nothing
#                    delivered; touch_id 0), `send` (a touch claimed and its attempt
#                    confirmed, right before the channel is called) and `sent` (the channel
#                    has sent it, the outcome is not recorded yet: delivery.py's one window).
WORKER_AT = r"""
import os, sys, time
from datetime import UTC, datetime, timedelta
from flask.cli import FlaskGroup
from backend.app import create_app
from backend.core.clock import SystemClock
from backend.services import channels as channel_setup
from backend.services.campaigns import nightly as nightly_run
from backend.tasks.queue import huey

env = os.environ.get


def append(path, line):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


class OffsetClock(SystemClock):
    def __init__(self, path):
        self.path, self.offset_ms, self.read_at = path, 0, -1.0

    def now(self):
        if time.monotonic() - self.read_at > 0.2:
            try:
                with open(self.path) as f:
                    self.offset_ms = int(f.read().strip() or 0)
            except (FileNotFoundError, ValueError):
                pass
            self.read_at = time.monotonic()
        return datetime.now(UTC) + timedelta(milliseconds=self.offset_ms)


config = {}
if env("TEST_CLOCK_FILE"):
    config["CLOCK"] = OffsetClock(env("TEST_CLOCK_FILE"))
if env("TEST_TICK_S"):
    from huey.consumer import Scheduler
    Scheduler.periodic_task_seconds = int(env("TEST_TICK_S"))
if env("TEST_READY_FILE"):
    huey.on_startup()(lambda: append(env("TEST_READY_FILE"), str(os.getpid())))

current = {}
passed = []


def pause_at(point, tenant_id, day, touch_id=0):
    path = env("TEST_PAUSE_FILE")
    if not path or (env("TEST_PAUSE_AT") or "decided") != point or not os.path.exists(path):
        return
    passed.append(point)
    if len(passed) == int(env("TEST_PAUSE_AFTER") or 1):
        append(path + ".paused", f"{os.getpid()} {tenant_id} {day} {touch_id}")
        time.sleep(3600)


run_for_app = nightly_run.run_for_app


def logged_run(app, tenant, day, **kwargs):
    current["run"] = (tenant.id, day)
    try:
        summary = run_for_app(app, tenant, day, **kwargs)
    finally:
        current.pop("run", None)
    if env("TEST_RUN_LOG"):
        append(env("TEST_RUN_LOG"), f"{os.getpid()} {tenant.id} {day}")
    return summary


nightly_run.run_for_app = logged_run
config["CAMPAIGN_AFTER_DECIDE"] = lambda: pause_at("decided", *current.get("run", (0, 0)))
channels_for = channel_setup.channels_for


class Logged:
    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def send(self, touch, *args, **kwargs):
        pause_at("send", touch.tenant_id, touch.day, touch.id)
        outcome = self.inner.send(touch, *args, **kwargs)
        if env("TEST_SEND_LOG"):
            append(env("TEST_SEND_LOG"), f"{os.getpid()} {touch.id} {outcome.kind}")
        pause_at("sent", touch.tenant_id, touch.day, touch.id)
        return outcome


channel_setup.channels_for = lambda app: {name: Logged(c) for name, c in channels_for(app).items()}

group = FlaskGroup(create_app=lambda: create_app(config), add_default_commands=False)
group.main(args=sys.argv[1:], prog_name="app.py")
"""


class Worker(ProcessGroup):
    """`app.py worker --workers N` (through WORKER_AT) as a subprocess in a process group of
    its own: the consumer, its scheduler and its worker processes die together on kill().
    start() waits until each worker process has started. `hooks` are WORKER_AT's TEST_*
    variables (the ready file is set here). Its graceful stop is SIGINT: Huey's consumer
    lets running tasks finish (SIGTERM would interrupt them)."""

    stop_signal = signal.SIGINT

    def __init__(
        self,
        env: dict,
        log_path: Path,
        workers: int = 1,
        scheduler: bool = True,
        hooks: dict | None = None,
    ):
        self.log_path, self.workers = log_path, workers
        self.ready_path = log_path.with_suffix(".ready")
        self.env = {**env, **(hooks or {}), "TEST_READY_FILE": str(self.ready_path)}
        self.scheduler = scheduler
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60.0) -> Worker:
        self.ready_path.unlink(missing_ok=True)
        flag = "--scheduler" if self.scheduler else "--no-scheduler"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", WORKER_AT, "worker", "--workers", str(self.workers), flag],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: consumer and its processes
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}: {self.log_tail()}")
            if len(self.pids()) >= self.workers:
                return self
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"worker not started after {timeout_s:.0f} s: {self.log_tail()}")

    def pids(self) -> list[int]:
        """The worker processes that have started (the consumer restarts a dead one)."""
        if not self.ready_path.exists():
            return []
        return [int(line) for line in self.ready_path.read_text().split()]


def set_clock(path: Path, offset_ms: int) -> None:
    """Move the clock of every worker reading `path` (TEST_CLOCK_FILE) to real time plus
    `offset_ms`: written whole, then renamed over, so no reader sees half a number."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(str(int(offset_ms)))
    os.replace(tmp, path)


def read_log(path: Path) -> list[list[int]]:
    """A TEST_*_LOG file's lines as lists of ints (an outcome word is kept as text)."""
    if not path.exists():
        return []
    return [
        [int(w) if w.lstrip("-").isdigit() else w for w in line.split()]
        for line in path.read_text().splitlines()
        if line.strip()
    ]


def login(session: requests.Session, base: str, appid: str, code: str) -> tuple[str, str]:
    """(openid, bearer token) of a dev-mode student."""
    resp = session.post(
        f"{base}/mp/v1/login", json={"code": code}, headers={"X-Huiliu-Appid": appid}, timeout=30
    )
    resp.raise_for_status()
    return f"dev_{code}", resp.json()["token"]


@dataclass
class Batch:
    """One event batch of one student, and every answer the server gave to it."""

    openid: str
    token: str
    events: list[dict]
    answers: list[dict | None] = field(default_factory=list)  # None: no answer (a dead server)

    def body(self, now_ms: int) -> bytes:
        return json.dumps({"events": self.events, "sent_at": now_ms}).encode()

    @property
    def answered(self) -> bool:
        return any(a is not None for a in self.answers)

    def acknowledged(self) -> set[str]:
        """Ids the server has said it holds: every event of a 200 answer that was not rejected."""
        out: set[str] = set()
        for answer in self.answers:
            if answer is not None:
                rejected = {r["index"] for r in answer["rejected"]}
                out |= {e["id"] for i, e in enumerate(self.events) if i not in rejected}
        return out


def post_batch(
    session: requests.Session, base: str, batch: Batch, timeout: float = 30
) -> tuple[int | None, float]:
    """Send the batch; records the answer on it. (HTTP status or None, seconds taken)."""
    t0 = time.perf_counter()
    try:
        resp = session.post(
            f"{base}/mp/v1/events",
            data=batch.body(time.time_ns() // 1_000_000),
            headers={"Authorization": f"Bearer {batch.token}", "Content-Type": "application/json"},
            timeout=timeout,
        )
    except requests.RequestException:
        batch.answers.append(None)
        return None, time.perf_counter() - t0
    seconds = time.perf_counter() - t0
    batch.answers.append(resp.json() if resp.status_code == 200 else None)
    return resp.status_code, seconds


def stored_events(database_url: str, appid: str) -> Counter:
    """(openid, client id) -> rows stored, for the tenant's events."""
    db = open_database(database_url)
    try:
        with db.bind_ctx(ALL_MODELS):
            tenant = Tenant.get(Tenant.appid == appid)
            rows = (
                Event.select(User.openid, Event.client_id)
                .join(User, on=(Event.user == User.id))
                .where(Event.tenant == tenant.id)
                .tuples()
            )
            return Counter(rows)
    finally:
        db.close_all()


def audit_events(database_url: str, appid: str, batches: list[Batch]) -> dict:
    """What the clients were told against what the database holds."""
    stored = stored_events(database_url, appid)
    acknowledged = {(b.openid, i) for b in batches for i in b.acknowledged()}
    accepted = sum(a["accepted"] for b in batches for a in b.answers if a is not None)
    return {
        "events_accepted": accepted,
        "events_acknowledged": len(acknowledged),
        "events_stored": sum(stored.values()),
        "events_distinct": len(stored),
        "duplicates_stored": sum(n - 1 for n in stored.values()),
        "events_lost": len(acknowledged - stored.keys()),
        "stored_not_acknowledged": len(stored.keys() - acknowledged),
    }


def audit_coupons(database_url: str, template_id: int) -> dict:
    """Coupons of one template: issued within its budget, each redeemed at most once, one
    coupon per order."""
    db = open_database(database_url)
    try:
        with db.bind_ctx(ALL_MODELS):
            template = CouponTemplate.get_by_id(template_id)
            coupons = list(Coupon.select().where(Coupon.template == template_id))
    finally:
        db.close_all()
    refs = Counter(c.order_ref for c in coupons if c.order_ref is not None)
    return {
        "coupon_budget": template.budget,
        "coupons_issued": len(coupons),
        "issued_count": template.issued_count,
        "coupons_redeemed": sum(c.status == "redeemed" for c in coupons),
        "orders_with_two_coupons": sum(n > 1 for n in refs.values()),
    }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]
