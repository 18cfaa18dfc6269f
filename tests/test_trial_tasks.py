"""Dashboard trials on the task queue (backend/tasks/trials.py): each run of a trial (a policy
on a seed) is a task of its own, gathered into the same output as `compare` in one process;
a cancel stops the running part and skips the rest; a part whose worker died is queued again
by the sweep once its lease lapses, and the trial finishes once, with the same output.

The queue is `memory://` (tasks run at once, in the caller); the clock is FixedClock at
helpers.app.T0 (2026-03-10 18:00 China time), advanced past the lease where a test says so.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers.admin_session import csrf_from, sign_in
from helpers.campaigns import TODAY
from huey.signals import SIGNAL_EXECUTING

from backend.services import simulations, trial_parts
from backend.store.models import SimulationPart, SimulationRun
from backend.tasks import trials as trial_tasks
from backend.tasks.queue import huey
from backend.tasks.runtime import serving
from simulator import trial as engine

REQUEST = {
    "policies": [{"name": "tiered", "source": None}, {"name": "coupon_blast", "source": None}],
    "users": 120,
    "days": 7,
    "seed": 5,
    "replicates": 2,
    "warmup": 7,
    "day": TODAY,
}
PARTS = 4  # two policies on two seeds
PART_DAYS = 14


@pytest.fixture
def executed():
    """The names of the tasks Huey runs during the test, in order."""
    names: list[str] = []

    def seen(signal, task, *_):
        names.append(task.name)

    huey.signal(SIGNAL_EXECUTING)(seen)
    yield names
    huey.disconnect_signal(seen, SIGNAL_EXECUTING)


def _start(app, tenant, clock) -> int:
    with app.app_context():
        run = simulations.start(tenant.id, REQUEST, clock.now_ms())
    trial_tasks.queue_trial(app, tenant.id, run.id)
    return run.id


def _sweep(app, clock) -> trial_parts.Stale:
    """One run of the minute's sweep, its tasks run at once in the test's app."""
    with serving(app), app.app_context():
        return trial_tasks.queue_stale_trials(clock.now_ms())


def _one_process(app, run_id: int, clock) -> tuple[str, str]:
    """What `run_trial` (compare, in this process) gives for the same row."""
    with app.app_context():
        row = SimulationRun.get_by_id(run_id)
        out, page = engine.run_trial(row, lambda *a, **k: None, clock.now_ms)
    return json.dumps(out, ensure_ascii=False), page


def _parts(app, run_id: int) -> list[SimulationPart]:
    with app.app_context():
        return list(
            SimulationPart.select()
            .where(SimulationPart.run == run_id)
            .order_by(SimulationPart.index)
        )


def test_a_trials_runs_are_tasks_of_their_own_gathered_as_compare_gathers_them(
    app, tenant, clock, executed
):
    run_id = _start(app, tenant, clock)
    assert executed == ["trial"] + ["trial_part"] * PARTS + ["trial_gather"]
    with app.app_context():
        row = SimulationRun.get_by_id(run_id)
        assert (row.status, row.progress) == ("done", 1.0)
    parts = _parts(app, run_id)
    assert [(p.index, p.status, p.days_done) for p in parts] == [
        (i, "done", PART_DAYS) for i in range(PARTS)
    ]
    assert all(p.answer is None for p in parts)  # dropped once gathered into the result
    result, page = _one_process(app, run_id, clock)
    assert row.result == result  # the same bits as compare in one process
    assert row.report_html == page
    assert json.loads(row.result)["config"]["seeds"] == [5, 6]


def test_a_cancelled_trial_stops_its_running_part_and_skips_the_rest(
    app, client, tenant, clock, monkeypatch, executed
):
    sign_in(client, tenant.api_key)
    real_report = trial_parts.report
    cancels = []

    def report_after_a_click(run_id, index, days_done, part_days, now_ms):
        if days_done >= 3 and not cancels:  # the merchant clicks cancel while part 0 runs
            page = client.get(f"/admin/simulations/{run_id}").get_data(as_text=True)
            form = re.search(r'<form id="cancel-simulation"[^>]*>', page).group(0)
            assert "hidden" not in form  # offered while the trial runs
            cancels.append(
                client.post(
                    f"/admin/simulations/{run_id}/cancel", data={"csrf_token": csrf_from(page)}
                ).status_code
            )
        return real_report(run_id, index, days_done, part_days, now_ms)

    monkeypatch.setattr(trial_parts, "report", report_after_a_click)
    run_id = _start(app, tenant, clock)
    assert cancels == [302]
    # Part 0 stopped at that report; the parts queued behind it were skipped; no gather.
    assert executed == ["trial"] + ["trial_part"] * PARTS
    parts = _parts(app, run_id)
    assert [p.status for p in parts] == ["cancelled"] * PARTS
    assert 0 < parts[0].days_done < PART_DAYS
    assert all(p.days_done == 0 and p.answer is None for p in parts[1:])
    status = client.get(f"/admin/simulations/{run_id}/status").get_json()
    assert status["status"] == "cancelled" and not status["cancellable"]
    assert status["progress"] < 1 and "ranking" not in status
    page = client.get(f"/admin/simulations/{run_id}").get_data(as_text=True)
    assert "已取消" in page
    again = client.post(f"/admin/simulations/{run_id}/cancel", data={"csrf_token": csrf_from(page)})
    assert again.status_code == 409
    # Nothing is left for the sweep, even long after.
    clock.advance(seconds=trial_parts.LEASE_MS // 1000 + 1)
    assert _sweep(app, clock) == trial_parts.Stale()


class WorkerKilled(KeyboardInterrupt):
    """Stands for a SIGKILL: Huey lets the task go unfinished, and no handler of ours runs."""


def test_a_part_whose_worker_died_is_queued_again_and_the_trial_finishes_once(
    app, tenant, clock, monkeypatch, executed
):
    real_report, real_gather, real_part = trial_parts.report, engine.gather_parts, engine.run_part
    kills, gathers, computed = [], [], []

    def report_then_die(run_id, index, days_done, part_days, now_ms):
        alive = real_report(run_id, index, days_done, part_days, now_ms)
        if index == 1 and days_done >= 3 and not kills:
            kills.append(days_done)
            raise WorkerKilled
        return alive

    def counted_gather(*args):
        gathers.append(1)
        return real_gather(*args)

    def counted_part(request, work, index, progress):
        computed.append(index)
        return real_part(request, work, index, progress)

    monkeypatch.setattr(trial_parts, "report", report_then_die)
    monkeypatch.setattr(engine, "gather_parts", counted_gather)
    monkeypatch.setattr(engine, "run_part", counted_part)
    run_id = _start(app, tenant, clock)
    parts = _parts(app, run_id)
    assert [p.status for p in parts] == ["done", "running", "done", "done"]
    assert gathers == []  # three answers of four: nothing to gather yet
    with serving(app):  # a done part's task delivered twice is skipped
        trial_tasks.trial_part(tenant.id, run_id, 0)
    assert sorted(computed) == [0, 1, 2, 3]
    with app.app_context():
        assert SimulationRun.get_by_id(run_id).status == "running"
    # Within its lease the part may still be alive: the sweep leaves it be.
    clock.advance(seconds=trial_parts.LEASE_MS // 1000 - 1)
    assert _sweep(app, clock) == trial_parts.Stale()
    clock.advance(seconds=2)
    found = _sweep(app, clock)
    assert found.parts == [(tenant.id, run_id, 1)] and not found.setups
    assert executed[-2:] == ["trial_part", "trial_gather"] and gathers == [1]
    with app.app_context():
        row = SimulationRun.get_by_id(run_id)
        assert row.status == "done"
        # A late answer from the worker thought dead is ignored, and nothing is queued again.
        late = trial_parts.store_answer(run_id, 1, b"late", PART_DAYS, clock.now_ms())
    clock.advance(seconds=trial_parts.LEASE_MS // 1000 + 1)
    assert _sweep(app, clock) == trial_parts.Stale()
    with app.app_context():
        assert SimulationRun.get_by_id(run_id).result == row.result
    assert late is False and gathers == [1]
    assert sorted(computed) == [0, 1, 1, 2, 3]  # part 1 twice: killed, then again
    # Duplicates of every task (two sweeps, a task delivered twice) do nothing.
    with serving(app):
        trial_tasks.trial(tenant.id, run_id)
        for index in range(PARTS):
            trial_tasks.trial_part(tenant.id, run_id, index)
        trial_tasks.trial_gather(tenant.id, run_id)
    assert sorted(computed) == [0, 1, 1, 2, 3] and gathers == [1]
    result, _ = _one_process(app, run_id, clock)
    assert row.result == result


def test_a_lost_gather_and_a_lost_set_up_are_queued_again(app, tenant, clock, monkeypatch):
    """The last part's worker died before its gather was queued; a trial's set-up task was
    lost before it made its parts: the sweep queues each once, after the lease."""
    monkeypatch.setattr(trial_tasks, "trial_gather", lambda *a: None)  # never queued
    run_id = _start(app, tenant, clock)
    monkeypatch.undo()
    kept = _parts(app, run_id)
    assert [p.status for p in kept] == ["done"] * PARTS
    with app.app_context():
        # A second answer for a part is ignored: it completes nothing, so queues no gather.
        assert not trial_parts.store_answer(run_id, 3, b"again", PART_DAYS, clock.now_ms())
        assert bytes(_parts(app, run_id)[3].answer) == bytes(kept[3].answer)
        lost = simulations.start(tenant.id, REQUEST, clock.now_ms())  # its task never ran
    clock.advance(seconds=trial_parts.LEASE_MS // 1000 + 1)
    found = _sweep(app, clock)
    assert found.gathers == [(tenant.id, run_id)] and found.setups == [(tenant.id, lost.id)]
    with app.app_context():
        assert SimulationRun.get_by_id(run_id).status == "done"
        assert SimulationRun.get_by_id(lost.id).status == "done"
    assert _sweep(app, clock) == trial_parts.Stale()


def test_another_tenant_cannot_cancel_a_trial(app, client, tenant, other_tenant, clock):
    with app.app_context():
        run = simulations.start(tenant.id, REQUEST, clock.now_ms())  # queued, not yet run
    sign_in(client, other_tenant.api_key)
    token = csrf_from(client.get("/admin/simulations").get_data(as_text=True))
    resp = client.post(f"/admin/simulations/{run.id}/cancel", data={"csrf_token": token})
    assert resp.status_code == 404
    with app.app_context():
        assert SimulationRun.get_by_id(run.id).status == "queued"


def test_of_parts_finishing_at_once_exactly_one_queues_the_gather(app, tenant, clock, monkeypatch):
    """Eight parts store their answers at the same moment: the run's lock makes them count
    one after the other, so exactly one learns it completed the set. (Each waits, between
    keeping its answer and counting, for the others, unless a lock holds them back: without
    the lock each counts the others' answers as missing and none queues the gather.)"""
    n = 8
    inside = threading.Barrier(n)
    real_touch = trial_parts._touch_run

    def touch_after_the_others(*args):
        with contextlib.suppress(threading.BrokenBarrierError):
            inside.wait(timeout=1)
        return real_touch(*args)

    monkeypatch.setattr(trial_parts, "_touch_run", touch_after_the_others)
    with app.app_context():
        run = simulations.start(tenant.id, REQUEST, clock.now_ms())
        simulations.claim(run.id, clock.now_ms())
        assert trial_parts.plan(run.id, {}, n, clock.now_ms()) == list(range(n))
        for index in range(n):
            assert trial_parts.claim(run.id, index, clock.now_ms()) is not None
    gate = threading.Barrier(n)

    def finish(index: int) -> bool:
        with app.app_context():
            gate.wait(timeout=10)
            return trial_parts.store_answer(run.id, index, b"x", PART_DAYS, clock.now_ms())

    with ThreadPoolExecutor(n) as pool:
        last = list(pool.map(finish, range(n)))
    assert sum(last) == 1
