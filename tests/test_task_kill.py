"""A worker killed mid-delivery on the embedded queue (Huey's SQLite storage): Huey loses the
task it was running, and the database's leases make sure every touch is still sent, once.

A real `app.py worker` subprocess, on the injected clock (the TEST_NOW_MS script pattern of
tests/test_campaign_safety.py), whose subscribe channel records each send in a file and, on
the third send, kills its own process with SIGKILL before that message leaves. The queue file
and the app database are files of the test's own: the SQLite app database only (a worker
subprocess on the PostgreSQL lane would need a database of its own; the leases and fencing
are the same SQL on both, and tests/test_task_queue.py runs the tasks on both).

The one window this cannot close is a kill after WeChat accepted a message and before it was
recorded: that touch goes out again once its lease lapses (services/delivery.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from helpers.app import T0
from helpers.campaigns import (
    NOW,
    POLICY,
    add_policy,
    allowances,
    decide_only,
    grant,
    import_users,
    is_quiet,
    touches,
)
from helpers.queue import pending, scheduled, sqlite_queue

from backend.core.clock import from_ms
from backend.services import delivery as delivery_service
from backend.services import touch_claims
from backend.tasks import delivery, queue

ROOT = Path(__file__).resolve().parent.parent
MINUTE = 60_000
KILL_AT_SEND = 3

pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
]

# `python app.py worker ...` on the clock TEST_NOW_MS, its subscribe channel replaced by one
# that appends each touch it sends to TEST_SENDS_FILE; with TEST_KILL_AT_SEND=n the n-th send
# (counted in the worker process) writes the touch's id to TEST_SENDS_FILE.killed and SIGKILLs
# its own process before sending. The worker processes fork from this one, replacement included.
WORKER_AT = """
import os, signal, sys
from flask.cli import FlaskGroup
from backend.app import create_app
from backend.core.clock import FixedClock, from_ms
from backend.services import channels
from backend.services.channels import Outcome

clock = FixedClock(from_ms(int(os.environ["TEST_NOW_MS"])))
sends = os.environ["TEST_SENDS_FILE"]
kill_at = int(os.environ.get("TEST_KILL_AT_SEND") or 0)
calls = []


class Recording:
    name = "subscribe"

    def send(self, touch, to, message, template_id, now_ms):
        calls.append(touch.id)
        if len(calls) == kill_at:
            with open(sends + ".killed", "w") as f:
                f.write(str(touch.id))
            os.kill(os.getpid(), signal.SIGKILL)
        with open(sends, "a") as f:
            f.write(f"{touch.id}\\n")
        return Outcome("sent", provider_id=f"rec-{touch.id}")


real_channels_for = channels.channels_for


def channels_for(app):
    out = real_channels_for(app)
    out["subscribe"] = Recording()
    return out


