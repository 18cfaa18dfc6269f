"""The routes a platform team runs the service by (docs/operations.md): `/readyz` for the load
balancer, `/status` for a person, `/metrics` for Prometheus; and the request-latency hooks.

`/healthz` (backend/web/app.py) stays liveness: the process answers and reaches its database.
`/readyz` adds the queue: a web worker whose queue does not answer cannot hand events'
deliveries on, so it should get no traffic. Both are cheap (one query, one queue count).

`/status` names tenants and task errors, so it is not public: it wants
`Authorization: Bearer <HUILIU_OPS_TOKEN>`; without that variable set it answers loopback
clients only, and never a request that came through a proxy (a proxy on the same machine would
make every client look local).
"""

from __future__ import annotations

import hmac

from flask import Flask, Response, current_app, g, jsonify, request

from backend.core.clock import china_iso
from backend.errors import error_body
from backend.services import task_failures, telemetry
from backend.tasks import queue
from backend.tasks import telemetry as task_telemetry
from backend.web.openapi import documented

OPS_TOKEN_ENV = "HUILIU_OPS_TOKEN"
LATEST_FAILURES = 5
UNMATCHED = "<unmatched>"  # a 404 or 405: no route, and never the raw path as a label
LOOPBACK = {"127.0.0.1", "::1"}
PROXY_HEADERS = ("X-Forwarded-For", "X-Real-Ip", "Forwarded")
CONTENT_TYPE_PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"

_CHECKS = {"type": "object", "properties": {"database": {"type": "string"}, "queue": {}}}
READY_SCHEMA = {
    "type": "object",
    "properties": {"status": {"const": "ready"}, "checks": _CHECKS},
}
STATUS_SCHEMA = {
    "type": "object",
    "required": ["database", "queue", "failed_tasks", "nightly"],
    "properties": {
        "database": {"type": "object"},
        "queue": {"type": "object"},
        "failed_tasks": {"type": "object"},
        "nightly": {"type": "array", "items": {"type": "object"}},
    },
}


def register(app: Flask) -> None:
    """Add the operations routes and time every request of `app`."""
    app.config.setdefault("OPS_TOKEN", "")  # web/config.py reads HUILIU_OPS_TOKEN
    _instrument(app)
    app.add_url_rule("/readyz", view_func=readyz, methods=["GET"])
    app.add_url_rule("/status", view_func=status, methods=["GET"])
    app.add_url_rule("/metrics", view_func=metrics, methods=["GET"])


def _instrument(app: Flask) -> None:
    """Time each request into the latency histogram, labelled by its route's template."""

    @app.before_request
    def _start_timer() -> None:
        """prometheus_client's timer measures the duration (the library's monotonic clock);
        nothing decides by it, so the injected clock is not concerned."""
        timer = telemetry.metrics().request_seconds.time()
        timer.__enter__()
        g.huiliu_request_timer = timer

    @app.after_request
    def _observe(response: Response) -> Response:
        """Runs for every response, errors included (Flask finalizes those too)."""
        timer = g.pop("huiliu_request_timer", None)
        if timer is not None:
            rule = request.url_rule
            route = rule.rule if rule is not None else UNMATCHED
            timer.labels(route, request.method, f"{response.status_code // 100}xx")
            timer.__exit__(None, None, None)
        return response


def _checks() -> tuple[dict, list[str]]:
    """Each dependency's answer, and the names of those that did not answer."""
    db_error = telemetry.database_answers()
    stats = queue.stats()
    checks = {
        "database": "ok" if db_error is None else f"unavailable: {db_error}",
        "queue": "ok" if stats["reachable"] else f"unavailable: {stats.get('error', '')}",
    }
    down = [name for name, answer in checks.items() if answer != "ok"]
    return checks, down


@documented(
    "Readiness: 200 when the database and the task queue answer; 503 naming which does not",
    response=READY_SCHEMA,
    errors=(503,),
)
def readyz():
    """The load balancer's check: send this worker traffic only if what it needs answers."""
    checks, down = _checks()
    if down:
        body = error_body("not_ready", f"{' and '.join(down)} not answering")
        return jsonify({**body, "checks": checks}), 503
    return jsonify({"status": "ready", "checks": checks})


@documented(
    "Service status for operators: database and queue reachable, queue depth, failed tasks, "
    "each tenant's last successful nightly run (China time). Send `Authorization: Bearer "
    f"<{OPS_TOKEN_ENV}>`; with no token configured, loopback clients only",
    response=STATUS_SCHEMA,
    errors=(401, 403),
)
def status():
    """What a person on call looks at first: is it up, is work piling up, what failed, which
    campus's night did not run."""
    refused = _refused()
    if refused is not None:
        return refused
    db_error = telemetry.database_answers()
    body = {
        "database": {"reachable": db_error is None, **({"error": db_error} if db_error else {})},
        "queue": queue.stats(),
        "failed_tasks": None,
        "nightly": [],
    }
    if db_error is None:
        latest = task_failures.recent(LATEST_FAILURES)
        for row in latest:
            row["failed_at"] = china_iso(row.pop("failed_ms"))
        body["failed_tasks"] = {"count": task_failures.count(), "latest": latest}
        body["nightly"] = telemetry.last_nights()
    return jsonify(body)


def _refused():
    """None when the caller may see /status, else the refusal."""
    token = current_app.config.get("OPS_TOKEN") or ""
    if token:
        sent = request.headers.get("Authorization", "")
        if hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            return None
        return jsonify(
            error_body("unauthorized", f"send Authorization: Bearer <{OPS_TOKEN_ENV}>")
        ), 401
    proxied = any(request.headers.get(h) for h in PROXY_HEADERS)
    if request.remote_addr in LOOPBACK and not proxied:
        return None
    message = f"{OPS_TOKEN_ENV} is not set: /status answers loopback clients only"
    return jsonify(error_body("forbidden", message)), 403


@documented(
    "Prometheus metrics, text exposition format (text/plain; version=0.0.4), summed over "
    "every process of this machine",
    response={"type": "string"},
)
def metrics():
    """Prometheus scrapes this: the processes' counters and histograms, and queue depth."""
    body = telemetry.exposition(task_telemetry.QueueCollector())
    return Response(body, mimetype=None, content_type=CONTENT_TYPE_PROMETHEUS)
