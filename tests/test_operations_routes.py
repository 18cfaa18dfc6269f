"""What a platform team runs the service by: /metrics, /readyz, /status and one-line JSON logs.

Metrics are process-wide counters, so each test reads them before and after and compares the
difference. The clock stands at T0 (2026-03-10 18:00 China time). The last test runs a real
`serve` with two gunicorn workers: what each worker counted must appear once, summed.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from helpers.app import build_app, close_app, login
from helpers.campaigns import DAY_MS, NOW, TODAY, add_policy, grant_all, import_history, run_job
from prometheus_client.parser import text_string_to_metric_families

from backend.services import delivery as delivery_service
from backend.services import telemetry
from backend.tasks import delivery as task_delivery
from backend.tasks import queue
from backend.tasks.nightly import nightly
from backend.tasks.runtime import serving
from backend.web.logging_setup import JsonFormatter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import loadlib  # noqa: E402  (bench/ is not a package)


def scrape(client) -> dict[tuple, float]:
    """/metrics as {(sample name, sorted labels): value}."""
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.content_type.startswith("text/plain")
    return parse(resp.get_data(as_text=True))


def parse(text: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(sample: dict, name: str, **labels) -> float:
    return sample.get((name, tuple(sorted(labels.items()))), 0.0)


def grew(before: dict, after: dict, name: str, **labels) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_metrics_count_ingested_and_rejected_events_by_source(client, tenant):
    before = scrape(client)
    history = [
        {"user": "u1", "id": "h1", "type": "app_open", "ts": NOW - DAY_MS},
        {"user": "u1", "id": "h2", "type": "app_open", "ts": NOW - 2 * DAY_MS},
        {"user": "u1", "id": "h3", "type": "no_such_event", "ts": NOW - DAY_MS},
    ]
    resp = client.post("/admin/v1/events/import", json={"events": history}, headers=tenant.admin)
    assert resp.get_json()["accepted"] == 2 and len(resp.get_json()["rejected"]) == 1
    h = login(client, tenant)
    batch = [
        {"id": "m1", "type": "app_open", "ts": NOW - 60_000},
        {"id": "m2", "type": "no_such_event", "ts": NOW - 60_000},
    ]
    assert client.post("/mp/v1/events", json={"events": batch}, headers=h).status_code == 200
    assert client.post("/mp/v1/events", json={"events": batch[:1]}, headers=h).status_code == 200
    after = scrape(client)
    assert grew(before, after, "huiliu_events_ingested_total", source="import") == 2
    assert grew(before, after, "huiliu_events_rejected_total", source="import") == 1
    assert grew(before, after, "huiliu_events_ingested_total", source="mp") == 1
    assert grew(before, after, "huiliu_events_rejected_total", source="mp") == 1
    assert grew(before, after, "huiliu_events_duplicate_total", source="mp") == 1
    # no tenant in any label: a platform's hundreds of campuses would multiply every series
    assert not any(k for (_, labels) in after for k, _ in labels if "tenant" in k)


def test_metrics_count_sends_by_channel_and_status(app, client, tenant):
    import_history(client, tenant, users=12, silent_days=5)
    grant_all(app, tenant)
    add_policy(client, tenant)
    before = scrape(client)
    run_job(app, tenant)
    after = scrape(client)
    with app.app_context():
        from backend.store.models import Touch

        sent = Touch.select().where((Touch.status == "sent") & (Touch.channel == "subscribe"))
        sent_count = sent.count()
    assert sent_count > 0
    assert grew(before, after, "huiliu_sends_total", channel="subscribe", status="sent") == (
        sent_count
    )


def test_request_latency_is_labelled_by_route_template_never_the_raw_path(client, tenant):
    before = scrape(client)
    openid = "o_private_openid_123"
    assert client.get(f"/admin/v1/users/{openid}", headers=tenant.admin).status_code == 404
    assert client.get("/no/such/secret-path").status_code == 404
    assert client.get("/healthz").status_code == 200
    after = scrape(client)
    name = "huiliu_http_request_duration_seconds_count"
    assert grew(before, after, name, route="/healthz", method="GET", status="2xx") == 1
    assert (
        grew(before, after, name, route="/admin/v1/users/<openid>", method="GET", status="4xx") == 1
    )
    assert grew(before, after, name, route="<unmatched>", method="GET", status="4xx") == 1
    routes = {dict(labels).get("route", "") for (_, labels) in after}
    assert not [r for r in routes if openid in r or "secret-path" in r]


def test_job_durations_by_task_and_a_final_failure_on_status(app, client, tenant, monkeypatch):
    before = scrape(client)
    with serving(app):
        nightly(tenant.id, TODAY)  # memory:// runs it at once, as a worker would
    task_delivery.after_trigger(app, tenant.id)

    def boom(_app, _tenant_id):
        raise RuntimeError("wechat down")

    monkeypatch.setattr(delivery_service, "deliver_now", boom)
    task_delivery.after_trigger(app, tenant.id)  # deliver has no retries: failed for good
    after = scrape(client)
    name = "huiliu_job_duration_seconds_count"
    assert grew(before, after, name, task="nightly", outcome="complete") == 1
    assert grew(before, after, name, task="deliver", outcome="complete") == 1
    assert grew(before, after, name, task="deliver", outcome="error") == 1
    assert value(after, "huiliu_queue_up") == 1
    assert value(after, "huiliu_queue_pending") == 0
    assert value(after, "huiliu_task_failures") == 1
    status = client.get("/status").get_json()
    assert status["failed_tasks"]["count"] == 1
    (failure,) = status["failed_tasks"]["latest"]
    assert failure["task"] == "deliver" and failure["tenant_id"] == tenant.id
    assert "wechat down" in failure["error"]
    assert failure["failed_at"] == "2026-03-10T18:00:00+08:00"  # China time
    (night,) = status["nightly"]
    assert night["tenant_id"] == tenant.id and night["last_success"] == (
        "2026-03-10T18:00:00+08:00"
    )


def test_status_shape(app, client, tenant, other_tenant):
    run_job(app, tenant)
    body = client.get("/status").get_json()  # the test client is a loopback client
    assert body["database"] == {"reachable": True}
    assert body["queue"] == {"storage": "memory", "reachable": True, "pending": 0, "scheduled": 0}
    assert body["failed_tasks"] == {"count": 0, "latest": []}
    assert body["nightly"] == [
        {
            "tenant_id": tenant.id,
            "appid": tenant.appid,
            "last_success": "2026-03-10T18:00:00+08:00",
        },
        {"tenant_id": other_tenant.id, "appid": other_tenant.appid, "last_success": None},
    ]


def test_status_wants_the_ops_token_or_a_loopback_client(app, client):
    far = {"REMOTE_ADDR": "203.0.113.9"}
    assert client.get("/status").status_code == 200
    resp = client.get("/status", environ_base=far)
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "forbidden"
    # through a proxy on this machine every client looks local: refused too
    assert client.get("/status", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 403
    app.config["OPS_TOKEN"] = "s3cret-ops-token"
    assert client.get("/status").status_code == 401  # a token is set: loopback is not enough
    wrong = {"Authorization": "Bearer nope"}
    assert client.get("/status", headers=wrong).status_code == 401
    right = {"Authorization": "Bearer s3cret-ops-token"}
    resp = client.get("/status", headers=right, environ_base=far)
    assert resp.status_code == 200 and resp.get_json()["database"]["reachable"] is True


def test_readyz_answers_when_database_and_queue_do(client):
    resp = client.get("/readyz")
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "ready", "checks": {"database": "ok", "queue": "ok"}}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when this returns: nothing listens


def test_readyz_is_503_naming_the_queue_when_it_does_not_answer(db_url, clock):
    app = build_app(db_url, clock, QUEUE_URL=f"redis://127.0.0.1:{_closed_port()}/0")
    try:
        client = app.test_client()
        started = time.monotonic()
        resp = client.get("/readyz")
        assert time.monotonic() - started < 5  # cheap: a refused connection, not a hang
        assert resp.status_code == 503
        body = resp.get_json()
        assert body["error"]["code"] == "not_ready" and "queue" in body["error"]["message"]
        assert body["checks"]["database"] == "ok"
        assert body["checks"]["queue"].startswith("unavailable")
        assert "127.0.0.1" not in json.dumps(body)  # the queue's address is not told
        metrics = parse(client.get("/metrics").get_data(as_text=True))
        assert value(metrics, "huiliu_queue_up") == 0
        status = client.get("/status").get_json()
        assert status["queue"]["reachable"] is False
    finally:
        queue.configure(queue.IMMEDIATE_URL)  # the queue is process-global
        close_app(app)


def test_operations_routes_are_documented(client):
    paths = client.get("/openapi.json").get_json()["paths"]
    for path in ("/readyz", "/status", "/metrics", "/healthz"):
        assert paths[path]["get"]["summary"] != "UNDOCUMENTED", path
    assert "security" not in paths["/status"]["get"]  # not the mini-program's bearer token
    assert {"401", "403"} <= set(paths["/status"]["get"]["responses"])


def test_a_log_record_is_one_json_line_with_its_traceback_folded_in():
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.LogRecord(
            "backend.x",
            logging.ERROR,
            __file__,
            1,
            "failed for %s\n(second line)",
            ("t1",),
            sys.exc_info(),
        )
    record.created = 1773136800.25  # 2026-03-10 10:00:00.250 UTC
    line = JsonFormatter().format(record)
    assert "\n" not in line and "\u2028" not in line
    doc = json.loads(line)
    assert doc["time"] == "2026-03-10T10:00:00.250Z"
    assert doc["level"] == "ERROR" and doc["logger"] == "backend.x"
    assert doc["message"] == "failed for t1\n(second line)"
    assert doc["exc"].startswith("Traceback") and "ValueError: bad\nthing" in doc["exc"]


def test_serve_and_worker_log_json_lines(tmp_path):
    """Logging as `serve` and `worker` install it (HUILIU_LOG_FORMAT unset: json)."""
    script = (
        "import logging\n"
        "from backend.web import logging_setup\n"
        "logging_setup.install()\n"  # the app factory: text by default
        "assert logging_setup.default_to_json() == 'json'\n"  # serve and worker
        "log = logging.getLogger('backend.test')\n"
        "log.info('hello %s', '世界')\n"
        "try:\n    1/0\nexcept ZeroDivisionError:\n    log.exception('it broke')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "HUILIU_LOG_FORMAT"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2, lines
    hello, broke = (json.loads(x) for x in lines)
    assert hello["message"] == "hello 世界" and hello["level"] == "INFO"
    assert broke["message"] == "it broke" and "ZeroDivisionError" in broke["exc"]
    env["HUILIU_LOG_FORMAT"] = "text"
    done = subprocess.run(
        [sys.executable, "-c", script.replace("== 'json'", "== 'text'")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert " INFO backend.test hello 世界" in done.stderr


def test_metrics_dir_defaults_to_the_instance_folder(monkeypatch, tmp_path):
    monkeypatch.delenv(telemetry.MULTIPROC_ENV, raising=False)
    assert telemetry.metrics_dir(str(tmp_path)) == str(tmp_path / "metrics")
    monkeypatch.setenv(telemetry.MULTIPROC_ENV, "/somewhere/else")
    assert telemetry.metrics_dir(str(tmp_path)) == "/somewhere/else"


def _pids_counting(directory: Path, group: int) -> set[int]:
    """The processes of the server's group that wrote request timings into `directory`."""
    pids = set()
    for path in directory.glob("histogram_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        try:
            if os.getpgid(pid) == group:
                pids.add(pid)
        except ProcessLookupError:
            pass
    return pids


@pytest.mark.slow
def test_serve_with_two_workers_sums_both_workers_counts(tmp_path):
    """A real `app.py serve --workers 2`, PROMETHEUS_MULTIPROC_DIR unset: requests and events
    counted in whichever worker served them appear once in /metrics, summed over both.

    `serve` sets the mode (instance/metrics) after prometheus_client was imported, before
    gunicorn forks; a metric made before that would count in its worker alone and be missing
    from the scrape. Files of a former run's dead processes are cleared at start."""
    metrics_dir = ROOT / "instance" / "metrics"
    metrics_dir.mkdir(parents=True, exist_ok=True)
    stale = metrics_dir / "counter_999999999.db"  # above any pid_max: a dead process's
    stale.write_bytes(b"stale")
    env = loadlib.environment(f"sqlite:///{tmp_path / 'huiliu.sqlite3'}")
    env["HUILIU_QUEUE_URL"] = f"sqlite:///{tmp_path / 'queue.sqlite3'}"
    for name in ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir", "HUILIU_LOG_FORMAT"):
        env.pop(name, None)
    _appid, key = loadlib.seed(env)
    log_path = tmp_path / "serve.log"
    with loadlib.Server(env, log_path, workers=2).start() as server:
        base = server.base
        route = {"route": "/admin/v1/events/import", "method": "POST", "status": "2xx"}
        before = parse(requests.get(f"{base}/metrics", timeout=30).text)
        sent, imported, lock = 0, 0, threading.Lock()

        def hit(i: int) -> None:
            nonlocal sent, imported
            with requests.Session() as s:  # a new connection: gunicorn picks a worker
                # The import takes any past time: a fixed one, whatever the server's clock says.
                event = {"user": f"u{i}", "id": f"e{i}", "type": "app_open", "ts": NOW - DAY_MS}
                r = s.post(
                    f"{base}/admin/v1/events/import",
                    json={"events": [event]},
                    headers={"X-Api-Key": key},
                    timeout=30,
                )
                assert r.status_code == 200, r.text
            with lock:
                sent += 1
                imported += r.json()["accepted"]

        deadline = time.monotonic() + 60
        i = 0
        while len(_pids_counting(metrics_dir, server.proc.pid)) < 2:
            assert time.monotonic() < deadline, "no two workers wrote their counts to the dir"
            threads = [threading.Thread(target=hit, args=(i + k,)) for k in range(8)]
            i += 8
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        after = parse(requests.get(f"{base}/metrics", timeout=30).text)
        name = "huiliu_http_request_duration_seconds_count"
        assert grew(before, after, name, **route) == sent
        assert grew(before, after, "huiliu_events_ingested_total", source="import") == imported
        assert imported == sent
        assert value(after, "huiliu_queue_up") == 1
        assert not stale.exists()
    boot = [x for x in log_path.read_text().splitlines() if "Booting worker" in x]
    assert boot and all(json.loads(x)["logger"] == "gunicorn.error" for x in boot)
