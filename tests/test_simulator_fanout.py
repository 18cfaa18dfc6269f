"""A comparison's runs spread over processes give the very answer of one after another."""

from __future__ import annotations

import json

import pytest

from simulator import fanout
from simulator.run import compare, load_policy


def _compare(processes: int, steps: list[int]) -> str:
    policies = [load_policy(n) for n in ("tiered", "coupon_blast")]
    out = compare(
        policies, 200, 10, 5, warmup=7, replicates=2, processes=processes, progress=steps.append
    )
    return json.dumps(out, sort_keys=True)


def test_two_processes_give_the_same_bits_and_every_day_of_progress():
    one_steps: list[int] = []
    two_steps: list[int] = []
    one = _compare(1, one_steps)
    two = _compare(2, two_steps)
    assert two == one
    assert sum(two_steps) == sum(one_steps) == (7 + 10) * 2 * 2


def _fails_on_three(n: int, progress) -> int:
    if n == 3:
        raise ValueError("run three fails")
    return n * 10


def test_a_failing_run_fails_the_whole_and_answers_keep_their_order():
    assert fanout.run_all(_fails_on_three, [(1,), (2,), (4,)], processes=2) == [10, 20, 40]
    with pytest.raises(ValueError, match="run three fails"):
        fanout.run_all(_fails_on_three, [(1,), (3,), (4,)], processes=2)


def test_the_process_count_is_capped_by_runs_and_read_from_the_environment(monkeypatch):
    monkeypatch.setenv(fanout.PROCESSES_ENV, "1")
    assert fanout.process_count(15) == 1
    monkeypatch.setenv(fanout.PROCESSES_ENV, "8")
    assert fanout.process_count(3) == 3
    assert fanout.process_count(3, processes=2) == 2
    monkeypatch.delenv(fanout.PROCESSES_ENV)
    assert 1 <= fanout.process_count(100) <= fanout.available_cores()


def test_spawned_processes_give_the_same_bits(monkeypatch):
    """Where forking is not safe (another thread alive) the children are spawned: they import
    everything anew and must still give the very same answer."""
    one = _compare(1, [])
    monkeypatch.setattr(fanout, "_context", lambda: fanout.multiprocessing.get_context("spawn"))
    assert _compare(2, []) == one
