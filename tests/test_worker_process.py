"""`app.py worker` as an operator starts it: it refuses a queue it cannot serve, and on a
worker machine with no `serve` beside it, `--metrics-port` serves that machine's /metrics."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent


def _env(tmp_path: Path, queue_url: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUILIU_", "PROMETHEUS"))}
    env |= {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "HUILIU_QUEUE_URL": queue_url,
        "SECRET_KEY": "worker-test",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_worker_refuses_the_inline_queue(tmp_path):
    done = subprocess.run(
        [sys.executable, "app.py", "worker"],
        cwd=ROOT,
        env=_env(tmp_path, "memory://"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "needs a sqlite:/// or redis:// queue" in done.stderr


def test_a_worker_serves_its_machines_metrics_on_its_own_port(tmp_path):
    env = _env(tmp_path, f"sqlite:///{tmp_path / 'queue.sqlite3'}")
    subprocess.run([sys.executable, "app.py", "init-db"], cwd=ROOT, env=env, check=True)
    port = _free_port()
    worker = subprocess.Popen(
        [sys.executable, "app.py", "worker", "--workers", "1", "--metrics-port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        body = ""
        for _ in range(150):
            try:
                body = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert "huiliu_queue_up 1.0" in body
        assert "huiliu_queue_pending" in body
    finally:
        os.killpg(worker.pid, signal.SIGINT)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            pytest.fail("the worker did not stop on SIGINT")