channels.channels_for = channels_for
group = FlaskGroup(create_app=lambda: create_app({"CLOCK": clock}), add_default_commands=False)
group.main(args=sys.argv[1:], prog_name="app.py")
"""


class Worker:
    """`app.py worker --workers 1 --no-scheduler` in a process group of its own."""

    def __init__(self, tmp: Path, db_url: str, queue_url: str, now_ms: int, kill_at: int = 0):
        self.sends = tmp / "sends.txt"
        self.log = tmp / f"worker-{now_ms}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TEST_")}
        env.update(
            {
                "DATABASE_URL": db_url,
                "HUILIU_QUEUE_URL": queue_url,
                "WECHAT_MODE": "dev",
                "TEST_NOW_MS": str(now_ms),
                "TEST_SENDS_FILE": str(self.sends),
                "TEST_KILL_AT_SEND": str(kill_at),
            }
        )
        args = ["worker", "--workers", "1", "--no-scheduler"]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", WORKER_AT, *args],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_for(self, done, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited ({self.proc.returncode}): {self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout}s; {self.tail()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the whole group: the consumer and its worker processes."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def sent(self) -> list[int]:
        if not self.sends.exists():
            return []
        return [int(line) for line in self.sends.read_text().split()]


def statuses(app, tenant) -> Counter:
    return Counter(r["status"] for r in touches(app, tenant))


def test_a_worker_killed_mid_delivery_loses_its_task_and_no_touch_goes_twice_or_is_lost(
    app, client, clock, tenant, db_url, tmp_path
):
    openids = [f"k{u:03d}" for u in range(16)]
    import_users(client, tenant, openids, silent_days=5, now_ms=NOW)
    grant(app, tenant, openids, count=2, now_ms=NOW)  # a user left with 0 was sent twice
    add_policy(client, tenant, POLICY.replace("send_hour: 10", "send_hour: 8"))
    queued = decide_only(app, tenant)["queued"]
    assert queued > KILL_AT_SEND and not is_quiet(NOW)
    rows = touches(app, tenant)
    due_ids = sorted(r["id"] for r in rows if r["status"] == "queued")
    due_users = sorted(r["openid"] for r in rows if r["status"] == "queued")
    queue_url = f"sqlite:///{tmp_path / 'queue.sqlite3'}"

    with sqlite_queue(app, tmp_path / "queue.sqlite3"):
        # 18:00 China (T0): the sweep queues the tenant's delivery; a worker takes it and dies
        # at its third send.
        assert delivery.queue_due_deliveries(NOW) == [tenant.id]
        assert pending() == [("deliver", (tenant.id,))]
        first = Worker(tmp_path, db_url, queue_url, NOW, kill_at=KILL_AT_SEND)
        try:
            killed = Path(f"{first.sends}.killed")
            first.wait_for(killed.exists, "the third send")
            first.wait_for(lambda: queue.huey.pending_count() == 0, "the task taken")
        finally:
            first.kill()
        dying = int(killed.read_text())
        assert len(first.sent()) == KILL_AT_SEND - 1 and dying not in first.sent()
        by_status = statuses(app, tenant)
        assert by_status["sent"] == KILL_AT_SEND - 1
        assert by_status["sending"] == queued - (KILL_AT_SEND - 1)  # claimed, left unfinished
        # Huey kept nothing of the task: no retry, nothing queued. The database is the record.
        assert pending() == [] and scheduled(T0) == []

        # Two minutes on, the dead worker's lease still runs: nobody may take its touches.
        two_min = NOW + 2 * MINUTE
        clock.set(from_ms(two_min))
        with app.app_context():
            assert touch_claims.due_tenants(two_min) == []
            counts = delivery_service.deliver_now(app, tenant.id)
        clock.set(T0)
        assert counts["sent"] == 0
        assert statuses(app, tenant) == by_status

        # Six minutes on the lease has lapsed: the next sweep queues the tenant again and a
        # worker (on that clock) sends what was left, each once. The touch whose send had
        # begun when the worker died may have reached the student: it is recorded, not resent.
        later = NOW + 6 * MINUTE
        delivery.delivery_sweep()  # what the scheduler queues every 5 minutes
        assert pending() == [("delivery_sweep", ())]
        second = Worker(tmp_path, db_url, queue_url, later)
        try:
            second.wait_for(
                lambda: statuses(app, tenant)["sent"] == queued and queue.huey.pending_count() == 0,
                "every touch settled",
            )
        finally:
            second.kill()

    sends = Counter(second.sent())  # one file: both workers' sends
    assert sorted(sends) == [i for i in due_ids if i != dying]  # every other touch once ...
    assert [i for i, n in sends.items() if n > 1] == []  # ... none sent twice
    assert allowances(app, due_users) == [1] * queued  # the interrupted one's spent as a send
    final = {r["id"]: r for r in touches(app, tenant) if r["id"] in due_ids}
    assert {r["status"] for r in final.values()} == {"sent"}  # none lost from the books
    assert final[dying]["reason"] == "unconfirmed" and final[dying]["provider_id"] is None
    sent_ok = [r for i, r in final.items() if i != dying]
    assert all(r["provider_id"] == f"rec-{r['id']}" and r["reason"] == "" for r in sent_ok)
