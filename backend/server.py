"""The production WSGI server: gunicorn, embedded so `python app.py serve` is all it takes.

Two guards beyond gunicorn's defaults:
- A request watchdog. gthread workers answer gunicorn's heartbeat from their main thread, so
  a request thread that never returns (a runaway parse, a hung call) leaves the worker "alive"
  for ever and `timeout` never recycles it. Each worker records when each request thread
  started (pre_request/post_request) and a watchdog thread exits the worker, logging the
  request, once one has run longer than `HUILIU_REQUEST_TIMEOUT_S` (default 60 s); the master
  then forks a fresh worker.
- An access log that cannot be forged: gunicorn logs the decoded path, so `%0A` in a URL would
  write a line of the attacker's choosing. Control characters, quotes and backslashes in
  logged values are escaped.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

log = logging.getLogger(__name__)

DEFAULT_REQUEST_TIMEOUT_S = 60.0
# Exit code of a worker the watchdog ended (not gunicorn's 3 or 4, which halt the master).
WATCHDOG_EXIT = 70
# Test-only: with this set to "1", GET /__test__/hang sleeps for an hour, to prove that the
# watchdog recycles a worker whose request never returns. Never set it in production.
HANG_ENV = "HUILIU_TEST_HANG_ROUTE"
HANG_PATH = "/__test__/hang"

_UNSAFE = re.compile(r'[\x00-\x1f\x7f-\x9f"\\]')


def escape_for_log(value: str) -> str:
    """`value` with control characters, quotes and backslashes as \\xNN: one log line each."""
    return _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}", value)


class SafeAccessLogger(Logger):
    """gunicorn's logger with every logged string escaped (paths, query, headers)."""

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        return {k: escape_for_log(v) if isinstance(v, str) else v for k, v in atoms.items()}


def request_timeout_s() -> float:
    raw = os.environ.get("HUILIU_REQUEST_TIMEOUT_S", "")
    try:
        value = float(raw) if raw else DEFAULT_REQUEST_TIMEOUT_S
    except ValueError:
        value = DEFAULT_REQUEST_TIMEOUT_S
    return value if value > 0 else DEFAULT_REQUEST_TIMEOUT_S


class RequestClock:
    """When each of a worker's request threads started its current request.

    Durations only, on the process's performance counter: a watchdog measures how long a
    request has run, never the time of day (that comes from backend.clock).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, tuple[float, str]] = {}

    def start(self, what: str, now: float | None = None) -> None:
        with self._lock:
            self._running[threading.get_ident()] = (
                time.monotonic() if now is None else now,
                what,
            )

    def stop(self) -> None:
        with self._lock:
            self._running.pop(threading.get_ident(), None)

    def overdue(self, timeout_s: float, now: float | None = None) -> list[tuple[float, str]]:
        """(seconds running, request) of every request older than `timeout_s`."""
        now = time.monotonic() if now is None else now
        with self._lock:
            return [(now - t, what) for t, what in self._running.values() if now - t > timeout_s]


def watch(clock: RequestClock, timeout_s: float, on_overdue, poll_s: float | None = None):
    """Poll `clock` until a request is overdue, then call `on_overdue(seconds, request)` once
    for the oldest (in a worker that exits the process; returns if it does not)."""
    poll = poll_s if poll_s is not None else max(0.05, min(1.0, timeout_s / 4))
    while True:
        late = clock.overdue(timeout_s)
        if late:
            on_overdue(*max(late))
            return
        time.sleep(poll)


def _pre_request(worker, req) -> None:
    worker.huiliu_requests.start(f"{req.method} {escape_for_log(req.path or '')}")


def _post_request(worker, req, environ, resp) -> None:
    worker.huiliu_requests.stop()


def _recycle(worker, seconds: float, what: str) -> None:
    worker.log.critical(
        "request %s has run %.1f s, longer than HUILIU_REQUEST_TIMEOUT_S; recycling worker %s",
        what,
        seconds,
        os.getpid(),
    )
    for handler in logging.getLogger("gunicorn.error").handlers:
        handler.flush()
    os._exit(WATCHDOG_EXIT)


def _post_worker_init(worker) -> None:
    worker.huiliu_requests = RequestClock()  # before the worker's loop takes any request
    timeout_s = request_timeout_s()
    threading.Thread(
        target=watch,
        args=(worker.huiliu_requests, timeout_s, lambda s, w: _recycle(worker, s, w)),
        name="huiliu-request-watchdog",
        daemon=True,
    ).start()


def _hang_middleware(app):
    """Test-only (HANG_ENV): a route whose request never returns in useful time."""

    def wrapped(environ, start_response):
        if environ.get("PATH_INFO") == HANG_PATH:
            logging.getLogger("gunicorn.error").warning("test hang route: request started")
            time.sleep(3600)
        return app(environ, start_response)

    return wrapped


class _Gunicorn(BaseApplication):
    def __init__(self, options: dict) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        # Each worker builds its own app (and database connections) after forking.
        from backend import create_app

        app = create_app()
        if os.environ.get(HANG_ENV) == "1":
            return _hang_middleware(app)
        return app


def run(host: str, port: int, workers: int, threads: int = 4) -> None:
    _Gunicorn(
        {
            "bind": f"{host}:{port}",
            "workers": workers,
            "worker_class": "gthread",
            "threads": threads,
            # The master's heartbeat timeout; a stuck request thread is the watchdog's job.
            "timeout": 60,
            "accesslog": "-",
            "logger_class": SafeAccessLogger,
            # Query strings never carry secrets here, but keep the log line short anyway.
            "access_log_format": '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms',
            "post_worker_init": _post_worker_init,
            "pre_request": _pre_request,
            "post_request": _post_request,
        }
    ).run()
